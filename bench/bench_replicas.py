"""Read replicas: the replica's lag under a 32-client read load while a county is ingested on the
primary, and read-your-writes in every trial meanwhile.

Setup (its own primary and replica, so that the bench cluster's other databases are not copied):
a private primary on a port of ``GEOBASE_BENCH_REPLICA_PORTS`` (55626-55629) holding the land use
of the synthetic province at this scale (10 counties of ``--parcels / 10``, the same generated
province as bench_province.py, ``bench/.cache/province-10x<P>-<seed>``), a streaming replica made
by ``geobase.db.replicas.add_local`` on the next port, and two servers on the same primary:
*replicated* (reads routed to the replica) and *primary only* (no replica).

Prepared outside the timed part: the province's generation (once per scale and seed, kept across
runs), its load into the primary (``GEOBASE_BENCH_PROVINCE_LOAD_JOBS`` CLI ingests of different
counties at a time, default 2), the replica's base backup (taken once, after the load; the
replica then streams through every round, as a deployed one does; ``GEOBASE_BENCH_REPLICA_REUSE=1``
keeps the loaded primary for the next run, see :func:`_reuse`). The phases' wall times are
printed and kept in the lag figure's ``extra["phases_s"]``.

Per round (interleaved, ``ctx.rounds``): county 339910 is ingested again on the primary (two CLI
ingests of its delivery: ``--mode delete``, every parcel of it retired, then ``replace``) while
32 threads read items by bbox from one server; meanwhile a writer changes a layer's sharing
through the same server and reads it back at once with its token, 20 times: a read that did
not see its own write is a violation (must be 0). Reported: the replica's lag (time behind the
primary, sampled every 0.1 s: p95 and max), the reads' p95 on both servers and their ratio, and
the violations; in the p95 figure's ``extra``: the non-200 answers per server, the slowest read
per server (a read stalled behind replay shows there) and the reads the replica failed that the
primary answered instead (``reads_retried_on_primary``, counted in the replicated server's log,
kept as ``server-replicated-<run>.log`` beside the replica's log).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
from common import PY, REPO, Context, Result, free_port, percentile
from province_data import DELIVERED, FIRST, N_COUNTIES, PHASES, SEED, ingest_all, province, timed_phase

READERS = 32
RYW_TRIALS = 20


def _reuse() -> bool:
    """``GEOBASE_BENCH_REPLICA_REUSE=1``: keep the loaded primary after the run and reuse it in the
    next run at the same scale (its replica is always taken afresh). A reused primary carries the
    versions of the earlier runs' rounds (county 339910 retired and delivered again each time)."""
    return os.environ.get("GEOBASE_BENCH_REPLICA_REUSE") == "1"


def _loaded_mark(settings, ctx: Context) -> Path:
    return settings.data_path / f"province-{ctx.parcels}-{SEED}.loaded"


def _primary(ctx: Context, port: int):
    from geobase.db import prepare_database
    from geobase.db.cluster import LocalCluster
    from geobase.settings import Settings

    settings = Settings(data_dir=REPO / ".geobase-bench" / "replicas", pg_port=port, database_url=None)
    cluster = LocalCluster(settings)
    if not (_reuse() and _loaded_mark(settings, ctx).exists()):
        for mark in settings.data_path.glob("province-*.loaded"):
            mark.unlink()
        cluster.remove()
    shutil.rmtree(cluster.pgdata.parent / "replica-bench", ignore_errors=True)
    (settings.data_path / "replicas.json").unlink(missing_ok=True)
    prepare_database(settings)
    return settings, cluster


def load_primary(ctx: Context, settings, root: Path) -> None:
    """The province's land use into the primary (skipped when a reused primary holds it)."""
    if _loaded_mark(settings, ctx).exists():
        print("  the primary holds the province already (GEOBASE_BENCH_REPLICA_REUSE)", flush=True)
        return
    env = dict(os.environ, GEOBASE_DATA_DIR=str(settings.data_path), GEOBASE_PG_PORT=str(settings.pg_port),
               GEOBASE_DATABASE_URL="")
    with timed_phase("primary: the province loaded"):
        ingest_all(env, [("land_use", root / str(FIRST + c) / "DLTB.zip", None) for c in range(N_COUNTIES)],
                   "replicas primary")
    _loaded_mark(settings, ctx).write_text("")


def _primary_and_replica(ctx: Context, root: Path):
    """The primary (the province's land use loaded) and its replica, on ports of
    GEOBASE_BENCH_REPLICA_PORTS (default 55626-55629); a port taken meanwhile by a client
    connection's TIME_WAIT: the next."""
    from geobase.db import replicas
    from geobase.errors import SetupError

    lo, _, hi = os.environ.get("GEOBASE_BENCH_REPLICA_PORTS", "55626-55629").partition("-")
    ports = list(range(int(lo), int(hi) + 1))
    for i in range(len(ports) - 1):
        settings = cluster = None
        try:
            settings, cluster = _primary(ctx, ports[i])
            load_primary(ctx, settings, root)
            with timed_phase("replica: base backup"):
                return settings, cluster, replicas.add_local(settings, ports[i + 1], "bench")
        except SetupError as exc:
            if "could not start server" not in str(exc):
                raise
            print(f"  ports {ports[i]}/{ports[i + 1]} taken, next", flush=True)
            if settings is not None:
                for r in replicas.load(settings):
                    replicas.remove(settings, r.name)
                cluster.stop() if _reuse() else cluster.remove()
    raise RuntimeError(f"no two free ports in {ports}")


def _server(settings, env: dict, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    full = dict(os.environ, GEOBASE_DATA_DIR=str(settings.data_path), GEOBASE_PG_PORT=str(settings.pg_port),
                GEOBASE_DATABASE_URL="", GEOBASE_LOG_LEVEL="warning", GEOBASE_POOL_MAX_SIZE="20",
                GEOBASE_RATE_LIMIT_PUBLIC_PER_S="100000", GEOBASE_RATE_LIMIT_PUBLIC_BURST="100000",
                GEOBASE_RATE_LIMIT_PER_S="100000", GEOBASE_RATE_LIMIT_BURST="100000", **env)
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - the server's, closed with the run
    proc = subprocess.Popen([PY, "-m", "geobase.cli", "serve", "--no-prepare", "--port", str(port)], env=full,
                            cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def _lag_sampler(primary_url: str, replica_url: str, stop: threading.Event, out: list[float]) -> None:
    """Time lag samples (s): now minus when the primary was at the position the replica replayed."""
    history: list[tuple[float, int]] = []
    with psycopg.connect(primary_url, autocommit=True) as p, psycopg.connect(replica_url, autocommit=True) as r:
        while not stop.is_set():
            now = time.monotonic()
            history.append((now, p.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint")
                            .fetchone()[0]))
            replay = r.execute("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint").fetchone()[0]
            behind = [t for t, lsn in history if lsn > replay]
            out.append(now - behind[0] if behind else 0.0)
            time.sleep(0.1)


def _readers(url: str, bbox: list[float], stop: threading.Event, lat: list[float], errors: list[int]) -> None:
    def one(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                x = rng.uniform(bbox[0], bbox[2] - 0.01)
                y = rng.uniform(bbox[1], bbox[3] - 0.01)
                t0 = time.perf_counter()
                r = c.get("/collections/land_use/items", params={"bbox": f"{x},{y},{x + 0.01},{y + 0.01}",
                                                                  "limit": 50})
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(READERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _ryw(url: str, admin: str, stop: threading.Event, result: dict) -> None:
    """The writer: change a layer's sharing, read it back at once with the token."""
    with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": admin}) as c:
        for i in range(RYW_TRIALS):
            if stop.is_set():
                break
            level = "private" if i % 2 == 0 else "public"
            c.put("/admin/layers/water_areas/sharing", json={"sharing": level}).raise_for_status()
            seen = httpx.get(f"{url}/collections/water_areas", cookies=dict(c.cookies), timeout=60).status_code
            result["trials"] += 1
            result["violations"] += seen != (404 if level == "private" else 200)
            time.sleep(0.2)


def _round(url, settings, dltb: Path, admin: str, bbox, lag_urls=None) -> dict:
    stop = threading.Event()
    lat: list[float] = []
    errors: list[int] = []
    lags: list[float] = []
    ryw = {"trials": 0, "violations": 0}
    workers = [threading.Thread(target=_readers, args=(url, bbox, stop, lat, errors)),
               threading.Thread(target=_ryw, args=(url, admin, stop, ryw))]
    if lag_urls:
        workers.append(threading.Thread(target=_lag_sampler, args=(*lag_urls, stop, lags)))
    for w in workers:
        w.start()
    env = dict(os.environ, GEOBASE_DATA_DIR=str(settings.data_path), GEOBASE_PG_PORT=str(settings.pg_port),
               GEOBASE_DATABASE_URL="")
    for mode in ("delete", "replace"):  # the county's every parcel retired, then delivered again
        subprocess.run([PY, "-m", "geobase.cli", "ingest", "land_use", str(dltb), "--mode", mode],
                       env=env, cwd=str(REPO), check=True, stdout=subprocess.DEVNULL)
    stop.set()
    for w in workers:
        w.join()
    return {"p95": percentile(lat, 95), "max": max(lat, default=0.0), "lags": lags, "errors": errors, **ryw}


def run(ctx: Context) -> None:
    from geobase import keys
    from geobase.db import connect, replicas

    PHASES.clear()
    with timed_phase("generation (or the cached province)"):
        root = province(ctx)
    dltb = root / DELIVERED / "DLTB.zip"
    settings, cluster, replica = _primary_and_replica(ctx, root)
    try:
        with connect(settings) as conn:
            admin = keys.create_key(conn, name="bench", role="admin", department=None).token
            bbox = list(conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                     "(SELECT ST_Extent(geom) e FROM data.land_use) x").fetchone())
            conn.commit()
        server_log = settings.data_path / f"server-replicated-{ctx.started}.log"
        replicated = _server(settings, {"GEOBASE_REPLICA_MAX_LAG_MS": "10000"}, server_log)
        (settings.data_path / "replicas.json").rename(settings.data_path / "replicas.off")
        primary_only = _server(settings, {})
        (settings.data_path / "replicas.off").rename(settings.data_path / "replicas.json")
        lag_urls = (cluster.url, f"postgresql://{settings.pg_user}@127.0.0.1:{replica.port}/{settings.pg_database}")
        rounds: dict[str, list[dict]] = {"replicated": [], "primary": []}
        for i in range(ctx.rounds):
            print(f"  round {i + 1}/{ctx.rounds}", flush=True)
            with timed_phase("rounds"):
                rounds["replicated"].append(_round(replicated[1], settings, dltb, admin, bbox, lag_urls))
                rounds["primary"].append(_round(primary_only[1], settings, dltb, admin, bbox))
        for proc, _ in (replicated, primary_only):
            proc.terminate()
            proc.wait(30)
        lags = [v for r in rounds["replicated"] for v in r["lags"]]
        trials = sum(r["trials"] for side in rounds.values() for r in side)
        violations = sum(r["violations"] for side in rounds.values() for r in side)
        errors = {side: sum(len(r["errors"]) for r in rs) for side, rs in rounds.items()}
        # reads a replica failed (a recovery conflict, a wait for replay's lock) answered by the primary
        retried = server_log.read_text(errors="replace").count("answered by the primary")
        ctx.report(Result.rounds("items by bbox p95 under 32 readers during a county ingest: replica vs primary only",
                                 [r["p95"] * 1000 for r in rounds["replicated"]],
                                 [r["p95"] * 1000 for r in rounds["primary"]], "primary only", "ms",
                                 extra={"non_200": errors, "reads_retried_on_primary": retried,
                                        "slowest_read_s": {side: round(max(r["max"] for r in rs), 2)
                                                           for side, rs in rounds.items()}}))
        ctx.report(Result("replica lag during the ingest under the read load (p95; max in extra)",
                          percentile(lags, 95) * 1000 if lags else float("nan"), None, None, "ms",
                          extra={"max_ms": max(lags) * 1000 if lags else None, "samples": len(lags),
                                 "per_round_p95_ms": [round(percentile(r["lags"], 95) * 1000)
                                                      for r in rounds["replicated"] if r["lags"]],
                                 "phases_s": {k: round(v, 1) for k, v in PHASES.items()}}))
        ctx.report(Result("read-your-writes violations (sharing change, then the writer's read)", violations,
                          None, None, f"of {trials} trials", extra={"trials": trials}))
    finally:
        for r in replicas.load(settings):
            log = Path(r.pgdata) / "geobase-server.log"  # kept: recovery conflicts, cancelled reads
            if log.exists():
                shutil.copy(log, settings.data_path / f"replica-{r.name}-{ctx.started}.log")
            replicas.remove(settings, r.name)
        cluster.stop() if _reuse() else cluster.remove()


if __name__ == "__main__":
    sys.exit("run through bench/run.py --only replicas")

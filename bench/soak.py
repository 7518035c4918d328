"""Soak: many clients for a long time, with the database restarted and the server killed in the
middle; nothing may be lost, changed or leak.

    python bench/soak.py                    # 32 clients, 10 minutes (the acceptance run of issue 13)
    python bench/soak.py --short            # 32 clients, 2 minutes (to try it)
    python bench/soak.py --seconds 300 --clients 16
    python bench/run.py --only soak         # the same through the benchmark runner
                                            # (GEOBASE_SOAK_SECONDS, GEOBASE_SOAK_CLIENTS)

What it does, on loopback only, against its own PostgreSQL cluster (``.geobase-soak``, port
``GEOBASE_SOAK_PG_PORT``, default 55435) holding the sample county:

- ``clients`` concurrent clients (half with an analyst key, half the public) send a mix for
  ``seconds``: layer tiles and composite tiles, items pages by bbox, the catalog, site checks;
- two ingests through the HTTP API (``rivers`` at 15 % of the run, ``water_areas`` at 50 %);
- a PostgreSQL restart (``pg_ctl stop -m fast`` + start) at 35 % and a server ``SIGKILL`` and
  restart at 70 %; each *restart window* runs from the event until ``/health`` answers 200
  again, plus 3 s.

Figures (printed, and saved by bench/run.py):

- errors: responses other than 2xx/429/503, and connection failures, *outside* the restart
  windows (must be 0); inside the windows they are counted separately;
- audit rows lost: every request is tagged with its own ``User-Agent`` (``soak/<client>/<n>``),
  which the audit log stores. Audited by design are every non-GET request and every keyed read of
  non-public data (here: any keyed request that reads land_use, whose right-holder attributes are
  masked from the public, or the internal layers); public reads of public data are not audited.
  Expected = those requests that got a 2xx answer; lost = expected without their row. Rows of
  requests answered in the last 5 s before the SIGKILL can only be lost with the process (the
  audit queue is in memory): they are reported apart from the rest (must be 0);
- data changes: checksums of every layer table before and after, except the two ingested
  layers (must be 0);
- server RSS sampled every 5 s, per server life: first, last, max and the least-squares slope
  over the second half of the life (MiB/min; no growth trend means about 0).

Loops are bounded by the run time; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg import sql as pgsql

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run on its own or from bench/run.py
from common import web_mercator_tile as _tile

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / ".geobase-soak"
SAMPLE = REPO / "sample_data" / "county"
INGESTS = ((0.15, "rivers", "rivers.geojson"), (0.50, "water_areas", "water.geojson"))
PG_RESTART_AT = 0.35
SERVER_KILL_AT = 0.70
KILL_TAIL_S = 5.0   # requests answered this long before the SIGKILL may lose their queued audit row
GRACE_S = 3.0       # after /health is back, the window stays open this long


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings():
    from geobase.settings import Settings

    port = int(os.environ.get("GEOBASE_SOAK_PG_PORT", "55435"))
    return Settings(database_url=None, data_dir=DATA_DIR, pg_port=port)


def prepare() -> tuple[object, str, str, str, list[float]]:
    """Start the soak cluster, load the sample county once; a fresh admin and analyst key."""
    from geobase.ingest.sample import ingest_sample_county

    from geobase import keys
    from geobase.db import database_url

    settings = _settings()
    ingest_sample_county(settings, echo=lambda *a, **k: None)  # starts the cluster; idempotent
    url = database_url(settings)
    with psycopg.connect(url) as conn:
        admin = keys.create_key(conn, name="soak-admin", role="admin", department=None).token
        analyst = keys.create_key(conn, name="soak-analyst", role="analyst", department="planning").token
        extent = conn.execute("SELECT extent FROM catalog.layer_versions WHERE layer = 'land_use' "
                              "ORDER BY version DESC LIMIT 1").fetchone()[0]
        conn.commit()
    return settings, url, admin, analyst, [float(v) for v in extent]


def checksums(url: str) -> dict[str, str]:
    """md5 over the sorted row hashes of every table in the data schema."""
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'data' "
            "AND table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
        for t in tables:
            out[t] = conn.execute(
                pgsql.SQL("SELECT md5(coalesce(string_agg(h, '' ORDER BY h), '')) "
                                "FROM (SELECT md5(x::text) AS h FROM {} x) s").format(
                    pgsql.Identifier("data", t))).fetchone()[0]
    return out


class Server:
    """The geobase server as a subprocess; restartable on the same port."""

    def __init__(self, url: str, port: int):
        self.url = url
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.lives: list[int] = []
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        self.log = open(DATA_DIR / "soak-server.log", "a")  # noqa: SIM115 — closed when the server stops

    def start(self) -> None:
        env = dict(os.environ, GEOBASE_DATABASE_URL=self.url, GEOBASE_DATA_DIR=str(DATA_DIR),
                   GEOBASE_LOG_LEVEL="warning", GEOBASE_RATE_LIMIT_PER_S="100000",
                   GEOBASE_RATE_LIMIT_BURST="100000", GEOBASE_RATE_LIMIT_PUBLIC_PER_S="100000",
                   GEOBASE_RATE_LIMIT_PUBLIC_BURST="100000")
        self.proc = subprocess.Popen([sys.executable, "-m", "geobase.cli", "serve", "--no-prepare", "--port",
                                      str(self.port)], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=str(REPO))
        self.lives.append(self.proc.pid)

    def wait_healthy(self, timeout: float = 180) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.base}/health", timeout=3).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not healthy within the timeout")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the audit queue is flushed
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Sample:
    ua: str
    kind: str
    method: str
    keyed: bool
    start: float
    end: float
    status: int | str


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    windows: list[tuple[str, float, float]] = field(default_factory=list)
    kill_at: float | None = None
    rss: list[tuple[int, float, float]] = field(default_factory=list)  # (pid, t, MiB)
    ingests: list[dict] = field(default_factory=list)
    stop: bool = False
    t0: float = 0.0


def _request(rnd: random.Random, extent: list[float]) -> tuple[str, str, str, dict | None]:
    """(kind, method, path, json) of one request of the mix."""
    x0, y0, x1, y1 = extent
    lon, lat = rnd.uniform(x0, x1), rnd.uniform(y0, y1)
    u = rnd.random()
    if u < 0.30:
        z = rnd.choice([12, 13, 14])
        tx, ty = _tile(lon, lat, z)
        return "tile", "GET", f"/collections/land_use/tiles/WebMercatorQuad/{z}/{ty}/{tx}", None
    if u < 0.45:
        z = rnd.choice([11, 12, 13])
        tx, ty = _tile(lon, lat, z)
        return "onemap", "GET", f"/tiles/onemap/{z}/{tx}/{ty}.mvt", None
    if u < 0.75:
        d = 0.005
        return "items", "GET", f"/collections/land_use/items?limit=50&bbox={lon},{lat},{lon + d},{lat + d}", None
    if u < 0.85:
        return "catalog", "GET", "/collections", None
    d = 0.004
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return "site", "POST", "/analysis/site-check", {"geometry": {"type": "Polygon", "coordinates": [ring]}}


async def _client(i: int, base: str, key: str | None, extent, until: float, run: Run) -> None:
    rnd = random.Random(1000 + i)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    n = 0
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
        while time.monotonic() < until and not run.stop:
            n += 1
            kind, method, path, body = _request(rnd, extent)
            ua = f"soak/{i}/{n}"
            t = time.monotonic()
            try:
                r = await c.request(method, path, json=body, headers={"User-Agent": ua})
                status: int | str = r.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
                await asyncio.sleep(0.2)  # the server is away: do not spin
            run.samples.append(Sample(ua, kind, method, key is not None, t, time.monotonic(), status))


async def _ingest(base: str, admin: str, layer: str, fname: str, run: Run) -> None:
    t = time.monotonic()
    headers = {"Authorization": f"Bearer {admin}", "User-Agent": f"soak/ingest/{layer}"}
    info = {"layer": layer, "file": fname}
    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        data = (SAMPLE / fname).read_bytes()
        r = await c.post(f"/admin/layers/{layer}/ingest", headers=headers,
                         files={"file": (fname, data)}, data={"mode": "replace", "on_error": "skip"})
        run.samples.append(Sample(headers["User-Agent"], "ingest", "POST", True, t, time.monotonic(), r.status_code))
        info["status"] = r.status_code
        if r.status_code == 202:
            job = r.json()["jobID"]
            for _ in range(600):  # bounded: 10 minutes
                await asyncio.sleep(1)
                try:
                    st = (await c.get(f"/admin/jobs/{job}", headers={"Authorization": f"Bearer {admin}"})).json()
                except (httpx.HTTPError, ValueError):
                    continue
                if st.get("status") in ("successful", "failed", "dismissed"):
                    info.update(job=job, job_status=st["status"], version=st.get("version"),
                                seconds=round(time.monotonic() - t, 1))
                    break
    run.ingests.append(info)


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def _sampler(server: Server, until: float, run: Run) -> None:
    while time.monotonic() < until and not run.stop:
        pid = server.proc.pid
        rss = _rss_mib(pid)
        if rss is not None and server.proc.poll() is None:
            run.rss.append((pid, time.monotonic(), rss))
        await asyncio.sleep(5)


async def _chaos(server: Server, settings, admin: str, t0: float, seconds: float, run: Run) -> None:
    from geobase.db.cluster import LocalCluster

    loop = asyncio.get_running_loop()
    events = sorted([(f, "ingest", (layer, fname)) for f, layer, fname in INGESTS]
                    + [(PG_RESTART_AT, "pg", None), (SERVER_KILL_AT, "kill", None)], key=lambda e: e[0])
    tasks = []
    for frac, what, arg in events:
        delay = t0 + frac * seconds - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if what == "ingest":
            tasks.append(asyncio.create_task(_ingest(server.base, admin, arg[0], arg[1], run)))
        elif what == "pg":
            start = time.monotonic()
            cluster = LocalCluster(settings)
            await loop.run_in_executor(None, cluster.stop, "fast")
            await loop.run_in_executor(None, functools.partial(cluster.start, allow_install=False))
            healthy = await loop.run_in_executor(None, server.wait_healthy)
            run.windows.append(("postgresql restart", start - 1.0, healthy + GRACE_S))
        elif what == "kill":
            start = time.monotonic()
            run.kill_at = start
            server.kill()
            server.start()
            healthy = await loop.run_in_executor(None, server.wait_healthy)
            run.windows.append(("server SIGKILL + restart", start - 1.0, healthy + GRACE_S))
    if tasks:
        await asyncio.gather(*tasks)


async def _soak(server: Server, settings, admin: str, analyst: str, extent, clients: int, seconds: float) -> Run:
    run = Run()
    t0 = run.t0 = time.monotonic()
    until = t0 + seconds
    jobs = [_client(i, server.base, analyst if i % 2 else None, extent, until, run) for i in range(clients)]
    jobs += [_sampler(server, until, run), _chaos(server, settings, admin, t0, seconds, run)]
    await asyncio.gather(*jobs)
    return run


def _in_window(s: Sample, windows) -> bool:
    return any(s.start < b and s.end > a for _, a, b in windows)


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t seconds, MiB) in MiB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(p[0] for p in points) / n
    mr = sum(p[1] for p in points) / n
    den = sum((p[0] - mt) ** 2 for p in points)
    return None if den == 0 else sum((p[0] - mt) * (p[1] - mr) for p in points) / den * 60


def summarise(run: Run, found: set[str], before: dict, after: dict, clients: int, seconds: float) -> dict:
    ok = lambda s: isinstance(s.status, int) and 200 <= s.status < 300
    outside = [s for s in run.samples if not _in_window(s, run.windows)]
    inside = [s for s in run.samples if _in_window(s, run.windows)]
    bad = lambda s: not (ok(s) or s.status in (429, 503))
    errors = [s for s in outside if bad(s)]
    expected = [s for s in run.samples if ok(s) and (s.method != "GET" or s.keyed)]
    lost = [s for s in expected if s.ua not in found]
    # answered just before the kill (received up to 1 s after it): their rows were still queued
    kill_tail = [s for s in lost if run.kill_at is not None and run.kill_at - KILL_TAIL_S <= s.end <= run.kill_at + 1]
    ingested = {i["layer"] for i in run.ingests}
    changed = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t) and t not in ingested)
    ingested_changed = sorted(t for t in ingested if before.get(t) != after.get(t))
    lives = {}
    for pid, t, mib in run.rss:
        lives.setdefault(pid, []).append((t, mib))
    rss = []
    for pid, pts in lives.items():
        half = pts[len(pts) // 2:]
        slope = _slope(half)
        rss.append({"pid": pid, "samples": len(pts), "first_mib": round(pts[0][1], 1),
                    "last_mib": round(pts[-1][1], 1), "max_mib": round(max(p[1] for p in pts), 1),
                    "slope_second_half_mib_per_min": round(slope, 2) if slope is not None else None})
    by_status: dict[str, int] = {}
    for s in run.samples:
        by_status[str(s.status)] = by_status.get(str(s.status), 0) + 1
    by_kind: dict[str, int] = {}
    for s in run.samples:
        by_kind[s.kind] = by_kind.get(s.kind, 0) + 1
    return {
        "clients": clients, "seconds": seconds, "requests": len(run.samples), "by_kind": by_kind,
        "by_status": by_status,
        "windows": [{"event": w, "from_s": round(a - run.t0, 1), "seconds": round(b - a, 1)}
                    for w, a, b in run.windows],
        "errors_outside_windows": len(errors),
        "error_examples": sorted({f"{s.method} {s.kind} {s.status}" for s in errors})[:10],
        "non_429_503_errors_inside_windows": sum(1 for s in inside if bad(s)),
        "audited_expected": len(expected), "audit_rows_found": len(found & {s.ua for s in expected}),
        "audit_rows_lost": len(lost) - len(kill_tail), "audit_rows_lost_with_sigkill": len(kill_tail),
        "lost_examples": [{"ua": s.ua, "kind": s.kind, "method": s.method, "status": s.status,
                           "start_s": round(s.start - run.t0, 2), "end_s": round(s.end - run.t0, 2)}
                          for s in lost[:10]],
        "data_tables_changed_except_ingests": changed, "ingested_tables_changed": ingested_changed,
        "ingests": run.ingests, "rss": rss,
    }


def soak(seconds: float, clients: int) -> dict:
    settings, url, admin, analyst, extent = prepare()
    before = checksums(url)
    port = _free_port()
    server = Server(url, port)
    server.start()
    t_start = time.time()
    try:
        server.wait_healthy()
        run = asyncio.run(_soak(server, settings, admin, analyst, extent, clients, seconds))
    finally:
        server.stop()  # SIGTERM: queued audit rows are flushed before it exits
    after = checksums(url)
    with psycopg.connect(url) as conn:
        found = {r[0] for r in conn.execute(
            "SELECT params->>'user_agent' FROM catalog.audit_log WHERE at >= to_timestamp(%s) - interval '5 s' "
            "AND params->>'user_agent' LIKE 'soak/%%'", (t_start,)).fetchall()}
    return summarise(run, found, before, after, clients, seconds)


def run(ctx) -> None:
    """bench/run.py entry: ``--only soak`` (GEOBASE_SOAK_SECONDS, GEOBASE_SOAK_CLIENTS)."""
    from common import Result

    seconds = float(os.environ.get("GEOBASE_SOAK_SECONDS", "600"))
    clients = int(os.environ.get("GEOBASE_SOAK_CLIENTS", "32"))
    s = soak(seconds, clients)
    print(json.dumps(s, indent=2, ensure_ascii=False))
    extra = {k: s[k] for k in ("clients", "seconds", "requests", "windows", "by_status")}
    ctx.report(Result("soak: non-429/503 errors outside restart windows", s["errors_outside_windows"], None, None,
                      "requests", extra=extra))
    ctx.report(Result("soak: audit rows lost", s["audit_rows_lost"], None, None, "rows",
                      extra={"expected": s["audited_expected"], "lost_with_sigkill": s["audit_rows_lost_with_sigkill"]}))
    ctx.report(Result("soak: data tables changed except ingests", len(s["data_tables_changed_except_ingests"]),
                      None, None, "tables", extra={"ingests": s["ingests"]}))
    slopes = [r["slope_second_half_mib_per_min"] for r in s["rss"] if r["slope_second_half_mib_per_min"] is not None]
    ctx.report(Result("soak: server RSS slope (second half of each life)", max(slopes) if slopes else float("nan"),
                      None, None, "MiB/min", extra={"rss": s["rss"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("GEOBASE_SOAK_SECONDS", "600")))
    ap.add_argument("--clients", type=int, default=int(os.environ.get("GEOBASE_SOAK_CLIENTS", "32")))
    ap.add_argument("--short", action="store_true", help="2 minutes")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args()
    seconds = 120.0 if args.short else args.seconds
    s = soak(seconds, args.clients)
    text = json.dumps(s, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text)
    ok = (s["errors_outside_windows"] == 0 and s["audit_rows_lost"] == 0
          and not s["data_tables_changed_except_ingests"])
    print("soak:", "PASS" if ok else "FAIL", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

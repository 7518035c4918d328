"""A county's delivery into a province (issue 16): what an ingest costs with nine other counties
loaded, what it does to readers of the other counties, and the server's memory meanwhile.

Data: the synthetic province of ``geobase sample generate --counties 10 --parcels-per-county P``
(``P = ctx.parcels / 10``, so ``--parcels`` is the province's parcel count, as in
bench_shards.py), generated once into ``bench/.cache``. Two template databases on the bench
cluster: ``province_empty`` (migrated, no data) and ``province_nine`` (counties 339901-339909's
land use ingested through the CLI); every measurement starts from a fresh copy of a template
(``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY``, untimed), so every round starts from the
same state.

Prepared outside the timed part, once per (scale, seed) and kept across runs: the generated
province (``bench/.cache/province-10x<P>-<seed>``, gitignored) and the two templates (the nine
counties are loaded by ``GEOBASE_BENCH_PROVINCE_LOAD_JOBS`` (default 2) CLI ingests at a time: the
same ingest, only the build is shorter; a template whose nine counties are all there is reused by
the next run). Each round's copies are made by FILE_COPY (a checkpoint and a file copy: the
default WAL_LOG strategy writes a 2M-parcel template's every page to the WAL, minutes per copy).
Only the ingests and the reads are timed; the wall time of each phase (generation, templates,
copies, rounds) is printed and kept in the ingest figure's ``extra["phases_s"]``.

Both sides of (b1) take the same ingest path since session 11: county 339910's first delivery
loads straight into its new partition (ingest/loader.py ``DirectLoad``, its county read from the
file's first row); into the nine it used to go through staging, its rows written twice (1.22x).

Per round (``ctx.rounds``, the order of the two sides alternating from round to round):
  (b1) the CLI ingest of county 339910's DLTB.zip into a copy of ``province_empty`` and into a
       copy of ``province_nine``: wall seconds, ratio province / empty (target <= 1.1). Order
       cannot favour either side: both copies are made (FILE_COPY) before either ingest, and
       each ingest starts right after a CHECKPOINT (untimed), so neither inherits the other's
       dirty buffers, writeback or a checkpoint falling in its run, and both pay a fresh
       checkpoint's full-page images; the side going first alternates (empty first in rounds
       1, 3, ...). ``extra`` keeps each round's order and the ratios of the rounds each side went
       first (an order bias shows as two groups apart);
  (b2) on another copy of ``province_nine`` with a server: ``READERS`` threads read items of
       county 339905 (bbox inside it, ``division=339905``) for ``QUIET_S`` seconds (no ingest),
       then during the same ingest into a copy of ``province_empty`` on the same cluster (the
       control: the same CPU and disk load, no table shared with the readers), then during the
       ingest into their own database; a sampler polls ``pg_stat_activity`` every 20 ms for
       backends waiting on a lock (``wait_event_type = 'Lock'``): the readers' (application
       ``geobase-api``) must be 0; reported: p95 during the ingest / p95 during the control (what
       the province adds: locks, invalidations), and / p95 with no ingest (what 2 shared cores
       add);
  (e)  on a copy of ``province_nine`` with a server: 32 readers of every county's items, and
       the same delivery ingested *through that server* (POST /admin/layers/land_use/ingest:
       the job runs in a child process of the server, geobase/jobs_process.py); the resident
       memory (VmRSS) of the server process and, apart, of the job's process, sampled every
       0.2 s: the maxima (target: no process above 400 MiB).

``GEOBASE_BENCH_PROVINCE_PARTS=ingest,readers,memory`` (default all) runs some parts only;
``GEOBASE_BENCH_PROVINCE_DELIVERY=<DLTB .zip or folder>`` delivers another county (e.g. the
200,000-parcel ``bench/.cache/county-200000-20261122``) instead of county 339910.
Full scale: ``python bench/run.py --only province,province_tabulate,shards,replicas --parcels 2000000``.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
from bench_features import Server
from common import CACHE, PY, Context, Result, free_port, percentile
from province_data import (
    DELIVERED,
    FIRST,
    N_COUNTIES,
    PHASES,
    copy_of,
    drop,
    ingest,
    province,
    template,
    timed_phase,
)

READ = str(FIRST + 4)  # the county the readers read during it
READERS = 8
QUIET_S = 15.0


def server(ctx: Context, url: str, name: str) -> Server:
    port = free_port()
    env = dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(ctx.settings.data_path),
               GEOBASE_LOG_LEVEL="warning", GEOBASE_POOL_MAX_SIZE="20",
               GEOBASE_RATE_LIMIT_PUBLIC_PER_S="1000000", GEOBASE_RATE_LIMIT_PUBLIC_BURST="1000000",
               GEOBASE_RATE_LIMIT_PER_S="1000000", GEOBASE_RATE_LIMIT_BURST="1000000", PORT_FOR_BENCH=str(port))
    return Server([PY, "-m", "geobase.cli", "serve", "--no-prepare", "--port", str(port)], env, "/health",
                  ctx.settings.data_path / f"province-{name}.log")


def county_box(url: str, county: str) -> list[float]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) e FROM data.land_use "
            "WHERE division = %s AND _vto IS NULL) x", (county,)).fetchone())


def readers(base: str, box: list[float], n: int, stop: threading.Event, lat: list, errors: list,
            division: str | None) -> list[threading.Thread]:
    """``n`` threads reading items by a random 0.01° bbox inside ``box`` until ``stop``."""
    def one(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=120) as c:
            while not stop.is_set():
                x, y = rng.uniform(box[0], box[2] - 0.01), rng.uniform(box[1], box[3] - 0.01)
                params = {"bbox": f"{x},{y},{x + 0.01},{y + 0.01}", "limit": 50}
                if division:
                    params["division"] = division
                t0 = time.perf_counter()
                r = c.get("/collections/land_use/items", params=params)
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(r.status_code)
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def lock_sampler(url: str, stop: threading.Event, waits: list) -> threading.Thread:
    """Every 20 ms: the backends of the database waiting on a lock (application, query)."""
    def run() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                waits.extend(conn.execute(
                    "SELECT application_name, wait_event, left(query, 120) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
                    .fetchall())
                time.sleep(0.02)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def tree_processes(pid: int) -> dict[int, tuple[float, bool]]:
    """``{pid: (VmRSS MiB, is a job's child process)}`` of a process and its descendants; a job's
    child is one started by geobase/jobs_process.py (an ingest job since session 10)."""
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            job = b"geobase.jobs_process" in Path(f"/proc/{p}/cmdline").read_bytes()
            out[p] = (next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024, job)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return out


def checkpoint(url: str) -> None:
    """A CHECKPOINT of the cluster (untimed): the next ingest starts with no dirty buffers of an
    earlier step to write back, and pays the full-page images of a fresh checkpoint like the other."""
    with timed_phase("checkpoints"), psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def _ingest_sides(ctx: Context, empty_tpl: str, nine_tpl: str, dltb: Path, first: str) -> dict:
    """One round of (b1): both copies made first (FILE_COPY), then each side's ingest right
    after a CHECKPOINT, ``first`` first; ``{"empty": s, "nine": s, "first": side}``."""
    order = ("empty", "nine") if first == "empty" else ("nine", "empty")
    urls = {side: copy_of(ctx, empty_tpl if side == "empty" else nine_tpl, ctx.db_name(f"province_run_{side}"))
            for side in order}
    out: dict = {"first": first}
    try:
        for side in order:
            checkpoint(urls[side])
            out[side] = ingest(ctx, urls[side], "land_use", dltb)
    finally:
        for url in urls.values():
            drop(url)
    return out


def _readers_round(ctx: Context, nine_tpl: str, empty_tpl: str, dltb: Path) -> dict:
    url = copy_of(ctx, nine_tpl, ctx.db_name("province_run_readers"))
    srv = server(ctx, url, "readers")
    try:
        box = county_box(url, READ)
        got: dict = {}
        for phase in ("quiet", "elsewhere", "ingest"):
            other = copy_of(ctx, empty_tpl, ctx.db_name("province_run_elsewhere")) if phase == "elsewhere" else None
            stop, lat, errors, waits = threading.Event(), [], [], []
            threads = readers(srv.url, box, READERS, stop, lat, errors, READ)
            sampler = lock_sampler(url, stop, waits)
            if phase == "quiet":
                time.sleep(QUIET_S / (3 if ctx.quick else 1))
            else:  # the same ingest into another database (same CPU and disk, no shared table) or this one
                ingest(ctx, other or url, "land_use", dltb)
            stop.set()
            for t in [*threads, sampler]:
                t.join(120)
            got[phase] = {"p95": percentile(lat, 95), "reads": len(lat), "errors": len(errors),
                          "reader_waits": sum(1 for w in waits if w[0] == "geobase-api"), "waits": waits[:5]}
            if other:
                drop(other)
        return got
    finally:
        srv.stop()
        drop(url)


def _memory_round(ctx: Context, nine_tpl: str, dltb: Path) -> dict:
    from geobase import keys

    url = copy_of(ctx, nine_tpl, ctx.db_name("province_run_memory"))
    with psycopg.connect(url) as conn:
        admin = keys.create_key(conn, name="bench", role="admin", department=None).token
        conn.commit()
    srv = server(ctx, url, "memory")
    peak: dict[str, float] = {"reading": 0.0, "ingesting": 0.0, "job": 0.0}
    try:
        stop, lat, errors = threading.Event(), [], []
        box = county_box(url, str(FIRST))
        box[2] = county_box(url, str(FIRST + 8))[2]  # the whole province's span, every county read
        threads = readers(srv.url, box, 32, stop, lat, errors, None)
        phase = "reading"
        t_end = time.monotonic() + 10
        job = None
        with httpx.Client(base_url=srv.url, timeout=600, headers={"X-API-Key": admin}) as c:
            while True:
                procs = tree_processes(srv.proc.pid)
                peak[phase] = max(peak[phase], max((r for r, job in procs.values() if not job), default=0.0))
                peak["job"] = max(peak["job"], max((r for r, job in procs.values() if job), default=0.0))
                if job is None and time.monotonic() > t_end:
                    with open(dltb, "rb") as f:
                        r = c.post("/admin/layers/land_use/ingest", files={"file": ("DLTB.zip", f)},
                                   data={"on_error": "skip"})
                    r.raise_for_status()
                    job, phase = r.json()["links"][0]["href"], "ingesting"
                elif job is not None:
                    r = c.get(job)
                    if r.status_code != 200:  # a busy server's 429/503 to the poll: ask again
                        print(f"  job poll answered {r.status_code}: {r.text[:200]}", flush=True)
                        time.sleep(0.5)
                        continue
                    status = r.json()["status"]
                    if status not in ("accepted", "running"):
                        if status != "successful":
                            raise RuntimeError(f"ingest job ended {status}")
                        break
                time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(120)
        print(f"  memory round: {', '.join(f'{k} {v:.0f} MiB' for k, v in peak.items())}", flush=True)
        return {**peak, "reads": len(lat), "errors": len(errors)}
    finally:
        srv.stop()
        drop(url)


def _delivery(default: Path) -> Path:
    """The county delivered: ``GEOBASE_BENCH_PROVINCE_DELIVERY`` (a .zip, or a folder holding
    DLTB.shp, zipped here) to measure a larger county than the province's, else ``default``."""
    given = os.environ.get("GEOBASE_BENCH_PROVINCE_DELIVERY")
    if not given:
        return default
    path = Path(given)
    if path.is_dir():
        out = CACHE / f"delivery-{path.name}.zip"
        if not out.exists():
            shutil.make_archive(str(out.with_suffix("")), "zip", root_dir=next(path.rglob("DLTB.shp")).parent)
        return out
    return path


def run(ctx: Context) -> None:
    parts = set(os.environ.get("GEOBASE_BENCH_PROVINCE_PARTS", "ingest,readers,memory").split(","))
    counties = [str(FIRST + i) for i in range(N_COUNTIES - 1)]
    PHASES.clear()
    with timed_phase("generation (or the cached province)"):
        province(ctx)
    with timed_phase("templates (or the kept ones)"):
        empty_tpl = template(ctx, "province_empty", [], [])
        nine_tpl = template(ctx, "province_nine", counties, [("land_use", "DLTB.zip", None)])
    dltb = _delivery(province(ctx) / DELIVERED / "DLTB.zip")
    per = max(1000, ctx.parcels // N_COUNTIES)
    rounds: dict[str, list] = {"ingest": [], "readers": [], "memory": []}
    for i in range(ctx.rounds):
        print(f"  round {i + 1}/{ctx.rounds}", flush=True)
        if "ingest" in parts:
            with timed_phase("rounds: ingest part"):
                rounds["ingest"].append(_ingest_sides(ctx, empty_tpl, nine_tpl, dltb,
                                                      "empty" if i % 2 == 0 else "nine"))
        if "readers" in parts:
            with timed_phase("rounds: readers part"):
                rounds["readers"].append(_readers_round(ctx, nine_tpl, empty_tpl, dltb))
        if "memory" in parts:
            with timed_phase("rounds: memory part"):
                rounds["memory"].append(_memory_round(ctx, nine_tpl, dltb))
    _report(ctx, rounds, per)


def _report(ctx: Context, rounds: dict[str, list], per: int) -> None:
    scale = f"{per:,} parcels per county"
    if ri := rounds["ingest"]:
        by_order = {f"ratio_{side}_first": [round(r["nine"] / r["empty"], 3) for r in ri if r["first"] == side]
                    for side in ("empty", "nine")}
        ctx.report(Result.rounds(f"province: ingest of county {DELIVERED} into 9 other counties vs into an empty "
                                 f"database ({scale}; both copies then a CHECKPOINT before each ingest, the side "
                                 "going first alternating; target ratio <= 1.1)",
                                 [r["nine"] for r in ri], [r["empty"] for r in ri], "empty database", "s",
                                 extra={"first": [r["first"] for r in ri], **by_order,
                                        "phases_s": {k: round(v, 1) for k, v in PHASES.items()}}))
    if rr := rounds["readers"]:
        extra = {"non_200": sum(r[p]["errors"] for r in rr for p in r), "reads": sum(r[p]["reads"] for r in rr for p in r)}
        ctx.report(Result.rounds(f"province: items p95 of county {READ} ({READERS} readers) during county "
                                 f"{DELIVERED}'s ingest vs during the same ingest into another database on the "
                                 f"same server (same CPU and disk load, no table shared; {scale}; target: within "
                                 "noise)", [r["ingest"]["p95"] * 1000 for r in rr],
                                 [r["elsewhere"]["p95"] * 1000 for r in rr], "ingest elsewhere", "ms", extra=extra))
        ctx.report(Result.rounds(f"province: items p95 of county {READ} ({READERS} readers) during county "
                                 f"{DELIVERED}'s ingest vs no ingest ({scale}; on 2 shared cores the ingest's CPU "
                                 "slows every reader)", [r["ingest"]["p95"] * 1000 for r in rr],
                                 [r["quiet"]["p95"] * 1000 for r in rr], "no ingest", "ms"))
        waits = [w for r in rr for w in r["ingest"]["waits"]]
        ctx.report(Result("province: readers' lock waits during the ingest (pg_stat_activity every 20 ms; "
                          "target 0)", sum(r["ingest"]["reader_waits"] for r in rr), None, None,
                          f"samples over {len(rr)} rounds", extra={"any_backend_waits_sampled": waits}))
    if rm := rounds["memory"]:
        given = os.environ.get("GEOBASE_BENCH_PROVINCE_DELIVERY")
        what = f"the delivery {Path(given).name}" if given else f"county {DELIVERED} ({scale})"
        ctx.report(Result(f"province: largest server process RSS, 32 readers + an HTTP ingest of {what} into the "
                          "province (target <= 400 MiB; the ingest job's own process apart)",
                          max(r["ingesting"] for r in rm), None, None, "MiB",
                          extra={"per_round_reading_MiB": [round(r["reading"]) for r in rm],
                                 "per_round_ingesting_MiB": [round(r["ingesting"]) for r in rm],
                                 "per_round_job_process_MiB": [round(r["job"]) for r in rm],
                                 "non_200": sum(r["errors"] for r in rm)}))


if __name__ == "__main__":
    sys.exit("run through bench/run.py --only province")

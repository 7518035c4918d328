"""Ingest of the scaled sample land-use layer (DLTB, GBK Shapefile, EPSG:4527) vs ogr2ogr.

ours:     ``geobase ingest land_use DLTB`` in a subprocess, into a fresh database each round:
          reads batches (a plain polygon Shapefile's geometries straight from the .shp and its
          attributes from the .dbf with numpy, GDAL for any other record), maps fields, checks codes/types/validity, reprojects to EPSG:4490
          (+3857), computes ellipsoidal areas and each row's county, hashes rows, COPYs them (a
          first load: into the county's new table inside the version's transaction, each row
          checked against the county by a CHECK constraint), checks keys and stated areas, commits
          the rows in a table no reader sees, builds the indexes of the versioned table (one GiST
          and four btree: current key, key history, first version, row id) in two sessions at
          once (the GiST in one, the b-trees in the other), attaches the county's partition and
          commits a version.
baselines (same file, same database server, same run, no checks, no reprojection, no versions):
  * ogr2ogr tuned — what a competent user runs for a bulk load: ``--config PG_USE_COPY YES``
    (COPY instead of INSERTs), ``-gt unlimited`` (one transaction for the whole load; the
    default is 100,000 rows),
    ``-lco SPATIAL_INDEX=NONE`` and then ``CREATE INDEX ... USING GIST (geom)`` run by us right
    after it and timed as part of it (GDAL 3.6 creates its GiST index before the COPY and
    maintains it row by row; building it once over the loaded table is the usual bulk practice);
  * ogr2ogr default — ``ogr2ogr -f PostgreSQL PG:... -nlt PROMOTE_TO_MULTI`` and nothing else
    (GDAL >= 2 already uses COPY for a new table and groups 100,000 rows per transaction; the
    GiST index is created before the load), what the manual's first example does.
  Both also get ``-nlt PROMOTE_TO_MULTI`` (a DLTB mixes Polygon and MultiPolygon) and
  ``-lco GEOMETRY_NAME=geom``, and write into a database of their own on the same server
  (``geobase_bench_ingest_ogr_<parcels>``; the previous round's table is dropped untimed).

They run interleaved (ours, tuned, ours, default) for ``ctx.rounds`` rounds, so each ratio has
its own measurements of ours; each is printed with the min/median/max of its per-round
ratios. Also prints our peak RSS (target < 1 GiB at 2M parcels) and the row counts of all
three (they must agree; a warning is printed when they do not).

CPU seconds beside wall time: on a machine whose cores are busy with other work a load's wall
time is mostly its CPU time times the contention, and both sides use two processes (the client
and its PostgreSQL backend; ours also a reader and a writer thread), so the wall ratio moves
with the load. Each side's CPU seconds (the client's rusage, children included, plus the CPU of
every backend of its database, read from ``/proc/<pid>/stat`` while it runs; the bench's own
watching connection excluded) give a second ratio that moves less: ``cpu ratio`` in the extra.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import psycopg
from common import PY, Context, Result, interleaved
from psycopg import sql

DB = "geobase_bench_ingest"
OGR_DB = "geobase_bench_ingest_ogr"  # ogr2ogr's tables live apart: our database is new each round
OGR2OGR = shutil.which("ogr2ogr") or "/usr/bin/ogr2ogr"


def _fresh_database(ctx: Context) -> tuple[str, object]:
    """A new, migrated, empty database for one of our loads (a first load each round)."""
    base = ctx.database()
    from geobase.db import database_url, prepare_database

    name = ctx.db_name(DB)
    root = database_url(base).rsplit("/", 1)[0]
    with psycopg.connect(f"{root}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    settings = base.model_copy(update={"database_url": f"{root}/{name}"})
    prepare_database(settings, start_local=False)
    return f"{root}/{name}", settings


def _dltb(county) -> str:
    for cand in (county / "DLTB" / "DLTB.shp", county / "DLTB.shp", county / "DLTB.zip"):
        if cand.exists():
            return str(cand)
    raise FileNotFoundError(f"no DLTB in {county}")


class BackendCpu:
    """CPU seconds of every backend of database ``url`` (parallel workers included) while it
    is watched: each backend's utime + stime from /proc, polled, its last value kept."""

    def __init__(self, url: str):
        self.url, self.cpu, self.stop = url, {}, threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                           "AND pid <> pg_backend_pid()").fetchall():
                    try:
                        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                        self.cpu[pid] = (int(f[11]) + int(f[12])) / self.tick
                    except (OSError, IndexError, ValueError):
                        pass
                self.stop.wait(0.03)

    def seconds(self) -> float:
        self.stop.set()
        self.thread.join()
        return sum(self.cpu.values())


def _measure(cmd: list[str], env: dict) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MiB, VmHWM polled) and CPU seconds (rusage) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, status, usage = 0.0, None, None
    while status is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
        pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status, usage = os.waitstatus_to_exitcode(st), ru
        else:
            time.sleep(0.05)
    proc.returncode = status
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({status}): {proc.stderr.read().decode()[-2000:]}")
    return wall, peak, usage.ru_utime + usage.ru_stime


def _pg(url: str) -> str:
    dsn = psycopg.conninfo.conninfo_to_dict(url)
    return " ".join(f"{k}={v}" for k, v in {"dbname": dsn.get("dbname"), "host": dsn.get("host", "127.0.0.1"),
                                             "port": dsn.get("port", "5432"), "user": dsn.get("user")}.items() if v)


def _ogr2ogr(url: str, src: str, table: str, tuned: bool, cpu: list[float]) -> float:
    """Seconds of one ogr2ogr load into ``bench_ogr.<table>`` (tuned: plus its CREATE INDEX);
    its CPU seconds (ogr2ogr's and its backends') appended to ``cpu``."""
    with psycopg.connect(url, autocommit=True) as conn:  # untimed: the previous round's table
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench_ogr")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("bench_ogr", table)))
    cmd = [OGR2OGR, "-f", "PostgreSQL", f"PG:{_pg(url)}", src, "-nln", f"bench_ogr.{table}", "-overwrite",
           "-nlt", "PROMOTE_TO_MULTI", "-lco", "GEOMETRY_NAME=geom"]
    if tuned:
        cmd += ["--config", "PG_USE_COPY", "YES", "-gt", "unlimited", "-lco", "SPATIAL_INDEX=NONE"]
    backends = BackendCpu(url)
    t0 = time.perf_counter()
    _wall, _peak, client = _measure(cmd, dict(os.environ))
    if tuned:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE INDEX ON {} USING gist (geom)").format(sql.Identifier("bench_ogr", table)))
    wall = time.perf_counter() - t0
    cpu.append(client + backends.seconds())
    return wall


def run(ctx: Context) -> None:
    county = ctx.county()
    src = _dltb(county)
    peaks: list[float] = []
    state: dict = {}
    cpu: dict[str, list[float]] = {"ours_a": [], "ours_b": [], "tuned": [], "default": []}

    def ours(side: str) -> float:
        url, settings = _fresh_database(ctx)  # untimed: a first load each round
        state["url"] = url
        env = dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(settings.data_dir))
        backends = BackendCpu(url)
        wall, peak, client = _measure([PY, "-m", "geobase.cli", "ingest", "land_use", src, "--json", "--on-error",
                                       "skip"], env)
        cpu[side].append(client + backends.seconds())
        peaks.append(peak)
        return wall

    ogr_url = ctx.named_database(OGR_DB)
    # one measurement of ours per ratio: ours, tuned, ours, default in each round
    times = interleaved(ctx.rounds, {"ours_a": lambda: ours("ours_a"),
                                     "tuned": lambda: _ogr2ogr(ogr_url, src, "dltb_tuned", True, cpu["tuned"]),
                                     "ours_b": lambda: ours("ours_b"),
                                     "default": lambda: _ogr2ogr(ogr_url, src, "dltb_default", False, cpu["default"])})
    with psycopg.connect(state["url"]) as conn:
        rows = conn.execute("SELECT count(*) FROM data.land_use WHERE _vto IS NULL").fetchone()[0]
    with psycopg.connect(ogr_url) as conn:
        tuned_rows = conn.execute("SELECT count(*) FROM bench_ogr.dltb_tuned").fetchone()[0]
        default_rows = conn.execute("SELECT count(*) FROM bench_ogr.dltb_default").fetchone()[0]
    counts = {"rows_ours": rows, "rows_ogr2ogr_tuned": tuned_rows, "rows_ogr2ogr_default": default_rows}
    if not rows == tuned_rows == default_rows:
        print(f"bench_ingest: WARNING row counts differ {counts}", flush=True)
    name = f"ingest land_use ({rows:,} parcels) wall time"
    ctx.report(Result.rounds(f"{name} vs tuned ogr2ogr", times["ours_a"], times["tuned"],
                             "ogr2ogr PG_USE_COPY=YES -gt unlimited SPATIAL_INDEX=NONE + CREATE INDEX gist", "s",
                             extra={"peak_rss_mib": round(max(peaks), 1), **_cpu_extra(cpu["ours_a"], cpu["tuned"]),
                                    **counts}))
    ctx.report(Result.rounds(f"{name} vs default ogr2ogr", times["ours_b"], times["default"],
                             "ogr2ogr defaults (COPY, -gt 100000, GiST before load)", "s",
                             extra={**_cpu_extra(cpu["ours_b"], cpu["default"]), **counts}))


def _cpu_extra(ours: list[float], baseline: list[float]) -> dict:
    """CPU seconds of both sides per round and the min/median/max of the per-round ratios."""
    ratios = sorted(o / b for o, b in zip(ours, baseline) if b)
    spread = [round(ratios[0], 2), round(statistics.median(ratios), 2), round(ratios[-1], 2)] if ratios else None
    return {"cpu_s_ours": [round(v, 2) for v in ours], "cpu_s_baseline": [round(v, 2) for v in baseline],
            "cpu_ratio_min_median_max": spread}

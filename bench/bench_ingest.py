"""Ingest of the scaled sample land-use layer (DLTB, GBK Shapefile, EPSG:4527) vs ogr2ogr.

ours:     ``geobase ingest land_use DLTB`` in a subprocess: reads arrow batches, maps fields, checks
          codes/types/validity, reprojects to EPSG:4490 (+3857), computes ellipsoidal areas,
          hashes rows, COPYs them (a first load: straight into the layer table inside the
          version's transaction), checks keys and stated areas, commits a version and builds
          the indexes of the versioned table (one GiST, three btree).
baseline: ``ogr2ogr -f PostgreSQL PG:... -gt 65536 -nlt PROMOTE_TO_MULTI`` with PG_USE_COPY=YES and a
          GiST spatial index (no checks, no reprojection, no versions) of the same file into the
          same database, in the same run.

Prints wall time of both, the ratio (target <= 1.0) and our peak RSS (target < 2 GiB).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import psycopg
from common import PY, Context, Result
from psycopg import sql

DB = "geobase_bench_ingest"
OGR2OGR = shutil.which("ogr2ogr") or "/usr/bin/ogr2ogr"


def _fresh_database(ctx: Context) -> tuple[str, object]:
    base = ctx.database()
    from geobase.db import database_url, prepare_database

    root = database_url(base).rsplit("/", 1)[0]
    with psycopg.connect(f"{root}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    settings = base.model_copy(update={"database_url": f"{root}/{DB}"})
    prepare_database(settings, start_local=False)
    return f"{root}/{DB}", settings


def _dltb(county) -> str:
    for cand in (county / "DLTB" / "DLTB.shp", county / "DLTB.shp", county / "DLTB.zip"):
        if cand.exists():
            return str(cand)
    raise FileNotFoundError(f"no DLTB in {county}")


def _measure(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, VmHWM polled) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while proc.poll() is None:
        try:
            for line in open(f"/proc/{proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return wall, peak


def run(ctx: Context) -> None:
    county = ctx.county()
    src = _dltb(county)
    url, settings = _fresh_database(ctx)
    env = dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(settings.data_dir))
    ours, peak = _measure([PY, "-m", "geobase.cli", "ingest", "land_use", src, "--json", "--on-error", "skip"], env)
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM data.land_use WHERE _vto IS NULL").fetchone()[0]
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench_ogr")
        conn.commit()
    dsn = psycopg.conninfo.conninfo_to_dict(url)
    pg = " ".join(f"{k}={v}" for k, v in {"dbname": dsn.get("dbname"), "host": dsn.get("host", "127.0.0.1"),
                                            "port": dsn.get("port", "5432"), "user": dsn.get("user")}.items() if v)
    ogr_env = dict(os.environ, PG_USE_COPY="YES")
    ogr, _ = _measure([OGR2OGR, "-f", "PostgreSQL", f"PG:{pg}", src, "-nln", "bench_ogr.dltb", "-overwrite",
                       "-gt", "65536", "-nlt", "PROMOTE_TO_MULTI", "-lco", "SPATIAL_INDEX=GIST",
                       "-lco", "GEOMETRY_NAME=geom"], ogr_env)
    with psycopg.connect(url) as conn:
        ogr_rows = conn.execute("SELECT count(*) FROM bench_ogr.dltb").fetchone()[0]
    ctx.report(Result(f"ingest land_use ({rows:,} parcels) wall time", round(ours, 2), round(ogr, 2),
                      "ogr2ogr -gt 65536 PG_USE_COPY", "s", extra={"peak_rss_mib": round(peak, 1),
                                                                     "rows_ours": rows, "rows_ogr2ogr": ogr_rows}))
    print(f"bench_ingest: ours {ours:.1f} s, ogr2ogr {ogr:.1f} s, ratio {ours / ogr:.2f}, "
          f"peak RSS {peak:.0f} MiB ({rows:,} vs {ogr_rows:,} rows)", flush=True)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--parcels", type=int, default=1_000_000)
    a = ap.parse_args()
    run(Context(a.parcels))

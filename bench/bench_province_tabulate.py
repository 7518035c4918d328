"""The province tabulation (issue 16): land use x planning zones over every county of the
synthetic province, on PostGIS (geobase's tabulation over the county-partitioned tables, what
``POST /analysis/tabulate`` runs, nothing kept between runs), on Apache Sedona (SedonaDB, local:
``geobase analysis tabulate --engine sedona``, GeoParquet exports of the current versions
included) and on geopandas (the layers read from PostGIS, ``overlay(how="intersection")``,
areas with pyproj's Geod(GRS80), groupby), interleaved for ``ctx.rounds`` rounds.

Sedona's table must equal PostGIS's: the same (land use class, zone class, pieces) cells and
every area within 1e-9 of PostGIS's (or 1e-4 m², PostGIS's own rounding on tiny pieces, as
tests/interop_sedona checks); the number of cells that differ is printed (target 0).

Data: the database ``province_tab`` holds the 10 counties' land use (DLTB) and planning zones
(GHFQ) of bench_province.py's generated province, ingested through the CLI once.
Full scale (10 x 200,000 parcels): ``python bench/run.py --only province_tabulate --parcels 2000000``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

import psycopg
from common import Context, Result
from province_data import FIRST, N_COUNTIES, copy_of, template

REL, ABS_M2 = 1e-9, 1e-4


def _database(ctx: Context) -> str:
    """``province_tab``: the nine counties' template copied once, then completed."""
    counties = [str(FIRST + i) for i in range(N_COUNTIES)]
    nine = template(ctx, "province_nine", counties[:-1], [("land_use", "DLTB.zip", None)])
    name = ctx.db_name("province_tab")
    root = nine.rsplit("/", 1)[0]
    with psycopg.connect(f"{root}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if not exists:
        copy_of(ctx, nine, name)
    return template(ctx, "province_tab", counties, [("land_use", "DLTB.zip", None),
                                                     ("planning_zones", "planning.gdb.zip", "GHFQ")])


def _engine(url: str, settings, engine: str) -> dict:
    """One tabulation of the whole province by ``engine`` (postgis | sedona)."""
    from geobase.security import Principal, visible_layers
    from geobase.specs import get_registry

    operator = Principal(name="bench", role="admin", key_id="bench")

    async def go() -> dict:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            registry = get_registry(settings)
            vis = await visible_layers(conn, operator, registry)
            if engine == "postgis":
                from geobase.analysis import tabulate

                return await tabulate(conn, registry, vis, "land_use", "planning_zones", principal=operator,
                                      reuse=False)
            from geobase.analysis.engines import sedona

            with tempfile.TemporaryDirectory(dir=settings.data_path) as tmp:
                return await sedona.tabulate(conn, settings, registry, vis, "land_use", "planning_zones",
                                             principal=operator, workdir=tmp)
    return asyncio.run(go())


def _geopandas(url: str) -> float:
    """Total m² of the geopandas tabulation, layers read from PostGIS (timed by the caller)."""
    from bench_analysis import _frames
    from bench_analysis import _geopandas as overlay

    return overlay(_frames(url))[1]


def differences(pg: dict, sd: dict) -> list:
    """The cells of two tabulations that differ (classes, pieces, or area beyond 1e-9 / 1e-4 m²)."""
    key = lambda c: (c["a"], c["b"])
    p, s = {key(c): c for c in pg["cells"]}, {key(c): c for c in sd["cells"]}
    out = [k for k in p.keys() ^ s.keys()]
    for k in p.keys() & s.keys():
        if p[k]["pieces"] != s[k]["pieces"] or abs(p[k]["m2"] - s[k]["m2"]) > REL * p[k]["m2"] + ABS_M2:
            out.append((k, p[k]["pieces"], s[k]["pieces"], p[k]["m2"], s[k]["m2"]))
    return out


def run(ctx: Context) -> None:
    url = _database(ctx)
    settings = ctx.settings.model_copy(update={"database_url": url})
    per = max(1000, ctx.parcels // N_COUNTIES)
    times: dict[str, list[float]] = {"postgis": [], "sedona": [], "geopandas": []}
    diffs, totals = [], {}
    for i in range(ctx.rounds):
        print(f"  round {i + 1}/{ctx.rounds}", flush=True)
        order = ["postgis", "sedona", "geopandas"]
        for side in order[i % 3:] + order[:i % 3]:  # each side first in one round of three
            t0 = time.perf_counter()
            if side == "geopandas":
                totals[side] = _geopandas(url)
            else:
                totals[side] = _engine(url, settings, side)
            times[side].append(time.perf_counter() - t0)
        diffs.append(differences(totals["postgis"], totals["sedona"]))
        print(f"    {', '.join(f'{k} {v[-1]:.1f}s' for k, v in times.items())}; sedona cells differing: "
              f"{len(diffs[-1])}", flush=True)
    pg = totals["postgis"]
    name = f"province tabulation land_use x planning_zones ({N_COUNTIES} counties x {per:,} parcels)"
    ctx.report(Result.rounds(f"{name}: PostGIS vs Sedona local", times["postgis"], times["sedona"],
                             "Sedona (SedonaDB, GeoParquet export included)", "s",
                             extra={"cells": len(pg["cells"]), "total_m2": pg["total"]["m2"]}))
    ctx.report(Result.rounds(f"{name}: PostGIS vs geopandas", times["postgis"], times["geopandas"],
                             "geopandas overlay (read from PostGIS included)", "s",
                             extra={"geopandas_total_m2": totals["geopandas"],
                                    "total_rel_diff": abs(totals["geopandas"] - pg["total"]["m2"]) / pg["total"]["m2"]}))
    ctx.report(Result(f"{name}: Sedona cells differing from PostGIS (classes, pieces, area 1e-9)",
                      max(len(d) for d in diffs), None, None, f"of {len(pg['cells'])} cells, worst round",
                      extra={"examples": [str(x) for x in diffs[-1][:5]]}))


if __name__ == "__main__":
    sys.exit("run through bench/run.py --only province_tabulate")

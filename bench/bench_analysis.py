"""Overlay analysis: county-wide land use x planning zones tabulation and the site check.

Data (loaded with SQL into its own database on the bench cluster, storage layout of geobase):
  * land_use: ``ctx.parcels`` parcels, a grid of ~50 m cells with 20-vertex rings and the
    precomputed ellipsoidal ``_area_m2`` (as the ingest stores it), 10 land-use classes;
  * planning_zones: a coverage of the same extent by ~2 km zones with densified edges (~1,600
    vertices each) offset against the parcel grid, so ~5 % of the parcels straddle a boundary;
  * control_lines: red line, basic farmland and urban boundary patches.

Measured in the same run on the same data:
  (a) whole-county tabulation: ours (``analysis.tabulate``: ST_CoveredBy shortcut to the stored
      area, two connections over halves of the parcels) vs the plain single query
      (ST_Intersection joined on ST_Intersects, GROUP BY) and vs geopandas.overlay + Geod(GRS80)
      areas of the pieces (data already in memory; reading it is not timed). Totals agree.
  (b) site check of a 5 km² site against all layers (service call on one connection, 20
      random sites): p95 latency.

``GEOBASE_BENCH_ANALYSIS_PARTS=site`` (or ``tabulate``) runs one part only.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time

import psycopg
from common import Context, Result, percentile
from psycopg import sql

DB = "geobase_bench_analysis"
CELL = 0.0005  # degrees (~50 m)
LON0, LAT0 = 118.0, 29.0
ZONE = 0.0203  # degrees; not a multiple of CELL, so zone edges cut parcels


def _database(ctx: Context) -> str:
    """URL of this benchmark's own database on the bench server."""
    return ctx.named_database(DB)


def _load(url: str, parcels: int) -> tuple[float, float, float, float]:
    side = int(math.ceil(math.sqrt(parcels)))
    extent = (LON0, LAT0, LON0 + side * CELL, LAT0 + side * CELL)
    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("SELECT rows_total FROM catalog.layer_versions WHERE layer = 'land_use' AND version = 1").fetchone()
        if have and have[0] == parcels:
            return extent
        print(f"bench analysis: loading {parcels:,} parcels ...", flush=True)
        t0 = time.perf_counter()
        for layer in ("land_use", "planning_zones", "control_lines"):
            conn.execute("DELETE FROM catalog.layer_versions WHERE layer = %s", (layer,))
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier("data", layer)))
        step = 200_000
        for lo in range(0, parcels, step):
            hi = min(parcels, lo + step) - 1
            conn.execute(
                """
                INSERT INTO data.land_use (_key, _hash, _vfrom, bsm, dlbm, _area_m2, geom, geom_3857)
                SELECT k, md5(k), 1, k, c, ST_Area(g::geography), g, ST_Transform(g, 3857)
                FROM (SELECT lpad(i::text, 18, '0') AS k,
                             (ARRAY['0101','0102','0103','0201','0301','0305','0404','0702','1001','1101'])[i %% 10 + 1] AS c,
                             ST_Multi(ST_Segmentize(ST_MakeEnvelope(%(x0)s + (i %% %(side)s) * %(d)s,
                                                                    %(y0)s + (i / %(side)s) * %(d)s,
                                                                    %(x0)s + (i %% %(side)s + 1) * %(d)s,
                                                                    %(y0)s + (i / %(side)s + 1) * %(d)s, 4490),
                                                    %(d)s / 5)) AS g
                      FROM generate_series(%(lo)s, %(hi)s) i) s
                """, {"x0": LON0, "y0": LAT0, "d": CELL, "side": side, "lo": lo, "hi": hi})
        conn.execute(
            """
            INSERT INTO data.planning_zones (_key, _hash, _vfrom, bsm, ghfqdm, _area_m2, geom, geom_3857)
            SELECT k, md5(k), 1, k, c, ST_Area(g::geography), g, ST_Transform(g, 3857)
            FROM (SELECT 'Z' || ix || '_' || iy AS k,
                         (ARRAY['010','020','030','041','042','051','052','053'])[(ix * 7 + iy * 3) %% 8 + 1] AS c,
                         ST_Multi(ST_Segmentize(ST_MakeEnvelope(
                             greatest(%(x0)s, %(x0)s + (ix - 0.37) * %(z)s), greatest(%(y0)s, %(y0)s + (iy - 0.37) * %(z)s),
                             least(%(x1)s, %(x0)s + (ix + 0.63) * %(z)s), least(%(y1)s, %(y0)s + (iy + 0.63) * %(z)s), 4490),
                             0.00005)) AS g
                  FROM generate_series(0, ceil((%(x1)s - %(x0)s) / %(z)s)::int) ix,
                       generate_series(0, ceil((%(y1)s - %(y0)s) / %(z)s)::int) iy) s
            WHERE NOT ST_IsEmpty(g) AND ST_Area(g) > 0
            """, {"x0": extent[0], "y0": extent[1], "x1": extent[2], "y1": extent[3], "z": ZONE})
        w, h = extent[2] - extent[0], extent[3] - extent[1]
        lines = [("STBHHX", 0.10, 0.10, 0.25, 0.20), ("YJJBNT", 0.40, 0.40, 0.60, 0.55), ("CZKFBJ", 0.50, 0.00, 1.00, 0.45),
                 ("YJJBNT", 0.05, 0.60, 0.30, 0.90)]
        for i, (kind, a, b, c, d) in enumerate(lines):
            conn.execute(
                """INSERT INTO data.control_lines (_key, _hash, _vfrom, bsm, kind, _area_m2, geom, geom_3857)
                   SELECT %(k)s, md5(%(k)s), 1, %(k)s, %(kind)s, ST_Area(g::geography), g, ST_Transform(g, 3857)
                   FROM (SELECT ST_Multi(ST_Segmentize(ST_MakeEnvelope(%(a)s, %(b)s, %(c)s, %(d)s, 4490), 0.0001)) g) s""",
                {"k": f"KZX{i}", "kind": kind, "a": extent[0] + a * w, "b": extent[1] + b * h, "c": extent[0] + c * w,
                 "d": extent[1] + d * h})
        for layer, n in (("land_use", parcels), ("planning_zones", 0), ("control_lines", len(lines))):
            conn.execute("INSERT INTO catalog.layer_versions (layer, version, mode, rows_total) VALUES (%s, 1, 'replace', %s)",
                         (layer, n))
            conn.execute("UPDATE catalog.layers SET current_version = 1 WHERE name = %s", (layer,))
        conn.execute("VACUUM ANALYZE data.land_use")
        conn.execute("VACUUM ANALYZE data.planning_zones")
        conn.execute("VACUUM ANALYZE data.control_lines")
        print(f"bench analysis: loaded in {time.perf_counter() - t0:.1f}s", flush=True)
    return extent


PLAIN = """
SELECT a.dlbm, b.ghfqdm, sum(ST_Area(ST_Intersection(a.geom, b.geom)::geography))
FROM data.land_use a JOIN data.planning_zones b ON ST_Intersects(a.geom, b.geom)
WHERE a._vto IS NULL AND b._vto IS NULL
GROUP BY 1, 2
"""


def _geopandas(url: str) -> tuple[float, float]:
    """(seconds for overlay + Geod areas, total m²) with the layers already in memory."""
    import geopandas as gpd
    import shapely
    from pyproj import Geod

    geod = Geod(ellps="GRS80")
    with psycopg.connect(url) as conn:
        frames = []
        for layer, col in (("land_use", "dlbm"), ("planning_zones", "ghfqdm")):
            rows = conn.execute(f"SELECT {col}, ST_AsBinary(geom) FROM data.{layer} WHERE _vto IS NULL").fetchall()
            frames.append(gpd.GeoDataFrame({col: [r[0] for r in rows]},
                                           geometry=shapely.from_wkb([bytes(r[1]) for r in rows]), crs=4490))
    lu, pz = frames
    t0 = time.perf_counter()
    ov = gpd.overlay(lu, pz, how="intersection", keep_geom_type=True)
    areas = [abs(geod.geometry_area_perimeter(g)[0]) for g in ov.geometry.values]
    ov["m2"] = areas
    table = ov.groupby(["dlbm", "ghfqdm"])["m2"].sum()
    return time.perf_counter() - t0, float(table.sum())


def run(ctx: Context) -> None:
    from geobase import analysis
    from geobase.specs import get_registry

    url = _database(ctx)
    extent = _load(url, ctx.parcels)
    settings = ctx.settings.model_copy(update={"database_url": url})
    reg = get_registry(settings)
    vis = list(reg.layers.values())

    async def ours() -> tuple[float, dict]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            t0 = time.perf_counter()
            res = await analysis.tabulate(conn, reg, vis, "land_use", "planning_zones", conninfo=url, workers=2)
            return time.perf_counter() - t0, res

    parts = set(os.environ.get("GEOBASE_BENCH_ANALYSIS_PARTS", "tabulate,site").split(","))
    if "tabulate" in parts:
        _tabulate(ctx, url, reg, vis, ours)
    if "site" in parts:
        _site_checks(ctx, url, settings, reg, vis, extent)


def _tabulate(ctx: Context, url: str, reg, vis, ours) -> None:
    t_ours, res = asyncio.run(ours())
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        plain_rows = conn.execute(PLAIN).fetchall()
        t_plain = time.perf_counter() - t0
    plain_total = sum(float(r[2]) for r in plain_rows)
    agree = abs(res["total"]["m2"] - plain_total) / plain_total
    ctx.report(Result("analysis tabulate land_use x planning_zones (whole county)", t_ours, t_plain,
                      "plain ST_Intersection join + GROUP BY", "s",
                      extra={"parcels": ctx.parcels, "cells": len(res["cells"]), "rel_diff_total": agree}))
    if ctx.parcels <= 2_000_000:
        t_gpd, gpd_total = _geopandas(url)
        ctx.report(Result("analysis tabulate vs geopandas", t_ours, t_gpd, "geopandas.overlay + Geod areas", "s",
                          extra={"rel_diff_total": abs(res["total"]["m2"] - gpd_total) / gpd_total}))



def _site_checks(ctx: Context, url: str, settings, reg, vis, extent) -> None:
    """(b) site check of a 5 km² site against all layers."""
    from geobase import analysis
    from geobase.analysis.input import parse_geojson

    rng = random.Random(ctx.seed)
    lat_side = math.sqrt(5e6) / 110_900
    lon_side = lat_side / math.cos(math.radians(LAT0 + (extent[3] - extent[1]) / 2))
    sites = []
    for _ in range(20):
        x = rng.uniform(extent[0], max(extent[0], extent[2] - lon_side))
        y = rng.uniform(extent[1], max(extent[1], extent[3] - lat_side))
        sites.append({"type": "Polygon", "coordinates": [[[x, y], [x + lon_side, y], [x + lon_side, y + lat_side],
                                                          [x, y + lat_side], [x, y]]]})

    async def site_checks() -> list[float]:
        times = []
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            # untimed: a new backend's first PostGIS/PROJ use (the server's pool pays it when it
            # opens a connection, see api/app.py WARM_UP_SQL)
            await analysis.site_check(conn, reg, vis, parse_geojson(sites[-1], settings))
            for i, g in enumerate(sites):
                t0 = time.perf_counter()
                site = parse_geojson(g, settings)
                r = await analysis.site_check(conn, reg, vis, site)
                times.append(time.perf_counter() - t0)
                if i == 0:
                    print(f"bench analysis: site check {site.area_m2 / 1e6:.2f} km², "
                          f"{r['layers']['land_use']['features']} parcels, verdict {r['verdict']}", flush=True)
        return times

    times = asyncio.run(site_checks())
    ctx.report(Result("analysis site check 5 km² (p95)", percentile(times, 95) * 1000, None, None, "ms",
                      extra={"median_ms": round(percentile(times, 50) * 1000, 1), "runs": len(times),
                             "target_ms": 300}))

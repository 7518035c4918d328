"""Overlay analysis: county-wide land use x planning zones tabulation and the site check.

Data (loaded with SQL into its own database on the bench cluster, storage layout of geobase):
  * land_use: ``ctx.parcels`` parcels, a grid of ~50 m cells with 20-vertex rings and the
    precomputed ellipsoidal ``_area_m2`` (as the ingest stores it), 10 land-use classes;
  * planning_zones: a coverage of the same extent by ~2 km zones with densified edges (~1,600
    vertices each) offset against the parcel grid, so ~5 % of the parcels straddle a boundary;
  * control_lines: red line, basic farmland and urban boundary patches.

Measured in the same run on the same data:
  (a) whole-county tabulation land_use x planning_zones. Ours: ``POST /analysis/tabulate`` on
      our server (one uvicorn worker), timed by the client until the whole answer is in. The
      service splits a county-wide table by zone over one session per core (:data:`SESSIONS`,
      2 here: its own connection and one that imports its snapshot). Our server keeps a table it computed, filed under
      the exact state of the two layer versions (geobase/analysis/reuse.py), so three figures
      of ours are printed, never mixed:
      * cold — the server restarted (untimed, then one untimed tabulation of a tiny area for
        the pool and PROJ), no table kept for these versions: the table computed from the rows,
        on the zones' subdivided pieces (geobase/analysis/pieces.py ``pieces_sql``). The answer
        must say ``"reuse": "computed"``. The zones' subdivision and their halos (the zones
        clipped to the cells of a grid, for the boundary parcels) are kept in the database per
        zone version (geobase/analysis/subdivision.py: cut once per zone version, like an
        index; an untimed tabulation before the rounds makes sure they exist), so a cold run
        reads them instead of cutting the zones. This is the figure the targets are about;
      * first-ever — cold, and the kept subdivision and halos dropped too (untimed): the run
        cuts and keeps the zones' pieces and halos, as the first tabulation of a new zone
        version does (it clips its own halos as well: its snapshot cannot see the kept ones);
      * warm — the same request again (the same versions): the kept table (``"kept"``);
      * changed — after a new land-use version that reclassifies 1 % of the parcels (made
        with SQL, untimed, as an annual change survey delivers it): the kept table of the
        previous version corrected by the rows the version retired and added (``"corrected"``).
      Baselines, each in the same interleaved rounds (cold, textbook, cold, best, cold,
      geopandas, warm, best, changed, best; ``ctx.rounds`` rounds), so every ratio has its own
      measurements of ours and a busy machine slows both sides alike:
      * textbook SQL — ST_Intersection joined on ST_Intersects, ellipsoidal areas, GROUP BY:
        what the PostGIS manual and most answers show; PostgreSQL's own parallel query
        (max_parallel_workers_per_gather 2, the default) spreads it over the cores;
      * best hand-written SQL — what an expert writes for the exact table: zones cut with
        ST_Subdivide (<= 128 vertices a piece, done inside the timed query, indexable by a GiST
        built there too) to find the pairs, the stored ellipsoidal ``_area_m2`` of a parcel
        lying wholly inside a piece (ST_CoveredBy) reused, the other pairs measured on the whole
        geometries; split by zone over the same :data:`SESSIONS` sessions as ours, run at the
        same time (temp tables keep PostgreSQL from parallelising it itself, so an expert on
        a multi-core server splits it by hand). (Measuring on the pieces is faster and wrong by
        up to 4e-7 of a cell: see ``BEST``.) Ours adds what one statement cannot keep: box
        pieces decided by their box, and boundary pairs measured against small halos of the
        zone (geobase/analysis/pieces.py); and it keeps its table and pieces between queries,
        which the warm and changed figures measure (the warm figure is a look-up, not the
        tabulation's speed: the cold figure is), and the zones' pieces per zone version in the
        database, which the first-ever figure builds in the timed run;
      * geopandas.overlay(how="intersection") + Geod(GRS80) areas of the pieces + groupby, on
        both layers already in memory (reading them is not timed: the most favourable setup
        for geopandas), up to 2M parcels; one core (geopandas has no parallel overlay), against
        ours on :data:`SESSIONS`.
      Every side's table is compared with ours cell by cell: the same classes, every area equal
      to 1e-9 of the cell (the largest relative difference printed); the run fails otherwise.
  (b) site check of a 5 km² site against all layers (``POST /analysis/site-check`` on the same
      server, 20 random sites, sequential): p95 latency (no competitor runs this check).

``GEOBASE_BENCH_ANALYSIS_PARTS=site`` (or ``tabulate``) runs one part only;
``GEOBASE_BENCH_ANALYSIS_BASELINES=best`` (comma-separated among textbook, best, geopandas)
leaves out the slow baselines while iterating.
"""

from __future__ import annotations

import math
import os
import random
import time

import httpx
import psycopg
from common import Context, Result, interleaved, percentile
from psycopg import sql

DB = "geobase_bench_analysis"
CELL = 0.0005  # degrees (~50 m)
LON0, LAT0 = 118.0, 29.0
ZONE = 0.0203  # degrees; not a multiple of CELL, so zone edges cut parcels


def _database(ctx: Context) -> str:
    """URL of this benchmark's own database on the bench server."""
    return ctx.named_database(DB)


def _load(url: str, parcels: int) -> tuple[float, float, float, float]:
    side = math.ceil(math.sqrt(parcels))
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
                      FROM generate_series(%(lo)s::int, %(hi)s::int) i) s
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

# the best hand-written PostGIS that gives the exact (whole-geometry) table: subdivided zones
# find the pairs (small pieces: cheap intersects, tight index boxes), a parcel lying wholly
# inside a piece takes its stored ellipsoidal area, and every other (parcel, zone) pair is
# measured on the whole geometries. Measuring the pieces themselves (ST_Intersection with a
# piece) is faster but not the same table: the cuts add vertices, and geodesic edges between
# them differ from the zone's (up to 4e-7 of a cell, tests/test_tabulate_exact.py), so that
# variant is no baseline for an exact answer
BEST = [
    ("CREATE TEMP TABLE sz ON COMMIT DROP AS SELECT _rid AS zid, ST_Subdivide(geom, 128) AS g "
     "FROM data.planning_zones WHERE _vto IS NULL AND mod(_rid, %(n)s) = %(k)s"),
    "CREATE INDEX ON sz USING gist (g)",
    "ANALYZE sz",
    ("CREATE TEMP TABLE pr ON COMMIT DROP AS SELECT a._rid AS aid, s.zid, bool_or(ST_CoveredBy(a.geom, s.g)) AS inside "
     "FROM data.land_use a JOIN sz s ON ST_Intersects(a.geom, s.g) WHERE a._vto IS NULL GROUP BY 1, 2"),
    """
    SELECT a.dlbm, b.ghfqdm,
           sum(CASE WHEN pr.inside THEN a._area_m2
                    WHEN ST_Covers(b.geom, a.geom) THEN a._area_m2
                    WHEN ST_Covers(a.geom, b.geom) THEN b._area_m2
                    ELSE ST_Area(ST_Intersection(a.geom, b.geom)::geography) END)
    FROM pr JOIN data.land_use a ON a._rid = pr.aid JOIN data.planning_zones b ON b._rid = pr.zid
    GROUP BY 1, 2
    """,
]


#: sessions the county is split over, by zone, for ours and the best SQL alike: the cores the
#: database can use (our server's geobase/analysis/pieces.py SPLIT_CONNECTIONS, the same formula)
SESSIONS = max(1, min(4, os.cpu_count() or 1))


def _best(url: str, sessions: int = SESSIONS) -> tuple[float, dict]:
    """(seconds, {(class a, class b): m²}) of :data:`BEST` split by zone over ``sessions``
    sessions run at the same time, as ours is (each zone's pairs in one session; the cells
    summed). Connecting is untimed."""
    from concurrent.futures import ThreadPoolExecutor

    conns = [psycopg.connect(url) for _ in range(sessions)]

    def part(k: int) -> list[tuple]:
        conn = conns[k]
        conn.execute(BEST[0], {"n": sessions, "k": k})
        for q in BEST[1:-1]:
            conn.execute(q)
        rows = conn.execute(BEST[-1]).fetchall()
        conn.rollback()
        return rows

    try:
        with ThreadPoolExecutor(sessions) as ex:
            t0 = time.perf_counter()
            parts = list(ex.map(part, range(sessions)))
            dt = time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()
    cells: dict = {}
    for rows in parts:
        for ca, cb, m2 in rows:
            cells[(str(ca), str(cb))] = cells.get((str(ca), str(cb)), 0.0) + float(m2)
    return dt, cells


def _frames(url: str):
    """Both layers as GeoDataFrames (untimed)."""
    import geopandas as gpd
    import shapely

    frames = []
    with psycopg.connect(url) as conn:
        for layer, col in (("land_use", "dlbm"), ("planning_zones", "ghfqdm")):
            rows = conn.execute(sql.SQL("SELECT {}, ST_AsBinary(geom) FROM {} WHERE _vto IS NULL").format(
                sql.Identifier(col), sql.Identifier("data", layer))).fetchall()
            frames.append(gpd.GeoDataFrame({col: [r[0] for r in rows]},
                                           geometry=shapely.from_wkb([bytes(r[1]) for r in rows]), crs=4490))
    return frames


def _geopandas(frames) -> tuple[float, dict]:
    """(seconds for overlay + Geod areas + groupby, {(class a, class b): m²}) with the layers
    already in memory."""
    import geopandas as gpd
    from pyproj import Geod

    geod = Geod(ellps="GRS80")
    lu, pz = frames
    t0 = time.perf_counter()
    ov = gpd.overlay(lu, pz, how="intersection", keep_geom_type=True)
    ov["m2"] = [abs(geod.geometry_area_perimeter(g)[0]) for g in ov.geometry.values]
    table = ov.groupby(["dlbm", "ghfqdm"])["m2"].sum()
    dt = time.perf_counter() - t0
    return dt, {(str(ca), str(cb)): float(m2) for (ca, cb), m2 in table.items()}


def _sql(url: str, statements: list[str]) -> tuple[float, dict]:
    """(seconds, {(class a, class b): m²}) of a tabulation run as SQL on a new connection
    (connecting untimed)."""
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        for q in statements[:-1]:
            conn.execute(q)
        rows = conn.execute(statements[-1]).fetchall()
        dt = time.perf_counter() - t0
        conn.rollback()
    return dt, {(str(r[0]), str(r[1])): float(r[2]) for r in rows}


class _Ours:
    """Our server, restartable: a restart empties what the server keeps between tabulations
    (geobase/analysis/reuse.py), so the next tabulation is cold."""

    def __init__(self, url: str, data_dir):
        self.url, self.data_dir = url, data_dir
        self.server = None
        self.client: httpx.Client | None = None
        self.restart()

    def restart(self) -> None:
        from bench_features import _ours

        self.stop()
        self.server = _ours(self.url, self.data_dir)
        self.client = httpx.Client(base_url=self.server.url, timeout=3600)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.stop()
        self.server = self.client = None


def run(ctx: Context) -> None:
    url = _database(ctx)
    extent = _load(url, ctx.parcels)
    data_dir = ctx.settings.data_path / f"bench-analysis-{ctx.parcels}"
    data_dir.mkdir(parents=True, exist_ok=True)
    parts = set(os.environ.get("GEOBASE_BENCH_ANALYSIS_PARTS", "tabulate,site").split(","))
    ours = _Ours(url, data_dir)
    try:
        if "tabulate" in parts:
            _tabulate(ctx, url, ours, extent)
        if "site" in parts:
            _site_checks(ctx, ours.client, extent)
    finally:
        ours.stop()


def _reset_land_use(url: str) -> None:
    """Land use back to its one loaded version (untimed): the incremental rounds add versions."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM data.land_use WHERE _vfrom > 1")
        conn.execute("UPDATE data.land_use SET _vto = NULL WHERE _vto IS NOT NULL")
        conn.execute("DELETE FROM catalog.layer_versions WHERE layer = 'land_use' AND version > 1")
        conn.execute("UPDATE catalog.layers SET current_version = 1 WHERE name = 'land_use'")


def _land_use_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT current_version FROM catalog.layers WHERE name = 'land_use'").fetchone()[0]


def _new_land_use_version(url: str, parcels: int) -> int:
    """A new version of land use with 1 % of the parcels reclassified (retired and added again
    with another code, as an annual change survey delivers them; untimed). Returns its number."""
    with psycopg.connect(url) as conn:
        v = conn.execute("SELECT current_version + 1 FROM catalog.layers WHERE name = 'land_use'").fetchone()[0]
        conn.execute("UPDATE data.land_use SET _vto = %(v)s WHERE _vto IS NULL AND _rid %% 100 = %(v)s %% 100",
                     {"v": v})
        conn.execute("""INSERT INTO data.land_use (_key, _hash, _vfrom, bsm, dlbm, _area_m2, geom, geom_3857)
                        SELECT _key, md5(_key || %(v)s), %(v)s, bsm, CASE dlbm WHEN '0101' THEN '0102' ELSE '0101' END,
                               _area_m2, geom, geom_3857 FROM data.land_use WHERE _vto = %(v)s""", {"v": v})
        conn.execute("INSERT INTO catalog.layer_versions (layer, version, mode, rows_total) "
                     "VALUES ('land_use', %s, 'replace', %s)", (v, parcels))
        conn.execute("UPDATE catalog.layers SET current_version = %s WHERE name = 'land_use'", (v,))
        conn.commit()
    return v


def _tabulate(ctx: Context, url: str, ours_server: _Ours, extent) -> None:
    totals: dict[str, dict] = {}  # our last table: {(class a, class b): m²}
    diff: dict[str, float] = {}  # each baseline's largest relative cell difference from ours

    def same(name: str, table: dict) -> None:
        """The baseline's table against ours of the same round and data (measured just before)."""
        diff[name] = max(diff.get(name, 0.0), _cells_differ(totals["ours"], table, name))
    _reset_land_use(url)
    x0, y0 = extent[0], extent[1]
    tiny = {"type": "Polygon", "coordinates": [[[x0, y0], [x0 + 0.002, y0], [x0 + 0.002, y0 + 0.002],
                                                 [x0, y0 + 0.002], [x0, y0]]]}

    def post(body: dict, how: str) -> float:
        t0 = time.perf_counter()
        r = ours_server.client.post("/analysis/tabulate", json=body)
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"tabulate: HTTP {r.status_code} {r.text[:500]}")
        if r.json()["reuse"] != how:
            raise RuntimeError(f"tabulate: expected a {how} table, the server says {r.json()['reuse']}")
        totals["ours"] = {(c["a"], c["b"]): c["m2"] for c in r.json()["cells"]}
        return dt

    county = {"layer_a": "land_use", "layer_b": "planning_zones"}

    def cold() -> float:
        ours_server.restart()  # untimed: nothing kept
        post(county | {"geometry": tiny}, "computed")  # untimed: the server's first analysis (pool, PROJ)
        return post(county, "computed")

    def warm() -> float:
        return post(county, "kept")

    def changed() -> float:
        _new_land_use_version(url, ctx.parcels)  # untimed
        return post(county, "corrected")

    def textbook() -> float:
        dt, table = _sql(url, [PLAIN])
        same("textbook", table)
        return dt

    def best() -> float:
        dt, table = _best(url)
        same("best", table)
        return dt

    baselines = set(os.environ.get("GEOBASE_BENCH_ANALYSIS_BASELINES", "textbook,best,geopandas").split(","))
    sides = {"cold_textbook": cold, "textbook": textbook} if "textbook" in baselines else {}
    sides |= {"cold_best": cold, "best": best}
    if ctx.parcels <= 2_000_000 and "geopandas" in baselines:
        loaded = {"version": _land_use_version(url), "frames": _frames(url)}

        def gpd_side() -> float:
            # the layers as they are now (untimed): the changed rounds add land-use versions
            if (v := _land_use_version(url)) != loaded["version"]:
                loaded.update(version=v, frames=_frames(url))
            dt, table = _geopandas(loaded["frames"])
            same("geopandas", table)
            return dt

        sides |= {"cold_geopandas": cold, "geopandas": gpd_side}
    def first() -> float:
        with psycopg.connect(url, autocommit=True) as conn:  # untimed: the zones' kept pieces dropped
            conn.execute("DELETE FROM analysis.subdivisions")
        return cold()

    sides |= {"first": first, "best_first": best}
    # the server has just tabulated (cold) the current versions: the same request again is
    # answered from the kept table; then a new land-use version and the corrected table
    sides |= {"warm": warm, "best_warm": best, "changed": changed, "best_changed": best}
    cold()  # untimed: the zones' subdivision and halos of this zone version cut and kept once
    t = interleaved(ctx.rounds, sides)
    name = f"analysis tabulate land_use x planning_zones ({ctx.parcels:,} parcels, whole county)"
    best_name = ("ST_Subdivide(zones, 128) + GiST find the pairs, ST_CoveredBy reuses the stored area, "
                 f"the other pairs on whole geometries (exact); split by zone over {SESSIONS} sessions like ours")
    if "textbook" in t:
        ctx.report(Result.rounds(f"{name}, cold, vs textbook SQL", t["cold_textbook"], t["textbook"],
                                 "textbook ST_Intersection join on ST_Intersects + GROUP BY", "s",
                                 extra={"max_rel_diff_cell": diff["textbook"]}))
    ctx.report(Result.rounds(f"{name}, cold, vs best hand-written SQL", t["cold_best"], t["best"], best_name, "s",
                             extra={"max_rel_diff_cell": diff["best"]}))
    if "cold_geopandas" in t:
        ctx.report(Result.rounds(f"{name}, cold, vs geopandas", t["cold_geopandas"], t["geopandas"],
                                 "geopandas.overlay + Geod(GRS80) areas, data in memory", "s",
                                 extra={"max_rel_diff_cell": diff["geopandas"]}))
    ctx.report(Result.rounds(f"{name}, first-ever (cold, and the zones' kept subdivision and halos built in the run), "
                             "vs best hand-written SQL", t["first"], t["best_first"], best_name, "s"))
    ctx.report(Result.rounds(f"{name}, warm (same versions again: the kept table), vs best hand-written SQL",
                             t["warm"], t["best_warm"], best_name, "s"))
    ctx.report(Result.rounds(f"{name}, after a new land-use version changing 1 % of the parcels (the kept table "
                             "corrected by the change), vs best hand-written SQL on the new version",
                             t["changed"], t["best_changed"], best_name, "s"))


#: cells of two tables must agree to this fraction of the cell (and 5e-7 m², the report's
#: rounding of m² to 6 decimals): a baseline timed on another table would be no baseline
SAME_CELL = 1e-9


def _cells_differ(ours: dict, other: dict, name: str) -> float:
    """The largest relative difference of a cell between our table and a baseline's (cells of
    1e-6 m² and less dropped, as the report drops them); RuntimeError when the classes differ or
    a cell differs by more than :data:`SAME_CELL`."""
    other = {k: v for k, v in other.items() if v > 1e-6}
    if set(ours) != set(other):
        raise RuntimeError(f"tabulate: {name} has other cells: {sorted(set(ours) ^ set(other))[:5]}")
    worst = max((abs(ours[k] - v) / v for k, v in other.items()), default=0.0)
    off = [k for k, v in other.items() if abs(ours[k] - v) > SAME_CELL * v + 5e-7]
    if off:
        raise RuntimeError(f"tabulate: {len(off)} cells differ from {name} by more than {SAME_CELL:g} "
                           f"(worst {worst:.2g}): {off[:5]}")
    return worst


def _site_checks(ctx: Context, client: httpx.Client, extent) -> None:
    """(b) site check of a 5 km² site against all layers, over HTTP."""
    rng = random.Random(ctx.seed)
    lat_side = math.sqrt(5e6) / 110_900
    lon_side = lat_side / math.cos(math.radians(LAT0 + (extent[3] - extent[1]) / 2))
    sites = []
    for _ in range(20):
        x = rng.uniform(extent[0], max(extent[0], extent[2] - lon_side))
        y = rng.uniform(extent[1], max(extent[1], extent[3] - lat_side))
        sites.append({"type": "Polygon", "coordinates": [[[x, y], [x + lon_side, y], [x + lon_side, y + lat_side],
                                                          [x, y + lat_side], [x, y]]]})

    def check(g: dict) -> float:
        t0 = time.perf_counter()
        r = client.post("/analysis/site-check", json={"geometry": g})
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"site-check: HTTP {r.status_code} {r.text[:500]}")
        return dt

    check(sites[-1])  # untimed: the first use of PostGIS/PROJ on a pooled connection
    times = [check(g) for g in sites]
    ctx.report(Result("analysis site check 5 km² (p95)", percentile(times, 95) * 1000, None, None, "ms",
                      extra={"median_ms": round(percentile(times, 50) * 1000, 1), "runs": len(times),
                             "target_ms": 300, "note": "over HTTP, one client"}))

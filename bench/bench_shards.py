"""County-scoped latency with 1 county loaded against 10 counties loaded (issue 16): partition
pruning must make a county's reads cost what they cost when the county is alone (ratio <= 1.1).

Data: ``ctx.parcels / 10`` parcels per county (a grid of ~50 m squares with land-use codes and
the county's ZLDWDM), written through the core's version writer
(``geobase.catalog.versions.write_version``: one version per county, each county its own
partition), into two databases on the bench cluster: ``shards1`` holds county 339901 only,
``shards10`` holds it and nine more counties (339902-339910, side by side to the east).

Measured (one server per database, tile cache off so every tile is drawn from the rows,
interleaved request by request for at least ``ctx.rounds`` rounds; per round the median of
``REQUESTS`` requests of each kind):
  * items of county 339901 by a bbox inside it (``division=339901&bbox=...&limit=100``),
  * a cold z15 tile inside county 339901 (without ``division``: the tile reads only the counties
    whose extent meets it, geobase/tiles/prune.py — here 339901 alone; before, each county
    partition's geom index was probed once),
  * a site check of a small polygon inside county 339901 (every layer, no county named).
Printed: ``shards10`` latency against ``shards1`` latency, the ratio and its spread. Also the z15
tile's statement alone in the database (EXPLAIN ANALYZE: planning and execution), 10 counties vs
1, as the server runs it and as it ran before tiles were pruned (every county's partition read),
with the number of county partitions each scans.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import psycopg
from bench_features import Server
from common import Context, Result, free_port, interleaved, web_mercator_tile
from psycopg import sql

COUNTIES = [f"3399{i:02d}" for i in range(1, 11)]
CELL = 0.0005  # degrees (~50 m)
LON0, LAT0 = 117.0, 30.0
REQUESTS = 15


def _origin(division: str, per_county: int) -> tuple[float, float]:
    side = math.ceil(math.sqrt(per_county))
    return LON0 + (int(division) - int(COUNTIES[0])) * (side + 4) * CELL, LAT0


def _staged_county(conn: psycopg.Connection, spec, division: str, per_county: int) -> sql.Composable:
    """A staging table of the county's parcels with every column the version writer reads."""
    side = math.ceil(math.sqrt(per_county))
    x0, y0 = _origin(division, per_county)
    values = {"dlbm": sql.SQL("(ARRAY['0101','0103','0301','0702','1101'])[1 + i % 5]"),
              "zldwdm": sql.Literal(f"{division}1010010000000"), "bsm": sql.SQL("lpad(i::text, 8, '0')")}
    cols = [sql.SQL("{} AS {}").format(values.get(a.name, sql.SQL("NULL::{}").format(sql.SQL(a.pg_type))),
                                       sql.Identifier(a.name)) for a in spec.attributes]
    ident = sql.Identifier("staging", f"bench_shards_{division}")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
    conn.execute(sql.SQL("""
        CREATE TABLE {t} AS SELECT lpad(i::text, 8, '0') AS _key, md5(i::text) AS _hash, {d}::text AS division, {cols},
            ST_Area(g::geography) AS _area_m2, g AS geom, ST_Transform(g, 3857) AS geom_3857
        FROM (SELECT i, ST_Multi(ST_MakeEnvelope({x0} + (i % {side}) * {c}, {y0} + (i / {side}) * {c},
                     {x0} + (i % {side} + 1) * {c}, {y0} + (i / {side} + 1) * {c}, 4490)) AS g
              FROM generate_series(0, {n} - 1) i) x""").format(
        t=ident, d=sql.Literal(division), cols=sql.SQL(", ").join(cols), x0=sql.Literal(x0), y0=sql.Literal(y0),
        side=sql.Literal(side), c=sql.Literal(CELL), n=sql.Literal(per_county)))
    return ident


def _load(url: str, counties: list[str], per_county: int) -> None:
    """Each county one version through the core writer (skipped when the database has it)."""
    from geobase.catalog.versions import write_version
    from geobase.specs import get_registry

    spec = get_registry().layer("land_use")
    with psycopg.connect(url) as conn:
        have = {r[0] for r in conn.execute(
            "SELECT unnest(touched) FROM catalog.layer_versions WHERE layer = 'land_use'").fetchall()}
        for d in counties:
            if d in have:
                continue
            print(f"bench: loading county {d} ({per_county:,} parcels) ...", flush=True)
            rows = _staged_county(conn, spec, d, per_county)
            conn.commit()
            write_version(conn, spec, rows, mode="replace", version_row={
                "source_name": f"bench {d}", "source_checksum": None, "source_format": "sql", "created_by": "bench",
                "report": {}, "metadata": {}}, divisions=[d])
            conn.execute(sql.SQL("DROP TABLE {}").format(rows))
            conn.commit()
        conn.execute("ANALYZE data.land_use")
        conn.commit()


def _server(url: str, data_dir: Path, name: str) -> Server:
    port = free_port()
    env = dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(data_dir), GEOBASE_LOG_LEVEL="warning",
               GEOBASE_RATE_LIMIT_PUBLIC_PER_S="1000000", GEOBASE_RATE_LIMIT_PUBLIC_BURST="1000000",
               GEOBASE_TILE_CACHE_MAX_BYTES="0", PORT_FOR_BENCH=str(port))
    return Server([sys.executable, "-m", "geobase.cli", "serve", "--no-prepare", "--port", str(port)], env,
                  "/health", data_dir / f"shards-{name}.log")


def _requests(per_county: int) -> dict[str, tuple[str, str, dict]]:
    """(method, path, arguments) of each county-scoped request, all inside county 339901."""
    x0, y0 = _origin(COUNTIES[0], per_county)
    side = math.ceil(math.sqrt(per_county))
    cx, cy = x0 + side * CELL / 2, y0 + side * CELL / 4
    tx, ty = web_mercator_tile(cx, cy, 15)
    site = {"type": "Polygon", "coordinates": [[[cx, cy], [cx + 0.004, cy], [cx + 0.004, cy + 0.004],
                                                [cx, cy + 0.004], [cx, cy]]]}
    return {"items by bbox": ("GET", "/collections/land_use/items", {"params": {
                "division": COUNTIES[0], "bbox": f"{cx},{cy},{cx + 0.01},{cy + 0.01}", "limit": 100}}),
            "cold tile z15": ("GET", f"/tiles/land_use/15/{tx}/{ty}.mvt", {}),
            "site check": ("POST", "/analysis/site-check", {"json": {"geometry": site}})}


def _timed(client: httpx.Client, method: str, path: str, kw: dict) -> float:
    """Median seconds of REQUESTS requests (each checked to succeed)."""
    out = []
    for _ in range(REQUESTS):
        t = time.perf_counter()
        r = client.request(method, path, **kw)
        out.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
    return statistics.median(out)


async def _statement_times(url: str, tile: tuple[int, int, int], prune_it: bool) -> tuple[float, int]:
    """Median of REQUESTS database times (planning + execution, EXPLAIN ANALYZE) of the z15 tile's
    statement, read from the counties meeting it (``prune_it``, as the server does) or from every
    county (as before), and how many county partitions the last one scanned."""
    from geobase.catalog.state import layer_states
    from geobase.specs import get_registry
    from geobase.tiles.mvt import plan_layer, tile_sql
    from geobase.tiles.prune import pruned
    from geobase.tiles.tms import WEB_MERCATOR_QUAD as W

    registry = get_registry()
    z, row, col = tile
    plan = plan_layer(registry.layer("land_use"), registry, z, set())
    times, scanned = [], 0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        plans = [plan]
        if prune_it:
            plans, _ = await pruned(conn, plans, await layer_states(conn), W, z, row, col)
        stmt = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(tile_sql(plans, ["land_use"], W, z, row, col))
        for _ in range(REQUESTS):
            (doc,), = await (await conn.execute(stmt)).fetchall()
            times.append(doc[0]["Planning Time"] + doc[0]["Execution Time"])
            scanned = len(_scanned(doc[0]["Plan"]))
    return statistics.median(times) / 1000, scanned


def _scanned(node: dict) -> set[str]:
    """The county partitions a plan node (and those under it) ran a scan of."""
    out = set()
    if node.get("Relation Name", "").startswith("land_use__") and node.get("Actual Loops", 0) > 0:
        out.add(node["Relation Name"])
    for sub in node.get("Plans", []):
        out |= _scanned(sub)
    return out


def _statement_figures(ctx: Context, one: str, ten: str, per_county: int) -> None:
    """The tile's statement alone, in the database (no HTTP, no Python): 10 counties vs 1, and
    10 counties read from every county (the statement before tiles were pruned) vs 1."""
    import asyncio

    x0, y0 = _origin(COUNTIES[0], per_county)
    side = math.ceil(math.sqrt(per_county))
    tx, ty = web_mercator_tile(x0 + side * CELL / 2, y0 + side * CELL / 4, 15)
    tile = (15, ty, tx)
    scanned = {}

    def timed(url: str, prune_it: bool, name: str) -> float:
        seconds, scanned[name] = asyncio.run(_statement_times(url, tile, prune_it))
        return seconds

    got = interleaved(ctx.rounds, {"10": lambda: timed(ten, True, "10"), "1": lambda: timed(one, True, "1"),
                                   "10 every county": lambda: timed(ten, False, "10 every county")})
    print(f"bench: county partitions the z15 tile's statement scans: {scanned}", flush=True)
    for ours, label in (("10", f"reads {scanned['10']} county partition(s)"),
                        ("10 every county", f"every county's partition read ({scanned['10 every county']}), as before")):
        ctx.report(Result.rounds(f"shards: county-scoped cold tile z15 statement in the database, 10 counties loaded "
                                 f"vs 1, {label} ({per_county:,} parcels each; target ratio <= 1.1)",
                                 [v * 1000 for v in got[ours]], [v * 1000 for v in got["1"]], "1 county", "ms"))


def run(ctx: Context) -> None:
    per_county = max(1000, ctx.parcels // 10)
    one, ten = ctx.named_database("shards1"), ctx.named_database("shards10")
    _load(one, COUNTIES[:1], per_county)
    _load(ten, COUNTIES, per_county)
    data_dir = ctx.settings.data_path
    data_dir.mkdir(parents=True, exist_ok=True)
    _statement_figures(ctx, one, ten, per_county)
    servers = {"1": _server(one, data_dir, "1"), "10": _server(ten, data_dir, "10")}
    try:
        clients = {k: httpx.Client(base_url=s.url, timeout=120) for k, s in servers.items()}
        for name, (method, path, kw) in _requests(per_county).items():
            for c in clients.values():  # warm both: connections, PostGIS, the rows in shared buffers
                _timed(c, method, path, kw)
            got = interleaved(ctx.rounds, {k: (lambda c=c: _timed(c, method, path, kw)) for k, c in clients.items()})
            ctx.report(Result.rounds(f"shards: county-scoped {name}, 10 counties loaded vs 1 "
                                     f"({per_county:,} parcels each; target ratio <= 1.1)",
                                     [v * 1000 for v in got["10"]], [v * 1000 for v in got["1"]], "1 county", "ms"))
    finally:
        for s in servers.values():
            s.stop()

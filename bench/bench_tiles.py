"""Vector tiles vs tipg on identical output, the same SQL run bare, and cached tiles vs nginx.

Data: the land-use layer of ``ctx.parcels`` parcels loaded by bench_features (same database,
same loader; ~50 m parcels with 20-vertex rings). tipg serves it through a view
``bench_tipg.land_use_tiles`` exposing the stored Web Mercator geometry (with its own GiST
index) and exactly the attributes our tile carries from z13 (bsm, dlbm, dlmc, zldwmc, tbmj and
the key), so neither side transforms per feature.

How the tipg baseline is configured, and why that is like with like:
  * zooms z13-z16 only, where both draw every parcel as itself. At z10/z12 we serve a prebuilt
    class pyramid while tipg renders real parcels cut at its feature cap: different outputs,
    so those zooms get no tipg ratio; their times are reported alone and the pyramid's build
    time is reported as part of a fresh load (it is dropped and rebuilt each run);
  * ``TIPG_TILE_BUFFER=64`` and ``TIPG_TILE_RESOLUTION=4096`` (ours: buffer 64, extent 4096;
    tipg's default buffer is 256), ``TIPG_MAX_FEATURES_PER_TILE`` raised above any tile's
    parcel count so no tile is cut;
  * both answer uncompressed bodies (``Accept-Encoding: identity``): tipg gzips at level 6 and
    we at level 1, so comparing compressed bodies would time two compressors. (Ours still
    gzips every rendered tile for its cache, even with the cache off as here, and sends such a
    client the uncompressed bytes it rendered: a handicap to us, not to tipg);
  * the output is compared feature for feature (bench/tile_parity.py): per tile both answers
    are decoded and matched by the parcel's key; a tile is identical when both draw the same
    parcels with the same quantised geometry and attributes. The like-with-like figure (the
    issue's >= 2x target) is ours vs tipg over the identical tiles only; all tiles are reported
    apart, with each differing tile and why. Measured (200,000 parcels): every difference is a
    parcel ours draws and tipg does not, lying wholly in the 64-unit buffer ring outside the
    tile (e.g. z13/6759/3350: 7,189 vs 6,764, all 425 extra in the ring; z14/13519/6700:
    1,833 vs 1,755), never a parcel tipg draws and we do not, nor a parcel drawn differently.
    The cause is the row filter: ours finds rows with the tile grown by the buffer (as Martin:
    ``geom && ST_TileEnvelope(z, x, y, margin => buffer / extent)``, and pg_tileserv), tipg
    with the tile's own bounds (tipg/collections.py ``cql_where``: ``S_INTERSECTS(geom,
    tile)``; ``TIPG_TILE_BUFFER`` only widens the clip). Both are valid MVT; no setting of
    either server changes its row filter, so no configuration makes the two draw the same
    parcels where a parcel edge lies in the ring: at z13 (buffer 76 m, parcels 50 m) that is
    every tile, at z16 (10 m) about half. Hence also "our bare statement with tipg's row
    filter": the very statement our server prepares, executed with the tile's own bounds as
    its filter box, which draws exactly tipg's tile (checked per tile in the run) and so times
    our SQL on identical output on every tile;
  * simplification: from z14 neither side simplifies; at z13 ours applies ST_Simplify at half a
    pixel and tipg none. On the bench's rectangular parcels the quantised geometry is the same
    all the same (the comparison checks every feature's; ST_AsMVTGeom drops the collinear
    vertices either way); on real parcels z13 geometry would differ;
  * timed interleaved tile by tile (ours and tipg taking turns in going first, then the same
    SQL bare, the same with tipg's row filter, tipg's own statement bare) for ``ctx.rounds`` rounds, after
    one untimed pass of every side over every tile (each side prepares its statements per zoom
    on first use); one uvicorn worker each, sequential requests, one keep-alive connection per
    server through ``bench/rawhttp.py`` (the same client for both; timed from the request's
    first byte to the body's last). Not httpx: its own ~1.3 ms per request was counted against
    the server (the "vs direct SQL" ratio read 1.15 where the server's share is 1.08) and added
    to both sides of the tipg ratio alike, pulling it towards 1; the figure through httpx is
    reported apart ("the client's own cost").

Cached tiles: our server with the tile cache on (filled first) against nginx (1 worker
process, as ours has one; ``sendfile on``, access log off) serving the very same gzip tile
bytes from files on disk under the same paths: the physical ceiling of a tile cache on this
machine; and against ``bench/asgi_floor.py``, a bare ASGI app under the same uvicorn answering
the same bytes from memory with no check at all: the ceiling of any Python ASGI server here.
All three are hit by the same client (``bench/hammer.py``: 2 processes, raw keep-alive HTTP/1.1,
32 connections, no pipelining), in interleaved rounds; the client's CPU share is reported, and
nginx's rate shows the client is not what limits ours. Without nginx installed the run says so
and prints the ceiling as not measured (``scripts/setup.sh --bench`` installs nginx-light).

Why 2x tipg on identical cold tiles is out of reach: both run essentially the same
``ST_AsMVT(ST_AsMVTGeom(..))`` over the same rows, which is most of either answer. Measured
(session 14, quiet 2-core machine, 5 interleaved rounds, raw client): our statement with tipg's
row filter, bare (identical output on every tile), took 0.68 (0.68-0.73) of tipg's whole answer
at 200,000 parcels and 0.70 (0.69-0.74) at 1,000,000; tipg's own statement run bare 0.80-0.82 of
it, so our SQL is 0.85-0.88 of tipg's on the same features (tipg adds an exact ``st_intersects``
and a sort by id). ~0.7 is the best ratio any server running this SQL can reach over z13-z16;
0.5 would need less PostGIS work per tile, i.e. a different tile. The per-zoom profile shows
where it goes: at z13/z14 ST_AsMVTGeom (clipping, quantising and validating every polygon with
wagyu) is over half of the statement, finding the rows about a sixth, ST_AsMVT's encoding the
rest; at z15/z16 the statement is 1-2.5 ms and the fixed cost of an answer is a large part of
tipg's (an empty tile: ours 1.1-1.2 ms, tipg's 3.0-3.7 ms), so on the identical tiles (z15/z16
at 200,000 parcels, z16 at 1,000,000) ours takes 0.60 (0.56-0.64) and 0.51 (0.42-0.67) of tipg's
time.

Also: cold tile time ours vs the same SQL from a plain psycopg connection (the floor: the very
statement our server runs, prepared once and executed per tile under a custom plan, without the
transaction, the states read and HTTP), where a cold tile's time goes per zoom (the statement cut
after each step on the bare connection, in the same rounds), the fixed cost of an answer (an
empty tile, ours vs tipg), the composite one-map tile times, and the largest tile per zoom
(bytes, gzip and raw). Features (keys, geometry, attributes), not bytes, are compared: at z13
PostgreSQL reads the rows with a parallel scan, so the features' order in the tile (not the
features) varies from run to run, ours and tipg's alike.

geobase imports kept here (for the bare-SQL floor only: the statement our server runs):
``geobase.settings``, ``geobase.specs.get_registry``, ``geobase.security`` (PUBLIC,
hidden_attributes), ``geobase.tiles.mvt`` (plan_layer, tile_sql, tile_template, tile_numbers, filter_box, preparable,
feature_rows_sql), ``geobase.tiles.render`` (gzip_tile), ``geobase.tiles.tms`` (WEB_MERCATOR_QUAD).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import psycopg
from bench_features import CELL, LAT0, LON0, Server, _database, _load, _tipg
from common import Context, Result, free_port, median, percentile, tipg_tile_view, web_mercator_tile
from hammer import hammer
from rawhttp import RawClient
from tile_parity import TipgBare, compare, report_parity, tipg_statement
from tile_parity import per_round as _per_round

COMPARED = (13, 14, 15, 16)  # zooms where we and tipg draw the same parcels
PYRAMID = (10, 12)  # zooms where we serve the class pyramid (no tipg ratio)
TIPG_TILES = "/collections/bench_tipg.land_use_tiles/tiles/WebMercatorQuad/{z}/{x}/{y}"
OURS_TILES = "/tiles/land_use/{z}/{x}/{y}.mvt"


def _ours(url: str, data_dir: Path, cache_bytes: int) -> Server:
    port = free_port()
    env = dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(data_dir), GEOBASE_LOG_LEVEL="warning",
               GEOBASE_RATE_LIMIT_PUBLIC_PER_S="1000000", GEOBASE_RATE_LIMIT_PUBLIC_BURST="1000000",
               GEOBASE_TILE_CACHE_MAX_BYTES=str(cache_bytes), GEOBASE_TILE_STATEMENT_TIMEOUT_MS="300000",
               GEOBASE_STATEMENT_TIMEOUT_MS="300000", PORT_FOR_BENCH=str(port))
    return Server([sys.executable, "-m", "geobase.cli", "serve", "--no-prepare", "--port", str(port)], env,
                  "/health", data_dir / f"ours-tiles-{cache_bytes}.log")


def _tipg_tiles(url: str, data_dir: Path, max_features: int) -> Server:
    """tipg configured like our tiles: buffer 64, extent 4096, no feature cap below the data."""
    env = {"TIPG_TILE_BUFFER": "64", "TIPG_TILE_RESOLUTION": "4096",
           "TIPG_MAX_FEATURES_PER_TILE": str(max_features)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return _tipg(url, data_dir)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _centre(parcels: int) -> tuple[float, float]:
    side = math.ceil(math.sqrt(parcels))
    rows = math.ceil(parcels / side)
    return LON0 + side * CELL / 2, LAT0 + rows * CELL / 2


def _tile_list(parcels: int, zooms, per_zoom: int) -> list[tuple[int, int, int]]:
    """(z, x, y) of ``per_zoom`` tiles per zoom in a row through the centre of the layer."""
    lon, lat = _centre(parcels)
    out = []
    for z in zooms:
        x0, y = web_mercator_tile(lon, lat, z)
        out += [(z, x0 + dx, y) for dx in range(-(per_zoom // 2), per_zoom - per_zoom // 2)]
    return out


def _fetch(client: RawClient, url: str, encoding: str = "identity") -> tuple[float, bytes, int, float | None]:
    """(seconds from the request's first byte sent to the body's last byte received, the body as
    sent — uncompressed unless ``encoding`` asks for gzip —, its bytes on the wire, seconds the
    server says its tile handler took — our ``Server-Timing: tile;dur=`` — or None). Timed with
    bench/rawhttp.py, the same client for every server (why not httpx: its docstring)."""
    a = client.get(url, {"Accept-Encoding": encoding})
    if a.status not in (200, 204):
        raise RuntimeError(f"{url}: HTTP {a.status} {a.body[:300]!r}")
    timing = a.headers.get("server-timing", "")
    handler = float(timing.split("dur=")[1].split(";")[0].split(",")[0]) / 1000 if "tile;dur=" in timing else None
    return a.seconds, a.body, len(a.body), handler


def _fetch_httpx(client: httpx.Client, url: str) -> float:
    """Seconds of the same GET through httpx's sync client (the client's own cost, reported apart)."""
    t0 = time.perf_counter()
    r = client.get(url, headers={"Accept-Encoding": "identity"})
    _ = r.content  # the whole body read, as the raw client reads it
    dt = time.perf_counter() - t0
    if r.status_code not in (200, 204):
        raise RuntimeError(f"{url}: HTTP {r.status_code} {r.text[:300]}")
    return dt


class _Direct:
    """Our tile statement run from a plain psycopg connection (the floor for a cold tile): the
    very statement our server runs, prepared once on this connection and executed with each
    tile's numbers under a custom plan (geobase.tiles.render), without the transaction, the
    states read and the HTTP around it. (Composing the literal statement per tile here would
    time Python and the server's parsing that our server no longer does: a floor that flatters.)"""

    def __init__(self, url: str, version: int):
        from geobase.security import PUBLIC, hidden_attributes
        from geobase.settings import Settings
        from geobase.specs import get_registry

        self.reg = get_registry(Settings())
        self.spec = self.reg.layers["land_use"]
        self.hidden = hidden_attributes(PUBLIC, self.spec)
        self.version = version
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SET plan_cache_mode = force_custom_plan")
        self.tipg: TipgBare | None = None  # tipg's statement's own connection, opened on first use
        self.prepared: set[int] = set()

    def plan(self, z: int):
        from geobase.tiles.mvt import plan_layer

        plan = plan_layer(self.spec, self.reg, z, self.hidden)
        return replace(plan, pyramid_version=self.version) if plan.aggregate else plan

    def statement(self, z: int, x: int, y: int, tile_rows: bool = False):
        """What our server sends for this tile (the pyramid's tiles are composed per tile).
        ``tile_rows``: the same prepared statement with tipg's row filter instead of ours, i.e.
        the rows found with the tile's own bounds, not the tile grown by the buffer (the last
        four of the tile numbers; clipping keeps the buffer): it draws exactly tipg's features
        (checked tile by tile in the run), so it times our SQL on tipg's output."""
        from geobase.tiles.mvt import (
            TILE_NUMBERS,
            filter_box,
            preparable,
            tile_numbers,
            tile_sql,
            tile_template,
        )
        from geobase.tiles.tms import WEB_MERCATOR_QUAD as W
        from psycopg import sql

        plan = self.plan(z)
        if not preparable(plan):
            return tile_sql([plan], ["land_use"], W, z, y, x)
        name = sql.Identifier(f"bench_tile_{z}")
        if z not in self.prepared:
            self.conn.execute(sql.SQL("PREPARE {} ({}) AS {}").format(
                name, sql.SQL(", ".join(["float8"] * TILE_NUMBERS)), tile_template([plan], ["land_use"], W, z)))
            self.prepared.add(z)
        numbers = tile_numbers(W, z, y, x)
        if tile_rows:
            numbers = numbers[:8] + filter_box(W, *numbers[:4])[0] + numbers[12:]
        return sql.SQL("EXECUTE {}({})").format(name, sql.SQL(", ").join(sql.Literal(v) for v in numbers))

    def time(self, z: int, x: int, y: int, tile_rows: bool = False) -> tuple[float, float, bytes]:
        """Seconds for (the statement and its fetch, the same plus the gzip our server does), and
        the tile it made."""
        from geobase.tiles.render import gzip_tile

        q = self.statement(z, x, y, tile_rows)
        t0 = time.perf_counter()
        raw = self.conn.execute(q).fetchone()[0]
        t1 = time.perf_counter()
        if raw:
            gzip_tile(bytes(raw))
        return t1 - t0, time.perf_counter() - t0, bytes(raw or b"")

    def time_tipg(self, z: int, x: int, y: int, max_features: int) -> tuple[float, bytes]:
        """Seconds of tipg's own statement (tile_parity.tipg_statement) run as tipg runs it
        (asyncpg, tile_parity.TipgBare), and the tile it made: tipg's SQL without tipg."""
        from geobase.tiles.tms import WEB_MERCATOR_QUAD as W

        if self.tipg is None:
            self.tipg = TipgBare(self.url)
        return self.tipg.time(tipg_statement(W.bounds(z, y, x), max_features).as_string(self.conn))

    def steps(self, z: int, x: int, y: int) -> dict[str, float]:
        """Seconds of the statement cut after each step (the profile of a cold tile): the rows
        found (index, heap, filters), + their MVT geometry (ST_AsMVTGeom: clip, quantise,
        validate), + encoding them with only the key (ST_AsMVT), the whole statement (+ the
        attributes' encoding)."""
        from geobase.tiles.mvt import feature_rows_sql, tile_sql
        from geobase.tiles.tms import WEB_MERCATOR_QUAD as W
        from psycopg import sql

        plan = self.plan(z)
        rows = feature_rows_sql(plan, W, z, y, x)
        cuts = {"rows": sql.SQL("SELECT count(*) FROM ({}) s").format(rows),
                "mvtgeom": sql.SQL("SELECT count(*) FROM ({} OFFSET 0) s WHERE geom IS NOT NULL").format(rows),
                "geometry_only": tile_sql([replace(plan, attributes=())], ["land_use"], W, z, y, x),
                "whole": self.statement(z, x, y)}
        out = {}
        for step, q in cuts.items():
            t0 = time.perf_counter()
            self.conn.execute(q).fetchone()
            out[step] = time.perf_counter() - t0
        return out

    def close(self) -> None:
        self.conn.close()
        if self.tipg is not None:
            self.tipg.close()


def _prepare(ctx: Context, url: str, data_dir: Path) -> int:
    """The tipg view, and a fresh pyramid whose build time is reported; returns the version."""
    with psycopg.connect(url, autocommit=True) as conn:
        tipg_tile_view(conn)
        conn.execute("ANALYZE data.land_use")
        version = conn.execute("SELECT current_version FROM catalog.layers WHERE name = 'land_use'").fetchone()[0]
        # a fresh load builds the pyramid: drop it, so its build is always measured here
        for t in ("cells", "big", "pyramids"):
            conn.execute(f"DELETE FROM tiles.{t} WHERE layer = 'land_use'")  # fixed table names
    lon, lat = _centre(ctx.parcels)
    env = dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(data_dir), GEOBASE_LOG_LEVEL="warning")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geobase.cli", "tiles", "seed", "--layers", "land_use", "--zoom", "10",
                    "--bbox", f"{lon},{lat},{lon + 1e-4},{lat + 1e-4}"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT seconds FROM tiles.pyramids WHERE layer = 'land_use' AND version = %s",
                           (version,)).fetchone()
    if row is None:
        raise RuntimeError("geobase tiles seed built no pyramid for land_use")
    ctx.report(Result(f"tiles pyramid build land_use v{version} ({ctx.parcels:,} parcels), part of a fresh load",
                      float(row[0]), None, None, "s", extra={"seed_command_wall_s": round(wall, 2)}))
    return version


def run(ctx: Context) -> None:
    url = _database(ctx)
    _load(url, ctx.parcels)
    data_dir = ctx.settings.data_path / f"bench-tiles-{ctx.parcels}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    version = _prepare(ctx, url, data_dir)
    per_zoom = 3 if ctx.quick else 6
    compared = _tile_list(ctx.parcels, COMPARED, per_zoom)
    pyramid_tiles = _tile_list(ctx.parcels, PYRAMID, per_zoom)
    _cold(ctx, url, data_dir, version, compared, pyramid_tiles)
    if os.environ.get("GEOBASE_BENCH_TILES_COLD_ONLY") != "1":  # iterating on the cold part alone
        _cached(ctx, url, data_dir, compared + pyramid_tiles)


def _cold(ctx: Context, url: str, data_dir: Path, version: int, compared: list, pyramid_tiles: list) -> None:
    cap = max(100_000, ctx.parcels)  # tipg's feature cap, above any tile's parcels
    ours, tipg = _ours(url, data_dir, 0), _tipg_tiles(url, data_dir, cap)
    plain = _Direct(url, version)
    # per side, tile and round: seconds of ours, our handler (Server-Timing), tipg, the bare
    # statement, the same + its gzip, the bare statement with tipg's row filter, tipg's statement bare
    t: dict[str, dict] = {k: {} for k in ("ours", "handler", "tipg", "sql", "sqlgz", "sql_tile", "tipg_sql",
                                          "ours_httpx")}
    t_steps: dict = {}  # per tile: the statement cut after each step (_Direct.steps), every round
    parity: dict = {}  # per tile: ours vs tipg, feature by feature (tile_parity.compare)
    parity_bare: dict = {}  # per tile: the bare statement with tipg's row filter vs tipg
    parity_tipg_bare: dict = {}  # per tile: tipg's statement run bare vs tipg's answer
    sizes: dict[int, tuple[int, int]] = {}
    onemap: list[float] = []
    z, x, y = compared[-1]
    empty = [(z, x - 4000 + i, y) for i in range(3)]  # far outside the county: no feature, no row
    a, b = RawClient(ours.port), RawClient(tipg.port)
    try:
        with httpx.Client(base_url=ours.url, timeout=600) as ah:
            # one untimed pass of every side over every tile first: each side's statements are
            # prepared per zoom on first use (ours by its server inside the timed request, the bare
            # connection's outside its timer), and the first round timed that against ours only
            scratch: dict[str, dict] = {k: {} for k in t}
            for tile in compared + empty:
                _one_tile(a, b, plain, tile, 0, scratch, cap)
                _fetch_httpx(ah, OURS_TILES.format(z=tile[0], x=tile[1], y=tile[2]))
            for rnd in range(ctx.rounds):
                for tile in compared + empty:
                    got = _one_tile(a, b, plain, tile, rnd, t, cap)
                    t["ours_httpx"].setdefault(tile, []).append(_fetch_httpx(ah, OURS_TILES.format(z=tile[0], x=tile[1], y=tile[2])))
                    if tile not in empty:
                        t_steps.setdefault(tile, []).append(plain.steps(*tile))
                    if rnd == 0:
                        parity[tile] = compare(got["ours"], got["tipg"])
                        parity_bare[tile] = compare(got["sql_tile"], got["tipg"])
                        parity_tipg_bare[tile] = compare(got["tipg_sql"], got["tipg"], ours_key="id")
                for z, x, y in pyramid_tiles:  # ours only: no like-with-like tipg tile exists
                    dt = _fetch(a, OURS_TILES.format(z=z, x=x, y=y))[0]
                    t["ours"].setdefault((z, x, y), []).append(dt)
            for z, x, y in compared + pyramid_tiles:
                onemap.append(_fetch(a, f"/tiles/onemap/{z}/{x}/{y}.mvt", "gzip")[0])
                wire = _fetch(a, OURS_TILES.format(z=z, x=x, y=y), "gzip")[2]
                raw = len(_fetch(a, OURS_TILES.format(z=z, x=x, y=y))[1])
                sizes[z] = (max(sizes.get(z, (0, 0))[0], wire), max(sizes.get(z, (0, 0))[1], raw))
    finally:
        a.close()
        b.close()
        ours.stop()
        tipg.stop()
        plain.close()
    if any(parity[e].ours or parity[e].tipg for e in empty):
        raise RuntimeError(f"the empty tiles {empty} are not empty: {[parity[e] for e in empty]}")
    _report_cold(ctx, compared, pyramid_tiles, t, parity, parity_bare, parity_tipg_bare)
    t_ours, t_handler, t_tipg, t_sql, t_sqlgz = (t[k] for k in ("ours", "handler", "tipg", "sql", "sqlgz"))
    _report_profile(ctx, compared, empty, t_ours, t_handler, t_tipg, t_sql, t_sqlgz, t_steps)
    ctx.report(Result.rounds(f"tiles cold z13-z16, our tile handler alone (Server-Timing) vs direct SQL "
                             f"({ctx.parcels:,} parcels)", _per_round(t_handler, compared), _per_round(t_sqlgz, compared),
                             "same SQL via plain psycopg + the same gzip", "ms/tile",
                             extra={"note": "the rest of ours is HTTP: parsing, routing, middlewares, the body's "
                                            "transfer and the client reading it"}))
    ctx.report(Result.rounds(f"tiles cold z13-z16, ours through httpx vs through bench/rawhttp.py "
                             f"({ctx.parcels:,} parcels): the client's own cost", _per_round(t["ours_httpx"], compared),
                             _per_round(t_ours, compared), "the same tiles, same server, raw keep-alive client",
                             "ms/tile", extra={"why": "every HTTP figure here is timed with bench/rawhttp.py; httpx's "
                                                      "own time per request is what this row shows"}))
    ctx.report(Result("tiles onemap composite median", median(onemap) * 1000, None, None, "ms",
                      extra={"p95_ms": round(percentile(onemap, 95) * 1000, 1)}))
    for z in sorted(sizes):
        wire, raw = sizes[z]
        ctx.report(Result(f"tiles largest land_use tile z{z}", raw / 1024, None, None, "KB raw",
                          extra={"gzip_kb": round(wire / 1024, 1), "limit_kb": 500}))


def _one_tile(a: RawClient, b: RawClient, plain: _Direct, tile: tuple, rnd: int, t: dict,
              cap: int) -> dict[str, bytes]:
    """One tile of one round, timed on every side, tile by tile; ours and tipg take turns in
    going first (even rounds ours, odd rounds tipg), so neither always meets the other's cache
    state. Returns each side's uncompressed tile."""
    z, x, y = tile
    bodies: dict[str, bytes] = {}

    def ours() -> None:
        dt, bodies["ours"], _, handler = _fetch(a, OURS_TILES.format(z=z, x=x, y=y))
        t["ours"].setdefault(tile, []).append(dt)
        t["handler"].setdefault(tile, []).append(handler)

    def tipg() -> None:
        dt, bodies["tipg"], _, _ = _fetch(b, TIPG_TILES.format(z=z, x=x, y=y))
        t["tipg"].setdefault(tile, []).append(dt)

    for side in ((ours, tipg) if rnd % 2 == 0 else (tipg, ours)):
        side()
    bare, gz, _ = plain.time(z, x, y)
    t["sql"].setdefault(tile, []).append(bare)
    t["sqlgz"].setdefault(tile, []).append(gz)
    bare, _, bodies["sql_tile"] = plain.time(z, x, y, tile_rows=True)
    t["sql_tile"].setdefault(tile, []).append(bare)
    bare, bodies["tipg_sql"] = plain.time_tipg(z, x, y, cap)
    t["tipg_sql"].setdefault(tile, []).append(bare)
    return bodies


def _report_profile(ctx, compared, empty, t_ours, t_handler, t_tipg, t_sql, t_sqlgz, t_steps) -> None:
    """Where a cold tile's time goes, per zoom, and the fixed cost of an answer (an empty tile: no
    row found, nothing encoded) against tipg's. Each part is a tile's fastest round (the one the
    other helpers' load disturbed least; a median of differences of single noisy samples went
    negative), then the median over the zoom's tiles, in ms."""
    def part(tiles, value) -> float:
        return round(median([value(t) for t in tiles]) * 1000, 2)

    def fastest(times: dict):
        return lambda t: min(times[t])

    for z in COMPARED:
        tiles = [t for t in compared if t[0] == z]

        def cut(step: str, t) -> float:
            return min(s[step] for s in t_steps[t])

        parts = {"rows_found_ms (index, heap, filters)": part(tiles, lambda t: cut("rows", t)),
                 "mvt_geometry_ms (ST_AsMVTGeom)": part(tiles, lambda t: cut("mvtgeom", t) - cut("rows", t)),
                 "encode_geometry_and_key_ms (ST_AsMVT)": part(tiles, lambda t: cut("geometry_only", t)
                                                                - cut("mvtgeom", t)),
                 "encode_attributes_ms (ST_AsMVT)": part(tiles, lambda t: cut("whole", t) - cut("geometry_only", t)),
                 "bare_statement_ms": part(tiles, fastest(t_sql)),
                 "gzip_level1_ms": part(tiles, lambda t: min(g - b for g, b in zip(t_sqlgz[t], t_sql[t]))),
                 "our_handler_ms (Server-Timing)": part(tiles, fastest(t_handler)),
                 "http_and_framework_ms (ours minus handler)": part(tiles, lambda t: min(
                     o - h for o, h in zip(t_ours[t], t_handler[t]))),
                 "tipg_ms": part(tiles, fastest(t_tipg))}
        ctx.report(Result(f"tiles cold z{z}: where the time goes ({ctx.parcels:,} parcels)",
                          part(tiles, fastest(t_ours)), None, None, "ms/tile (ours, whole answer, fastest round)",
                          extra=parts | {"note": "the statement cut after each step, timed on the bare connection "
                                                 "in the same rounds; each tile's fastest round, median over tiles"}))
    ctx.report(Result.rounds("tiles cold, an empty tile (no feature): the fixed cost of an answer",
                             _per_round(t_ours, empty), _per_round(t_tipg, empty), "tipg, the same empty tile",
                             "ms/tile", extra={"bare_statement_ms": round(median(_per_round(t_sql, empty)), 2),
                                               "our_handler_ms": round(median(_per_round(t_handler, empty)), 2)}))


def _report_cold(ctx, compared, pyramid_tiles, t, parity, parity_bare, parity_tipg_bare) -> None:
    tag = f"{ctx.parcels:,} parcels"
    report_parity(ctx, compared, t, parity, parity_bare, parity_tipg_bare)
    for z in PYRAMID:
        tiles = [x for x in pyramid_tiles if x[0] == z]
        per = _per_round(t["ours"], tiles)
        ctx.report(Result(f"tiles cold z{z} from the class pyramid (ours only, no like-with-like baseline)",
                          median(per), None, None, "ms/tile",
                          extra={"rounds_min_median_max": [round(min(per), 2), round(median(per), 2),
                                                           round(max(per), 2)]}))
    # the statement alone, no HTTP, no Python around it, against tipg's whole answer (ours draws
    # the parcels in the buffer ring too: see report_parity for the same on tipg's features)
    ctx.report(Result.rounds(f"tiles cold z13-z16: the bare statement (no HTTP) vs tipg's whole answer ({tag})",
                             _per_round(t["sql"], compared), _per_round(t["tipg"], compared),
                             "tipg buffer 64, extent 4096, no feature cap", "ms/tile",
                             extra={"output": "not identical: ours also draws the parcels wholly in the buffer"}))
    ctx.report(Result.rounds(f"tiles cold z13-z16 vs direct SQL ({tag})", _per_round(t["ours"], compared),
                             _per_round(t["sqlgz"], compared), "same SQL via plain psycopg + the same gzip",
                             "ms/tile"))
    ctx.report(Result.rounds(f"tiles cold z13-z16 vs direct SQL without gzip ({tag})",
                             _per_round(t["ours"], compared), _per_round(t["sql"], compared),
                             "same SQL via plain psycopg, statement and fetch only", "ms/tile"))


# --- cached tiles: ours (cache on) vs nginx on the same bytes --------------------------------------

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types {{ }}
    default_type application/vnd.mapbox-vector-tile;
    client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location / {{ add_header Content-Encoding gzip; }}
    }}
}}
"""


class _Nginx:
    """nginx serving ``root/www`` on a free port with a minimal config."""

    def __init__(self, root: Path, nginx: str):
        self.port = free_port()
        (root / "tmp").mkdir(exist_ok=True)
        conf = root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=root, port=self.port))
        self.proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()[-1000:]}")
            try:
                httpx.get(self.url + "/", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not come up")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _nginx_binary() -> str | None:
    """nginx's path, or None when it is not installed (``scripts/setup.sh --bench`` installs
    Debian's nginx-light)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    return found


class _Floor:
    """bench/asgi_floor.py under uvicorn (one worker, as ours): the floor of a Python ASGI tile server."""

    def __init__(self, root: Path, log: Path):
        self.port = free_port()
        env = dict(os.environ, GEOBASE_BENCH_FLOOR_ROOT=str(root), PORT_FOR_BENCH=str(self.port))
        self.server = Server([sys.executable, "-m", "uvicorn", "asgi_floor:app", "--port", str(self.port),
                              "--log-level", "warning", "--no-access-log", "--app-dir", str(Path(__file__).parent)],
                             env, "/health", log)

    def stop(self) -> None:
        self.server.stop()


#: the bounded-states variant timed beside the default (GEOBASE_TILE_STATES_MAX_AGE_MS, tiles/fresh.py)
BOUNDED_MS = 100


def _ours_bounded(url: str, data_dir: Path) -> Server:
    """Our server with cached tiles answered from layer states up to BOUNDED_MS old (no catalog
    round trip per tile); everything else as the default one."""
    old = os.environ.get("GEOBASE_TILE_STATES_MAX_AGE_MS")
    os.environ["GEOBASE_TILE_STATES_MAX_AGE_MS"] = str(BOUNDED_MS)
    try:
        return _ours(url, data_dir / "bounded", 2 * 1024**3)
    finally:
        if old is None:
            os.environ.pop("GEOBASE_TILE_STATES_MAX_AGE_MS", None)
        else:
            os.environ["GEOBASE_TILE_STATES_MAX_AGE_MS"] = old


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its children (uvicorn's workers)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _cached(ctx: Context, url: str, data_dir: Path, tiles: list) -> None:
    """Our cached tiles (default, and with states up to BOUNDED_MS old) against nginx on the same
    files and the bare ASGI floor, interleaved."""
    clients = int(os.environ.get("GEOBASE_BENCH_CACHED_CLIENTS", "32"))
    total = 2_000 if ctx.quick else 20_000
    root = Path(tempfile.mkdtemp(prefix="geobase-bench-nginx-"))
    root.chmod(0o755)  # nginx workers may run as nobody
    ours = _ours(url, data_dir, 2 * 1024**3)
    sides: dict[str, object] = {"ours": ours}
    nginx_bin = _nginx_binary()
    if nginx_bin is None:
        print("tiles cached: nginx is NOT installed (scripts/setup.sh --bench installs nginx-light): "
              "the ceiling is not measured", flush=True)
    paths = []
    try:
        (data_dir / "bounded").mkdir(exist_ok=True)
        sides["bounded"] = _ours_bounded(url, data_dir)
        for side in ("ours", "bounded"):  # fill both caches; keep the same gzip bytes for nginx
            with httpx.Client(base_url=sides[side].url, timeout=600) as c:
                for z, x, y in tiles:
                    path = OURS_TILES.format(z=z, x=x, y=y)
                    r = c.get(path, headers={"Accept-Encoding": "gzip"})
                    r = c.get(path, headers={"Accept-Encoding": "gzip"})
                    if r.status_code != 200:
                        continue  # an empty tile (204) has no body to cache on disk
                    if r.headers.get("x-tile-cache") != "hit":
                        raise RuntimeError(f"{path}: not served from our cache ({r.headers})")
                    if side == "ours":
                        f = root / "www" / path.lstrip("/")
                        f.parent.mkdir(parents=True, exist_ok=True)
                        f.write_bytes(_raw_body(c, path))
                        paths.append(path)
        for d in [root, *root.rglob("*")]:
            d.chmod(0o755 if d.is_dir() else 0o644)
        if nginx_bin is not None:
            sides["nginx"] = _Nginx(root, nginx_bin)
        sides["floor"] = _Floor(root / "www", data_dir / "asgi-floor.log")
        got = _hammer_rounds(ctx, sides, paths, clients, total)
    finally:
        for side in sides.values():
            side.stop()
        shutil.rmtree(root, ignore_errors=True)
    _report_cached(ctx, got, clients, len(paths), total)


def _hammer_rounds(ctx: Context, sides: dict, paths: list[str], clients: int, total: int) -> dict:
    """Per side: rates (per round), all latencies, the client's CPU share (per round), the
    server's CPU microseconds per answer (per round; the process and its children)."""
    got: dict[str, dict[str, list]] = {k: {"rate": [], "lat": [], "client_cpu": [], "server_us": []} for k in sides}
    for side in sides.values():  # warm-up, untimed
        hammer(side.port, paths, clients, clients * 20)
    for _ in range(ctx.rounds):
        for name, side in sides.items():
            proc = getattr(getattr(side, "server", side), "proc", None)
            c0 = _cpu_s(proc.pid) if proc is not None else 0.0
            h = hammer(side.port, paths, clients, total)
            if proc is not None:
                got[name]["server_us"].append((_cpu_s(proc.pid) - c0) / len(h.latencies_s) * 1e6)
            got[name]["rate"].append(h.rate)
            got[name]["lat"] += h.latencies_s
            got[name]["client_cpu"].append(h.client_cpu_s / h.wall_s)
    return got


def _report_cached(ctx: Context, got: dict, clients: int, distinct: int, total: int) -> None:
    def ms(side: str, p: float) -> float:
        return round(percentile(got[side]["lat"], p) * 1000, 2)

    def cpu(side: str) -> list[float]:
        return [round(v) for v in got[side]["server_us"]]

    extra = {"p50_ms_ours": ms("ours", 50), "p99_ms_ours": ms("ours", 99), "target": ">= 5,000 tiles/s, p99 < 20 ms",
             "distinct_tiles": distinct, "requests_per_round": total,
             "client": "bench/hammer.py: 2 processes, raw keep-alive HTTP/1.1, no pipelining",
             "client_cpu_cores_ours": round(median(got["ours"]["client_cpu"]), 2),
             "server_cpu_us_per_tile_ours": cpu("ours"), "server_cpu_us_per_tile_floor": cpu("floor"),
             "freshness": "default: every cached tile waits for a catalog read begun after it arrived"}
    name = f"tiles cached, {clients} concurrent keep-alive clients"
    if "nginx" in got:
        extra |= {"p50_ms_nginx": ms("nginx", 50), "p99_ms_nginx": ms("nginx", 99),
                  "client_cpu_cores_nginx": round(median(got["nginx"]["client_cpu"]), 2)}
        ctx.report(Result.rounds(name, got["ours"]["rate"], got["nginx"]["rate"],
                                 "nginx 1 worker, sendfile, the same gzip tile files on disk (the ceiling)", "tiles/s",
                                 higher_is_better=True, extra=extra))
    else:
        ctx.report(Result.rounds(name, got["ours"]["rate"], None, None, "tiles/s", higher_is_better=True,
                                 extra=extra | {"nginx_ceiling": "not measured: nginx is not installed "
                                                                 "(scripts/setup.sh --bench installs nginx-light)"}))
    ctx.report(Result.rounds(f"tiles cached vs a bare Python ASGI app on the same uvicorn, {clients} clients",
                             got["ours"]["rate"], got["floor"]["rate"],
                             "bench/asgi_floor.py: the same bytes from memory, no checks at all", "tiles/s",
                             higher_is_better=True,
                             extra={"p50_ms_floor": ms("floor", 50), "p99_ms_floor": ms("floor", 99),
                                    "why": "the floor of any Python ASGI server here; the gap from it to ours is "
                                           "our per-tile key check, rate limit, audit context, freshness read and "
                                           "access decision"}))
    ctx.report(Result.rounds(f"tiles cached, layer states up to {BOUNDED_MS} ms old "
                             f"(GEOBASE_TILE_STATES_MAX_AGE_MS={BOUNDED_MS}), {clients} clients",
                             got["bounded"]["rate"], got["ours"]["rate"],
                             "ours with the default (a catalog read per batch of cached tiles)", "tiles/s",
                             higher_is_better=True,
                             extra={"p50_ms": ms("bounded", 50), "p99_ms": ms("bounded", 99),
                                    "server_cpu_us_per_tile": cpu("bounded"),
                                    "ratio_to_floor_per_round": [round(a / b, 2) for a, b in
                                                                 zip(got["bounded"]["rate"], got["floor"]["rate"])],
                                    "why": "a sharing change or an ingest holds within the bound instead of from "
                                           "the next request; no catalog round trip per cached tile"}))


def _raw_body(c: httpx.Client, path: str) -> bytes:
    """The gzip bytes exactly as our cache sends them (not decoded by the client)."""
    with c.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as r:
        if r.headers.get("content-encoding") != "gzip":
            raise RuntimeError(f"{path}: our server did not send gzip ({r.headers})")
        return b"".join(r.iter_raw())

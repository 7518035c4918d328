"""Vector tiles read only the counties they show (issue 16): a tile's statement names the counties
whose extent meets it (geobase/tiles/prune.py), PostgreSQL prunes the others' partitions (also
with a generic prepared plan), and every tile is the same bytes as the tile read from every
county — inside a county, on the border of two, across it, outside both, and when the extents
kept were read before a county was loaded. ``division=`` on tile URLs draws only those
counties, is checked as on items (an unknown code is a 400 naming ``division``) and is cached
apart from the plain tile.

Counties A and B: 4x4 parcels of 100 m each, B's grid right against A's east edge.
Real PostGIS, real ingests of shapefiles, real HTTP to a uvicorn subprocess.
"""

from __future__ import annotations

import asyncio
import gzip
import math

import mapbox_vector_tile
import psycopg
import pytest
from psycopg import sql
from test_divisions import A, B, county_gdf, load
from test_province_division import _refused

from geobase.catalog import sync_catalog
from geobase.catalog.state import layer_states
from geobase.specs import get_registry
from geobase.tiles import prune
from geobase.tiles.mvt import plan_layer, statement_arity, statement_numbers, tile_template
from geobase.tiles.render import render
from geobase.tiles.tms import WEB_MERCATOR_QUAD as W

C = "339903"  # loaded last, beside B: a county the extents kept do not know yet


def _county(settings, tmp_path, county: str, east: int) -> None:
    """The county's 16 parcels ``east`` grids (400 m each) east of A's."""
    load(settings, tmp_path, county, county_gdf(county, dx=400.0 * east))


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def _extents(settings) -> dict[str, tuple[float, ...]]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT division, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM ("
                            "SELECT division, ST_Extent(geom) e FROM data.land_use WHERE _vto IS NULL "
                            "GROUP BY division) x").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _tiles(settings) -> list[tuple[int, int, int]]:
    """Every tile (z 11-18) over the counties and a ring around them: inside A, inside B, on and
    across their border, and empty ones beside them (below z13 land use is drawn as class cells,
    a statement composed per tile)."""
    boxes = list(_extents(settings).values())
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    out = []
    for z in (11, 12, 14, 15, 16, 17, 18):
        (ca, rb), (cb, ra) = _tile(x0, y0, z), _tile(x1, y1, z)
        out += [(z, r, c) for r in range(ra - 1, rb + 2) for c in range(ca - 1, cb + 2)]
    return out


async def _renders(settings, tiles, states=None) -> list[tuple[bytes, bytes, tuple | None]]:
    """(the tile read from every county, the pruned tile, the counties it read) of each tile."""
    registry = get_registry()
    spec = registry.layer("land_use")
    out = []
    async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        fresh = await layer_states(conn)
        for z, row, col in tiles:
            plan = plan_layer(spec, registry, z, set())
            plain = await render(conn, [plan], ["land_use"], W, z, row, col, None)
            pruned = await prune.render_pruned(conn, [plan], ["land_use"], states or fresh, W, z, row, col, None)
            (narrowed,), _ = await prune.pruned(conn, [plan], fresh, W, z, row, col)
            out.append((plain[3], pruned[3], narrowed.counties))
    return out


def test_tiles_read_only_the_counties_they_meet_and_are_the_same_bytes(db_settings, tmp_path):
    s = db_settings
    _county(s, tmp_path, A, 0)
    _county(s, tmp_path, B, 1)  # right against A's east edge
    tiles = _tiles(s)
    got = asyncio.run(_renders(s, tiles))
    assert all(plain == pruned for plain, pruned, _ in got), [t for t, g in zip(tiles, got) if g[0] != g[1]]
    counties = {g[2] for g in got}
    # inside one county, on the border (both), beside them (none) — and features drawn at all
    assert {(A,), (B,), (A, B), ()} <= counties, counties
    assert sum(1 for g in got if g[0]) > 10

    # PostgreSQL prunes the other county's partition, with a generic prepared plan too
    inside_a = next(t for t, g in zip(tiles, got) if g[2] == (A,) and g[0])
    registry = get_registry()
    plan = plan_layer(registry.layer("land_use"), registry, inside_a[0], set())

    async def explain() -> str:
        async with await psycopg.AsyncConnection.connect(s.database_url, autocommit=True) as conn:
            (narrowed,), _ = await prune.pruned(conn, [plan], await layer_states(conn), W, *inside_a)
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            types = sql.SQL(", ".join(["float8"] * statement_arity([narrowed])))
            await conn.execute(sql.SQL("PREPARE t ({}) AS {}").format(
                types, tile_template([narrowed], ["land_use"], W, inside_a[0])))
            cur = await conn.execute(sql.SQL("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE t({})").format(
                sql.SQL(", ").join(sql.Literal(v) for v in statement_numbers([narrowed], W, *inside_a))))
            return "\n".join(r[0] for r in await cur.fetchall())

    text = asyncio.run(explain())
    assert "Subplans Removed" in text and f"land_use__{A}" in text and f"land_use__{B}" not in text, text


def test_a_county_loaded_after_the_extents_were_read_is_drawn(db_settings, tmp_path):
    s = db_settings
    _county(s, tmp_path, A, 0)
    _county(s, tmp_path, B, 1)
    before = asyncio.run(_states(s))
    tiles = _tiles(s)
    asyncio.run(_renders(s, tiles))  # the extents of this version kept (this process's, as a server's)
    _county(s, tmp_path, C, 2)  # C: beside B, in tiles whose kept extents say "B only" or "none"
    tiles = _tiles(s)
    # the request's states are the old ones (a guess read before C was loaded): the rows say
    # otherwise, and the tile is drawn again from every county
    got = asyncio.run(_renders(s, tiles, states=before))
    assert all(plain == pruned for plain, pruned, _ in got), [t for t, g in zip(tiles, got) if g[0] != g[1]]
    assert any(C in (g[2] or ()) for g in got)


async def _states(settings):
    async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        return await layer_states(conn)


def _features(body: bytes) -> list[str]:
    """Each land use feature of an MVT (gzip or not): its key and geometry (both counties number
    their parcels 1-16; the geometry tells them apart)."""
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    layer = mapbox_vector_tile.decode(body).get("land_use", {"features": []})
    return sorted(f"{f['properties'].get('_key')} {f['geometry']}" for f in layer["features"])


def test_division_on_tile_urls_draws_those_counties_and_is_checked_and_cached_apart(db_settings, tmp_path,
                                                                                    live_server):
    s = db_settings
    _county(s, tmp_path, A, 0)
    _county(s, tmp_path, B, 1)
    with psycopg.connect(s.database_url) as conn:
        sync_catalog(conn, s)
        conn.commit()
    border = next(t for t, g in zip(_tiles(s), asyncio.run(_renders(s, _tiles(s)))) if g[2] == (A, B) and t[0] == 17)
    z, row, col = border
    srv = live_server(s)
    with srv.client() as http:
        def get(url: str, **params) -> bytes:
            r = http.get(url, params=params, headers={"Accept-Encoding": "gzip"})
            assert r.status_code == 200, (url, params, r.text[:300])
            return r.content

        xyz = f"/tiles/land_use/{z}/{col}/{row}.mvt"
        plain = get(xyz)  # cached now: the fast path answers it next time
        assert get(xyz) == plain
        both = _features(plain)
        only_a, only_b = _features(get(xyz, division=A)), _features(get(xyz, division=B))
        assert only_a and only_b and sorted(only_a + only_b) == both  # each county its own features
        assert _features(get(xyz, division=f"{B},{A}")) == both
        ogc = f"/collections/land_use/tiles/WebMercatorQuad/{z}/{row}/{col}"
        assert _features(get(ogc, division=A)) == only_a
        composite = f"/map/tiles/WebMercatorQuad/{z}/{row}/{col}"
        assert _features(get(composite, division=B)) == only_b
        assert _features(get(xyz, division=A)) == only_a  # its own cache entry, not the plain tile's
        for url in (xyz, ogc, composite):
            _refused(http.get(url, params={"division": "339999"}), "division", "not a known division")
            _refused(http.get(url, params={"division": "33"}), "division", "6-digit county code")


def _opaque(png: bytes) -> set[tuple[int, int]]:
    """The pixels a PNG tile draws something on (alpha > 0)."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGBA")
    alpha = img.getchannel("A").load()
    return {(x, y) for x in range(img.width) for y in range(img.height) if alpha[x, y]}


def test_division_on_wmts_tiles_and_tilejson(db_settings, tmp_path, live_server):
    """``division=`` on WMTS tiles (RESTful and KVP GetTile, features and, below the detail zoom,
    class cells) and on TileJSON, checked as on the other tile URLs (an unknown county is a 400
    naming ``division``), and refused where it would be ignored (GetCapabilities,
    GetFeatureInfo)."""
    s = db_settings
    _county(s, tmp_path, A, 0)
    _county(s, tmp_path, B, 1)
    with psycopg.connect(s.database_url) as conn:
        sync_catalog(conn, s)
        conn.commit()
    extents = _extents(s)
    border = next(t for t, g in zip(_tiles(s), asyncio.run(_renders(s, _tiles(s)))) if g[2] == (A, B) and t[0] == 17)
    z, row, col = border
    lon, lat = extents[A][2], (extents[A][1] + extents[A][3]) / 2  # on the border of A and B
    cx, cy = _tile(lon, lat, 12)  # a class-cell tile over both counties
    srv = live_server(s)
    with srv.client() as http:
        def get(url: str, **params) -> bytes:
            r = http.get(url, params=params)
            assert r.status_code == 200, (url, params, r.text[:300])
            return r.content

        for zz, rr, cc in ((z, row, col), (12, cy, cx)):
            rest = f"/wmts/1.0.0/land_use/default/WebMercatorQuad/{zz}/{rr}/{cc}.png"
            kvp = {"SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": "land_use",
                   "STYLE": "default", "TILEMATRIXSET": "WebMercatorQuad", "TILEMATRIX": str(zz), "TILEROW": str(rr),
                   "TILECOL": str(cc), "FORMAT": "image/png"}
            plain = _opaque(get(rest))
            only_a, only_b = _opaque(get(rest, division=A)), _opaque(get(rest, division=B))
            assert only_a and only_b and only_a != only_b, zz
            assert only_a < plain and only_b < plain, zz  # each county a part of the plain tile's drawing
            if zz == z:  # features: the two counties' drawings make up the plain tile's (but for the
                # few pixels two anti-aliased edges on the border only tint together)
                assert len(plain - (only_a | only_b)) < len(plain) / 100
                assert _opaque(get(rest, division=f"{B},{A}")) == plain
            assert _opaque(get("/wmts", **kvp, DIVISION=A)) == only_a, zz
            assert _opaque(get(rest, division=A)) == only_a  # its own cache entry, not the plain tile's
            _refused(http.get(rest, params={"division": "339999"}), "division", "not a known division")
            _refused(http.get("/wmts", params={**kvp, "DIVISION": "33"}), "division", "6-digit county code")
        _refused(http.get("/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities", "DIVISION": A}),
                 "division", "GetTile only")

        doc = http.get("/tiles/land_use.json", params={"division": A}).json()
        (template,) = doc["tiles"]
        assert template.endswith(f"&division={A}"), template
        assert doc["bounds"] == pytest.approx(list(extents[A]), abs=1e-9)
        assert http.get("/tiles/land_use.json").json()["bounds"] != doc["bounds"]
        tile = http.get(template.replace("{z}", str(z)).replace("{x}", str(col)).replace("{y}", str(row)),
                        headers={"Accept-Encoding": "gzip"})
        assert tile.status_code == 200 and _features(tile.content) == _features(
            get(f"/tiles/land_use/{z}/{col}/{row}.mvt", division=A))
        _refused(http.get("/tiles/land_use.json", params={"division": "339999"}), "division", "not a known division")

"""Vector tiles: decoded and checked against the database, per layer and composite, in both
tile matrix sets; cache/ETag behaviour across a new version; client errors."""

from __future__ import annotations

import gzip
import json
import re

import mapbox_vector_tile
import numpy as np
import psycopg
import pytest
from geobase.tiles.tms import CGCS2000_QUAD, WEB_MERCATOR_QUAD, lonlat_to_mercator
from test_tiles_data import LAND_CODES, LAT0, LON0, commit_version, load_test_county, water_rows

from geobase.db import database_url


def tile_xy(tms, z, lon, lat):
    x, y = (lonlat_to_mercator(lon, lat) if tms.srid == 3857 else (lon, lat))
    span = tms.tile_span(z)
    return int((tms.origin[1] - y) // span), int((x - tms.origin[0]) // span)


@pytest.fixture(scope="module")
def county(pg_server, template_db, tmp_path_factory):
    from conftest import create_database, drop_database, settings_for

    name = "gb_tiles_county"
    url = create_database(pg_server, name, template_db)
    s = settings_for(url, tmp_path_factory.mktemp("tilescounty"))
    load_test_county(s)
    yield s
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def server(county):
    from conftest import LiveServer

    srv = LiveServer(county)
    yield srv
    srv.stop()


def decode(resp):
    assert resp.status_code == 200, resp.text
    return mapbox_vector_tile.decode(resp.content)



def db_keys(settings, layer, tms, z, row, col) -> set[str]:
    """Keys of the layer's current rows intersecting the tile, straight from the database."""
    xmin, ymin, xmax, ymax = tms.bounds(z, row, col)
    col_name = "geom_3857" if tms.srid == 3857 else "geom"
    with psycopg.connect(database_url(settings)) as conn:
        rows = conn.execute(
            f'SELECT _key FROM data."{layer}" WHERE _vto IS NULL AND ST_Intersects({col_name}, '
            f"ST_MakeEnvelope(%s, %s, %s, %s, %s))", (xmin, ymin, xmax, ymax, tms.srid)).fetchall()
    return {r[0] for r in rows}


def get_tile(c, tms, z, row, col, layers="land_use"):
    if layers == "onemap":
        return c.get(f"/map/tiles/{tms.id}/{z}/{row}/{col}")
    return c.get(f"/collections/{layers}/tiles/{tms.id}/{z}/{row}/{col}")


@pytest.mark.parametrize("tms,z", [(WEB_MERCATOR_QUAD, 13), (WEB_MERCATOR_QUAD, 15), (CGCS2000_QUAD, 13),
                                   (CGCS2000_QUAD, 15)])
def test_land_use_tile_matches_database(server, county, tms, z):
    row, col = tile_xy(tms, z, LON0 + 0.0312, LAT0 + 0.0377)
    with server.client() as c:
        layer = decode(get_tile(c, tms, z, row, col))["land_use"]
    keys = {f["properties"]["_key"] for f in layer["features"]}
    expected = db_keys(county, "land_use", tms, z, row, col)
    assert expected and keys == expected
    for f in layer["features"]:
        props = f["properties"]
        assert props["dlbm"] == LAND_CODES[int(props["_key"][2:4]) % len(LAND_CODES)]
        # detail attributes from detail_zoom 13; owner names are hidden from the public
        assert {"bsm", "dlmc", "zldwmc", "tbmj"} <= set(props)
        assert "qsdwmc" not in props and "qsdwdm" not in props
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
    # a parcel's tile geometry is its square: 4 distinct corners inside the 4096 extent (+buffer)
    ring = layer["features"][0]["geometry"]["coordinates"][0]
    assert len({tuple(p) for p in ring}) == 4
    assert all(-64 <= v <= 4096 + 64 for p in ring for v in p)


def test_attributes_follow_zoom(server, county):
    z = 12
    row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.05, LAT0 + 0.05)
    with server.client() as c:
        tile = decode(get_tile(c, WEB_MERCATOR_QUAD, z, row, col, "onemap"))
    # below detail_zoom (13) land use carries only its class (cells of the dominant class)
    assert all(set(f["properties"]) == {"dlbm"} for f in tile["land_use"]["features"])
    # water areas: the spec's tile attributes and the feature key, nothing else (fid_src, grade not)
    assert set(tile["water_areas"]["features"][0]["properties"]) == {"_key", "kind", "name"}


@pytest.mark.parametrize("z", [9, 12])
def test_low_zoom_land_use_is_aggregated_by_class(server, county, z):
    # z < detail_zoom: dominant class per 2-pixel cell, every class still drawn
    row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.05, LAT0 + 0.05)
    with server.client() as c:
        r = get_tile(c, WEB_MERCATOR_QUAD, z, row, col)
        layer = decode(r)["land_use"]
    classes = {f["properties"]["dlbm"] for f in layer["features"]}
    assert classes == set(LAND_CODES)
    assert all(set(f["properties"]) == {"dlbm"} for f in layer["features"])
    assert len(r.content) < 500 * 1024


def test_below_layer_minzoom_is_empty(server):
    row, col = tile_xy(WEB_MERCATOR_QUAD, 7, LON0 + 0.05, LAT0 + 0.05)  # land_use minzoom 8
    with server.client() as c:
        r = get_tile(c, WEB_MERCATOR_QUAD, 7, row, col)
    assert r.status_code == 204 and r.headers["etag"]


@pytest.mark.parametrize("tms", [WEB_MERCATOR_QUAD, CGCS2000_QUAD])
def test_composite_tile_carries_every_visible_layer(server, county, tms):
    z = 14
    row, col = tile_xy(tms, z, LON0 + 0.05, LAT0 + 0.07)  # lake, parcels; control lines are internal
    with server.client() as c:
        tile = decode(get_tile(c, tms, z, row, col, "onemap"))
        xyz = c.get(f"/tiles/onemap/{z}/{col}/{row}.mvt", params={"tms": tms.id})
        assert decode(xyz).keys() == tile.keys()
        hidden = c.get(f"/tiles/control_lines/{z}/{col}/{row}.mvt", params={"tms": tms.id})
        assert hidden.status_code == 404
    assert set(tile) == {"land_use", "water_areas"}
    assert {f["properties"]["_key"] for f in tile["water_areas"]["features"]} == {"W1"}
    assert tile["water_areas"]["features"][0]["properties"]["kind"] == "lake"
    assert {f["properties"]["_key"] for f in tile["land_use"]["features"]} == db_keys(county, "land_use", tms, z, row, col)


def test_errors(server):
    with server.client() as c:
        assert c.get("/tiles/land_use/30/0/0.mvt").status_code == 400
        r = c.get("/tiles/land_use/3/8/0.mvt")
        assert r.status_code == 400 and r.json()["parameter"] == "tileCol"
        assert c.get("/tiles/land_use/3/0/-1.mvt").status_code == 400
        assert c.get("/tiles/land_use/a/0/0.mvt").status_code == 400
        assert c.get("/tiles/nope/3/0/0.mvt").status_code == 404
        assert c.get("/tiles/land_use,nope/3/0/0.mvt").status_code == 404
        assert c.get("/collections/nope/tiles/WebMercatorQuad/3/0/0").status_code == 404
        assert c.get("/collections/land_use/tiles/NoSuchGrid/3/0/0").status_code == 404
        assert c.get("/map/tiles/CGCS2000Quad/1/1/0").status_code == 400  # level 1 has one row
        assert c.get("/map/tiles/CGCS2000Quad/0/0/0").status_code == 400  # and there is no level 0
        assert c.get("/tiles/dem/relief/10/0/0.png").status_code == 400


def test_tile_matrix_sets_and_tilejson(server):
    with server.client() as c:
        ids = {t["id"] for t in c.get("/tileMatrixSets").json()["tileMatrixSets"]}
        assert ids == {"WebMercatorQuad", "CGCS2000Quad"}
        cg = c.get("/tileMatrixSets/CGCS2000Quad").json()
        level1 = cg["tileMatrices"][0]
        assert (level1["id"], level1["matrixWidth"], level1["matrixHeight"], level1["cellSize"]) == ("1", 2, 1, 180 / 256)
        assert cg["crs"].endswith("/4490")
        ts = c.get("/collections/land_use/tiles/WebMercatorQuad").json()
        assert ts["dataType"] == "vector" and ts["layers"][0]["id"] == "land_use"
        tj = c.get("/tiles/land_use,water_areas.json").json()
        assert tj["tilejson"] == "3.0.0" and [v["id"] for v in tj["vector_layers"]] == ["land_use", "water_areas"]
        assert tj["tiles"][0].split("?v=")[0].endswith("/tiles/land_use,water_areas/{z}/{x}/{y}.mvt")
        assert tj["bounds"][0] == pytest.approx(LON0)
        assert c.get("/tiles/control_lines.json").status_code == 404


def test_etag_gzip_and_cache(server):
    row, col = tile_xy(WEB_MERCATOR_QUAD, 14, LON0 + 0.03, LAT0 + 0.03)
    url = f"/tiles/land_use/14/{col}/{row}.mvt"
    with server.client() as c:
        first = c.get(url, headers={"Accept-Encoding": "gzip"})
        again = c.get(url, headers={"Accept-Encoding": "gzip"})
        assert again.headers["x-tile-cache"] == "hit" and again.headers["etag"] == first.headers["etag"]
        assert again.headers["content-encoding"] == "gzip"
        assert again.content == first.content
        plain = c.get(url, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == first.content
        not_modified = c.get(url, headers={"If-None-Match": first.headers["etag"]})
        assert not_modified.status_code == 304 and not not_modified.content
        assert first.headers["cache-control"] == "public, no-cache"  # unversioned URL: revalidate


def test_new_version_changes_only_affected_tiles(new_db, live_server):
    s = new_db()
    load_test_county(s, dem=False)
    srv = live_server(s)
    z = 12  # the lake lies inside one tile
    row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.05, LAT0 + 0.07)
    urls = {n: f"/tiles/{n}/{z}/{col}/{row}.mvt" for n in ("water_areas", "land_use", "onemap")}
    with srv.client() as c:
        before = {n: c.get(u) for n, u in urls.items()}
        assert all(r.status_code == 200 for r in before.values())
        # the lake moves 0.002° east in a new version of water_areas
        with psycopg.connect(database_url(s)) as conn:
            commit_version(conn, "water_areas", water_rows(shift=0.002))
            conn.commit()
        after = {n: c.get(u) for n, u in urls.items()}
    assert after["water_areas"].headers["etag"] != before["water_areas"].headers["etag"]
    assert after["water_areas"].content != before["water_areas"].content
    assert after["onemap"].headers["etag"] != before["onemap"].headers["etag"]
    assert after["land_use"].headers["etag"] == before["land_use"].headers["etag"]
    assert after["land_use"].headers["x-tile-cache"] == "hit"
    old = decode(before["water_areas"])["water_areas"]["features"][0]["geometry"]["coordinates"][0]
    new = decode(after["water_areas"])["water_areas"]["features"][0]["geometry"]["coordinates"][0]
    assert min(p[0] for p in new) > min(p[0] for p in old) and max(p[0] for p in new) > max(p[0] for p in old)


def test_dem_tiles(server, county):
    from geobase.tiles.raster import slope_degrees

    z = 13
    row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.05, LAT0 + 0.05)
    with server.client() as c:
        for style in ("hillshade", "elevation", "slope"):
            r = c.get(f"/tiles/dem/{style}/{z}/{col}/{row}.png")
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
            assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
        ogc = c.get(f"/collections/dem/tiles/WebMercatorQuad/{z}/{row}/{col}", params={"style": "slope"})
        assert ogc.status_code == 200 and ogc.content == c.get(f"/tiles/dem/slope/{z}/{col}/{row}.png").content
        far = c.get(f"/tiles/dem/hillshade/{z}/0/0.png")  # outside the DEM: a transparent tile
        assert far.status_code == 200 and len(far.content) < 1000
    # the plane rises 1 m per 10 m eastwards: slope atan(0.1) = 5.71° in ground metres
    path = county.data_path / "rasters" / "dem_v1.tif"
    slope = slope_degrees(path, z, col, row, WEB_MERCATOR_QUAD)
    assert abs(float(np.median(slope)) - 5.71) < 0.2


def test_dem_tiles_in_the_cgcs2000_grid(server, county):
    """The DEM in CGCS2000Quad (Tianditu _c layout). The test DEM is a plane rising eastwards and
    both grids split longitude alike at level 13, so slope, hillshade (in ground metres, not
    degrees) and elevation come out as in the Web Mercator tile over the same point."""
    from geobase.tiles.raster import slope_degrees
    from rasterio.io import MemoryFile

    def pixels(resp):
        assert resp.status_code == 200 and resp.headers["content-type"] == "image/png", resp.text
        with MemoryFile(resp.content) as mem, mem.open() as png:  # GDAL's PNG driver
            return png.read()

    z = 13
    row, col = tile_xy(CGCS2000_QUAD, z, LON0 + 0.05, LAT0 + 0.05)
    mrow, mcol = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.05, LAT0 + 0.05)
    with server.client() as c:
        for style in ("hillshade", "elevation", "slope"):
            cg = pixels(c.get(f"/collections/dem/tiles/CGCS2000Quad/{z}/{row}/{col}", params={"style": style}))
            wm = pixels(c.get(f"/collections/dem/tiles/WebMercatorQuad/{z}/{mrow}/{mcol}", params={"style": style}))
            assert cg.shape == (4, 256, 256) and (cg[3] == 255).mean() > 0.9  # inside the DEM: drawn
            assert np.abs(np.median(cg[:3], axis=(1, 2)) - np.median(wm[:3], axis=(1, 2))).max() <= 2, style
        far = c.get("/collections/dem/tiles/CGCS2000Quad/13/0/0")  # outside the DEM: transparent
        assert far.status_code == 200 and len(far.content) < 1000
    path = county.data_path / "rasters" / "dem_v1.tif"
    slope = slope_degrees(path, z, col, row, CGCS2000_QUAD)
    assert abs(float(np.median(slope)) - 5.71) < 0.2


def test_style_and_legend(server):
    with server.client() as c:
        style = c.get("/map/style.json").json()
        assert c.get("/styles/onemap.json").json()["layers"] == style["layers"]
        legend = c.get("/legend").json()
        html = c.get("/legend", params={"f": "html"})
    fill = next(l for l in style["layers"] if l["id"] == "land_use-fill")
    expr = fill["paint"]["fill-color"]
    assert expr[0] == "match" and expr[expr.index(["0101"]) + 1] == "#f3e46e"  # labels as arrays (QGIS 3.22)
    ids = [l["id"] for l in style["layers"]]
    assert ids.index("dem-hillshade") < ids.index("land_use-fill") < ids.index("water_areas-fill")
    assert "control_lines-outline" not in ids  # internal layer, public caller
    text = json.dumps(style)
    urls = re.findall(r"https?://[^\"{]+", text)
    assert urls and all(u.startswith(server.url) for u in urls)
    assert "glyphs" not in style and "sprite" not in style
    lu = next(e for e in legend["layers"] if e["layer"] == "land_use")
    assert {"code": "0101", "color": "#f3e46e"}.items() <= next(c for c in lu["classes"] if c["code"] == "0101").items()
    assert html.status_code == 200 and "#f3e46e" in html.text


def test_cache_eviction_keeps_size_bound(tmp_path):
    from geobase.tiles.cache import TileCache

    cache = TileCache(tmp_path, max_bytes=2500)
    for i in range(5):
        cache.put(f"{i:040d}", b"x" * 1000)
        if i == 1:
            cache.get(f"{0:040d}")  # touch 0: 1 is now the oldest
    assert cache.total_bytes <= 2500
    assert cache.get(f"{0:040d}") is None or cache.get(f"{1:040d}") is None
    assert cache.get(f"{4:040d}") == b"x" * 1000
    assert sum(1 for _ in tmp_path.glob("*/*")) == 2


def test_cli_seed_fills_the_cache(county, server):
    import os
    import subprocess
    import sys

    env = dict(os.environ, GEOBASE_DATABASE_URL=county.database_url, GEOBASE_DATA_DIR=str(county.data_dir))
    cmd = [sys.executable, "-m", "geobase.cli", "tiles", "seed", "--layers", "water_areas", "--zoom", "10-13"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    assert " tiles: " in out.stdout and "rendered" in out.stdout
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=120)
    n = int(again.stdout.split(" tiles:")[0].replace(",", "").split()[-1])
    assert f"{n:,} already cached" in again.stdout  # second run: everything is a hit
    # the server shares the cache directory: the seeded tile is a hit there too
    row, col = tile_xy(WEB_MERCATOR_QUAD, 12, LON0 + 0.05, LAT0 + 0.07)
    with server.client() as c:
        assert c.get(f"/tiles/water_areas/12/{col}/{row}.mvt").headers["x-tile-cache"] == "hit"
    bad = subprocess.run([*cmd[:-1], "14-x"], env=env, capture_output=True, text=True, check=False, timeout=60)
    assert bad.returncode == 2 and "--zoom" in bad.stderr


def test_tile_past_statement_timeout_is_503(county, live_server, tmp_path):
    s = county.model_copy(update={"data_dir": tmp_path})
    srv = live_server(s, env={"GEOBASE_TILE_STATEMENT_TIMEOUT_MS": "1", "GEOBASE_TILE_CACHE_MAX_BYTES": "0"})
    row, col = tile_xy(WEB_MERCATOR_QUAD, 9, LON0 + 0.05, LAT0 + 0.05)
    with srv.client() as c:
        r = c.get(f"/tiles/onemap/9/{col}/{row}.mvt")
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert c.get("/tileMatrixSets").status_code == 200  # the pooled connection is not left broken
        assert c.get(f"/tiles/onemap/9/{col}/{row}.mvt").status_code == 503


def test_pyramid_tiles_equal_on_the_fly_tiles(new_db):
    """Low-zoom land use read from the per-version pyramid is the same picture as computed live."""
    import asyncio

    from geobase.tiles import pyramid
    from geobase.tiles.service import resolve_layers, vector_tile

    from geobase.catalog.state import layer_states
    from geobase.security import PUBLIC
    from geobase.specs import get_registry

    s = new_db()
    load_test_county(s, dem=False)
    url = database_url(s)
    reg = get_registry(s)
    # a few small parcels in one corner so that cells aggregate several parcels of mixed classes
    with psycopg.connect(url) as conn:
        rows = [{"_key": f"S{i}", "bsm": f"S{i}", "dlbm": LAND_CODES[i % 3], "wkt":
                 f"MULTIPOLYGON((({LON0 + i * 0.0003} {LAT0 - 0.001},{LON0 + i * 0.0003 + 0.0003} {LAT0 - 0.001},"
                 f"{LON0 + i * 0.0003 + 0.0003} {LAT0 - 0.0007},{LON0 + i * 0.0003} {LAT0 - 0.0007},"
                 f"{LON0 + i * 0.0003} {LAT0 - 0.001})))"} for i in range(40)]
        from test_tiles_data import land_use_rows

        commit_version(conn, "land_use", land_use_rows() + rows)
        conn.commit()

    async def render(z, use_pyramid):
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            states = await layer_states(conn)
            specs = resolve_layers("land_use", states, PUBLIC, reg)
            row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.01, LAT0)
            res = await vector_tile(conn, None, reg, PUBLIC, states, specs, WEB_MERCATOR_QUAD, z, row, col,
                                    pyramid_url=url if use_pyramid else None)
            return mapbox_vector_tile.decode(gzip.decompress(res.body))["land_use"]["features"]

    version = 2
    assert pyramid.build(url, reg.layers["land_use"], version, "dlbm", 13)
    assert not pyramid.build(url, reg.layers["land_use"], version, "dlbm", 13)  # built once
    for z in (8, 10, 12):
        live = asyncio.run(render(z, False))
        pyr = asyncio.run(render(z, True))
        key = lambda f: (f["properties"]["dlbm"], json.dumps(f["geometry"]["coordinates"]))
        assert sorted(map(key, live)) == sorted(map(key, pyr)), z
        assert {f["properties"]["dlbm"] for f in pyr} == set(LAND_CODES)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM tiles.cells WHERE layer = 'land_use' AND version = 2").fetchone()[0] > 0


def test_states_hint_never_serves_a_stale_guess(new_db):
    """A tile rendered optimistically under the last states seen (one round trip) is thrown away
    when the catalog changed meanwhile: a new version is drawn at once, a layer withdrawn from
    the public is a 404 at once, although the hint still holds the old states."""
    import asyncio

    from geobase.tiles.service import StatesHint, resolve_layers, tile_for, vector_tile

    from geobase.catalog.state import layer_states
    from geobase.errors import NotFound
    from geobase.security import PUBLIC
    from geobase.specs import get_registry

    s = new_db()
    load_test_county(s, dem=False)
    url = database_url(s)
    reg = get_registry(s)
    z = 12
    row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.05, LAT0 + 0.07)

    async def scenario():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            hint = StatesHint()
            first = await tile_for(conn, None, reg, PUBLIC, "water_areas", WEB_MERCATOR_QUAD, z, row, col, hint=hint)
            assert hint.states is not None
            stale = dict(hint.states)
            with psycopg.connect(url) as other:
                commit_version(other, "water_areas", water_rows(shift=0.002))
                other.commit()
            moved = await tile_for(conn, None, reg, PUBLIC, "water_areas", WEB_MERCATOR_QUAD, z, row, col, hint=hint)
            assert hint.states != stale, "the hint learns the new states"
            states = await layer_states(conn)
            specs = resolve_layers("water_areas", states, PUBLIC, reg)
            truth = await vector_tile(conn, None, reg, PUBLIC, states, specs, WEB_MERCATOR_QUAD, z, row, col)
            assert moved.etag != first.etag and moved.body == truth.body and moved.body != first.body
            await conn.execute("UPDATE catalog.layers SET sharing = 'private' WHERE name = 'water_areas'")
            with pytest.raises(NotFound):
                await tile_for(conn, None, reg, PUBLIC, "water_areas", WEB_MERCATOR_QUAD, z, row, col, hint=hint)

    asyncio.run(scenario())


def _water_without_version(new_db, live_server, **settings):
    """The test county served with water_areas as a layer before its first load committed (no
    current version): (server, database URL)."""
    s = new_db(**settings)
    load_test_county(s, dem=False)
    url = database_url(s)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE catalog.layers SET current_version = NULL WHERE name = 'water_areas'")
        conn.commit()
    return live_server(s), url


def test_composite_tile_skips_a_layer_without_version_even_while_its_table_is_locked(new_db, live_server):
    """A layer's first load holds its table locked until the version commits; the one map must
    not wait for it: a layer with no current version has nothing to draw and is not read."""
    srv, url = _water_without_version(new_db, live_server, tile_statement_timeout_ms=3000)
    z = 12
    row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.05, LAT0 + 0.07)
    with psycopg.connect(url) as locker, srv.client() as c:
        locker.execute("LOCK TABLE data.water_areas IN ACCESS EXCLUSIVE MODE")
        r = c.get(f"/tiles/onemap/{z}/{col}/{row}.mvt")
        assert r.status_code == 200, r.text
        layers = decode(r)
        assert "land_use" in layers and "water_areas" not in layers
        locker.rollback()


def test_items_of_a_layer_without_version_answer_while_its_table_is_locked(new_db, live_server):
    """The same first load seen through the features API: a layer with no current version has
    no items, and saying so must not wait for the table the load holds locked."""
    srv, url = _water_without_version(new_db, live_server, statement_timeout_ms=3000)
    with psycopg.connect(url) as locker, srv.client() as c:
        locker.execute("LOCK TABLE data.water_areas IN ACCESS EXCLUSIVE MODE")
        r = c.get("/collections/water_areas/items", params={"limit": 5, "numberMatched": "true"})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["features"] == [] and doc["numberMatched"] == 0
        csv = c.get("/collections/water_areas/items", params={"f": "csv"})
        assert csv.status_code == 200 and csv.text.splitlines()[0].startswith(("id", "_key", "WKT", "geometry"))
        assert c.get("/collections/water_areas/items/any-key").status_code == 404
        assert c.get("/collections/land_use/items", params={"limit": 1}).json()["features"]
        locker.rollback()

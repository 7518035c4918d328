"""The catalog is the one home of what the serving side reads about layers (issue #14): one
``LayerState`` for features and tiles, one reader of raster metadata keys, and the DEM tile's
conditional request answered by the same If-None-Match rule as every other route."""

from __future__ import annotations

from pathlib import Path

import psycopg
from geobase.tiles.tms import WEB_MERCATOR_QUAD
from test_tiles import tile_xy
from test_tiles_data import LAT0, LON0, load_test_county

from geobase.db import database_url


def _dem_url() -> str:
    z = 13
    row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.05, LAT0 + 0.05)
    return f"/tiles/dem/hillshade/{z}/{col}/{row}.png"


def test_dem_tile_revalidates_like_every_route(new_db, live_server):
    """A DEM tile's ETag answers 304 as api/deps.not_modified decides for features: the strong tag,
    its weak form (W/, what a proxy that recompressed it sends back) and ``*``; another tag gets
    the tile. The route used to compare the raw header items itself and missed W/ and *."""
    s = new_db()
    load_test_county(s)
    with live_server(s).client() as c:
        first = c.get(_dem_url())
        assert first.status_code == 200 and first.content[:8] == b"\x89PNG\r\n\x1a\n"
        etag = first.headers["etag"]
        for inm in (etag, f'"other", {etag}', f"W/{etag}", "*"):
            again = c.get(_dem_url(), headers={"If-None-Match": inm})
            assert again.status_code == 304 and not again.content, inm
            assert again.headers["etag"] == etag
        other = c.get(_dem_url(), headers={"If-None-Match": '"not-this-one"'})
        assert other.status_code == 200 and other.content == first.content


def test_raster_file_is_found_under_every_recorded_key(new_db, live_server):
    """A raster version whose metadata names its file under ``href`` (a key the slope analysis
    always read) is served by the DEM tiles and the coverage download too: one key list."""
    s = new_db()
    load_test_county(s)
    with psycopg.connect(database_url(s)) as conn:
        conn.execute("UPDATE catalog.layer_versions SET metadata = (metadata - 'path') "
                     "|| jsonb_build_object('href', metadata->>'path') WHERE layer = 'dem'")
        conn.commit()
    with live_server(s).client() as c:
        tile = c.get(_dem_url())
        assert tile.status_code == 200 and tile.content[:8] == b"\x89PNG\r\n\x1a\n", tile.text
        cov = c.get("/collections/dem/coverage")
        assert cov.status_code == 200 and cov.content[:4] in (b"II*\x00", b"MM\x00*")


def test_raster_file_key_order(tmp_path):
    from geobase.catalog.layers import RASTER_PATH_KEYS, CurrentLayer, raster_file
    from geobase.errors import NotFound

    def layer(meta):
        return CurrentLayer("dem", "natural_resources", "public", (), 1, None, None, None, None, meta)

    assert RASTER_PATH_KEYS[0] == "path"
    both = {k: f"{k}.tif" for k in reversed(RASTER_PATH_KEYS)}
    assert raster_file(layer(both), tmp_path) == tmp_path / "path.tif"  # the first key wins
    assert raster_file(layer({"href": "/abs/dem.tif"}), tmp_path) == Path("/abs/dem.tif")
    try:
        raster_file(layer({"other": "x"}), tmp_path, "collectionId")
    except NotFound as exc:
        assert exc.parameter == "collectionId"
    else:
        raise AssertionError("a version without a file is NotFound")


def test_style_of_a_catalog_without_extents(new_db, live_server):
    """The one-map style of a database where no layer is loaded yet centres on China instead of
    failing on the missing extent."""
    with live_server(new_db()).client() as c:
        r = c.get("/styles/onemap.json")
        assert r.status_code == 200, r.text
        assert r.json()["center"] == [105.0, 35.0] and r.json()["zoom"] == 3.0


def test_one_layer_state_for_features_and_tiles(new_db):
    """Features and tiles read the same LayerState from the catalog: the tiles' one query of
    every layer and the features' read of one layer with its versions agree on the access facts
    and the current version, and the features query is built from it."""
    import asyncio

    from geobase.tiles import service

    from geobase.catalog.state import LayerState, layer_state, layer_states
    from geobase.features import ItemsParams, build_query
    from geobase.security import LayerAccess
    from geobase.specs import get_registry

    s = new_db()
    load_test_county(s, dem=False)
    reg = get_registry(s)

    async def read():
        async with await psycopg.AsyncConnection.connect(database_url(s), autocommit=True) as conn:
            return await layer_states(conn), await layer_state(conn, reg.layers["land_use"])

    tiles, one = asyncio.run(read())
    assert type(tiles["land_use"]) is LayerState and type(one) is LayerState
    assert not hasattr(service, "LayerState") or service.LayerState is LayerState
    assert one.access == tiles["land_use"].access and isinstance(one.access, LayerAccess)
    assert one.current_version == tiles["land_use"].current_version == max(one.versions)
    assert one.spec is reg.layers["land_use"] and one.extent and tiles["land_use"].versions == {}
    q = build_query(one, set(), ItemsParams(), default_limit=10, max_limit=100)
    assert q.version == one.current_version and q.is_current

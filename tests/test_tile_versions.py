"""Tiles always show the current version (issue 12 item 6b, 6c):

* a pyramid (low-zoom) tile rendered while an ingest commits is never cached under the new
  version's key (forced interleaving: the ingest commits between planning and rendering);
* tile URLs carry the layers' version tag (TileJSON, style): a current tag is immutable for a
  year, an unversioned URL revalidates (ETag, 304), a stale tag never gets immutable content."""

from __future__ import annotations

import asyncio
import gzip
from urllib.parse import parse_qs, urlsplit

import mapbox_vector_tile
import psycopg
from geobase.tiles import pyramid
from geobase.tiles import service as tile_service
from geobase.tiles.cache import TileCache
from geobase.tiles.tms import WEB_MERCATOR_QUAD as W
from test_tiles import tile_xy
from test_tiles_data import LAND_CODES, LAT0, LON0, commit_version, land_use_rows, load_test_county

from geobase.catalog.state import layer_states
from geobase.db import database_url
from geobase.keys import create_key
from geobase.security import PUBLIC
from geobase.specs import get_registry


def _classes(body: bytes) -> set[str]:
    if not body:
        return set()
    layers = mapbox_vector_tile.decode(gzip.decompress(body))
    return {f["properties"]["dlbm"] for f in layers.get("land_use", {}).get("features", [])}


def test_pyramid_tile_rendered_across_an_ingest_is_not_cached_under_the_new_version(new_db, tmp_path):
    s = new_db()
    load_test_county(s, dem=False)
    url = database_url(s)
    reg = get_registry(s)
    with psycopg.connect(url) as conn:
        v1 = conn.execute("SELECT current_version FROM catalog.layers WHERE name = 'land_use'").fetchone()[0]
    assert pyramid.build(url, reg.layers["land_use"], v1, "dlbm", 13)
    z = 10
    row, col = tile_xy(W, z, LON0 + 0.03, LAT0 + 0.03)
    cache = TileCache(tmp_path / "tiles", 10**8)
    # the new version: every parcel becomes orchard (0201), a class no pyramid cell of v1 shows
    new_rows = [{**r, "dlbm": "0201", "dlmc": "orchard"} for r in land_use_rows()]

    async def ingest_now():
        with psycopg.connect(url) as other:
            commit_version(other, "land_use", new_rows)
            other.commit()

    async def scenario():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            states = await layer_states(conn)
            specs = tile_service.resolve_layers("land_use", states, PUBLIC, reg)
            tile_service.render_hook = ingest_now  # planned on v1's pyramid, the ingest commits, then render
            try:
                raced = await tile_service.vector_tile(conn, cache, reg, PUBLIC, states, specs, W, z, row, col,
                                                       pyramid_url=url)
            finally:
                tile_service.render_hook = None
            fresh = await layer_states(conn)
            assert fresh["land_use"].current_version == v1 + 1
            specs = tile_service.resolve_layers("land_use", fresh, PUBLIC, reg)
            after = await tile_service.vector_tile(conn, cache, reg, PUBLIC, fresh, specs, W, z, row, col,
                                                   pyramid_url=url)
            truth = await tile_service.vector_tile(conn, None, reg, PUBLIC, fresh, specs, W, z, row, col)
            return raced, after, truth

    raced, after, truth = asyncio.run(scenario())
    assert _classes(raced.body) <= set(LAND_CODES) and _classes(raced.body)  # v1's picture
    assert _classes(truth.body) == {"0201"}
    assert not after.cached, "the raced v1 tile was cached under v2's key"
    assert after.body == truth.body and after.etag != raced.etag


def _tile_url(template: str, z: int, x: int, y: int) -> str:
    parts = urlsplit(template.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y)))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_versioned_tile_urls_are_immutable_and_follow_an_ingest(new_db, live_server):
    s = new_db()
    load_test_county(s, dem=False)
    srv = live_server(s)
    z = 14
    row, col = tile_xy(W, z, LON0 + 0.03, LAT0 + 0.03)
    with srv.client() as c:
        tj = c.get("/tiles/land_use.json").json()
        template = tj["tiles"][0]
        tag = parse_qs(urlsplit(template).query)["v"][0]
        style = c.get("/map/style.json").json()
        onemap_tag = parse_qs(urlsplit(style["sources"]["onemap"]["tiles"][0]).query)["v"][0]
        versioned = _tile_url(template, z, col, row)
        r = c.get(versioned)
        assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=31536000, immutable"
        r_onemap = c.get(_tile_url(style["sources"]["onemap"]["tiles"][0], z, col, row))
        assert r_onemap.headers["cache-control"] == "public, max-age=31536000, immutable"
        plain = c.get(f"/tiles/land_use/{z}/{col}/{row}.mvt")
        assert plain.headers["cache-control"] == "public, no-cache" and plain.headers["etag"] == r.headers["etag"]
        again = c.get(f"/tiles/land_use/{z}/{col}/{row}.mvt", headers={"If-None-Match": plain.headers["etag"]})
        assert again.status_code == 304 and again.headers["cache-control"] == "public, no-cache"
        assert again.headers["etag"] == plain.headers["etag"]
        # a key-holder's tiles (and their tag: the view is part of it) are private
        with psycopg.connect(database_url(s)) as conn:
            token = create_key(conn, name="tile test", role="analyst", department="natural_resources").token
            conn.commit()
        key = {"X-API-Key": token}
        ktj = c.get("/tiles/land_use.json", headers=key).json()
        kr = c.get(_tile_url(ktj["tiles"][0], z, col, row), headers=key)
        assert kr.status_code == 200 and kr.headers["cache-control"] == "private, max-age=31536000, immutable"
        kplain = c.get(f"/tiles/land_use/{z}/{col}/{row}.mvt", headers=key)
        assert kplain.headers["cache-control"] == "private, no-cache"
        before = r.content

        # an ingest: a new version of land use
        with psycopg.connect(database_url(s)) as conn:
            commit_version(conn, "land_use", [{**x, "dlbm": "0201"} for x in land_use_rows()])
            conn.commit()
        tj2 = c.get("/tiles/land_use.json").json()
        tag2 = parse_qs(urlsplit(tj2["tiles"][0]).query)["v"][0]
        style2 = c.get("/map/style.json").json()
        assert tag2 != tag
        assert parse_qs(urlsplit(style2["sources"]["onemap"]["tiles"][0]).query)["v"][0] != onemap_tag
        # the old versioned URL: the new content, and not immutable (nor a year)
        stale = c.get(versioned)
        assert stale.status_code == 200 and "immutable" not in stale.headers["cache-control"]
        assert stale.headers["cache-control"] == "public, no-cache"
        assert stale.content != before
        fresh = c.get(_tile_url(tj2["tiles"][0], z, col, row))
        assert fresh.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert fresh.content == stale.content and fresh.headers["etag"] != r.headers["etag"]
        decoded = mapbox_vector_tile.decode(fresh.content)
        assert {f["properties"]["dlbm"] for f in decoded["land_use"]["features"]} == {"0201"}
        # revalidating the unversioned URL with the old ETag gets the new tile
        reval = c.get(f"/tiles/land_use/{z}/{col}/{row}.mvt", headers={"If-None-Match": plain.headers["etag"]})
        assert reval.status_code == 200 and reval.content == fresh.content

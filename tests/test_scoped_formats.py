"""A key limited to formats reads the data in exactly those formats, over HTTP (issue 19:
"approval issues a time-limited, scope-limited key (datasets, formats, bbox/division)"): files
(items as CSV, the change feed, the catalog's full downloads), the API's JSON and HTML pages,
vector tiles (also when the tile is cached, the fast path), WMTS picture tiles and
GetFeatureInfo, the DEM's tiles and coverage. The one rule: :func:`geobase.security.reads_format`.

Two keys of the same datasets and department (so the same view of the data, the same cached
tiles): one granted CSV only, one granted the pages, tiles and coverage. Metadata (TileJSON, the
collection) is not data: both read it."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for, tile_xy
from test_scoped_keys import ENV

VIEWS = ["json", "html", "mvt", "png", "geotiff"]


@pytest.fixture(scope="module")
def keyed(pg_server, county_template):
    """A server, forestry's steward, a CSV-only key and a pages-and-tiles key (forest and the DEM),
    and the forest's centre."""
    from geobase import keys

    name, data_dir = county_template
    db = f"gb_fmt_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, db, name)
    with psycopg.connect(url, autocommit=True) as conn:
        steward = keys.create_key(conn, name="forest steward", role="steward", department="forestry").token
        made = {tuple(f): keys.create_scoped_key(
            conn, name=f"fmt {f}", department="forestry", expires_days=1, created_by="test",
            scope={"datasets": ["forest", "dem"], "formats": f, "bbox": None}).token for f in (["csv"], VIEWS)}
        lon, lat = conn.execute("SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(ST_Extent(geom)) c "
                                "FROM data.forest WHERE _vto IS NULL) s").fetchone()
    srv = LiveServer(settings_for(url, data_dir), env=ENV)
    yield (srv, {"X-API-Key": made[("csv",)]}, {"X-API-Key": made[tuple(VIEWS)]}, {"X-API-Key": steward},
           (lon, lat))
    srv.stop()
    drop_database(pg_server, db)


def test_items_pages_and_files(keyed):
    srv, csv_key, views, _, _ = keyed
    with srv.client() as c:
        for params in ({"f": "json"}, {"f": "html"}):
            assert c.get("/collections/forest/items", headers=csv_key, params={**params, "limit": 2}).status_code == 403
            assert c.get("/collections/forest/items", headers=views, params={**params, "limit": 2}).status_code == 200
        r = c.get("/collections/forest/items", headers=csv_key, params={"f": "csv", "limit": 2})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        for params in ({"f": "csv"}, {"f": "gpkg"}, {"f": "json", "download": "true"}):
            assert c.get("/collections/forest/items", headers=views, params={**params, "limit": 2}).status_code == 403
        fid = c.get("/collections/forest/items", headers=views, params={"limit": 1}).json()["features"][0]["id"]
        assert c.get(f"/collections/forest/items/{fid}", headers=csv_key).status_code == 403
        assert c.get(f"/collections/forest/items/{fid}", headers=views).status_code == 200
        assert c.get(f"/collections/forest/items/{fid}", headers=views, params={"f": "html"}).status_code == 200
        # the change feed: a page (json) or a file (csv)
        assert c.get("/collections/forest/changes", headers=csv_key, params={"from": 0}).status_code == 403
        assert c.get("/collections/forest/changes", headers=csv_key, params={"from": 0, "f": "csv"}).status_code == 200
        assert c.get("/collections/forest/changes", headers=views, params={"from": 0, "limit": 2}).status_code == 200
        # full downloads in formats neither key was granted
        for key in (csv_key, views):
            assert c.get("/catalog/items/forest/download", headers=key, params={"f": "parquet"}).status_code == 403
        # metadata is not data: both read the collection and its TileJSON
        for key in (csv_key, views):
            assert c.get("/collections/forest", headers=key).status_code == 200
            assert c.get("/tiles/forest.json", headers=key).status_code == 200


def test_vector_tiles_also_cached(keyed):
    srv, csv_key, views, _, (lon, lat) = keyed
    x, y = tile_xy(lon, lat, 13)
    paths = [f"/tiles/forest/13/{x}/{y}.mvt", f"/collections/forest/tiles/WebMercatorQuad/13/{y}/{x}",
             f"/map/tiles/WebMercatorQuad/13/{y}/{x}"]
    with srv.client(headers={"Accept-Encoding": "gzip"}) as c:
        for path in paths:
            first = c.get(path, headers=views)
            assert first.status_code == 200 and first.content, path
            # the same view of the data (same datasets, department): the tile is cached for it now
            assert c.get(path, headers=views).headers.get("X-Tile-Cache") == "hit", path
            r = c.get(path, headers=csv_key)
            assert r.status_code == 403, (path, r.status_code)


def test_picture_tiles_feature_info_and_coverage(keyed):
    srv, csv_key, views, _, (lon, lat) = keyed
    x, y = tile_xy(lon, lat, 12)
    with srv.client() as c:
        for path in (f"/wmts/1.0.0/forest/default/WebMercatorQuad/12/{y}/{x}.png",
                     f"/wmts/1.0.0/forest/default/WebMercatorQuad/12/{y}/{x}/128/128.json",
                     f"/tiles/dem/hillshade/12/{x}/{y}.png",
                     f"/collections/dem/tiles/WebMercatorQuad/12/{y}/{x}"):
            assert c.get(path, headers=csv_key).status_code == 403, path
            assert c.get(path, headers=views).status_code == 200, path
        assert c.get("/collections/dem/coverage", headers=csv_key).status_code == 403
        r = c.get("/collections/dem/coverage", headers={**views, "Range": "bytes=0-99"})
        assert r.status_code == 206 and len(r.content) == 100


def test_the_pages_and_tiles_are_requestable(keyed):
    """A requester may ask for the pages, tiles and coverage by name; an unknown format is 400."""
    srv, _, _, steward, _ = keyed
    with srv.client() as c:
        me = {"X-Requester-Token": c.post("/catalog/requesters", json={
            "name": "王五", "organisation": "某测绘院", "contact": "wangwu@example.com"}).json()["token"]}
        r = c.post("/catalog/requests", headers=me, json={"datasets": ["forest"], "formats": ["mvt", "html", "json"],
                                                          "purpose": "林地图层浏览", "days": 3})
        assert r.status_code == 201, r.text
        bad = c.post("/catalog/requests", headers=me, json={"datasets": ["forest"], "formats": ["kml"],
                                                            "purpose": "林地图层浏览", "days": 3})
        assert bad.status_code == 400 and "mvt" in bad.json()["description"], bad.text
        ok = c.post(f"/admin/requests/{r.json()['id']}/approve", headers=steward, json={"reason": "同意"})
        assert ok.status_code == 200, ok.text
        key = {"X-API-Key": c.get("/catalog/requests", headers=me).json()["requests"][0]["key"]}
        assert c.get("/collections/forest/items", headers=key, params={"f": "html", "limit": 1}).status_code == 200
        assert c.get("/collections/forest/items", headers=key, params={"f": "csv", "limit": 1}).status_code == 403


def test_a_key_with_a_box_sees_no_raster(keyed):
    """A key granted a box reads features clipped to it; the DEM (and imagery, which follows the
    DEM's rule) is not clipped, so a boxed key does not see it at all (fail closed): no tiles,
    coverage or collection, and the DEM is not among its collections. The same grant without a
    box reads them (the views key above)."""
    from geobase import keys

    srv, _, views, _, (lon, lat) = keyed
    with psycopg.connect(srv.settings.database_url, autocommit=True) as conn:
        box = list(conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                "(SELECT ST_Extent(geom) e FROM data.forest WHERE _vto IS NULL) s").fetchone())
        boxed = {"X-API-Key": keys.create_scoped_key(
            conn, name="fmt boxed", department="forestry", expires_days=1, created_by="test",
            scope={"datasets": ["forest", "dem"], "formats": VIEWS, "bbox": box}).token}
    x, y = tile_xy(lon, lat, 12)
    with srv.client() as c:
        for path in (f"/tiles/dem/hillshade/12/{x}/{y}.png", f"/collections/dem/tiles/WebMercatorQuad/12/{y}/{x}",
                     "/collections/dem/coverage", "/collections/dem"):
            assert c.get(path, headers=boxed).status_code == 404, path
            assert c.get(path, headers={**views, "Range": "bytes=0-99"}).status_code in (200, 206), path
        names = {col["id"] for col in c.get("/collections", headers=boxed).json()["collections"]}
        assert "forest" in names and "dem" not in names
        assert c.get(f"/tiles/forest/12/{x}/{y}.mvt", headers=boxed).status_code == 200

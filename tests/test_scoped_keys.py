"""A request's key is limited to its box and its formats on every route (issue 19), over HTTP:
an outside user asks for forest within a small box in GeoPackage (and the JSON pages and vector
tiles) only; forestry approves; with that key, items, single features, the change feed, vector tiles and the full download hold
nothing outside the box (the download is clipped to it), every file format but the granted one
is 403, and analyses do not take the layer (their results would reach outside the box)."""

from __future__ import annotations

import uuid

import mapbox_vector_tile
import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for, tile_xy

ENV = {"GEOBASE_KEY_CACHE_S": "0", "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000",
       "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000", "GEOBASE_RATE_LIMIT_PER_S": "10000",
       "GEOBASE_RATE_LIMIT_BURST": "10000"}


@pytest.fixture(scope="module")
def scoped(pg_server, county_template):
    """A server, forestry's steward, and the key of an approved request for forest in a box
    (the south-west quarter of the forest's extent) granted GeoPackage, the JSON pages and
    vector tiles (a key reads only its formats: tests/test_scoped_formats.py)."""
    from geobase import keys

    name, data_dir = county_template
    db = f"gb_scoped_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, db, name)
    with psycopg.connect(url, autocommit=True) as conn:
        steward = keys.create_key(conn, name="forest steward", role="steward", department="forestry").token
        x0, y0, x1, y1 = conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                      "(SELECT ST_Extent(geom) e FROM data.forest WHERE _vto IS NULL) s").fetchone()
    box = [x0, y0, (x0 + x1) / 2, (y0 + y1) / 2]
    srv = LiveServer(settings_for(url, data_dir), env=ENV)
    with srv.client() as c:
        me = {"X-Requester-Token": c.post("/catalog/requesters", json={
            "name": "李四", "organisation": "某设计院", "contact": "lisi@example.com"}).json()["token"]}
        rid = c.post("/catalog/requests", headers=me, json={
            "datasets": ["forest"], "formats": ["gpkg", "json", "mvt"], "bbox": box, "purpose": "片区林地现状调查", "days": 7}).json()["id"]
        ok = c.post(f"/admin/requests/{rid}/approve", headers={"X-API-Key": steward}, json={"reason": "同意"})
        assert ok.status_code == 200, ok.text
        key = c.get("/catalog/requests", headers=me).json()["requests"][0]["key"]
    yield srv, {"X-API-Key": key}, {"X-API-Key": steward}, box
    srv.stop()
    drop_database(pg_server, db)


def _inside(bounds, box, eps=1e-9) -> bool:
    return not (bounds[2] < box[0] - eps or bounds[0] > box[2] + eps or bounds[3] < box[1] - eps or bounds[1] > box[3] + eps)


def test_items_features_changes_within_the_box(scoped):
    from shapely.geometry import shape

    srv, key, steward, box = scoped
    with srv.client() as c:
        mine = c.get("/collections/forest/items", headers=key, params={"limit": 10000, "numberMatched": "true"}).json()
        allf = c.get("/collections/forest/items", headers=steward, params={"limit": 10000}).json()
        assert 0 < len(mine["features"]) < len(allf["features"])
        assert mine["numberMatched"] == len(mine["features"])
        assert all(_inside(shape(f["geometry"]).bounds, box) for f in mine["features"])
        outside = [f for f in allf["features"] if not _inside(shape(f["geometry"]).bounds, box)]
        assert outside
        # asking for more (a bbox over everything, a filter, the feature by its id) never reaches outside
        wide = c.get("/collections/forest/items", headers=key, params={"bbox": "-180,-90,180,90", "limit": 10000})
        assert {f["id"] for f in wide.json()["features"]} == {f["id"] for f in mine["features"]}
        assert c.get(f"/collections/forest/items/{outside[0]['id']}", headers=key).status_code == 404
        assert c.get(f"/collections/forest/items/{outside[0]['id']}", headers=steward).status_code == 200
        ch = c.get("/collections/forest/changes", headers=key, params={"from": 0, "limit": 10000}).json()["features"]
        assert ch and all(_inside(shape(f["geometry"]).bounds, box) for f in ch)
        assert outside[0]["id"] not in {f["id"] for f in ch}


def test_tiles_outside_the_box_are_empty(scoped):
    from shapely.geometry import shape

    srv, key, steward, box = scoped
    with srv.client() as c:
        allf = c.get("/collections/forest/items", headers=steward, params={"limit": 10000}).json()["features"]
        far = next(f for f in allf if shape(f["geometry"]).bounds[0] > box[2] + 0.01
                   and shape(f["geometry"]).bounds[1] > box[3] + 0.01)
        p = shape(far["geometry"]).representative_point()
        x, y = tile_xy(p.x, p.y, 14)
        theirs = c.get(f"/tiles/forest/14/{x}/{y}.mvt", headers=steward)
        assert theirs.status_code == 200 and mapbox_vector_tile.decode(theirs.content)["forest"]["features"]
        r = c.get(f"/tiles/forest/14/{x}/{y}.mvt", headers=key)
        assert r.status_code in (200, 204) and not r.content
        inside = c.get("/collections/forest/items", headers=key, params={"limit": 1}).json()["features"][0]
        q = shape(inside["geometry"]).representative_point()
        x, y = tile_xy(q.x, q.y, 14)
        assert mapbox_vector_tile.decode(c.get(f"/tiles/forest/14/{x}/{y}.mvt", headers=key).content)["forest"]


def test_formats_and_download_clipped(scoped, tmp_path):
    import pyogrio

    srv, key, steward, box = scoped
    with srv.client() as c:
        for params in ({"f": "csv"}, {"f": "fgb"}, {"f": "parquet"}, {"f": "json", "download": "true"}):
            r = c.get("/collections/forest/items", headers=key, params={**params, "limit": 5})
            assert r.status_code == 403, (params, r.text)
            assert c.get("/collections/forest/items", headers=steward, params={**params, "limit": 5}).status_code == 200
        assert c.get("/collections/forest/changes", headers=key, params={"from": 0, "f": "csv"}).status_code == 403
        for f in ("parquet", "geojson", "shp"):
            assert c.get("/catalog/items/forest/download", headers=key, params={"f": f}).status_code == 403, f
        r = c.get("/catalog/items/forest/download", headers=key, params={"f": "gpkg"})
        assert r.status_code == 200, r.text
        (tmp_path / "f.gpkg").write_bytes(r.content)
        mine = pyogrio.read_dataframe(tmp_path / "f.gpkg")
        full = c.get("/catalog/items/forest/download", headers=steward, params={"f": "gpkg"})
        (tmp_path / "all.gpkg").write_bytes(full.content)
        everything = pyogrio.read_dataframe(tmp_path / "all.gpkg")
        assert 0 < len(mine) < len(everything)
        x0, y0, x1, y1 = mine.total_bounds
        assert x0 >= box[0] - 1e-9 and y0 >= box[1] - 1e-9 and x1 <= box[2] + 1e-9 and y1 <= box[3] + 1e-9
        assert "cun" not in mine.columns and "cun" in everything.columns   # still desensitised
        # the paged API itself is how the granted data are read
        assert c.get("/collections/forest/items", headers=key, params={"f": "gpkg", "limit": 5}).status_code == 200


def test_no_analysis_across_the_box(scoped):
    srv, key, steward, box = scoped
    x0, y0, x1, y1 = box
    site = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
    with srv.client() as c:
        a = c.post("/processes/site-check/execution", headers=key, json={"inputs": {"geometry": site}})
        b = c.post("/processes/site-check/execution", headers=steward, json={"inputs": {"geometry": site}})
        assert a.status_code == 200 and b.status_code == 200, a.text
        assert "forest" in b.json()["layers"] and "forest" not in a.json()["layers"]

"""STAC API over the imagery catalogue, read the way pystac / pystac-client read it: landing
with conformsTo, collections, items that validate, search by bbox, datetime, collections and
ids with next links (GET and POST), unknown parameters refused, imagery following the DEM
layer's sharing rule."""

from __future__ import annotations

import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for
from test_imagery import LANDSAT_BANDS, SCENE, validate_item

from geobase.imagery.ingest import add_image


@pytest.fixture(scope="module")
def stac_server(pg_server, template_db, tmp_path_factory):
    """Three scenes: the Landsat scene on two dates in ``landsat`` and once in ``other``."""
    name = f"gb_stac_{id(tmp_path_factory) % 10**8}"
    url = create_database(pg_server, name, template_db)
    settings = settings_for(url, tmp_path_factory.mktemp("stac"))
    for coll, iid, when in (("landsat", "l7_etms", "2000-02-27"), ("landsat", "l7_later", "2001-06-01T10:00:00Z"),
                            ("other", "l7_other", "2002-01-01")):
        add_image(settings, SCENE, coll, when=when, sensor="etm+", cloud_cover=5, bands=LANDSAT_BANDS, item_id=iid)
    srv = LiveServer(settings)
    yield srv, settings
    srv.stop()
    drop_database(pg_server, name)


def test_landing_and_collections(stac_server):
    import pystac

    srv, _ = stac_server
    with srv.client() as c:
        land = c.get("/stac").json()
        assert "https://api.stacspec.org/v1.0.0/item-search" in land["conformsTo"]
        assert {l["rel"] for l in land["links"]} >= {"self", "root", "data", "search"}
        colls = c.get("/stac/collections").json()["collections"]
        assert [x["id"] for x in colls] == ["landsat", "other"]
        coll = pystac.Collection.from_dict(c.get("/stac/collections/landsat").json())
        coll.validate()  # core collection schema (bundled with pystac)
        assert coll.extent.temporal.intervals[0][0].year == 2000 and coll.extent.temporal.intervals[0][1].year == 2001
        w, s, e, n = coll.extent.spatial.bboxes[0]
        assert -35.2 < w < e < -34.7 and -8.2 < s < n < -7.8
        assert c.get("/stac/collections/nope").status_code == 404


def test_items_validate_and_their_asset_is_the_cog(stac_server):
    srv, settings = stac_server
    with srv.client() as c:
        page = c.get("/stac/collections/landsat/items").json()
        assert page["numberMatched"] == 2 and [f["id"] for f in page["features"]] == ["l7_later", "l7_etms"]
        for f in page["features"]:
            item = validate_item(f)
            assert item.get_self_href().startswith(srv.url)
        one = c.get("/stac/collections/landsat/items/l7_etms")
        assert one.status_code == 200 and one.headers["content-type"].startswith("application/geo+json")
        cog = c.get(one.json()["assets"]["data"]["href"].removeprefix(srv.url))
        assert cog.status_code == 200 and cog.content == (settings.data_path / "imagery/landsat/l7_etms.tif").read_bytes()
        assert c.get("/stac/collections/landsat/items/nope").status_code == 404


def test_search_get_and_post_with_next_links(stac_server):
    srv, _ = stac_server
    with srv.client() as c:
        r = c.get("/stac/search", params={"limit": 2}).json()
        assert r["numberMatched"] == 3 and len(r["features"]) == 2
        nxt = next(l for l in r["links"] if l["rel"] == "next")
        r2 = c.get(nxt["href"].removeprefix(srv.url)).json()
        assert [f["id"] for f in r2["features"]] == ["l7_etms"] and not any(l["rel"] == "next" for l in r2["links"])
        ids = lambda **p: [f["id"] for f in c.get("/stac/search", params=p).json()["features"]]
        assert ids(collections="other") == ["l7_other"]
        assert ids(datetime="2000-01-01/2001-12-31") == ["l7_later", "l7_etms"]
        assert ids(datetime="2001-06-01T10:00:00Z") == ["l7_later"]
        assert ids(datetime="../2000-12-31") == ["l7_etms"]
        assert ids(bbox="-35,-8,-34.9,-7.9") == ["l7_other", "l7_later", "l7_etms"]
        assert ids(bbox="100,20,110,30") == []
        assert ids(ids="l7_etms,l7_other") == ["l7_other", "l7_etms"]
        p = c.post("/stac/search", json={"collections": ["landsat"], "limit": 1}).json()
        assert [f["id"] for f in p["features"]] == ["l7_later"]
        nxt = next(l for l in p["links"] if l["rel"] == "next")
        assert nxt["method"] == "POST"
        p2 = c.post("/stac/search", json=nxt["body"]).json()
        assert [f["id"] for f in p2["features"]] == ["l7_etms"]


@pytest.mark.parametrize("how, params, parameter", [
    ("get", {"colour": "red"}, "colour"),
    ("get", {"bbox": "1,2,3"}, "bbox"),
    ("get", {"datetime": "soon"}, "datetime"),
    ("get", {"limit": "0"}, "limit"),
    ("get", {"collections": "../x"}, "collections"),
    ("post", {"query": {"eo:cloud_cover": {"lt": 10}}}, "query"),
    ("post", {"limit": 5000}, "limit"),
    ("post", {"datetime": "2001-01-01/2000-01-01"}, "datetime"),
])
def test_bad_search_parameters_are_refused_naming_them(stac_server, how, params, parameter):
    srv, _ = stac_server
    with srv.client() as c:
        r = c.get("/stac/search", params=params) if how == "get" else c.post("/stac/search", json=params)
    assert r.status_code == 400 and r.json()["parameter"] == parameter, r.text


def test_imagery_follows_the_dem_layer_sharing_rule(stac_server):
    """Fail closed: when the DEM is not public, the public sees no imagery at all (404)."""
    srv, settings = stac_server
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("UPDATE catalog.layers SET sharing = 'internal' WHERE name = 'dem'")
    try:
        with srv.client() as c:
            for url in ("/stac", "/stac/search", "/stac/collections/landsat/items",
                        "/imagery/landsat/point/-34.9,-7.95", "/imagery/landsat/items/l7_etms/data.tif"):
                assert c.get(url).status_code == 404, url
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("UPDATE catalog.layers SET sharing = 'public' WHERE name = 'dem'")


def test_filter_on_item_properties_cql2_text_and_json(stac_server):
    srv, _ = stac_server
    with srv.client() as c:
        ids = lambda **p: [f["id"] for f in c.get("/stac/search", params=p).json()["features"]]
        assert ids(filter='"eo:cloud_cover" < 10') == ["l7_other", "l7_later", "l7_etms"]
        assert ids(filter="eo:cloud_cover > 10") == []
        assert ids(filter="instrument = 'etm+' AND datetime > TIMESTAMP('2001-01-01T00:00:00Z')") == [
            "l7_other", "l7_later"]
        assert ids(filter="id LIKE 'l7_l%' OR platform = 'landsat-7'") == ["l7_later"]
        assert ids(filter="S_INTERSECTS(geometry, BBOX(-35, -8, -34.9, -7.9)) AND collection = 'other'") == [
            "l7_other"]
        cql2_json = {"op": "and", "args": [{"op": "<=", "args": [{"property": "eo:cloud_cover"}, 5]},
                                           {"op": "=", "args": [{"property": "collection"}, "landsat"]}]}
        p = c.post("/stac/search", json={"filter": cql2_json, "filter-lang": "cql2-json", "limit": 1}).json()
        assert p["numberMatched"] == 2 and [f["id"] for f in p["features"]] == ["l7_later"]
        nxt = next(l for l in p["links"] if l["rel"] == "next")
        assert [f["id"] for f in c.post("/stac/search", json=nxt["body"]).json()["features"]] == ["l7_etms"]
        assert ids(collections="landsat", filter="datetime < DATE('2001-01-01')") == ["l7_etms"]
        q = c.get("/stac/queryables").json()
        assert {"eo:cloud_cover", "platform", "datetime", "geometry"} <= set(q["properties"])
        for bad in ("colour = 'red'", "eo:cloud_cover < 10 AND sun_elevation > 3"):
            r = c.get("/stac/search", params={"filter": bad})
            assert r.status_code == 400 and r.json()["parameter"] == "filter", r.text
            assert ("'colour'" if "colour" in bad else "'sun_elevation'") in r.json()["description"], r.json()
        r = c.post("/stac/search", json={"filter": {"op": "=", "args": [{"property": "cloud"}, 1]}})
        assert r.status_code == 400 and "'cloud'" in r.json()["description"]
        r = c.get("/stac/search", params={"filter": "eo:cloud_cover <", "filter-lang": "cql2-text"})
        assert r.status_code == 400 and r.json()["parameter"] == "filter"


def test_scenes_and_datasets_in_one_catalog_search(stac_server):
    """The open catalog (OGC API - Records) lists every scene next to the datasets; q, bbox and
    datetime find scenes; the scenes follow the DEM layer's sharing rule there too."""
    srv, settings = stac_server
    with srv.client() as c:
        def ids(**p):
            r = c.get("/collections/catalog/items", params={"limit": 100, **p})
            assert r.status_code == 200, r.text
            return [f["id"] for f in r.json()["features"]]

        every = ids()
        assert {"dem", "landsat.l7_etms", "landsat.l7_later", "other.l7_other"} <= set(every)
        assert ids(q="l7_later") == ["landsat.l7_later"]
        scenes = ids(q="imagery", bbox="-35,-8,-34.9,-7.9")
        assert scenes == ["landsat.l7_etms", "landsat.l7_later", "other.l7_other"]
        assert ids(q="imagery", datetime="2001-01-01/2001-12-31") == ["landsat.l7_later"]
        assert ids(q="imagery", bbox="100,20,110,30") == []
        rec = c.get("/collections/catalog/items/landsat.l7_later").json()
        assert rec["properties"]["kind"] == "imagery"
        stac_link = next(l for l in rec["links"] if l["type"] == "application/geo+json" and "/stac/" in l["href"])
        assert c.get(stac_link["href"].removeprefix(srv.url)).json()["id"] == "l7_later"
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("UPDATE catalog.layers SET sharing = 'internal' WHERE name = 'dem'")
    try:
        with srv.client() as c:
            found = [f["id"] for f in c.get("/collections/catalog/items", params={"limit": 100}).json()["features"]]
            assert not [i for i in found if "." in i and i.split(".")[0] in ("landsat", "other")], found
            assert c.get("/collections/catalog/items/landsat.l7_later").status_code == 404
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("UPDATE catalog.layers SET sharing = 'public' WHERE name = 'dem'")

"""OGC API - Features over a real PostGIS and a real uvicorn: a land-use layer with two
versions built in SQL (2,500 parcels in v1; v2 changes 100, removes 100, adds 100)."""

from __future__ import annotations

import json
import uuid

import httpx
import psycopg
import pyogrio
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for
from pyproj import Transformer

N1 = 2500
CODES = ["0101", "0103", "0301", "0702"]


def _load(url: str) -> None:
    cells = """
      SELECT i, 'P' || lpad(i::text, 5, '0') AS k,
             ST_Multi(ST_MakeEnvelope(117 + (i % 50) * 0.002, 31 + (i / 50) * 0.002,
                                      117.002 + (i % 50) * 0.002, 31.002 + (i / 50) * 0.002, 4490)) AS g
      FROM generate_series({lo}, {hi}) i"""
    insert = """
      INSERT INTO data.land_use (_key, _hash, _vfrom, _vto, bsm, dlbm, dlmc, qsdwmc, tbmj, sjnf, _area_m2, geom, geom_3857)
      SELECT k, md5(k || {vfrom}), {vfrom}, {vto}, k, {dlbm}, 'name ' || i, 'owner ' || i, 1000 + i,
             CASE WHEN i % 2 = 0 THEN 2020 + i % 5 END, ST_Area(g::geography), g, ST_Transform(g, 3857)
      FROM ({cells}) s {where}"""
    codes = "(ARRAY['0101','0103','0301','0702'])[i % 4 + 1]"
    with psycopg.connect(url, autocommit=True) as conn:
        # v1: all 2,500; rows 0..99 changed in v2, rows 2400..2499 removed in v2
        conn.execute(insert.format(vfrom=1, vto="CASE WHEN i < 100 OR i >= 2400 THEN 2 END", dlbm=codes,
                                   cells=cells.format(lo=0, hi=N1 - 1), where=""))
        conn.execute(insert.format(vfrom=2, vto="NULL", dlbm="'0201'", cells=cells.format(lo=0, hi=99), where=""))
        conn.execute(insert.format(vfrom=2, vto="NULL", dlbm=codes, cells=cells.format(lo=N1, hi=N1 + 99), where=""))
        conn.execute("""INSERT INTO catalog.layer_versions (layer, version, mode, created_at, rows_total, extent)
                        VALUES ('land_use', 1, 'replace', '2024-01-01T00:00:00Z', 2500, ARRAY[117, 31, 117.1, 31.1]),
                               ('land_use', 2, 'replace', '2025-01-01T00:00:00Z', 2500, ARRAY[117, 31, 117.1, 31.104])""")
        conn.execute("UPDATE catalog.layers SET current_version = 2 WHERE name = 'land_use'")
        conn.execute("ANALYZE data.land_use")


@pytest.fixture(scope="module")
def server(pg_server, template_db, tmp_path_factory):
    name = f"gb_feat_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, name, template_db)
    _load(url)
    srv = LiveServer(settings_for(url, tmp_path_factory.mktemp("feat")))
    yield srv
    srv.stop()
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def http(server):
    with server.client() as c:
        yield c


def ids(fc: dict) -> list[str]:
    return [f["id"] for f in fc["features"]]


def get_ok(http, path, **params) -> dict:
    r = http.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def err(http, path, status=400, **params) -> dict:
    r = http.get(path, params=params)
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["code"] and body["description"]
    return body


# ---------------------------------------------------------------------------------- capabilities
def test_conformance_and_collections(http):
    conf = get_ok(http, "/conformance")["conformsTo"]
    assert any(c.endswith("ogcapi-features-1/1.0/conf/core") for c in conf)
    assert any(c.endswith("ogcapi-features-2/1.0/conf/crs") for c in conf)
    assert any(c.endswith("cql2/1.0/conf/cql2-text") for c in conf)
    cols = get_ok(http, "/collections")
    byid = {c["id"]: c for c in cols["collections"]}
    lu = byid["land_use"]
    assert lu["itemType"] == "feature" and lu["storageCrs"].endswith("/EPSG/0/4490")
    assert lu["extent"]["spatial"]["bbox"][0] == [117, 31, 117.1, 31.104]
    assert lu["extent"]["temporal"]["interval"][0][0].startswith("2024-01-01")
    assert "http://www.opengis.net/def/crs/OGC/1.3/CRS84" in lu["crs"]
    for code in (4490, 4326, 3857, 4527, 4548, 4498, 4509):
        assert f"http://www.opengis.net/def/crs/EPSG/0/{code}" in lu["crs"], code
    rels = {l["rel"] for l in lu["links"]}
    assert {"self", "items", "http://www.opengis.net/def/rel/ogc/1.0/queryables"} <= rels
    assert any(l["href"].endswith("/collections/land_use/tiles") for l in lu["links"])
    dem = byid["dem"]
    assert "itemType" not in dem and not any(l["rel"] == "items" for l in dem["links"])
    r = http.get("/collections/dem/items")
    assert r.status_code == 404 and "raster" in r.json()["description"]
    assert http.get("/collections/nope").status_code == 404
    one = get_ok(http, "/collections/land_use")
    assert one["currentVersion"] == 2 and one["featureCount"] == 2500
    assert "text/html" in http.get("/collections", params={"f": "html"}).headers["content-type"]
    html = http.get("/collections/land_use/items", params={"f": "html", "limit": 5}).text
    assert "maplibre-gl.js" in html and "P00000" in html
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for path, text in (("/conformance", "conf/core"), ("/collections/land_use", "地类图斑"),
                       ("/collections/land_use/queryables", "水田"), ("/collections/dem", "Coverage")):
        r = http.get(path, headers=browser)
        assert r.headers["content-type"].startswith("text/html") and text in r.text, path


def test_queryables_masks_hidden_attributes(http):
    q = get_ok(http, "/collections/land_use/queryables")
    props = q["properties"]
    assert props["geometry"]["x-ogc-role"] == "primary-geometry"
    assert props["dlbm"]["type"] == "string" and "0101" in props["dlbm"]["enum"]
    assert any(o["const"] == "0101" and "水田" in o["title"] for o in props["dlbm"]["oneOf"])
    assert props["tbmj"]["type"] == "number" and props["sjnf"]["type"] == "integer"
    assert "qsdwmc" not in props and "qsdwdm" not in props  # hidden from the public
    # masked: neither output, nor filterable, nor sortable, nor selectable
    f = get_ok(http, "/collections/land_use/items", limit=1)["features"][0]
    assert "qsdwmc" not in f["properties"] and f["properties"]["dlbm"]
    assert "qsdwmc" in err(http, "/collections/land_use/items", filter="qsdwmc = 'owner 1'")["description"]
    err(http, "/collections/land_use/items", sortby="qsdwmc")
    err(http, "/collections/land_use/items", properties="qsdwmc")


# ---------------------------------------------------------------------------------- items
def test_items_page_links_and_headers(http):
    r = http.get("/collections/land_use/items", params={"limit": 10})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json")
    assert r.headers["content-crs"] == "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and fc["numberReturned"] == 10 and fc["numberMatched"] == 2500
    assert ids(fc) == sorted(ids(fc))
    rels = {l["rel"]: l for l in fc["links"]}
    assert {"self", "alternate", "next", "collection"} <= set(rels) and "prev" not in rels
    assert rels["next"]["type"] == "application/geo+json"
    f0 = fc["features"][0]
    assert f0["geometry"]["type"] == "MultiPolygon" and 117 <= f0["geometry"]["coordinates"][0][0][0][0] <= 117.1
    assert f0["properties"]["_area_m2"] > 40_000  # 0.002° x 0.002° at 31N
    # ETag / 304
    etag = r.headers["etag"]
    r2 = http.get("/collections/land_use/items", params={"limit": 10}, headers={"If-None-Match": etag})
    assert r2.status_code == 304
    assert "max-age" in r.headers["cache-control"]
    # default limit
    assert get_ok(http, "/collections/land_use/items")["numberReturned"] == 100


def test_paging_whole_layer_exactly_once_and_back(http):
    seen: list[str] = []
    url, params = "/collections/land_use/items", {"limit": 700, "properties": "bsm", "skipGeometry": "true"}
    pages = []
    while url:
        fc = get_ok(http, url, **params) if params else http.get(url).json()
        params = None
        seen += ids(fc)
        pages.append(fc)
        nxt = [l["href"] for l in fc["links"] if l["rel"] == "next"]
        url = nxt[0] if nxt else None
    assert len(seen) == 2500 and len(set(seen)) == 2500
    assert [len(p["features"]) for p in pages] == [700, 700, 700, 400]
    # prev from the last page gives the third page again
    prev = [l["href"] for l in pages[-1]["links"] if l["rel"] == "prev"][0]
    assert ids(http.get(prev).json()) == ids(pages[2])
    assert all(f["geometry"] is None for f in pages[0]["features"])


def test_sortby_with_nulls_pages_exactly_once(http):
    seen = []
    fc = get_ok(http, "/collections/land_use/items", limit=333, sortby="-sjnf,dlbm", properties="sjnf,dlbm")
    while True:
        seen += [(f["id"], f["properties"]["sjnf"], f["properties"]["dlbm"]) for f in fc["features"]]
        nxt = [l["href"] for l in fc["links"] if l["rel"] == "next"]
        if not nxt:
            break
        fc = http.get(nxt[0]).json()
    assert len(seen) == 2500 and len({s[0] for s in seen}) == 2500
    years = [s[1] for s in seen]
    non_null = [y for y in years if y is not None]
    assert non_null == sorted(non_null, reverse=True)
    assert years[-1] is None and years.index(None) == len(non_null)  # NULLs last


def test_feature_by_id_and_404(http):
    f = get_ok(http, "/collections/land_use/items/P00042")
    assert f["id"] == "P00042" and f["properties"]["bsm"] == "P00042"
    assert any(l["rel"] == "collection" for l in f["links"])
    assert "qsdwmc" not in f["properties"]
    err(http, "/collections/land_use/items/NOPE", status=404)
    # a removed feature exists in v1 only
    err(http, "/collections/land_use/items/P02450", status=404)
    assert get_ok(http, "/collections/land_use/items/P02450", datetime="2024-06-01")["id"] == "P02450"
    assert "P00042" in http.get("/collections/land_use/items/P00042", params={"f": "html"}).text


def test_datetime_time_travel(http):
    now = get_ok(http, "/collections/land_use/items/P00001")
    old = get_ok(http, "/collections/land_use/items/P00001", datetime="2024-12-31T23:00:00Z")
    assert now["properties"]["dlbm"] == "0201" and old["properties"]["dlbm"] == "0103"
    fc = get_ok(http, "/collections/land_use/items", datetime="2024-06-01", numberMatched="true", limit=1)
    assert fc["numberMatched"] == 2500
    assert get_ok(http, "/collections/land_use/items", datetime="2024-06-01",
                  filter="bsm >= 'P02500'", numberMatched="true")["numberMatched"] == 0
    assert get_ok(http, "/collections/land_use/items", datetime="2025-06-01",
                  filter="bsm >= 'P02500'", numberMatched="true")["numberMatched"] == 100
    # interval: as at its end; before the first version: empty
    assert get_ok(http, "/collections/land_use/items", datetime="2023-01-01/2024-02-01",
                  filter="dlbm = '0201'", numberMatched="true")["numberMatched"] == 0
    assert get_ok(http, "/collections/land_use/items", datetime="2020-01-01")["numberReturned"] == 0
    err(http, "/collections/land_use/items", datetime="yesterday")
    err(http, "/collections/land_use/items", datetime="2025-01-01/2024-01-01")


def test_bbox_and_crs_round_trips(http):
    bbox = "117.0101,31.0101,117.0199,31.0159"
    base = set(ids(get_ok(http, "/collections/land_use/items", bbox=bbox, limit=1000)))
    assert len(base) == 15  # 5 columns x 3 rows of 0.002° cells
    # EPSG:4326 by URI is lat/lon
    latlon = "31.0101,117.0101,31.0159,117.0199"
    same = set(ids(get_ok(http, "/collections/land_use/items", bbox=latlon, limit=1000,
                          **{"bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/4326"})))
    assert same == base
    # a GK zone bbox (EPSG:4527 axes are northing, easting) selects the same parcels as the same box in CRS84
    t = Transformer.from_crs("EPSG:4490", "EPSG:4527", always_xy=True)
    (x0, x1), (y0, y1) = t.transform([117.0101, 117.0199], [31.0101, 31.0159])
    # shrink by 0.5 m so the projected box's slightly curved edges do not reach neighbouring rows
    gk = f"{min(y0, y1) + 0.5},{min(x0, x1) + 0.5},{max(y0, y1) - 0.5},{max(x0, x1) - 0.5}"
    in_gk = set(ids(get_ok(http, "/collections/land_use/items", bbox=gk, limit=1000,
                           **{"bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/4527"})))
    assert in_gk == base
    # output CRS: lat/lon for EPSG:4490, northing/easting for the GK zone, header names it
    r = http.get("/collections/land_use/items/P00000", params={"crs": "http://www.opengis.net/def/crs/EPSG/0/4490"})
    assert r.headers["content-crs"] == "<http://www.opengis.net/def/crs/EPSG/0/4490>"
    lat, lon = r.json()["geometry"]["coordinates"][0][0][0]
    assert 31 <= lat <= 31.01 and 117 <= lon <= 117.01
    r = http.get("/collections/land_use/items/P00000", params={"crs": "http://www.opengis.net/def/crs/EPSG/0/4527"})
    n, e = r.json()["geometry"]["coordinates"][0][0][0]
    assert 3_000_000 < n < 4_000_000 and 39_400_000 < e < 39_600_000
    r = http.get("/collections/land_use/items/P00000", params={"crs": "http://www.opengis.net/def/crs/EPSG/0/3857"})
    x, y = r.json()["geometry"]["coordinates"][0][0][0]
    assert 13_000_000 < x < 13_100_000 and x == round(x, 2)
    err(http, "/collections/land_use/items", crs="http://www.opengis.net/def/crs/EPSG/0/2000")
    err(http, "/collections/land_use/items", crs="EPSG:banana")
    assert err(http, "/collections/land_use/items", bbox="1,2,3")["parameter"] == "bbox"
    err(http, "/collections/land_use/items", bbox="117.1,31,117,31.1")
    err(http, "/collections/land_use/items", bbox="a,b,c,d")


def test_cql2_text_and_json(http):
    def count(**params):
        return get_ok(http, "/collections/land_use/items", numberMatched="true", limit=1, **params)["numberMatched"]

    assert count(filter="dlbm = '0201'") == 100
    assert count(filter="dlbm IN ('0101', '0103') AND tbmj BETWEEN 1100 AND 1199") == 50
    assert count(filter="dlmc LIKE 'name 12%'") == 111
    assert count(filter="sjnf IS NULL") == 1250
    assert count(filter="NOT (sjnf IS NULL) AND sjnf > 2022") == 500
    assert count(filter='tbmj < "_area_m2"') == 2500  # property-property (quoted: leading underscore)
    poly = "POLYGON((117 31, 117.01 31, 117.01 31.01, 117 31.01, 117 31))"
    assert count(filter=f"S_WITHIN(geometry, {poly})") == 25
    assert count(filter=f"S_INTERSECTS(geometry, {poly})") == 36
    assert count(filter="S_CONTAINS(geometry, POINT(117.0011 31.0011))") == 1
    assert count(filter=f"S_DISJOINT(geometry, {poly})") == 2500 - 36
    j = {"op": "and", "args": [{"op": "=", "args": [{"property": "dlbm"}, "0201"]},
                               {"op": "s_intersects", "args": [{"property": "geometry"},
                                                               {"type": "Point", "coordinates": [117.0011, 31.0011]}]}]}
    assert count(filter=json.dumps(j), **{"filter-lang": "cql2-json"}) == 1
    # filter-crs: a lat/lon point in EPSG:4326
    assert count(filter="S_INTERSECTS(geometry, POINT(31.0011 117.0011))",
                 **{"filter-crs": "http://www.opengis.net/def/crs/EPSG/0/4326"}) == 1
    for bad in ("dlbm = ", "nope = 1", "dlbm = 5", "tbmj = 'abc'", "S_INTERSECTS(geometry, POINT(1))",
                "tbmj + 1 > 2"):
        body = err(http, "/collections/land_use/items", filter=bad)
        assert body["parameter"] == "filter", (bad, body)
    err(http, "/collections/land_use/items", filter="{not json", **{"filter-lang": "cql2-json"})
    assert err(http, "/collections/land_use/items", filter="a=1", **{"filter-lang": "sql"})["parameter"] == "filter-lang"


def test_distance_properties_precision_and_errors(http):
    fc = get_ok(http, "/collections/land_use/items", distance="150", point="117.001,31.001", limit=100,
                properties="bsm", precision="3")
    got = set(ids(fc))
    assert "P00000" in got and "P00001" in got and len(got) < 20
    assert set(fc["features"][0]["properties"]) == {"bsm"}
    c = fc["features"][0]["geometry"]["coordinates"][0][0][0]
    assert all(len(str(v).split(".")[-1]) <= 3 for v in c)
    wkt = get_ok(http, "/collections/land_use/items", distance="150", geometry="POINT(117.001 31.001)", limit=100)
    assert set(ids(wkt)) == got
    for params in ({"limit": "0"}, {"limit": "10001"}, {"limit": "x"}, {"sortby": "nope"},
                   {"properties": "nope"}, {"distance": "10"}, {"distance": "x", "point": "1,2"},
                   {"cursor": "garbage"}, {"precision": "99"}, {"f": "xml"}, {"skipGeometry": "maybe"}):
        body = err(http, "/collections/land_use/items", **params)
        assert "parameter" in body, params


def test_changes_feed(http):
    fc = get_ok(http, "/collections/land_use/changes", **{"from": "1", "limit": "1000"})
    kinds: dict[str, int] = {}
    for f in fc["features"]:
        kinds[f["properties"]["change"]] = kinds.get(f["properties"]["change"], 0) + 1
    assert kinds == {"added": 100, "removed": 100, "changed": 100}
    byid = {f["id"]: f for f in fc["features"]}
    assert byid["P00005"]["properties"]["dlbm"] == "0201" and byid["P02450"]["properties"]["change"] == "removed"
    # paged like items
    page = get_ok(http, "/collections/land_use/changes", **{"from": "1", "limit": "120"})
    all_ids = []
    while True:
        all_ids += ids(page)
        nxt = [l["href"] for l in page["links"] if l["rel"] == "next"]
        if not nxt:
            break
        page = http.get(nxt[0]).json()
    assert sorted(all_ids) == sorted(byid)
    err(http, "/collections/land_use/changes", **{"from": "2", "to": "1"})
    err(http, "/collections/land_use/changes", **{"from": "7"})


def test_downloads_csv_gpkg_fgb_geojson(http, tmp_path):
    r = http.get("/collections/land_use/items", params={"f": "csv", "filter": "dlbm = '0201'"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("id,bsm,") and lines[0].endswith(",wkt") and len(lines) == 101
    assert "MULTIPOLYGON" in lines[1]
    for fmt, driver in (("gpkg", "GPKG"), ("fgb", "FlatGeobuf")):
        r = http.get("/collections/land_use/items", params={"f": fmt})
        assert r.status_code == 200, r.text
        assert "attachment" in r.headers["content-disposition"]
        path = tmp_path / f"x.{fmt}"
        path.write_bytes(r.content)
        df = pyogrio.read_dataframe(path)
        assert len(df) == 2500 and "dlbm" in df.columns and "qsdwmc" not in df.columns
        assert df.crs.to_epsg() == 4326 and df.geometry.iloc[0].geom_type == "MultiPolygon"
    # files keep x/y order (GIS convention) in the CRS asked for
    r = http.get("/collections/land_use/items", params={"f": "gpkg", "crs": "http://www.opengis.net/def/crs/EPSG/0/4527",
                                                        "filter": "bsm = 'P00000'"})
    (tmp_path / "gk.gpkg").write_bytes(r.content)
    gk = pyogrio.read_dataframe(tmp_path / "gk.gpkg")
    assert gk.crs.to_epsg() == 4527 and len(gk) == 1
    x, y = gk.geometry.iloc[0].exterior.coords[0] if gk.geometry.iloc[0].geom_type == "Polygon" else \
        gk.geometry.iloc[0].geoms[0].exterior.coords[0]
    assert 39_400_000 < x < 39_600_000 and 3_000_000 < y < 4_000_000
    r = http.get("/collections/land_use/items", params={"download": "true"})
    fc = r.json()
    assert len(fc["features"]) == 2500 and fc["numberReturned"] == 2500
    # gzip still works with streaming
    r = http.get("/collections/land_use/items", params={"limit": 1000}, headers={"Accept-Encoding": "gzip"})
    assert r.headers.get("content-encoding") == "gzip" and len(r.json()["features"]) == 1000


def test_openapi_documents_parameters(http):
    spec = get_ok(http, "/api")
    params = {p["name"] for p in spec["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]}
    assert {"limit", "bbox", "bbox-crs", "datetime", "crs", "filter", "filter-lang", "filter-crs", "sortby"} <= params


def test_owslib_reads_collections_queryables_items(server):
    from owslib.ogcapi.features import Features

    w = Features(server.url)
    assert "land_use" in [c["id"] for c in w.collections()["collections"]]
    q = w.collection_queryables("land_use")
    assert "dlbm" in q["properties"]
    items = w.collection_items("land_use", limit=5)
    assert len(items["features"]) == 5


def test_gdal_oapif_driver_reads_layer(server):
    layers = [n for n, _ in pyogrio.list_layers(f"OAPIF:{server.url}")]
    assert "land_use" in layers
    df = pyogrio.read_dataframe(f"OAPIF:{server.url}", layer="land_use", max_features=300)
    assert len(df) == 300 and "dlbm" in df.columns and "qsdwmc" not in df.columns


def test_api_keys_see_internal_layers_and_masked_attributes(server, http):
    from geobase.keys import create_key

    with psycopg.connect(server.settings.database_url, autocommit=True) as conn:
        nr = create_key(conn, name="nr", role="viewer", department="natural_resources").token
        water = create_key(conn, name="w", role="viewer", department="water_resources").token
    public = {c["id"] for c in get_ok(http, "/collections")["collections"]}
    assert "forest" not in public
    r = http.get("/collections", headers={"X-API-Key": water})
    assert "forest" in {c["id"] for c in r.json()["collections"]}
    assert http.get("/collections/forest/items", headers={"X-API-Key": water}).status_code == 200
    # the owner department sees (and may filter on) the right-holder names hidden from the public
    r = http.get("/collections/land_use/items/P00007", headers={"X-API-Key": nr})
    assert r.json()["properties"]["qsdwmc"] == "owner 7"
    assert r.headers["cache-control"].startswith("private")
    r = http.get("/collections/land_use/items", params={"filter": "qsdwmc = 'owner 7'"}, headers={"X-API-Key": nr})
    assert [f["id"] for f in r.json()["features"]] == ["P00007"]
    q = http.get("/collections/land_use/queryables", headers={"X-API-Key": nr}).json()
    assert "qsdwmc" in q["properties"]


def test_abandoned_downloads_give_connections_back(server, http):
    """Clients that hang up mid-download must not leak pooled connections or export slots."""
    for _ in range(14):  # more than the pool (10) and the export slots (2)
        with httpx.Client(base_url=server.url, timeout=30) as c:
            with c.stream("GET", "/collections/land_use/items", params={"download": "true", "limit": 2500}) as r:
                assert r.status_code == 200, (_, r.read())
                next(r.iter_raw(1024))
    r = http.get("/collections/land_use/items", params={"f": "csv"}, timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.text.splitlines()) == 2501


def test_statement_timeout_is_503(server, live_server):
    srv = live_server(server.settings.model_copy(update={"statement_timeout_ms": 1}))
    with srv.client() as c:
        r = c.get("/collections/land_use/items", params={"filter": "dlmc LIKE '%9%'", "limit": 5000,
                                                          "sortby": "-dlmc"})
    assert r.status_code == 503 and "timeout" in r.json()["description"]

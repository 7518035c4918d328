"""The open catalog (issue 19) with real clients: OWSLib's OGC API - Records and CSW clients,
rdflib parsing the DCAT JSON-LD, the CSV export as Excel reads it, the admin's metadata and
grade overrides, unknown parameters refused by name."""

from __future__ import annotations

import csv
import io
import uuid

import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for

LIMITS = {"GEOBASE_RATE_LIMIT_PER_S": "10000", "GEOBASE_RATE_LIMIT_BURST": "10000",
          "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000"}
EXTRA = 23   # metadata-only records registered by the admin (to page through)


@pytest.fixture(scope="module")
def cat(pg_server, county_template):
    """A copy of the county, an admin key, a server (government zone) and EXTRA registered records."""
    from geobase import keys

    name, data_dir = county_template
    db = f"gb_cat_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, db, name)
    with psycopg.connect(url, autocommit=True) as conn:
        admin = keys.create_key(conn, name="cat-admin", role="admin", department=None).token
    srv = LiveServer(settings_for(url, data_dir), env=LIMITS)
    with srv.client(headers={"X-API-Key": admin}) as c:
        for i in range(EXTRA):
            r = c.put(f"/admin/catalog/imagery_{i:02d}", json={
                "title_zh": f"遥感影像 {i:02d}", "title_en": f"Imagery {i:02d}", "abstract_zh": "卫星正射影像",
                "department": "natural_resources", "grade": "general", "openness": "open" if i % 2 else "conditional",
                "data_class": "status", "level": "provincial" if i < 5 else "county", "themes": ["imagery"],
                "bbox": [112.0 + i / 100, 28.0, 112.5, 28.5], "interval": ["2020-01-01T00:00:00Z", "2024-12-31T00:00:00Z"],
                "links": [{"href": f"https://example.gov.cn/imagery/{i}.tif", "type": "image/tiff", "title": "COG"}]})
            assert r.status_code == 200, r.text
        r = c.put("/admin/catalog/planning_zones", json={
            "data_class": "planning", "level": "county", "themes": ["国土空间规划"], "tags": ["分区专题"],
            "abstract_en": "Planning zones of the county master plan"})
        assert r.status_code == 200, r.text
    yield srv, admin, url
    srv.stop()
    drop_database(pg_server, db)


def test_records_with_owslib(cat):
    from owslib.ogcapi.records import Records

    srv, _, _ = cat
    w = Records(srv.url)
    coll = w.collection("catalog")
    assert coll["itemType"] == "record"
    everything = w.collection_items("catalog", limit=1000)
    ids = {f["id"] for f in everything["features"]}
    # every layer (the raster too) and every registered record; forest/control_lines are internal
    # but conditional: listed so they can be requested
    assert {"land_use", "planning_zones", "dem", "rivers", "forest", "control_lines"} <= ids
    assert sum(i.startswith("imagery_") for i in ids) == EXTRA
    assert everything["numberMatched"] == len(ids)
    planning = w.collection_items("catalog", q="分区专题")
    assert [f["id"] for f in planning["features"]] == ["planning_zones"]
    rec = planning["features"][0]
    assert rec["conformsTo"] and rec["properties"]["dataClass"] == "planning"
    assert {"geojson", "gpkg", "parquet", "csv", "fgb"} <= {x["name"] for x in rec["properties"]["formats"]}
    assert rec["properties"]["lineage"] and rec["properties"]["lineage"][0]["version"] >= 1
    assert rec["properties"]["quality"]["rows_loaded"] > 0
    assert rec["time"]["interval"][0] and rec["geometry"]["type"] == "Polygon"
    # facets, bbox, datetime, type
    prov = w.collection_items("catalog", level="provincial")
    assert prov["numberMatched"] == 5 and prov["facets"]["level"] == {"provincial": 5}
    far = w.collection_items("catalog", bbox=[100, 10, 101, 11])
    assert far["numberMatched"] == 0
    old = w.collection_items("catalog", datetime="2000-01-01T00:00:00Z/2001-01-01T00:00:00Z")
    assert old["numberMatched"] == 0
    assert w.collection_items("catalog", type="dataset", limit=1000)["numberMatched"] == len(ids)
    assert w.collection_items("catalog", type="service")["numberMatched"] == 0
    one = w.collection_item("catalog", "land_use")
    assert one["id"] == "land_use" and any(l["rel"] == "enclosure" for l in one["links"])


def test_paging_and_unknown_parameters(cat):
    srv, _, _ = cat
    with srv.client() as c:
        seen, url = [], "/catalog/items?limit=7"
        while url:
            page = c.get(url).json()
            seen += [f["id"] for f in page["features"]]
            url = next((l["href"] for l in page["links"] if l["rel"] == "next"), None)
        assert len(seen) == len(set(seen)) == c.get("/catalog/items?limit=1").json()["numberMatched"]
        bad = c.get("/catalog/items", params={"qq": "x", "theme": "imagery"})
        assert bad.status_code == 400 and "qq" in bad.json()["description"]
        assert c.get("/catalog/items", params={"bbox": "1,2,3"}).status_code == 400
        assert c.get("/catalog/items", params={"datetime": "yesterday"}).status_code == 400
        assert c.get("/catalog/items/nope").status_code == 404


def test_dcat_parsed_by_rdflib(cat):
    import rdflib
    from rdflib.namespace import DCAT, DCTERMS, RDF

    srv, _, _ = cat
    with srv.client() as c:
        r = c.get("/catalog/dcat.jsonld")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/ld+json")
    g = rdflib.Graph().parse(data=r.text, format="json-ld")
    datasets = set(g.subjects(RDF.type, DCAT.Dataset))
    assert len(datasets) == len(r.json()["dcat:dataset"]) >= 8 + EXTRA
    lu = next(d for d in datasets if str(d).endswith("/land_use"))
    titles = {(str(t), t.language) for t in g.objects(lu, DCTERMS.title)}
    assert ("地类图斑", "zh") in titles and ("Land-use parcels", "en") in titles
    downloads = {str(u) for dist in g.objects(lu, DCAT.distribution) for u in g.objects(dist, DCAT.downloadURL)}
    assert any(u.endswith("/collections/land_use/items?f=parquet") for u in downloads)
    assert next(g.objects(lu, DCTERMS.spatial), None) is not None


def test_csv_export_for_excel(cat):
    srv, _, _ = cat
    with srv.client() as c:
        r = c.get("/catalog/items", params={"f": "csv", "theme": "imagery"})
    assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][0] == "标识 id" and len(rows) == 1 + EXTRA
    assert rows[1][1] == "遥感影像 00" and rows[1][14] in ("有条件开放", "无条件开放")


def test_csw_paged_through_by_owslib(cat):
    from owslib.csw import CatalogueServiceWeb

    srv, _, _ = cat
    csw = CatalogueServiceWeb(f"{srv.url}/csw", version="2.0.2")
    assert "GetRecords" in [op.name for op in csw.operations]
    with srv.client() as c:
        total = c.get("/catalog/items?limit=1").json()["numberMatched"]
    seen: list[str] = []
    start = 1
    while True:
        csw.getrecords2(startposition=start, maxrecords=10, esn="full")
        seen += list(csw.records)
        assert csw.results["matches"] == total
        if csw.results["nextrecord"] in (0, None) or csw.results["nextrecord"] > total:
            break
        start = csw.results["nextrecord"]
    assert len(seen) == len(set(seen)) == total
    from owslib.fes import PropertyIsLike

    csw.getrecords2(constraints=[PropertyIsLike("csw:AnyText", "%遥感影像 07%")], esn="full")
    assert list(csw.records) == ["imagery_07"]
    csw.getrecordbyid(["land_use"])
    assert csw.records["land_use"].title == "地类图斑"


def test_grade_override_hides_everywhere(cat):
    """The admin raises land use to core data: on the government network it disappears from the
    catalog (Records, DCAT, CSW) and from the data; back to the spec's grade, it is there again."""
    srv, admin, _ = cat
    with srv.client(headers={"X-API-Key": admin}) as a, srv.client() as c:
        r = a.put("/admin/catalog/land_use/grade", json={"grade": "core", "openness": "closed"})
        assert r.status_code == 200 and r.json()["grade"] == "core"
        assert c.get("/catalog/items/land_use").status_code == 404
        assert "land_use" not in c.get("/catalog/dcat.jsonld").text
        assert c.get("/collections/land_use/items?limit=1").status_code == 404
        assert a.get("/collections/land_use/items?limit=1").status_code == 404   # admins too
        r = a.put("/admin/catalog/land_use/grade", json={"grade": None, "openness": None})
        assert r.json()["grade"] == "general"
        assert c.get("/catalog/items/land_use").status_code == 200
        assert c.put("/admin/catalog/land_use/grade", json={"grade": "core"}).status_code == 401
        assert a.put("/admin/catalog/land_use/grade", json={"grade": "secret"}).status_code == 400
        assert a.put("/admin/catalog/land_use", json={"colour": "red"}).status_code == 400

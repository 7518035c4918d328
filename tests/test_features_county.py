"""The features API over the ingested sample county: every layer listed, paging a whole layer,
real clients (GDAL OAPIF, OWSLib), and time travel after a real replace through ingest."""

from __future__ import annotations

import psycopg
import pyogrio
from conftest import SAMPLE


def _count(settings, sql: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql).fetchone()[0]


def test_collections_cover_every_layer(county_server, county_shared):
    with county_server.client() as http:
        cols = {c["id"]: c for c in http.get("/collections").json()["collections"]}
        for layer in ("land_use", "water_areas", "rivers", "planning_zones", "admin_divisions", "dem"):
            assert layer in cols, layer
        for layer in ("forest", "control_lines"):  # internal: hidden from callers without a key
            assert layer not in cols
            assert http.get(f"/collections/{layer}/items").status_code == 404
        lu = cols["land_use"]
        assert lu["featureCount"] == _count(county_shared, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL")
        # the county is delivered in GK zone 39 (EPSG:4527): that zone is offered
        assert "http://www.opengis.net/def/crs/EPSG/0/4527" in lu["crs"]
        for layer in ("water_areas", "rivers", "planning_zones"):
            fc = http.get(f"/collections/{layer}/items", params={"limit": 3}).json()
            assert fc["numberReturned"] == 3 and fc["features"][0]["properties"]


def test_paging_land_use_returns_every_feature_once(county_server, county_shared):
    total = _count(county_shared, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL")
    seen: list[str] = []
    with county_server.client() as http:
        r = http.get("/collections/land_use/items", params={"limit": 1000, "skipGeometry": "true"})
        while True:
            assert r.status_code == 200, r.text
            fc = r.json()
            seen += [f["id"] for f in fc["features"]]
            nxt = [l["href"] for l in fc["links"] if l["rel"] == "next"]
            if not nxt:
                break
            r = http.get(nxt[0])
    assert len(seen) == total and len(set(seen)) == total


def test_gk_bbox_matches_crs84_bbox(county_server):
    """A bbox given in the delivery's GK zone selects what the same area does in CRS84."""
    from pyproj import Transformer

    with county_server.client() as http:
        ext = http.get("/collections/land_use").json()["extent"]["spatial"]["bbox"][0]
        cx, cy = (ext[0] + ext[2]) / 2, (ext[1] + ext[3]) / 2
        box = (cx - 0.01, cy - 0.01, cx + 0.01, cy + 0.01)
        crs84 = http.get("/collections/land_use/items", params={"bbox": ",".join(map(str, box)), "limit": 10000,
                                                                 "skipGeometry": "true"}).json()
        t = Transformer.from_crs("EPSG:4490", "EPSG:4527", always_xy=True)
        # the GK rectangle containing the lon/lat box, and the one inside it
        xs, ys = t.transform([box[0], box[2], box[0], box[2]], [box[1], box[1], box[3], box[3]])
        outer = f"{min(ys)},{min(xs)},{max(ys)},{max(xs)}"  # EPSG:4527 axis order: northing, easting
        gk = http.get("/collections/land_use/items", params={
            "bbox": outer, "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/4527", "limit": 10000,
            "skipGeometry": "true"}).json()
    a = {f["id"] for f in crs84["features"]}
    b = {f["id"] for f in gk["features"]}
    assert a and a <= b and len(b - a) < 0.2 * len(a)


def test_gdal_and_owslib_read_the_county(county_server):
    from owslib.ogcapi.features import Features

    names = [n for n, _ in pyogrio.list_layers(f"OAPIF:{county_server.url}")]
    assert {"land_use", "water_areas", "rivers"} <= set(names)
    df = pyogrio.read_dataframe(f"OAPIF:{county_server.url}", layer="water_areas")
    assert len(df) > 0 and df.geometry.notna().all()
    w = Features(county_server.url)
    q = w.collection_queryables("land_use")
    assert "dlbm" in q["properties"] and "enum" in q["properties"]["dlbm"]
    items = w.collection_items("land_use", limit=10, filter="dlbm LIKE '01%'")
    assert items["features"] and all(f["properties"]["dlbm"].startswith("01") for f in items["features"])


def test_datetime_returns_old_version_after_replace(county_db, live_server, tmp_path):
    import geopandas as gpd
    from geobase.ingest.pipeline import ingest

    with psycopg.connect(county_db.database_url) as conn:
        v1, created = conn.execute("""SELECT l.current_version, v.created_at FROM catalog.layers l
            JOIN catalog.layer_versions v ON v.layer = l.name AND v.version = l.current_version
            WHERE l.name = 'land_use'""").fetchone()
        key, old_code = conn.execute(
            "SELECT _key, dlbm FROM data.land_use WHERE _vto IS NULL AND dlbm = '0101' ORDER BY _key LIMIT 1").fetchone()
    df = gpd.read_file(f"zip://{SAMPLE / 'DLTB.zip'}")
    col = next(c for c in df.columns if c.upper() == "DLBM")
    bsm = next(c for c in df.columns if c.upper() == "BSM")
    df.loc[df[bsm].astype(str) == key, col] = "0201"
    dropped = df[bsm].astype(str).iloc[-1]
    df = df[df[bsm].astype(str) != dropped]
    path = tmp_path / "dltb_v2.gpkg"
    df.to_file(path, driver="GPKG")
    res = ingest(county_db, "land_use", path, user="test")
    assert res is not None
    srv = live_server(county_db)
    with srv.client() as http:
        now = http.get(f"/collections/land_use/items/{key}").json()
        assert now["properties"]["dlbm"] == "0201"
        at = created.isoformat()
        old = http.get(f"/collections/land_use/items/{key}", params={"datetime": at}).json()
        assert old["properties"]["dlbm"] == old_code
        assert http.get(f"/collections/land_use/items/{dropped}").status_code == 404
        assert http.get(f"/collections/land_use/items/{dropped}", params={"datetime": at}).status_code == 200
        ch = http.get("/collections/land_use/changes", params={"from": v1, "limit": 1000}).json()
        kinds = {f["id"]: f["properties"]["change"] for f in ch["features"]}
        assert kinds.get(key) == "changed" and kinds.get(dropped) == "removed"

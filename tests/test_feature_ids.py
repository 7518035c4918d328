"""Feature ids in a province (geobase/features/ids.py): each county's delivery numbers its own
features, so two counties both hold BSM ``00000002``. Every feature of a province layer has one
id, unique across the province (``339901-00000002``), in every representation and through real
clients; a county's database keeps its bare keys; an id two features answer is a 409 naming
both, never one of them picked; an edit by a qualified id changes that county's row only.

Before: items pages gave both counties' features the same id (GDAL's OAPIF driver, QGIS and
OWSLib saw 16 ids for 32 features), keyset paging lost a feature at every page boundary that
fell between two counties' same key (27 of 32 served with limit=5), and a qualified id was a 404.

Real PostGIS, real files through GDAL, a real uvicorn server, GDAL's OAPIF driver (ogr2ogr)."""

from __future__ import annotations

import asyncio
import json
import subprocess

import psycopg
import pyogrio
import pytest
from test_divisions import A, B, county_gdf, load
from test_ingest import query
from test_shared_keys import GEOJSON, SHARED, _admin

from geobase.catalog.state import layer_state
from geobase.features import ItemsParams, build_query, encode_cursor
from geobase.specs import get_registry


def _database_features(settings) -> dict[str, tuple]:
    """Every current feature of land use as the database holds it, by its province-wide id."""
    return {f"{d}-{k}": (bsm, dlbm, zldwdm, round(area, 3)) for d, k, bsm, dlbm, zldwdm, area in query(
        settings, "SELECT division, _key, bsm, dlbm, zldwdm, _area_m2 FROM data.land_use WHERE _vto IS NULL")}


def _gdal_features(url: str, tmp_path, name: str) -> list[tuple]:
    """land_use through GDAL's OAPIF driver (ogr2ogr to a GeoPackage), 5 features a page."""
    out = tmp_path / f"{name}.gpkg"
    p = subprocess.run(["ogr2ogr", "-f", "GPKG", str(out), f"OAPIF:{url}", "land_use", "-oo", "PAGE_SIZE=5"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    df = pyogrio.read_dataframe(out)
    return [(r["id"], (r["bsm"], r["dlbm"], r["zldwdm"], round(r["_area_m2"], 3))) for _, r in df.iterrows()]


def test_gdal_lists_every_province_feature_once_with_its_own_id_and_the_databases_values(
        db_settings, tmp_path, live_server):
    s = db_settings
    load(s, tmp_path, A)
    srv = live_server(s)
    county = _gdal_features(srv.url, tmp_path, "county")
    assert sorted(i for i, _ in county) == [f"{n:08d}" for n in range(1, 17)]  # one county: bare keys, as before
    load(s, tmp_path, B)  # the same 16 keys in another county: a province
    db = _database_features(s)
    assert len(db) == 32
    got = _gdal_features(srv.url, tmp_path, "province")
    assert len(got) == 32 and len({i for i, _ in got}) == 32  # every feature once, each with its own id
    assert dict(got) == db  # ids and values exactly the database's
    with srv.client() as c:  # the ids GDAL kept are URLs that answer their own feature
        for fid in (f"{A}-{SHARED}", f"{B}-{SHARED}"):
            f = c.get(f"/collections/land_use/items/{fid}").json()
            assert f["id"] == fid and (f["properties"]["bsm"], f["properties"]["dlbm"], f["properties"]["zldwdm"],
                                       round(f["properties"]["_area_m2"], 3)) == db[fid]
        for fmt in ("csv", "gpkg"):  # downloads carry the same ids
            r = c.get("/collections/land_use/items", params={"f": fmt})
            assert r.status_code == 200
            (tmp_path / f"d.{fmt}").write_bytes(r.content)
            ids = list(pyogrio.read_dataframe(tmp_path / f"d.{fmt}")["id"])
            assert sorted(ids) == sorted(db), fmt
        ch = c.get("/collections/land_use/changes", params={"from": 0, "limit": 7}).json()
        seen = [f["id"] for f in ch["features"]]
        while nxt := [link["href"] for link in ch["links"] if link["rel"] == "next"]:
            ch = c.get(nxt[0]).json()
            seen += [f["id"] for f in ch["features"]]
        assert sorted(seen) == sorted(db)


def test_an_id_of_two_features_names_both_and_picks_neither(db_settings, tmp_path, live_server):
    s = db_settings
    load(s, tmp_path, A, county_gdf(A, n=20))  # keys 00000001..00000020
    load(s, tmp_path, B, county_gdf(B, n=4, dx=2000))  # keys 00000001..00000004
    srv = live_server(s)
    with srv.client() as c:
        r = c.get(f"/collections/land_use/items/{SHARED}")
        assert r.status_code == 409, r.text
        assert r.json()["details"]["candidates"] == [f"{A}-{SHARED}", f"{B}-{SHARED}"]
        assert r.json()["parameter"] == "featureId"
        # a bare key only one county holds still answers: a URL kept from the county's days
        f = c.get("/collections/land_use/items/00000018").json()
        assert f["id"] == f"{A}-00000018" and f["properties"]["zldwdm"].startswith(A)
        assert c.get(f"/collections/land_use/items/{B}-00000018").status_code == 404
        h = _admin(s)
        r = c.get(f"/collections/land_use/items/{SHARED}/history", headers=h)
        assert r.status_code == 409 and len(r.json()["details"]["candidates"]) == 2, r.text
        states = c.get(f"/collections/land_use/items/{B}-{SHARED}/history", headers=h).json()["states"]
        assert {st["division"] for st in states} == {B}


def _current(settings) -> list[tuple]:
    return query(settings, "SELECT division, _key, _hash, _vfrom FROM data.land_use WHERE _vto IS NULL ORDER BY 1, 2")


def test_an_edit_by_a_qualified_id_changes_that_countys_row_only(db_settings, tmp_path, live_server):
    s = db_settings
    load(s, tmp_path, A, county_gdf(A, n=20))
    load(s, tmp_path, B, county_gdf(B, n=4, dx=2000))  # 00000001..00000004: keys of both counties
    h = _admin(s)
    srv = live_server(s)
    with srv.client() as c:
        a_shared = c.get(f"/collections/land_use/items/{A}-{SHARED}").json()
        for fid in (f"{A}-00000018", f"{B}-{SHARED}"):  # A's own key; a key both counties hold
            before = _current(s)
            etag = c.get(f"/collections/land_use/items/{fid}").headers["etag"]
            r = c.patch(f"/collections/land_use/items/{fid}", params={"reason": "reclassified"},
                        content=json.dumps({"properties": {"dlmc": "旱地"}}),
                        headers={**h, "Content-Type": GEOJSON, "If-Match": etag})
            assert r.status_code == 200 and r.json()["featureId"] == fid, r.text
            after = _current(s)
            assert len(after) == len(before)
            assert [(d, k) for d, k, *_ in set(after) - set(before)] == [tuple(fid.split("-"))]  # that row only
            assert c.get(f"/collections/land_use/items/{fid}").json()["properties"]["dlmc"] == "旱地"
        assert c.get(f"/collections/land_use/items/{A}-{SHARED}").json()["properties"] == a_shared["properties"]
        # a session changes one feature of a key: the second county's is refused, naming both
        sid = c.post("/collections/land_use/sessions", headers=h).json()["id"]
        for county, status in ((A, 200), (B, 409)):
            fid = f"{county}-00000003"
            etag = c.get(f"/collections/land_use/items/{fid}").headers["etag"]
            r = c.patch(f"/collections/land_use/items/{fid}", content=json.dumps({"properties": {"dlmc": "水田"}}),
                        headers={**h, "Content-Type": GEOJSON, "If-Match": etag, "Edit-Session": sid})
            assert r.status_code == status, r.text
        before = _current(s)
        r = c.post(f"/collections/land_use/sessions/{sid}/commit", json={"message": "m"}, headers=h)
        assert r.status_code == 200, r.text
        assert [(d, k) for d, k, *_ in set(_current(s)) - set(before)] == [(A, "00000003")]


def test_a_page_after_a_cursor_starts_in_the_key_index_in_a_province(db_settings, tmp_path):
    """The next page of the id order starts at the boundary in each county's key index (an index
    condition on (key, county)), instead of reading every earlier row through a filter (the OR form
    of the keyset: 2,500 rows removed by filter per county for page 250 of 10)."""
    s = db_settings
    load(s, tmp_path, A, county_gdf(A, n=600))
    load(s, tmp_path, B, county_gdf(B, n=600, dx=4000))
    spec = get_registry(s).layer("land_use")

    async def state():
        async with await psycopg.AsyncConnection.connect(s.database_url) as conn:
            return await layer_state(conn, spec)

    st = asyncio.run(state())
    for qualified, boundary in ((False, ["00000500"]), (True, ["00000500", A])):
        first = build_query(st, set(), ItemsParams(limit=10), default_limit=10, max_limit=100, qualified_ids=qualified)
        cursor = encode_cursor(st.current_version, "n", first.sort_sig, boundary)
        q = build_query(st, set(), ItemsParams(limit=10, cursor=cursor), default_limit=10, max_limit=100,
                        qualified_ids=qualified)
        with psycopg.connect(s.database_url, autocommit=True) as conn:
            conn.execute("ANALYZE data.land_use")
            plan = "\n".join(r[0] for r in conn.execute(sql_text(q, conn)).fetchall())
        county = f"land_use__{A}"
        assert county in plan and "Rows Removed by Filter" not in plan, plan
        assert ("ROW(_key, division) > ROW('00000500'::text, '339901'::text)" if qualified
                else "Index Cond: (_key > '00000500'::text)") in plan, plan


def sql_text(q, conn) -> str:
    """EXPLAIN ANALYZE of the page's SQL."""
    return "EXPLAIN (ANALYZE, COSTS OFF) " + q.page_sql().as_string(conn)


def test_a_site_checks_feature_ids_are_the_features_api_ids_of_the_right_county(db_settings, tmp_path, live_server):
    """A site over both counties: every land-use piece and the cultivated-land rule name their
    features by the id /items/{id} answers, each that county's feature (before: bare keys, each
    one a 409 naming two counties' features)."""
    s = db_settings
    load(s, tmp_path, A)
    load(s, tmp_path, B)  # the same 16 keys: a province
    (site,), = query(s, "SELECT ST_AsGeoJSON(ST_Expand(ST_Extent(geom), 0.0001)) FROM data.land_use "
                        "WHERE _vto IS NULL")
    db = _database_features(s)
    farm = sorted(fid for fid, (_, dlbm, *_) in db.items() if dlbm.startswith("01"))
    srv = live_server(s)
    with srv.client() as c:
        r = c.post("/analysis/site-check", json={"geometry": json.loads(site), "layers": ["land_use"]},
                   headers=_admin(s))
        assert r.status_code == 200, r.text
        rep = r.json()
        pieces = rep["layers"]["land_use"]["pieces"]
        assert sorted(p["key"] for p in pieces) == sorted(db)  # all 32, each once, by its province-wide id
        rule = next(x for x in rep["rules"] if x["id"] == "cultivated_land")
        assert rule["features"] == farm and len(farm) > 2
        for p in pieces:
            f = c.get(f"/collections/land_use/items/{p['key']}")
            assert f.status_code == 200, (p["key"], f.text)
            props = f.json()["properties"]
            assert f.json()["id"] == p["key"] and props["zldwdm"].startswith(p["key"][:6])
            assert (props["bsm"], props["dlbm"]) == (p["attributes"]["bsm"], p["attributes"]["dlbm"])
            assert round(props["_area_m2"], 3) == db[p["key"]][3] and p["area"]["m2"] == pytest.approx(
                props["_area_m2"], rel=1e-6)


def test_a_change_analysis_names_the_changed_countys_features_by_their_ids(db_settings, tmp_path, live_server):
    """County B's redelivery reclassifies its parcel ``00000002`` (A holds the same key): the change
    analysis names both sides by B's qualified id, which /items/{id} answers with B's feature."""
    s = db_settings
    load(s, tmp_path, A)
    load(s, tmp_path, B)
    gdf = county_gdf(B, dx=2000)
    gdf.loc[gdf["BSM"] == SHARED, ["DLBM", "DLMC"]] = ["0702", "农村宅基地"]
    assert gdf.loc[gdf["BSM"] == SHARED, "DLBM"].iloc[0] == "0702"
    v3 = load(s, tmp_path, B, gdf, tag="v3").version
    srv = live_server(s)
    with srv.client() as c:
        r = c.post("/analysis/change", json={"layer": "land_use", "v1": v3 - 1, "v2": v3}, headers=_admin(s))
        assert r.status_code == 200, r.text
        patches = r.json()["changed_patches"]
        assert [(p["from"]["key"], p["to"]["key"], p["to"]["class"]) for p in patches] == [
            (f"{B}-{SHARED}", f"{B}-{SHARED}", "0702")]
        f = c.get(f"/collections/land_use/items/{B}-{SHARED}").json()
        assert f["properties"]["dlbm"] == "0702" and f["properties"]["zldwdm"].startswith(B)


def _feature_info_ids(client, lon: float, lat: float) -> list[str]:
    """The land-use ids WMTS GetFeatureInfo (KVP, JSON) names at a point, at z17 of the c grid."""
    from test_wmts import c_tile_of
    row, col, i, j = c_tile_of(17, lon, lat)
    r = client.get("/wmts", params={"service": "WMTS", "request": "GetFeatureInfo", "version": "1.0.0",
                                    "layer": "land_use", "style": "default", "tilematrixset": "c",
                                    "tilematrix": 17, "tilerow": row, "tilecol": col, "i": int(i), "j": int(j),
                                    "infoformat": "application/json"})
    assert r.status_code == 200, r.text
    return [f["id"] for f in r.json()["features"] if f["layer"] == "land_use"]


def test_getfeatureinfo_names_a_province_parcel_by_its_features_api_id(db_settings, tmp_path, live_server):
    """A desktop client's identify (WMTS GetFeatureInfo) gives the id that /items answers: bare in
    a county's database, county-qualified once a second county shares the key (it gave the bare
    key, which two counties' parcels answer)."""
    s = db_settings
    load(s, tmp_path, A)
    srv = live_server(s)
    where = ("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM data.land_use "
             "WHERE _vto IS NULL AND division = %s AND _key = %s) t")
    (lon_a, lat_a), = query(s, where, (A, SHARED))
    with srv.client() as c:
        assert _feature_info_ids(c, lon_a, lat_a) == [SHARED]
    load(s, tmp_path, B)
    (lon_b, lat_b), = query(s, where, (B, SHARED))
    with srv.client() as c:
        for county, lon, lat in ((A, lon_a, lat_a), (B, lon_b, lat_b)):
            ids = _feature_info_ids(c, lon, lat)
            assert ids == [f"{county}-{SHARED}"], ids
            f = c.get(f"/collections/land_use/items/{ids[0]}").json()  # the id answers its own feature
            assert f["id"] == ids[0]


def tilted_dem(path, west: float, south: float, east: float, north: float, slope_deg: float = 35.0,
               res: float = 0.0002) -> None:
    """A DEM (EPSG:4490) over the box and a margin, rising southwards at ``slope_deg`` everywhere
    (the heights step by each row's geodesic north-south size, as the slope analysis measures it)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    west, north = west - 10 * res, north + 10 * res
    cols, rows = int((east - west) / res) + 20, int((north - south) / res) + 20
    phi = np.radians(north - (np.arange(rows) + 0.5) * res)
    a, e2 = 6378137.0, 0.006694380022900787
    m = a * (1 - e2) / (1 - e2 * np.sin(phi) ** 2) ** 1.5
    dist = np.cumsum((m * np.radians(res))[::-1])[::-1]
    z = (dist[0] - dist) * np.tan(np.radians(slope_deg))
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=1, dtype="float32", crs="EPSG:4490",
                       transform=from_origin(west, north, res, res), nodata=-9999) as dst:
        dst.write(np.repeat(z[:, None], cols, axis=1).astype("float32"), 1)


def load_steep_province(s, tmp_path) -> None:
    """Counties A and B (the same 16 keys, graded 2 by GDPDJB) on a DEM of 35° everywhere: every
    farmland parcel of both is steep and disagrees with its grade."""
    from geobase.ingest.pipeline import ingest

    for county, dx in ((A, 0), (B, 2000)):
        gdf = county_gdf(county, dx=dx)
        gdf["GDPDJB"] = "2"
        load(s, tmp_path, county, gdf)
    (extent,) = query(s, "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                         "(SELECT ST_Extent(geom)::geometry AS e FROM data.land_use WHERE _vto IS NULL) x")
    tilted_dem(tmp_path / "dem.tif", *extent)
    ingest(s, "dem", tmp_path / "dem.tif")


def test_steep_farmland_names_each_parcel_by_its_features_api_id(db_settings, tmp_path, live_server):
    """Both counties' farmland on a 35° slope: the steep-farmland report names every parcel and
    every gdpdjb disagreement by the id /items/{id} answers, that county's parcel (before: bare
    keys, each one a parcel of both counties, a 409 at /items/{key})."""
    s = db_settings
    load_steep_province(s, tmp_path)
    db = _database_features(s)
    farm = sorted(fid for fid, (_, dlbm, *_) in db.items() if dlbm in ("0101", "0102", "0103"))
    assert len(farm) == 14 and f"{A}-{SHARED}" in farm and f"{B}-{SHARED}" in farm
    srv = live_server(s)
    with srv.client() as c:
        r = c.post("/processes/steep-farmland/execution", json={"inputs": {"threshold_deg": 25}}, headers=_admin(s))
        assert r.status_code == 200, r.text
        rep = r.json()
        assert rep["parcels_checked"] == 14
        assert [p["key"] for p in rep["parcels"]] == farm  # each once, by its province-wide id, in id order
        assert [d["key"] for d in rep["gdpdjb_disagreements"]] == farm
        for p in rep["parcels"]:
            assert p["mean_slope_deg"] == pytest.approx(35.0, abs=1.0)
            f = c.get(f"/collections/land_use/items/{p['key']}")
            assert f.status_code == 200, (p["key"], f.text)
            props = f.json()["properties"]
            assert f.json()["id"] == p["key"] and props["zldwdm"] == p["zldwdm"] and p["zldwdm"].startswith(p["key"][:6])
            assert (props["dlbm"], props["gdpdjb"]) == (p["dlbm"], p["gdpdjb"])
            assert p["area"]["m2"] == pytest.approx(props["_area_m2"], rel=1e-6)


def test_the_id_rule_follows_the_layer_not_the_version_a_caller_holds(db_settings, tmp_path):
    """ids.qualified_ids decides by the layer's partitions: a caller passing the version it read
    before a second county arrived gets the province's rule (before: the rule was kept per
    version, and that version's bare rule was given back)."""
    from geobase.features.ids import qualified_ids

    s = db_settings
    spec = get_registry(s).layer("land_use")

    async def rule(version: int) -> bool:
        async with await psycopg.AsyncConnection.connect(s.database_url, autocommit=True) as conn:
            return await qualified_ids(conn, spec, version)

    v1 = load(s, tmp_path, A).version
    assert asyncio.run(rule(v1)) is False  # one county: bare keys
    v2 = load(s, tmp_path, B).version
    assert v2 > v1
    assert asyncio.run(rule(v1)) is True  # the layer is a province now, whatever version the caller holds
    assert asyncio.run(rule(v2)) is True

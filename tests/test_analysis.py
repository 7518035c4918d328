"""Overlay analyses on small hand-made layers (tests/analysis_data.py): expected figures are
computed independently with shapely + pyproj Geod(GRS80) and geopandas, never from our SQL."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import psycopg
import pytest
from pyproj import Transformer
from shapely.geometry import box, mapping
from shapely.ops import transform as shp_transform

from geobase import analysis
from geobase.errors import InvalidInput
from geobase.analysis.input import parse_geojson
from geobase.specs import get_registry
from tests.analysis_data import LAND, X0, Y0, D, cell, geod_area, insert, load_small_county, register_version, run



@pytest.fixture
def small(db_settings):
    load_small_county(db_settings.database_url)
    reg = get_registry(db_settings)
    return db_settings, reg, list(reg.layers.values())


# -- input geometry checks (no database) --------------------------------------------------------

@pytest.mark.parametrize("geom, crs, needle", [
    ({"type": "Polygon", "coordinates": []}, None, "empty"),
    ({"type": "Point", "coordinates": [118.3, 30.0]}, None, "expected Polygon"),
    ({"type": "Polygon", "coordinates": [[[118.30, 30.0], [118.31, 30.01], [118.31, 30.0], [118.30, 30.01],
                                          [118.30, 30.0]]]}, None, "Self-intersection"),
    (mapping(box(118.3, 30.0, 118.31, 30.01)), "EPSG:4527", "longitude/latitude"),
    (mapping(box(2.3, 48.8, 2.4, 48.9)), None, "outside China"),
    (mapping(box(118.3, 30.0, 118.31, 30.01)), "EPSG:9999", "not supported"),
    (mapping(box(500000, 3300000, 501000, 3301000)), "EPSG:4527", "zone prefix 39"),
    ({"type": "Feature", "geometry": None}, None, "empty"),
    ("{not json", None, "not valid JSON"),
])
def test_bad_geometries_are_refused_with_the_problem_named(geom, crs, needle, tmp_path):
    from geobase.settings import Settings

    with pytest.raises(InvalidInput) as exc:
        parse_geojson(geom, Settings(data_dir=tmp_path), crs=crs)
    assert needle.lower() in exc.value.message.lower()


def test_huge_geometries_are_refused(tmp_path):
    from shapely.geometry import Point

    from geobase.settings import Settings

    s = Settings(data_dir=tmp_path, analysis_max_vertices=1000, analysis_max_area_km2=50)
    circle = Point(118.3, 30.0).buffer(0.01, quad_segs=500)
    with pytest.raises(InvalidInput, match="too many vertices"):
        parse_geojson(mapping(circle), s)
    with pytest.raises(InvalidInput, match="exceeds the limit"):
        parse_geojson(mapping(box(118.0, 30.0, 118.5, 30.5)), s)


def test_gk_zone_input_is_reprojected_and_area_is_ellipsoidal(tmp_path):
    from geobase.settings import Settings

    tr = Transformer.from_crs(4490, 4527, always_xy=True)
    ll = box(118.30, 30.00, 118.32, 30.02)
    gk = shp_transform(lambda x, y: tr.transform(x, y), ll)
    got = parse_geojson(mapping(gk), Settings(data_dir=tmp_path), crs="EPSG:4527")
    assert got.geom.bounds == pytest.approx(ll.bounds, abs=1e-6)
    # straight GK edges are curves in lon/lat: expected = the densified GK ring, inverse-projected
    import shapely

    back = Transformer.from_crs(4527, 4490, always_xy=True)
    expected = shp_transform(lambda x, y: back.transform(x, y), shapely.segmentize(gk, 50.0))
    assert got.area_m2 == pytest.approx(geod_area(expected), rel=1e-6)
    assert got.area_m2 == pytest.approx(geod_area(ll), rel=1e-4)
    repaired = parse_geojson({"type": "Polygon", "coordinates": [[[118.30, 30.0], [118.31, 30.01], [118.31, 30.0],
                                                                  [118.30, 30.01], [118.30, 30.0]]]},
                             Settings(data_dir=tmp_path), repair=True)
    assert repaired.repaired and repaired.geom.is_valid and repaired.area_m2 > 0


# -- site check ------------------------------------------------------------------------------------

def test_site_check_pieces_areas_rules_and_versions(small):
    settings, reg, vis = small
    site = parse_geojson(mapping(box(X0 + 0.005, Y0 + 0.005, X0 + 0.025, Y0 + 0.035)), settings)
    site_geom = site.geom  # densified to ~50 m edges: the site every consumer sees
    r = run(settings, lambda c: analysis.site_check(c, reg, vis, site))
    assert r["site"]["area"]["m2"] == pytest.approx(geod_area(site_geom), rel=1e-6)
    lu = r["layers"]["land_use"]
    # every piece's area equals the Geod area of the shapely intersection
    for p in lu["pieces"]:
        rr, cc = int(p["key"][2]), int(p["key"][3])
        assert p["area"]["m2"] == pytest.approx(geod_area(cell(rr, cc).intersection(site_geom)), rel=1e-6)
    # a coverage layer's pieces sum to the site
    assert lu["total"]["m2"] == pytest.approx(r["site"]["area"]["m2"], rel=1e-6)
    assert {c["code"]: c["share"] for c in lu["by_class"]} == pytest.approx({"0101": 0.25, "0301": 0.5, "0701": 0.25},
                                                                            abs=1e-3)
    assert {c["code"] for c in lu["by_category"]} == {"A", "C"}
    assert {c["code"] for c in lu["by_group"]} == {"01", "03", "07"}
    m2 = lu["total"]["m2"]
    assert lu["total"]["ha"] == pytest.approx(m2 / 1e4, abs=1e-6) and lu["total"]["mu"] == pytest.approx(m2 * 15 / 1e4,
                                                                                                        abs=1e-3)
    rules = {x["id"]: x for x in r["rules"]}
    assert rules["ecological_red_line"]["verdict"] == "prohibited"
    assert rules["ecological_red_line"]["features"] == ["HX1"]
    assert rules["ecological_red_line"]["area"]["m2"] == pytest.approx(
        geod_area(cell(3, 2).intersection(site_geom)), rel=1e-6)
    assert rules["permanent_basic_farmland"]["verdict"] == "needs-approval"
    outside = site_geom.difference(box(X0 + 2 * D, Y0, X0 + 4 * D, Y0 + 3 * D))
    assert rules["outside_urban_development_boundary"]["area"]["m2"] == pytest.approx(geod_area(outside), rel=1e-6)
    assert rules["cultivated_land"]["verdict"] == "needs-approval"
    assert r["verdict"] == "prohibited"
    assert r["versions"]["land_use"]["version"] == 1
    # the public never sees attributes hidden from it
    assert all("qsdwmc" not in p["attributes"] for p in lu["pieces"])


def test_site_check_over_public_layers_only_reports_rules_it_could_not_evaluate(small):
    settings, reg, vis = small
    public = [s for s in vis if s.sharing == "public"]
    site = parse_geojson(mapping(box(X0 + 0.005, Y0 + 0.005, X0 + 0.015, Y0 + 0.015)), settings)
    r = run(settings, lambda c: analysis.site_check(c, reg, public, site))
    assert "control_lines" not in r["layers"]
    assert set(r["not_evaluated"]) == {"ecological_red_line", "permanent_basic_farmland",
                                       "outside_urban_development_boundary"}
    # farmland, from the public land-use layer, but three rules are missing: the verdict says so
    assert r["verdict"] == "incomplete" and r["complete"] is False
    assert r["verdict_of_evaluated_rules"] == "needs-approval"
    assert r["summary"] == "incomplete: 3 rules need data you may not see; the 1 evaluated rule of 4 gives needs-approval"


def test_site_check_reads_one_snapshot_and_leaves_no_setting_behind(small):
    """The site check runs read-only in one snapshot: on its own connection it opens (and ends)
    a REPEATABLE READ transaction; inside a caller's transaction it joins it. Either way the
    connection comes back as it was (no parallel-worker setting left on a pooled connection)."""
    import asyncio

    settings, reg, vis = small
    site = parse_geojson(mapping(box(X0 + 0.005, Y0 + 0.005, X0 + 0.015, Y0 + 0.015)), settings)

    async def go():
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            before = await (await conn.execute("SHOW max_parallel_workers_per_gather")).fetchone()
            a = await analysis.site_check(conn, reg, vis, site)
            after = await (await conn.execute("SHOW max_parallel_workers_per_gather")).fetchone()
            assert before == after and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:  # a caller's transaction
            await conn.execute("SELECT 1")
            b = await analysis.site_check(conn, reg, vis, site)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        return a, b

    a, b = asyncio.run(go())
    assert a["layers"]["land_use"]["total"] == b["layers"]["land_use"]["total"] and a["verdict"] == b["verdict"]


# -- tabulation ------------------------------------------------------------------------------------

def _expected_tabulation(aoi_geom) -> dict[tuple[str, str], float]:
    lu = gpd.GeoDataFrame({"dlbm": [LAND[c][0] for r in range(4) for c in range(4)]},
                          geometry=[cell(r, c) for r in range(4) for c in range(4)], crs=4490)
    pz = gpd.GeoDataFrame({"ghfqdm": ["030", "041"]},
                          geometry=[box(X0, Y0, X0 + 2 * D, Y0 + 4 * D), box(X0 + 2 * D, Y0, X0 + 4 * D, Y0 + 4 * D)],
                          crs=4490)
    aoi = gpd.GeoDataFrame(geometry=[aoi_geom], crs=4490)
    # keep_geom_type stated (the default drops line/point slivers too, with a warning each time)
    ov = gpd.overlay(gpd.overlay(lu, pz, how="intersection", keep_geom_type=True), aoi, how="intersection",
                     keep_geom_type=True)
    out: dict[tuple[str, str], float] = {}
    for _, row in ov.iterrows():
        a = geod_area(row.geometry)
        if a > 0:
            out[(row.dlbm, row.ghfqdm)] = out.get((row.dlbm, row.ghfqdm), 0) + a
    return out


@pytest.mark.parametrize("aoi", ["polygon", "township", "county"])
def test_tabulation_matches_geopandas_and_covers_the_aoi(small, aoi):
    settings, reg, vis = small
    if aoi == "polygon":
        g = box(X0 + 0.013, Y0 + 0.004, X0 + 0.031, Y0 + 0.027)
        kw = {"aoi": parse_geojson(mapping(g), settings)}
    elif aoi == "township":
        g = box(X0, Y0, X0 + 4 * D, Y0 + 2 * D)
        kw = {"aoi_code": "339901001"}
    else:
        g = box(X0, Y0, X0 + 4 * D, Y0 + 4 * D)
        kw = {}
    t = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones", **kw))
    expected = _expected_tabulation(g)
    got = {(c["a"], c["b"]): c["m2"] for c in t["cells"]}
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-6)
    assert t["total"]["m2"] == pytest.approx(geod_area(g), rel=1e-4)
    assert t["coverage_of_aoi"] == pytest.approx(1.0, abs=1e-4)


def test_tabulation_split_over_two_connections_gives_the_same_cells(small):
    settings, reg, vis = small
    one = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones"))
    two = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones",
                                                   conninfo=settings.database_url, workers=2))
    assert [(c["a"], c["b"]) for c in two["cells"]] == [(c["a"], c["b"]) for c in one["cells"]]
    assert [c["m2"] for c in two["cells"]] == pytest.approx([c["m2"] for c in one["cells"]], rel=1e-12)


def test_tabulation_rejects_unknown_layers_and_fields(small):
    settings, reg, vis = small
    with pytest.raises(InvalidInput, match="layer_b"):
        run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "nope"))
    with pytest.raises(InvalidInput, match="class_a"):
        run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones", class_a="zzz"))
    with pytest.raises(InvalidInput, match="no administrative division"):
        run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones", aoi_code="339901999"))


# -- conflicts -------------------------------------------------------------------------------------

def test_conflicts_find_the_planted_conflict_and_nothing_else(small):
    settings, reg, vis = small
    r = run(settings, lambda c: analysis.conflicts(c, reg, vis))
    assert [(p["rule"], p["a"]["key"], p["b"]["key"]) for p in r["patches"]] == [
        ("construction_in_ecological_red_line", "LU32", "HX1")]
    assert r["patches"][0]["area"]["m2"] == pytest.approx(geod_area(cell(3, 2)), rel=1e-6)
    again = run(settings, lambda c: analysis.conflicts(c, reg, vis))
    assert again["patches"][0]["id"] == r["patches"][0]["id"]  # change-safe id
    # edge contacts are reported as dropped slivers, not as conflicts
    rules = {x["id"]: x for x in r["rules"]}
    assert rules["forest_in_planned_construction_zone"]["patches"] == 0
    assert rules["forest_in_planned_construction_zone"]["slivers_dropped"]["count"] > 0
    with pytest.raises(InvalidInput, match="unknown conflict rules"):
        run(settings, lambda c: analysis.conflicts(c, reg, vis, rule_ids=["nope"]))


def test_conflict_between_two_control_lines(small):
    settings, reg, vis = small
    with psycopg.connect(settings.database_url) as conn:
        insert(conn, "control_lines", [("NT2", {"bsm": "NT2", "kind": "YJJBNT"},
                                        box(X0 + 3.5 * D, Y0, X0 + 4 * D, Y0 + D))], register=False)
        conn.commit()
    r = run(settings, lambda c: analysis.conflicts(c, reg, vis, rule_ids=["urban_boundary_overlaps_basic_farmland"]))
    assert [(p["a"]["key"], p["b"]["key"]) for p in r["patches"]] == [("KF1", "NT2")]
    assert r["total"]["m2"] == pytest.approx(geod_area(box(X0 + 3.5 * D, Y0, X0 + 4 * D, Y0 + D)), rel=1e-6)


# -- change, buffer ----------------------------------------------------------------------------------

def test_change_transition_matrix(small):
    settings, reg, vis = small
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("UPDATE data.land_use SET _vto = 2 WHERE _key = 'LU00' AND _vto IS NULL")
        insert(conn, "land_use", [
            ("LU00", {"bsm": "LU00", "dlbm": "0601"}, box(X0, Y0, X0 + D / 2, Y0 + D)),
            ("LU00b", {"bsm": "LU00b", "dlbm": "0101"}, box(X0 + D / 2, Y0, X0 + D, Y0 + D)),
        ], version=2)
        conn.commit()
    r = run(settings, lambda c: analysis.change(c, reg, vis, "land_use", 1, 2))
    m = {(t["from"], t["to"]): t["m2"] for t in r["transitions"]}
    assert m[("0101", "0601")] == pytest.approx(geod_area(box(X0, Y0, X0 + D / 2, Y0 + D)), rel=1e-6)
    assert ("0101", "0101") in m
    assert [(p["from"]["class"], p["to"]["class"]) for p in r["changed_patches"]] == [("0101", "0601")]
    assert {(t["from"], t["to"]) for t in r["transitions_by_group"]} >= {("01", "06")}
    with pytest.raises(InvalidInput, match="no version 7"):
        run(settings, lambda c: analysis.change(c, reg, vis, "land_use", 1, 7))


def test_buffer_uses_ellipsoidal_distance(small):
    settings, reg, vis = small
    r = run(settings, lambda c: analysis.buffer(c, reg, vis, layer="land_use", distance_m=100, water_layers=["rivers"]))
    keys = sorted(f["key"] for f in r["features"])
    assert keys == sorted(f"LU{r}{c}" for r in (1, 2) for c in range(4))  # the river runs between rows 1 and 2
    band = box(X0, Y0 + 2 * D - 100 / 111_000, X0 + D, Y0 + 2 * D)
    lu10 = next(f for f in r["features"] if f["key"] == "LU10")
    # geography edges are geodesics: a 6 km river and a 1 km parcel edge along the same parallel
    # bow differently by a few decimetres
    assert lu10["distance_m"] < 1.0
    assert lu10["area_in_band"]["m2"] == pytest.approx(geod_area(band), rel=0.02)
    # a parcel 0.01° (~1.1 km) away is not within 1 km, but within 1.2 km
    far = run(settings, lambda c: analysis.buffer(c, reg, vis, layer="land_use", distance_m=1000, water_layers=["rivers"]))
    assert "LU00" not in {f["key"] for f in far["features"]}
    near = run(settings, lambda c: analysis.buffer(c, reg, vis, layer="land_use", distance_m=1200, water_layers=["rivers"]))
    assert "LU00" in {f["key"] for f in near["features"]}


# -- steep farmland --------------------------------------------------------------------------------

def _write_dem(path, slope_deg: float):
    """A DEM tilted northwards at ``slope_deg`` over rows 0-1 of the grid, flat above."""
    import rasterio
    from rasterio.transform import from_origin

    res = 0.0002
    n = int(round(4 * D / res)) + 20
    west, north = X0 - 10 * res, Y0 + 4 * D + 10 * res
    lat = north - (np.arange(n) + 0.5) * res
    a, e2 = 6378137.0, 0.006694380022900787
    phi = np.radians(lat)
    m = a * (1 - e2) / (1 - e2 * np.sin(phi) ** 2) ** 1.5
    # height = northward distance (metres) x tan(slope) below Y0 + 2D, flat above
    dist = np.cumsum((m * np.radians(res))[::-1])[::-1]
    z = np.where(lat < Y0 + 2 * D, (dist[0] - dist) * np.tan(np.radians(slope_deg)), np.nan)
    z = np.where(np.isnan(z), np.nanmin(z), z)  # continuous at the break line
    grid = np.repeat(z[:, None], n, axis=1).astype("float32")
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32", crs="EPSG:4490",
                       transform=from_origin(west, north, res, res), nodata=-9999) as dst:
        dst.write(grid, 1)


def test_steep_farmland_from_the_dem(small, tmp_path):
    from geobase.analysis.slope import steep_farmland

    settings, reg, vis = small
    dem = tmp_path / "dem.tif"
    _write_dem(dem, 35.0)
    with psycopg.connect(settings.database_url) as conn:
        register_version(conn, "dem", 1, 0)
        conn.execute("UPDATE catalog.layer_versions SET metadata = %s WHERE layer = 'dem'",
                     (json.dumps({"path": str(dem)}),))
        conn.commit()
    r = run(settings, lambda c: steep_farmland(c, settings, vis))
    assert r["parcels_checked"] == 4  # the paddy column
    assert sorted(p["key"] for p in r["parcels"]) == ["LU00", "LU10"]
    for p in r["parcels"]:
        assert p["mean_slope_deg"] == pytest.approx(35.0, abs=1.0)
    expected = geod_area(cell(0, 0)) + geod_area(cell(1, 0))
    assert r["total"]["m2"] == pytest.approx(expected, rel=1e-6)
    assert r["total"]["mu"] == pytest.approx(expected * 15 / 1e4, rel=1e-6)


# -- uploads and filters ---------------------------------------------------------------------------

def _zip_shapefile(tmp_path, geom, crs, *, drop_prj=False) -> bytes:
    import io
    import zipfile

    d = tmp_path / "shp"
    d.mkdir(exist_ok=True)
    gpd.GeoDataFrame({"name": ["项目"]}, geometry=[geom], crs=crs).to_file(d / "site.shp", encoding="GBK")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in d.iterdir():
            if drop_prj and f.suffix == ".prj":
                continue
            zf.write(f, f.name)
    return buf.getvalue()


def test_uploaded_zipped_shapefile_in_a_gk_zone(tmp_path):
    from geobase.analysis.input import parse_upload
    from geobase.settings import Settings

    settings = Settings(data_dir=tmp_path)
    tr = Transformer.from_crs(4490, 4527, always_xy=True)
    ll = box(118.30, 30.00, 118.31, 30.01)
    gk = shp_transform(lambda x, y: tr.transform(x, y), ll)
    got = parse_upload(_zip_shapefile(tmp_path, gk, "EPSG:4527"), "site.zip", settings)
    assert got.source_crs == "EPSG:4527"
    assert got.area_m2 == pytest.approx(geod_area(ll), rel=1e-4)
    with pytest.raises(InvalidInput, match="declares no CRS"):
        parse_upload(_zip_shapefile(tmp_path, gk, "EPSG:4527", drop_prj=True), "site.zip", settings)
    with pytest.raises(InvalidInput, match="unsupported file type"):
        parse_upload(b"hello", "site.txt", settings)
    with pytest.raises(InvalidInput, match="not a readable zip"):
        parse_upload(b"hello", "site.zip", settings)


def test_filters_name_unknown_attributes_and_codes(small):
    settings, reg, vis = small
    with pytest.raises(InvalidInput, match="unknown code '9999'"):
        run(settings, lambda c: analysis.buffer(c, reg, vis, layer="land_use", distance_m=50, water_layers=["rivers"],
                                               filter={"dlbm": ["9999"]}))
    with pytest.raises(InvalidInput, match="no attribute 'colour'"):
        run(settings, lambda c: analysis.buffer(c, reg, vis, layer="land_use", distance_m=50, water_layers=["rivers"],
                                               filter={"colour": ["red"]}))
    farmland = run(settings, lambda c: analysis.buffer(c, reg, vis, layer="land_use", distance_m=50,
                                                      water_layers=["rivers"], filter={"dlbm": {"prefix": ["01"]}}))
    assert sorted(f["key"] for f in farmland["features"]) == ["LU10", "LU20"]


def test_piece_geometries_are_written_verbatim_and_parsed_on_demand():
    """GeoJSONText: the JSON and GeoJSON renderings carry the geometry PostGIS wrote, and
    consumers that measure it (shapely) or draw it (the HTML report) see a geometry."""
    from shapely.geometry import shape

    from geobase.analysis import output as out
    from geobase.geojson_text import GeoJSONText

    text = '{"type":"Polygon","coordinates":[[[117.1,31.1],[117.2,31.1],[117.2,31.2],[117.1,31.1]]]}'
    g = GeoJSONText(text)
    result = {"analysis": "site-check", "layers": {"land_use": {"pieces": [
        {"key": "A", "attributes": {"dlbm": "0101"}, "geometry": g, "area": {"m2": 1.0}}]}}}
    assert json.loads(out.to_json(result))["layers"]["land_use"]["pieces"][0]["geometry"] == json.loads(text)
    fc = json.loads(out.to_geojson(result))
    assert fc["features"][0]["geometry"] == json.loads(text)
    assert shape(g).bounds == (117.1, 31.1, 117.2, 31.2)
    assert g["type"] == "Polygon" and g == json.loads(text)
    assert "<path" in out.svg_map(None, [("land_use", [g])])


def test_analysis_jobs_of_a_dead_server_are_marked_failed(db_settings):
    """An analysis job records where it runs; after a crash the next server start says why it
    ended instead of leaving it 'running' for ever (its result was never written)."""
    import os
    import socket
    import subprocess
    import sys

    from geobase.ingest import jobs

    from geobase.db import connect

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = {"host": socket.gethostname()}
    with connect(db_settings) as conn:
        for job_id, pid, status in (("00000000-0000-0000-0000-0000000000a1", dead.pid, "running"),
                                    ("00000000-0000-0000-0000-0000000000a2", os.getpid(), "running")):
            conn.execute("INSERT INTO catalog.jobs (id, kind, status, params, created_by) VALUES (%s, %s, %s, %s, 't')",
                         (job_id, "analysis:conflicts", status, json.dumps({**here, "pid": pid})))
        conn.commit()
    assert jobs.fail_orphaned_jobs(db_settings) == 1
    orphan = jobs.get_job(db_settings, "00000000-0000-0000-0000-0000000000a1")
    assert orphan["status"] == "failed" and "run the analysis again" in orphan["message"]
    assert jobs.get_job(db_settings, "00000000-0000-0000-0000-0000000000a2")["status"] == "running"

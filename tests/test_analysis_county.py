"""Overlay analyses on the ingested sample county, checked against its manifest (planted
conflicts, steep farmland) and against independent shapely/pyproj/geopandas computations."""

from __future__ import annotations

import json
import time

import geopandas as gpd
import pytest
import shapely
from shapely.geometry import shape

from geobase import analysis
from geobase.analysis.input import parse_geojson
from geobase.specs import get_registry
from tests.analysis_data import geod_area, run
from tests.conftest import SAMPLE

# the county is committed: a missing manifest is an error of the checkout, not a reason to skip
MANIFEST = json.loads((SAMPLE / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def county(county_shared):
    reg = get_registry(county_shared)
    return county_shared, reg, list(reg.layers.values())  # the operator's view: every layer


@pytest.fixture(scope="module")
def conflicts_result(county):
    settings, reg, vis = county
    return run(settings, lambda c: analysis.conflicts(c, reg, vis, sliver_m2=1.0))


def _by_rule(result) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in result["patches"]:
        out.setdefault(p["rule"], []).append(p)
    return out


def test_all_planted_conflicts_are_found_and_nothing_else(conflicts_result):
    got = _by_rule(conflicts_result)
    planted = {c["rule"]: c for c in MANIFEST["conflicts"]}
    assert set(got) == set(planted)
    c1 = planted["construction_in_ecological_red_line"]
    p1 = got["construction_in_ecological_red_line"]
    assert {p["a"]["key"] for p in p1} == set(c1["dltb_bsm"])
    assert {p["b"]["key"] for p in p1} == set(c1["kzx_bsm"])
    for rule in ("urban_boundary_overlaps_basic_farmland", "red_line_overlaps_urban_boundary"):
        ps = got[rule]
        assert len(ps) == 1, rule
        assert {ps[0]["a"]["key"], ps[0]["b"]["key"]} == set(planted[rule]["kzx_bsm"])
        assert ps[0]["area"]["m2"] == pytest.approx(planted[rule]["area_m2"], rel=1e-3)
    c3 = planted["forest_in_planned_construction_zone"]
    p3 = got["forest_in_planned_construction_zone"]
    assert {p["a"]["key"] for p in p3} == {k for patch in c3["patches"] for k in patch["dltb_bsm"]}
    assert {p["b"]["key"] for p in p3} == set(c3["ghfq_bsm"])
    # ids are unique and every piece's area is the Geod area of its own geometry
    ids = [p["id"] for p in conflicts_result["patches"]]
    assert len(ids) == len(set(ids))
    for p in conflicts_result["patches"]:
        # abs: GeographicLib's own rounding on a few-m² piece is ~1e-5 m² (see geobase.ingest.area)
        assert p["area"]["m2"] == pytest.approx(geod_area(shape(p["geometry"])), rel=1e-6, abs=1e-4)
    # boundary contacts were dropped as slivers and reported
    assert sum(r["slivers_dropped"]["count"] for r in conflicts_result["rules"]) >= 0


def test_steep_farmland_matches_the_planted_parcels(county):
    from geobase.analysis.slope import steep_farmland

    settings, reg, vis = county
    r = run(settings, lambda c: steep_farmland(c, settings, vis))
    planted = set(MANIFEST["steep_farmland"])
    found = {p["key"] for p in r["parcels"]}
    assert found == planted
    assert all(p["mean_slope_deg"] > 25 for p in r["parcels"])
    total = sum(p["area"]["m2"] for p in r["parcels"])
    assert r["total"]["m2"] == pytest.approx(total, rel=1e-9)
    assert r["total"]["mu"] == pytest.approx(total * 15 / 10_000, rel=1e-6)


def test_demo_site_check_pieces_sum_to_the_site(county):
    settings, reg, vis = county
    feat = json.loads((SAMPLE / "demo_site.geojson").read_text(encoding="utf-8"))
    site = parse_geojson(feat, settings)
    site_geom = shape(feat["features"][0]["geometry"] if feat["type"] == "FeatureCollection" else feat["geometry"])
    # the input is densified to ~50 m edges (see geobase.analysis.input): compare like with like
    assert site.area_m2 == pytest.approx(geod_area(shapely.segmentize(site_geom, 5e-4)), rel=1e-9)
    assert site.area_m2 == pytest.approx(MANIFEST["demo_site"]["feature"]["properties"]["area_m2"], rel=5e-5)
    r = run(settings, lambda c: analysis.site_check(c, reg, vis, site))
    lu = r["layers"]["land_use"]
    pz = r["layers"]["planning_zones"]
    dropped = r["slivers_dropped"]["m2"]
    for layer in (lu, pz):  # coverages: the pieces tile the site
        assert layer["total"]["m2"] == pytest.approx(site.area_m2, rel=1e-6, abs=dropped + 1e-6)
    # each piece against shapely + Geod on the piece geometry PostGIS returned
    for p in lu["pieces"][:200]:
        # abs: GeographicLib's own rounding on a few-m² piece is ~1e-5 m² (see geobase.ingest.area)
        assert p["area"]["m2"] == pytest.approx(geod_area(shape(p["geometry"])), rel=1e-6, abs=1e-4)
    rules = {x["id"]: x for x in r["rules"]}
    assert rules["permanent_basic_farmland"]["verdict"] == "needs-approval"
    assert rules["outside_urban_development_boundary"]["verdict"] == "warning"
    assert rules["cultivated_land"]["verdict"] == "needs-approval"
    assert r["verdict"] in ("needs-approval", "prohibited")
    assert set(r["versions"]) >= {"land_use", "planning_zones", "control_lines"}


def test_tabulation_of_a_township_equals_its_area_and_geopandas(county):
    settings, reg, vis = county
    t = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones", aoi_code="339901003"))
    assert t["total"]["m2"] == pytest.approx(t["aoi"]["area"]["m2"], rel=1e-4)  # 0.01 %
    # whole county: totals equal the county area stated in the manifest
    whole = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones"))
    assert whole["total"]["m2"] == pytest.approx(MANIFEST["county"]["area_m2_ellipsoidal"], rel=1e-4)
    zones = {r["b"]: r["m2"] for r in whole["totals_b"]}
    for code, m2 in MANIFEST["planning"]["zone_area_m2"].items():
        assert zones[code] == pytest.approx(m2, rel=1e-4)


def test_tabulation_on_a_small_area_matches_geopandas_overlay(county):
    settings, reg, vis = county
    feat = json.loads((SAMPLE / "demo_site.geojson").read_text(encoding="utf-8"))
    site = parse_geojson(feat, settings)
    t = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones", aoi=site))

    async def frames(conn):
        out = []
        for layer, col in (("land_use", "dlbm"), ("planning_zones", "ghfqdm")):
            cur = await conn.execute(
                f"SELECT {col}, ST_AsBinary(geom) FROM data.{layer} WHERE _vto IS NULL "
                "AND ST_Intersects(geom, ST_GeomFromWKB(%s, 4490))", (site.wkb,))
            rows = await cur.fetchall()
            out.append(gpd.GeoDataFrame({col: [r[0] for r in rows]},
                                        geometry=shapely.from_wkb([bytes(r[1]) for r in rows]), crs=4490))
        return out

    lu, pz = run(settings, frames)
    aoi = gpd.GeoDataFrame(geometry=[site.geom], crs=4490)
    ov = gpd.overlay(gpd.overlay(lu, pz, how="intersection", keep_geom_type=True), aoi, how="intersection",
                     keep_geom_type=True)
    expected: dict[tuple[str, str], float] = {}
    for _, row in ov.iterrows():
        expected[(row.dlbm, row.ghfqdm)] = expected.get((row.dlbm, row.ghfqdm), 0) + geod_area(row.geometry)
    got = {(c["a"], c["b"]): c["m2"] for c in t["cells"]}
    big = {k: v for k, v in expected.items() if v > 1.0}
    assert set(big) <= set(got)
    for k, v in big.items():
        assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-3)
    assert t["total"]["m2"] == pytest.approx(site.area_m2, rel=1e-4)


def test_site_check_http_and_async_job(county_server):
    feat = json.loads((SAMPLE / "demo_site.geojson").read_text(encoding="utf-8"))
    with county_server.client() as c:
        r = c.post("/analysis/site-check", json={"geometry": feat})
        assert r.status_code == 200, r.text
        body = r.json()
        # the public does not see the internal control lines: those rules are not evaluated
        assert "control_lines" not in body["layers"]
        assert "ecological_red_line" in body["not_evaluated"]
        assert body["layers"]["land_use"]["total"]["m2"] > 0
        html = c.post("/analysis/site-check", params={"f": "html"}, json={"geometry": feat})
        assert html.status_code == 200 and "<svg" in html.text
        bad = c.post("/analysis/site-check", json={"geometry": feat, "crs": "EPSG:4527"})
        assert bad.status_code == 400 and "longitude/latitude" in bad.json()["description"]
        bow = {"type": "Polygon", "coordinates": [[[118.17, 29.15], [118.18, 29.16], [118.18, 29.15], [118.17, 29.16],
                                                   [118.17, 29.15]]]}
        bad = c.post("/analysis/site-check", json={"geometry": bow})
        assert bad.status_code == 400 and "self-intersection" in bad.json()["description"].lower()
        bad = c.post("/analysis/tabulate", json={"layer_a": "land_use", "layer_b": "nope"})
        assert bad.status_code == 400 and "nope" in bad.json()["description"]
        # an uploaded GeoJSON file gives the same answer as the posted geometry
        up = c.post("/analysis/site-check/upload", files={"file": ("site.geojson", json.dumps(feat), "application/geo+json")})
        assert up.status_code == 200, up.text
        assert up.json()["layers"]["land_use"]["total"]["m2"] == pytest.approx(body["layers"]["land_use"]["total"]["m2"],
                                                                                rel=1e-9)
        bad = c.post("/analysis/site-check/upload", files={"file": ("site.txt", b"x", "text/plain")})
        assert bad.status_code == 400 and "unsupported file type" in bad.json()["description"]
        assert c.get("/processes").status_code == 200
        rules = c.get("/analysis/rules").json()
        assert {r["id"] for r in rules["conflicts"]} == {x["rule"] for x in MANIFEST["conflicts"]}
        r = c.post("/processes/tabulate/execution", headers={"Prefer": "respond-async"},
                   json={"inputs": {"layer_a": "land_use", "layer_b": "planning_zones", "aoi": "339901001"}})
        assert r.status_code == 201, r.text
        loc = r.headers["Location"]
        deadline = time.monotonic() + 60
        while True:
            job = c.get(loc).json()
            if job["status"] in ("successful", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert job["status"] == "successful", job
        res = c.get(loc + "/results")
        assert res.status_code == 200 and res.json()["analysis"] == "tabulate"
        # a job with bad input is refused at submission, saying why (issue 13 item 6)
        r = c.post("/processes/change/execution", headers={"Prefer": "respond-async"},
                   json={"inputs": {"layer": "land_use", "v1": 1, "v2": 99}})
        assert r.status_code == 400 and r.json()["parameter"] == "v2" and "no version 99" in r.json()["description"]


def test_cli_writes_all_outputs(county_shared, tmp_path):
    import subprocess
    import sys

    env = {"GEOBASE_DATABASE_URL": county_shared.database_url, "GEOBASE_DATA_DIR": str(county_shared.data_dir),
           "PATH": "/usr/bin:/bin"}
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "geobase.cli", "analysis", "site-check", str(SAMPLE / "demo_site.geojson"),
                        "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    names = {f.name for f in out.iterdir()}
    assert {"site-check.json", "site-check.geojson", "site-check.html", "site-check_classes.csv",
            "site-check_rules.csv"} <= names
    doc = json.loads((out / "site-check.json").read_text(encoding="utf-8"))
    assert doc["verdict"] in ("needs-approval", "prohibited") and "control_lines" in doc["layers"]
    bad = subprocess.run([sys.executable, "-m", "geobase.cli", "analysis", "change", "--v1", "1", "--v2", "5",
                          "--out", str(tmp_path / "bad")], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no version 5" in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("args, stem, table", [
    (["tabulate", "land_use", "planning_zones", "--aoi", "339901002"], "tabulate", "cells"),
    (["conflicts"], "conflicts", "patches"),
    (["steep-farmland"], "steep-farmland", "parcels"),
    (["buffer", "--distance", "30", "--water", "rivers"], "buffer", "features"),
])
def test_cli_commands_write_json_csv_html(county_shared, tmp_path, args, stem, table):
    import csv
    import subprocess
    import sys

    env = {"GEOBASE_DATABASE_URL": county_shared.database_url, "GEOBASE_DATA_DIR": str(county_shared.data_dir),
           "PATH": "/usr/bin:/bin"}
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "geobase.cli", "analysis", *args, "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    doc = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
    assert doc["analysis"] == stem
    rows = list(csv.DictReader((out / f"{stem}_{table}.csv").open(encoding="utf-8")))
    assert rows, f"{stem}_{table}.csv is empty"
    assert "<html>" in (out / f"{stem}.html").read_text(encoding="utf-8")
    if stem == "conflicts":
        assert len(rows) == len(doc["patches"]) and {r["rule"] for r in rows} == {c["rule"] for c in MANIFEST["conflicts"]}

"""Ingest: real files through real GDAL drivers into a real PostGIS.

Covers every reader format, encoding detection, CRS handling, versioning (time travel, diff,
rollback) and the sample county. Broken inputs: test_ingest_broken.py; foreign real datasets:
test_ingest_realdata.py; kill/HTTP: test_ingest_jobs.py.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import psycopg
import pytest
from conftest import REPO, SAMPLE
from geobase.ingest.pipeline import ingest
from shapely.geometry import box

from geobase.errors import InvalidInput

# -- helpers shared by the other test_ingest*.py files --------------------------------------------

NAMES = ["水田", "旱地", "乔木林地", "农村宅基地", "河流水面"]
CODES = ["0101", "0103", "0301", "0702", "1101"]
X0, Y0 = 39_500_000.0, 3_300_000.0  # EPSG:4527: zone 39 (CM 117E), ~29.8N


def land_use_gdf(n: int = 30, size: float = 100.0, crs: str = "EPSG:4527") -> gpd.GeoDataFrame:
    """A grid of n square parcels (no gaps, no overlaps) with DLTB fields, in GK zone 39."""
    k = int(np.ceil(np.sqrt(n)))
    rows = []
    for i in range(n):
        r, c = divmod(i, k)
        rows.append({"BSM": f"{i + 1:08d}", "DLBM": CODES[i % 5], "DLMC": NAMES[i % 5], "TBMJ": size * size,
                     "ZLDWMC": "示范村", "geometry": box(X0 + c * size, Y0 + r * size, X0 + (c + 1) * size,
                                                       Y0 + (r + 1) * size)})
    return gpd.GeoDataFrame(rows, crs=crs)


def write_shp(gdf: gpd.GeoDataFrame, folder: Path, name: str = "DLTB", *, encoding: str = "GBK",
              cpg: bool = False, prj: bool = True) -> Path:
    """Write a Shapefile like ArcGIS exports do: by default GBK without .cpg (LDID 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    shp = folder / f"{name}.shp"
    gdf.to_file(shp, encoding=encoding, engine="pyogrio")
    if not cpg:
        (folder / f"{name}.cpg").unlink(missing_ok=True)
        dbf = folder / f"{name}.dbf"
        data = bytearray(dbf.read_bytes())
        data[29] = 0  # no language driver id: GDAL would read ISO-8859-1
        dbf.write_bytes(bytes(data))
    if not prj:
        (folder / f"{name}.prj").unlink(missing_ok=True)
    return shp


def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f.name)
    return out


def db_state(settings, layer: str) -> dict:
    """What a user checks after a refused file: versions, current version, current rows."""
    with psycopg.connect(settings.database_url) as conn:
        cur = conn.execute("SELECT current_version FROM catalog.layers WHERE name = %s", (layer,)).fetchone()[0]
        versions = conn.execute("SELECT count(*) FROM catalog.layer_versions WHERE layer = %s", (layer,)).fetchone()[0]
        rows = conn.execute(f"SELECT count(*), coalesce(string_agg(_hash, ',' ORDER BY _key), '') "
                            f"FROM data.{layer} WHERE _vto IS NULL").fetchone()
        staging = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'").fetchone()[0]
    return {"current": cur, "versions": versions, "rows": rows[0], "hashes": rows[1], "staging": staging}


def query(settings, q: str, params=()):
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(q, params).fetchall()


def make_test_specs(tmp: Path) -> Path:
    """The shipped specs plus generic layers for foreign data (keys from the files' feature ids)."""
    root = tmp / "specs"
    shutil.copytree(REPO / "layers", root, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    common = ("department: natural_resources\nsharing: public\nlicence: test\ncontact: t@example.org\n"
              "update_frequency: irregular\nsource_key: [fid_src]\n")
    attrs = ("attributes:\n"
             "  - {name: fid_src, type: text, required: true, source: [FID_SRC]}\n"
             "  - {name: name, type: text, source: [NAME, 計畫區, SUBZONE_N, VEGDESC, NAMES, cn_name]}\n"
             "  - {name: code, type: text, source: [ADCODE99, adcode, 分區代, SUBZONE_C, F_CODE, GBCODE]}\n"
             "  - {name: ratio, type: number, source: [建蔽率]}\n")
    for name, geom in (("test_areas", "MultiPolygon"), ("test_lines", "MultiLineString"), ("test_points", "MultiPoint")):
        (root / f"{name}.yaml").write_text(
            f"name: {name}\ntitle: {{zh: 测试, en: Test}}\ndescription: test layer\n{common}geometry: {geom}\n{attrs}",
            encoding="utf-8")
    return root


@pytest.fixture
def spec_db(new_db, tmp_path):
    """A fresh database whose registry also has the generic test_areas/test_lines/test_points layers."""
    return new_db(layers_dir=make_test_specs(tmp_path))


# -- tests ------------------------------------------------------------------------------------------

def test_gbk_shapefile_zip_without_cpg_loads_with_chinese_text_and_correct_position(db_settings, tmp_path):
    shp = write_shp(land_use_gdf(30), tmp_path / "shp")
    z = zip_folder(shp.parent, tmp_path / "DLTB.zip")
    res = ingest(db_settings, "land_use", z)
    assert (res.version, res.rows_total, res.added) == (1, 30, 30)
    assert res.report["encoding"] == "gb18030"
    assert "4527" in res.report["crs"]
    rows = query(db_settings, "SELECT dlmc, dlbm, ST_XMin(geom), ST_YMin(geom), _area_m2, "
                              "ST_SRID(geom), ST_SRID(geom_3857), GeometryType(geom) FROM data.land_use "
                              "WHERE bsm = '00000001'")
    dlmc, dlbm, x, y, area, srid, srid3857, gtype = rows[0]
    assert (dlmc, dlbm) == ("水田", "0101")
    # 39500000 is the central meridian 117E of zone 39; y=3.3e6 m is about 29.8N
    assert x == pytest.approx(117.0, abs=1e-6) and y == pytest.approx(29.82, abs=0.01)
    assert area == pytest.approx(10_000, rel=1e-3)  # ellipsoidal area of a 100 m GK square at the CM
    assert (srid, srid3857, gtype) == (4490, 3857, "MULTIPOLYGON")
    v = query(db_settings, "SELECT source_name, source_checksum, rows_total, extent, report->>'encoding', created_by "
                           "FROM catalog.layer_versions WHERE layer='land_use'")[0]
    assert v[0] == "DLTB.zip" and len(v[1]) == 64 and v[2] == 30 and v[4] == "gb18030"
    assert v[3][0] == pytest.approx(117.0, abs=1e-5) and v[3][3] > v[3][1]
    assert query(db_settings, "SELECT current_version FROM catalog.layers WHERE name='land_use'")[0][0] == 1


def test_utf8_cpg_and_encoding_override(db_settings, tmp_path):
    shp = write_shp(land_use_gdf(5), tmp_path / "u", encoding="UTF-8", cpg=True)
    res = ingest(db_settings, "land_use", shp)
    assert res.report["encoding_how"] == ".cpg"
    assert query(db_settings, "SELECT dlmc FROM data.land_use WHERE bsm='00000002'")[0][0] == "旱地"
    shp2 = write_shp(land_use_gdf(5), tmp_path / "g", encoding="GBK")
    res2 = ingest(db_settings, "land_use", shp2, encoding="GBK")
    assert res2.report["encoding"] == "GBK" and res2.report["encoding_how"] == "--encoding"
    assert res2.changed == 0 and res2.added == 0  # same content: nothing changes, history does not grow
    assert query(db_settings, "SELECT count(*) FROM data.land_use")[0][0] == 5


@pytest.mark.parametrize("fmt", ["GPKG", "GeoJSON", "GeoJSONSeq", "FlatGeobuf", "OpenFileGDB"])
def test_every_vector_format_loads(db_settings, tmp_path, fmt):
    gdf = land_use_gdf(12).to_crs(4490)
    ext = {"GPKG": "gpkg", "GeoJSON": "geojson", "GeoJSONSeq": "geojsonl", "FlatGeobuf": "fgb",
           "OpenFileGDB": "gdb"}[fmt]
    path = tmp_path / f"dltb.{ext}"
    kw = {"layer": "DLTB"} if fmt in ("GPKG", "OpenFileGDB") else {}
    gdf.to_file(path, driver=fmt, engine="pyogrio", **kw)
    if fmt == "OpenFileGDB":  # deliveries come zipped
        z = tmp_path / "dltb.gdb.zip"
        with zipfile.ZipFile(z, "w") as zf:
            for f in path.iterdir():
                zf.write(f, f"dltb.gdb/{f.name}")
        path = z
    res = ingest(db_settings, "land_use", path)
    assert res.rows_total == 12
    assert query(db_settings, "SELECT dlmc FROM data.land_use WHERE bsm='00000003'")[0][0] == "乔木林地"


def test_geopackage_layer_choice(db_settings, tmp_path):
    path = tmp_path / "multi.gpkg"
    land_use_gdf(4).to_crs(4490).to_file(path, layer="DLTB", engine="pyogrio")
    land_use_gdf(6).to_crs(4490).to_file(path, layer="OTHER", engine="pyogrio")
    assert ingest(db_settings, "land_use", path).rows_total == 4  # spec source_layers: DLTB
    assert ingest(db_settings, "land_use", path, source_layer="OTHER").rows_total == 6
    with pytest.raises(InvalidInput, match="has no layer 'NOPE'.*DLTB"):
        ingest(db_settings, "land_use", path, source_layer="NOPE")


def test_csv_wkt_and_lonlat(spec_db, tmp_path):
    wkt = tmp_path / "areas.csv"
    wkt.write_text('FID_SRC,NAME,WKT\n1,甲,"POLYGON((118 29,118.01 29,118.01 29.01,118 29.01,118 29))"\n',
                   encoding="utf-8")
    res = ingest(spec_db, "test_areas", wkt, crs="EPSG:4490")
    assert res.rows_total == 1
    pts = tmp_path / "pts.csv"
    pts.write_text("FID_SRC,NAME,lon,lat\n1,甲,118.1,29.1\n2,乙,118.2,29.2\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="longitude/latitude.*EPSG:4490"):
        ingest(spec_db, "test_points", pts)
    res = ingest(spec_db, "test_points", pts, crs="EPSG:4490")
    assert res.rows_total == 2
    assert query(spec_db, "SELECT name, ST_AsText(geom) FROM data.test_points WHERE fid_src='2'")[0] == \
        ("乙", "MULTIPOINT((118.2 29.2))")


def test_time_travel_diff_and_rollback(db_settings, tmp_path):
    from geobase.storage import as_of_filter
    from geobase.catalog.history import diff, list_versions, rollback

    v1 = land_use_gdf(30)
    ingest(db_settings, "land_use", write_shp(v1, tmp_path / "v1"))
    v2 = v1.copy()
    v2.loc[v2.BSM.isin(["00000001", "00000006", "00000011"]), ["DLBM", "DLMC"]] = ["0702", "农村宅基地"]  # 3 reclassified
    v2 = v2[~v2.BSM.isin(["00000029", "00000030"])]  # 2 removed
    v2 = gpd.GeoDataFrame(
        list(v2.to_dict("records")) + [{"BSM": "00000099", "DLBM": "0101", "DLMC": "水田", "TBMJ": 100.0,
                                        "ZLDWMC": "示范村", "geometry": box(X0, Y0 - 10, X0 + 10, Y0)}],
        crs=v1.crs)
    res2 = ingest(db_settings, "land_use", write_shp(v2, tmp_path / "v2"))
    assert (res2.version, res2.added, res2.removed, res2.changed, res2.rows_total) == (2, 1, 2, 3, 29)

    # v1 stays queryable
    f1 = as_of_filter(1).as_string(None)
    assert query(db_settings, f"SELECT count(*) FROM data.land_use WHERE {f1}")[0][0] == 30
    assert query(db_settings, f"SELECT dlbm FROM data.land_use WHERE {f1} AND bsm='00000001'")[0][0] == "0101"
    assert query(db_settings, "SELECT dlbm FROM data.land_use WHERE _vto IS NULL AND bsm='00000001'")[0][0] == "0702"

    d = diff(db_settings, "land_use", 1, 2)
    assert (d["added"], d["removed"], d["changed"], d["unchanged"]) == (1, 2, 3, 25)
    moves = {(c["from"], c["to"]): c["area_m2"] for c in d["class_changes"]}
    # parcels 1, 6, 11 (rows 0, 5, 10: code 0101) became 0702: 3 x 100 m x 100 m
    assert set(moves) == {("0101", "0702")}
    assert moves[("0101", "0702")] == pytest.approx(30_000, rel=2e-3)

    rb = rollback(db_settings, "land_use", 1, user="tester")
    assert rb["version"] == 3 and rb["rows_total"] == 30
    cur = query(db_settings, "SELECT string_agg(_key || _hash, ',' ORDER BY _key) FROM data.land_use WHERE _vto IS NULL")
    old = query(db_settings, f"SELECT string_agg(_key || _hash, ',' ORDER BY _key) FROM data.land_use WHERE {f1}")
    assert cur == old
    vs = list_versions(db_settings, "land_use")
    assert [(v["version"], v["mode"], v["current"]) for v in vs] == [(1, "replace", False), (2, "replace", False),
                                                                     (3, "rollback", True)]
    assert vs[2]["restored_from"] == 1 and vs[2]["created_by"] == "tester"
    assert diff(db_settings, "land_use", 1, 3)["changed"] == 0


def test_modes_append_upsert_delete(db_settings, tmp_path):
    base = land_use_gdf(10)
    ingest(db_settings, "land_use", write_shp(base.iloc[:6], tmp_path / "a"))
    r = ingest(db_settings, "land_use", write_shp(base.iloc[6:], tmp_path / "b"), mode="append")
    assert (r.added, r.rows_total) == (4, 10)
    up = base.iloc[:2].copy()
    up["DLBM"], up["DLMC"] = "0103", "旱地"
    r = ingest(db_settings, "land_use", write_shp(up, tmp_path / "c"), mode="upsert")
    assert (r.changed, r.added, r.removed, r.rows_total) == (1, 0, 0, 10)  # row 2 already had 0103
    r = ingest(db_settings, "land_use", write_shp(base.iloc[8:], tmp_path / "d"), mode="delete")
    assert (r.removed, r.rows_total) == (2, 8)
    with pytest.raises(InvalidInput, match="feature key occurs more than once|already"):
        ingest(db_settings, "land_use", write_shp(base.iloc[:1], tmp_path / "e"), mode="append")
    assert query(db_settings, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL")[0][0] == 8


def test_dry_run_writes_nothing(db_settings, tmp_path):
    res = ingest(db_settings, "land_use", write_shp(land_use_gdf(8), tmp_path / "a"), dry_run=True)
    assert res.dry_run and res.version is None and res.report["rows_loaded"] == 8
    st = db_state(db_settings, "land_use")
    assert (st["current"], st["versions"], st["rows"], st["staging"]) == (None, 0, 0, 0)


def test_repairs_and_area_deviation_are_reported(db_settings, tmp_path):
    gdf = land_use_gdf(4)
    from shapely.geometry import Polygon

    gdf.loc[0, "geometry"] = Polygon([(X0, Y0), (X0 + 100, Y0 + 100), (X0 + 100, Y0), (X0, Y0 + 100)])  # bow-tie
    gdf.loc[0, "TBMJ"] = 5_000.0  # the repaired bow-tie is two triangles of 2500 m²
    gdf.loc[1, "TBMJ"] = 20_000.0  # stated twice the real area
    res = ingest(db_settings, "land_use", write_shp(gdf, tmp_path / "a"))
    assert res.rows_total == 4
    assert res.report["warnings"]["invalid_repaired"] == 1
    assert res.report["samples"]["invalid_repaired"][0]["key"] == "00000001"
    assert res.report["warnings"]["area_deviation"] == 1
    assert res.report["checks"]["area"]["samples"][0]["key"] == "00000002"
    assert query(db_settings, "SELECT bool_and(ST_IsValid(geom)) FROM data.land_use")[0][0] is True


def test_coverage_overlaps_and_gaps_are_located(db_settings, tmp_path):
    gdf = land_use_gdf(9)
    gdf.loc[4, "geometry"] = box(X0 + 100, Y0 + 100, X0 + 150, Y0 + 150)  # centre parcel shrunk: a gap
    gdf.loc[0, "geometry"] = box(X0, Y0, X0 + 130, Y0 + 100)  # parcel 1 grows into parcel 2: overlap 30x100
    res = ingest(db_settings, "land_use", write_shp(gdf, tmp_path / "a"), on_error="skip")
    cov = res.report["checks"]["coverage"]
    assert cov["overlaps"] == 1 and cov["overlap_samples"][0]["keys"] == ["00000001", "00000002"]
    assert cov["overlap_area_m2"] == pytest.approx(3000, rel=5e-3)
    assert cov["gaps"] == 1 and cov["gap_area_m2"] == pytest.approx(7500, rel=5e-3)
    lon, lat = cov["gap_samples"][0]["at"]
    assert 117.0 < lon < 117.01 and 29.8 < lat < 29.85


def test_sample_county_ingests_and_skips_unchanged(db_settings, tmp_path):
    from geobase.ingest.sample import ingest_sample_county

    county = SAMPLE  # committed: a missing delivery is a failure, never a generated stand-in
    assert (county / "DLTB.zip").exists(), f"the committed sample county lacks {county / 'DLTB.zip'}"
    lines: list[str] = []
    ingest_sample_county(db_settings, echo=lines.append, directory=county)
    manifest = json.loads((county / "manifest.json").read_text())
    counts = dict(query(db_settings, "SELECT layer, rows_total FROM catalog.layer_versions"))
    assert counts["land_use"] == manifest["counts"]["DLTB"]
    assert counts["forest"] == manifest["counts"]["XB"]
    assert counts["planning_zones"] == manifest["counts"]["GHFQ"]
    assert counts["control_lines"] == manifest["counts"]["KZX"]
    assert counts["admin_divisions"] == manifest["counts"]["XZQ"]
    assert counts["water_areas"] == manifest["counts"]["water"]
    assert counts["rivers"] == manifest["counts"]["rivers"]
    meta = query(db_settings, "SELECT metadata FROM catalog.layer_versions WHERE layer='dem'")[0][0]
    assert Path(meta["path"]).exists() and meta["crs"] == "EPSG:4490" and meta["stats"]["max"] > meta["stats"]["min"]
    import rasterio

    with rasterio.open(meta["path"]) as ds:
        assert ds.profile.get("tiled") and ds.overviews(1)  # a COG: tiled with overviews
    # Chinese names decoded from the GBK shapefile
    assert query(db_settings, "SELECT count(*) FROM data.land_use WHERE dlmc ~ '[一-龥]'")[0][0] == counts["land_use"]
    again: list[str] = []
    ingest_sample_county(db_settings, echo=again.append, directory=county)
    assert all("up to date" in line for line in again), again
    assert query(db_settings, "SELECT count(*) FROM catalog.layer_versions")[0][0] == 8


def test_cli_exit_codes_json_and_versions(db_settings, tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, GEOBASE_DATABASE_URL=db_settings.database_url, GEOBASE_DATA_DIR=str(db_settings.data_dir))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "geobase.cli", *args], env=env, cwd=str(REPO),
                              capture_output=True, text=True, timeout=120)

    good = write_shp(land_use_gdf(6), tmp_path / "good")
    r = run("ingest", "land_use", str(good), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["version"] == 1 and out["rows_total"] == 6 and out["report"]["encoding"] == "gb18030"
    bad = land_use_gdf(6)
    bad.loc[1, "DLBM"] = "9999"
    r = run("ingest", "land_use", str(write_shp(bad, tmp_path / "bad")), "--json")
    assert r.returncode == 2
    err = json.loads(r.stdout)
    assert err["error"] == "InvalidParameterValue" and err["report"]["errors"] == {"unknown_code": 1}
    r = run("ingest", "land_use", str(write_shp(bad, tmp_path / "bad2")))
    assert r.returncode == 2 and "code not in the layer's code list" in r.stderr
    r = run("layers", "versions", "land_use", "--json")
    assert r.returncode == 0 and [v["version"] for v in json.loads(r.stdout)] == [1]
    r = run("layers", "rollback", "land_use", "1")
    assert r.returncode == 2 and "already the current version" in r.stderr
    r = run("layers", "diff", "land_use", "1", "7")
    assert r.returncode == 3 and "no version 7" in r.stderr


def test_zip_with_several_shapefiles_picks_by_spec_or_layer_option(db_settings, tmp_path):
    folder = tmp_path / "many"
    write_shp(land_use_gdf(4), folder, "DLTB")
    write_shp(land_use_gdf(7), folder, "XZQ")
    z = zip_folder(folder, tmp_path / "delivery.zip")
    assert ingest(db_settings, "land_use", z).rows_total == 4  # DLTB is the spec's source layer
    assert ingest(db_settings, "land_use", z, source_layer="XZQ").rows_total == 7
    with pytest.raises(InvalidInput, match=r"has no layer 'GHFQ' \(layers: DLTB, XZQ\)"):
        ingest(db_settings, "land_use", z, source_layer="GHFQ")

"""Broken deliveries: each gets a specific message, and the catalog and data are unchanged."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from geobase.ingest.pipeline import ingest
from shapely.geometry import LineString, Polygon
from test_ingest import X0, Y0, db_state, land_use_gdf, write_shp

from geobase.errors import InvalidInput


@pytest.fixture
def loaded(db_settings, tmp_path):
    """land_use with version 1 loaded; returns (settings, state before the broken file)."""
    ingest(db_settings, "land_use", write_shp(land_use_gdf(9), tmp_path / "v1"))
    return db_settings, db_state(db_settings, "land_use")


def _geojson(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False),
                    encoding="utf-8")
    return path


def _feat(bsm: str, dlbm: str, geom: dict | None) -> dict:
    return {"type": "Feature", "properties": {"BSM": bsm, "DLBM": dlbm, "DLMC": "水田"}, "geometry": geom}


SQUARE = {"type": "Polygon", "coordinates": [[[118, 29], [118.001, 29], [118.001, 29.001], [118, 29.001], [118, 29]]]}


def _case(name: str, tmp: Path) -> tuple[Path, dict, str]:
    """(path, ingest kwargs, expected message regex) for one kind of broken input."""
    gdf = land_use_gdf(9)
    if name == "truncated_shp":
        shp = write_shp(gdf, tmp / "t")
        data = shp.read_bytes()
        shp.write_bytes(data[: len(data) // 2])
        return shp, {}, r"\.shp is truncated: its header declares \d+ bytes but the file has \d+"
    if name == "missing_shx":
        shp = write_shp(gdf, tmp / "s")
        shp.with_suffix(".shx").unlink()
        return shp, {}, r"no \.shx index file"
    if name == "missing_dbf":
        shp = write_shp(gdf, tmp / "d")
        shp.with_suffix(".dbf").unlink()
        return shp, {}, r"no \.dbf attribute table"
    if name == "missing_prj":
        return write_shp(gdf, tmp / "p", prj=False), {}, \
            r"states no coordinate reference system \(no \.prj\).*zone prefix 39.*EPSG:4527"
    if name == "wrong_encoding_cpg":
        shp = write_shp(gdf, tmp / "e")
        shp.with_suffix(".cpg").write_text("UTF-8")
        return shp, {}, r"text is not valid UTF-8.*--encoding"
    if name == "latin1_text_no_cpg":
        g = gdf.copy()
        g["DLMC"] = "Rautjärvi Öljy"
        shp = write_shp(g, tmp / "l", encoding="ISO-8859-1")
        return shp, {}, r"neither UTF-8 nor GBK/GB18030|does not look like Chinese"
    if name == "unrepairable_geometry":
        g = gdf.copy()
        g.loc[3, "geometry"] = Polygon([(X0, Y0), (X0 + 50, Y0), (X0 + 100, Y0), (X0, Y0)])  # collapsed to a line
        return write_shp(g, tmp / "u"), {}, r"invalid geometry that could not be repaired, e.g. row 4 \(key 00000004\)"
    if name == "empty_geometry":
        return _geojson(tmp / "empty.geojson", [_feat("1", "0101", SQUARE), _feat("2", "0101", None)]), {}, \
            r"empty or missing geometry, e.g. row 2 \(key 2\)"
    if name == "unknown_code":
        g = gdf.copy()
        g.loc[2, "DLBM"] = "9999"
        return write_shp(g, tmp / "c"), {}, r"code not in the layer's code list, e.g. row 3: dlbm = '9999'"
    if name == "group_code":
        g = gdf.copy()
        g.loc[5, "DLBM"] = "01"
        return write_shp(g, tmp / "g"), {}, r"group heading.*dlbm = '01' \(耕地\)"
    if name == "mixed_geometry_types":
        line = {"type": "LineString", "coordinates": [[118, 29], [118.01, 29.01]]}
        return _geojson(tmp / "mixed.geojson", [_feat("1", "0101", SQUARE), _feat("2", "0101", line)]), {}, \
            r"geometry type does not fit the layer, e.g. row 2 \(key 2\): LineString in a MultiPolygon layer"
    if name == "line_file_into_polygon_layer":
        g = gdf.copy()
        g["geometry"] = [LineString([(X0, Y0 + i), (X0 + 10, Y0 + i)]) for i in range(len(g))]
        return write_shp(g, tmp / "lines"), {}, r"holds LineString geometries; layer 'land_use' takes polygons"
    if name == "wrong_crs":
        g = gdf.set_crs(4490, allow_override=True)  # GK metres labelled as degrees
        path = tmp / "wrong.gpkg"
        g.to_file(path, layer="DLTB", engine="pyogrio")
        return path, {}, r"no coordinate lies inside the area of use of the stated CRS EPSG:4490.*EPSG:4527"
    if name == "duplicate_keys":
        g = gdf.copy()
        g.loc[4, "BSM"] = "00000001"
        return write_shp(g, tmp / "dup"), {}, r"feature key occurs more than once.*00000001"
    if name == "missing_required_field":
        g = gdf.drop(columns=["DLBM"])
        return write_shp(g, tmp / "f"), {}, r"required field\(s\) missing from the file: dlbm \(delivered as DLBM / 地类编码\)"
    if name == "zip_slip":
        z = tmp / "slip.zip"
        shp = write_shp(gdf, tmp / "zs")
        with zipfile.ZipFile(z, "w") as zf:
            for f in shp.parent.iterdir():
                zf.write(f, f"../../{f.name}")
        return z, {}, r"climbs out of the archive \(\.\./\)"
    if name == "zip_absolute":
        z = tmp / "abs.zip"
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("/etc/evil.shp", b"x")
        return z, {}, r"absolute path"
    if name == "zip_bomb":
        z = tmp / "bomb.zip"
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("DLTB.dbf", b"\0" * (64 * 1024 * 1024))
        return z, {}, r"zip bomb: member 'DLTB.dbf' expands \d+:1"
    if name == "not_a_zip":
        z = tmp / "junk.zip"
        z.write_bytes(b"this is not a zip")
        return z, {}, r"not a readable zip archive"
    if name == "unsupported_type":
        p = tmp / "notes.docx"
        p.write_bytes(b"PK")
        return p, {}, r"unsupported file type \.docx"
    if name == "garbage_gpkg":
        p = tmp / "broken.gpkg"
        p.write_bytes(b"SQLite format 3\0" + b"\x13" * 2000)
        return p, {}, r"cannot be read as vector data"
    raise AssertionError(name)


CASES = ["truncated_shp", "missing_shx", "missing_dbf", "missing_prj", "wrong_encoding_cpg", "latin1_text_no_cpg",
         "unrepairable_geometry", "empty_geometry", "unknown_code", "group_code", "mixed_geometry_types",
         "line_file_into_polygon_layer", "wrong_crs", "duplicate_keys", "missing_required_field", "zip_slip",
         "zip_absolute", "zip_bomb", "not_a_zip", "unsupported_type", "garbage_gpkg"]


@pytest.mark.parametrize("case", CASES)
def test_broken_input_is_refused_with_a_specific_message_and_nothing_changes(loaded, tmp_path, case):
    settings, before = loaded
    path, kwargs, pattern = _case(case, tmp_path)
    with pytest.raises(InvalidInput, match=pattern) as exc:
        ingest(settings, "land_use", path, **kwargs)
    assert exc.value.exit_code == 2 and exc.value.status_code == 400
    assert db_state(settings, "land_use") == before


def test_skip_policy_loads_the_good_rows_and_reports_the_bad(loaded, tmp_path):
    settings, before = loaded
    gdf = land_use_gdf(9)
    gdf.loc[2, "DLBM"] = "9999"
    gdf.loc[3, "geometry"] = Polygon([(X0, Y0), (X0 + 50, Y0), (X0 + 100, Y0), (X0, Y0)])
    res = ingest(settings, "land_use", write_shp(gdf, tmp_path / "x"), on_error="skip")
    assert res.rows_total == 7 and res.removed == 2
    assert res.report["errors"] == {"unknown_code": 1, "invalid_unrepairable": 1}
    assert res.report["rows_skipped"] == 2
    keep = ingest(settings, "land_use", write_shp(gdf, tmp_path / "y"), on_error="keep")
    assert keep.rows_total == 8  # the unknown code is kept, the broken geometry cannot be


def test_no_crs_with_crs_option_loads(loaded, tmp_path):
    settings, _ = loaded
    shp = write_shp(land_use_gdf(9), tmp_path / "p", prj=False)
    res = ingest(settings, "land_use", shp, crs="EPSG:4527")
    assert res.version == 2 and res.report["crs_how"] == "--crs"

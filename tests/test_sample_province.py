"""The synthetic province (``geobase sample generate --counties N``): adjacent counties with
distinct codes whose borders are shared exactly (no gap, no overlap: between the counties and
between their parcels), every row carrying its county's code, deterministic to the byte, and in
the delivery formats the ingest takes (each layer of a county passes a dry-run ingest)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from geobase.sample_data.province import generate_province
from typer.testing import CliRunner

from geobase.cli import app

N, PPC, SEED = 3, 1500, 11
LAYERS = [("admin_divisions", "admin.gpkg", "XZQ"), ("land_use", "DLTB.zip", None), ("forest", "forest.gpkg", "XB"),
          ("water_areas", "water.geojson", None), ("rivers", "rivers.geojson", None),
          ("planning_zones", "planning.gdb.zip", "GHFQ"), ("control_lines", "planning.gdb.zip", "KZX")]


@pytest.fixture(scope="module")
def province(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("province")
    return out, generate_province(out, counties=N, parcels_per_county=PPC, seed=SEED)


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read(d: Path, name: str, layer: str | None = None, **kw):
    path = f"/vsizip/{d / name}/DLTB.shp" if name == "DLTB.zip" else (
        f"/vsizip/{d / name}/planning.gdb" if name == "planning.gdb.zip" else str(d / name))
    return pyogrio.read_dataframe(path, layer=layer, **kw)


def test_same_arguments_same_bytes_from_the_cli_too(province, tmp_path):
    out, manifest = province
    runner = CliRunner()
    r = runner.invoke(app, ["sample", "generate", "--counties", str(N), "--parcels-per-county", str(PPC),
                            "--seed", str(SEED), "--out", str(tmp_path / "again")])
    assert r.exit_code == 0, r.output
    assert _files(tmp_path / "again") == _files(out)
    codes = [c["code"] for c in manifest["counties"]]
    assert codes == ["339901", "339902", "339903"] and len({c["name"] for c in manifest["counties"]}) == N
    assert sorted(p.name for p in out.iterdir()) == sorted(codes + ["manifest.json"])
    for c in manifest["counties"]:
        assert sorted(Path(k).name for k in c["sha256"]) == sorted(
            ["DLTB.zip", "admin.gpkg", "dem.tif", "forest.gpkg", "planning.gdb.zip", "rivers.geojson", "water.geojson"])
        # about the number of parcels asked for
        assert 0.6 * PPC < c["counts"]["DLTB"] < 1.6 * PPC, c
    other = generate_province(tmp_path / "other", counties=N, parcels_per_county=PPC, seed=SEED + 1)
    assert other["counties"][0]["sha256"] != manifest["counties"][0]["sha256"]


def test_counties_and_their_parcels_share_borders_without_gap_or_overlap(province):
    out, manifest = province
    counties, parcels = [], []
    for c in manifest["counties"]:
        d = out / c["code"]
        adm = _read(d, "admin.gpkg", "XZQ").to_crs(4527)
        county = adm[adm["JB"] == "county"].geometry.iloc[0]
        dltb = _read(d, "DLTB.zip")
        assert dltb.crs.to_epsg() == 4527 and len(dltb) == c["counts"]["DLTB"]
        assert dltb.is_valid.all() and (dltb.geom_type == "Polygon").all()
        union = shapely.union_all(dltb.geometry.values, grid_size=0.001)
        # the parcels cover their county (up to the 1 mm rounding and the CRS round trip)
        assert shapely.symmetric_difference(union, county).area < 1e-8 * county.area
        assert abs(dltb.area.sum() - county.area) < 1e-8 * county.area  # no overlap inside
        # the townships are a coverage of the county
        towns = adm[adm["JB"] == "township"].geometry
        assert abs(towns.area.sum() - county.area) < 1e-8 * county.area
        counties.append(county)
        parcels.append(dltb.geometry.values)
    # counties: pairwise no overlap, and adjacent (each touches another along a border)
    geoms = np.array(counties, dtype=object)
    for i in range(N):
        shared = [shapely.intersection(geoms[i].boundary, geoms[j].boundary).length for j in range(N) if j != i]
        assert max(shared) > 1000.0, "a county with no common border"
        for j in range(i + 1, N):
            assert shapely.intersection(geoms[i], geoms[j]).area < 1.0
    # parcels of different counties: none overlaps another, and they meet along the borders
    allp = np.concatenate(parcels)
    owner = np.concatenate([np.full(len(p), k) for k, p in enumerate(parcels)])
    a, b = shapely.STRtree(allp).query(allp, predicate="intersects")
    cross = (a < b) & (owner[a] != owner[b])
    assert cross.sum() > 20
    assert shapely.area(shapely.intersection(allp[a[cross]], allp[b[cross]])).sum() < 1e-3


def test_every_row_carries_its_county_code(province):
    out, manifest = province
    for c in manifest["counties"]:
        code, d = c["code"], out / c["code"]
        dltb = _read(d, "DLTB.zip", columns=["BSM", "ZLDWDM", "QSDWDM", "DLBM", "TBMJ"], read_geometry=False)
        assert (dltb["ZLDWDM"].str[:6] == code).all() and (dltb["QSDWDM"].str[:6] == code).all()
        assert (dltb["BSM"].str[:6] == code).all() and dltb["BSM"].is_unique
        assert dltb["DLBM"].str[:2].isin(["01", "03"]).sum() > 0.3 * len(dltb)
        assert (_read(d, "forest.gpkg", "XB", read_geometry=False)["XIAN"] == code).all()
        for layer in ("GHFQ", "KZX"):
            assert (_read(d, "planning.gdb.zip", layer, read_geometry=False)["XZQDM"] == code).all()
        assert (_read(d, "admin.gpkg", "XZQ", read_geometry=False)["XZQDM"].str[:6] == code).all()
        for name in ("water.geojson", "rivers.geojson"):
            assert (_read(d, name, read_geometry=False)["XZQDM"] == code).all()
        ghfq = _read(d, "planning.gdb.zip", "GHFQ").to_crs(4527)
        adm = _read(d, "admin.gpkg", "XZQ").to_crs(4527)
        county = adm[adm["JB"] == "county"].geometry.iloc[0]
        # the zones are a coverage of the county too (tabulations add up)
        assert abs(ghfq.area.sum() - county.area) < 1e-8 * county.area
        assert shapely.symmetric_difference(shapely.union_all(ghfq.geometry.values), county).area < 1e-8 * county.area


def test_a_county_of_the_province_passes_the_ingest_checks(province, db_settings):
    from geobase.ingest.pipeline import ingest

    out, manifest = province
    d = out / manifest["counties"][1]["code"]
    for layer, name, source_layer in LAYERS + [("dem", "dem.tif", None)]:
        res = ingest(db_settings, layer, d / name, source_layer=source_layer, dry_run=True)
        errors = res.report.get("errors") or {}
        assert not errors, (layer, errors)
        assert res.dry_run and res.version is None
        if layer == "land_use":
            assert res.rows_total == manifest["counties"][1]["counts"]["DLTB"]

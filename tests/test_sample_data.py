"""Tests of the synthetic county generator and of the committed sample in sample_data/county/.

No database needed.  The committed-sample tests read the files exactly as an ingest would (GDAL via pyogrio,
rasterio), the determinism tests run the generator with a small parcel count.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import CRS, Geod

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "county"

from geobase.sample_data import codes  # noqa: E402
from geobase.sample_data import generate as gen  # noqa: E402

SMALL = 1500
SEED = 20261122


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """Two runs with one seed in this process, one after the other (a second run in the same
    process must not see state the first left behind), and the other seed's run in a process of
    its own at the same time, on the machine's second core (what it is compared for, that the
    seed changes the bytes, does not depend on where it ran; that another process makes the same
    bytes is test_sample_reproducible's check against the committed county)."""
    a = tmp_path_factory.mktemp("gen_a")
    b = tmp_path_factory.mktemp("gen_b")
    c = tmp_path_factory.mktemp("gen_c")
    calls = []
    other = subprocess.Popen([sys.executable, "-m", "geobase.sample_data.generate", "--parcels", str(SMALL),
                              "--seed", str(SEED + 1), "--out", str(c), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        gen.generate(a, parcels=SMALL, seed=SEED, progress=lambda i, n: calls.append((i, n)))
        gen.generate(b, parcels=SMALL, seed=SEED)
    finally:
        _, err = other.communicate(timeout=900)
    assert other.returncode == 0, err.decode(errors="replace")[-3000:]
    return a, b, c, calls


def test_generation_is_byte_identical(small_runs):
    a, b, _, calls = small_runs
    fa, fb = _files(a), _files(b)
    expected = {"DLTB.zip", "forest.gpkg", "water.geojson", "rivers.geojson", "planning.gdb.zip", "admin.gpkg",
                "dem.tif", "demo_site.geojson", "manifest.json",
                "imagery_20260418.tif", "imagery_20260716.tif", "imagery_20260918.tif"}
    assert set(fa) == expected
    assert set(fa) == set(fb)
    diff = [k for k in fa if fa[k] != fb[k]]
    assert diff == []
    assert calls and calls[-1][0] == calls[-1][1]


def test_different_seed_differs(small_runs):
    a, _, c, _ = small_runs
    fa, fc = _files(a), _files(c)
    for name in ("DLTB.zip", "forest.gpkg", "water.geojson", "planning.gdb.zip", "dem.tif"):
        assert fa[name] != fc[name], name


# --------------------------------------------------------------------------------------------------
# the committed sample
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest():
    return json.loads((SAMPLE / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dltb():
    df = pyogrio.read_dataframe(SAMPLE / "DLTB.zip")
    for c in ("GDLX", "GDPDJB", "CZCSXM", "BZ"):  # GDAL reads blank DBF text as null
        df[c] = df[c].fillna("")
    return df


@pytest.fixture(scope="module")
def kzx():
    return pyogrio.read_dataframe(SAMPLE / "planning.gdb.zip", layer="KZX")


@pytest.fixture(scope="module")
def ghfq():
    return pyogrio.read_dataframe(SAMPLE / "planning.gdb.zip", layer="GHFQ")


@pytest.fixture(scope="module")
def county_4527():
    xzq = pyogrio.read_dataframe(SAMPLE / "admin.gpkg", layer="XZQ")
    return xzq[xzq.JB == "county"].to_crs(4527).geometry.iloc[0], xzq


def test_sha256_match(manifest):
    assert manifest["parameters"] == {"seed": SEED, "parcels": 8000}
    for name, entry in manifest["files"].items():
        p = SAMPLE / name
        assert hashlib.sha256(p.read_bytes()).hexdigest() == entry["sha256"], name


def test_sample_size_budget():
    total = sum(p.stat().st_size for p in SAMPLE.iterdir() if p.is_file())
    assert total < 15 * 1024 * 1024


def test_dltb_zip_layout_and_prj():
    with zipfile.ZipFile(SAMPLE / "DLTB.zip") as z:
        assert sorted(z.namelist()) == sorted(f"DLTB{s}" for s in (".shp", ".shx", ".dbf", ".prj", ".cpg"))
        prj = z.read("DLTB.prj").decode("ascii")
        assert z.read("DLTB.cpg").decode("ascii").strip() == "GBK"
        dbf = z.read("DLTB.dbf")
    assert prj.startswith('PROJCS["CGCS2000_3_Degree_GK_Zone_39"')
    assert CRS(prj).to_epsg() == 4527
    # DBF schema: names, types, widths, decimals
    nf = (int.from_bytes(dbf[8:10], "little") - 33) // 32
    got = []
    for i in range(nf):
        d = dbf[32 + 32 * i: 64 + 32 * i]
        got.append((d[:11].rstrip(b"\0").decode(), chr(d[11]), d[16], d[17]))
    assert got == [tuple(f) for f in codes.DLTB_FIELDS]
    assert dbf[1:4] == bytes([126, 1, 1])  # fixed "last update" date
    assert dbf[29] == 0x4D  # LDID = code page 936 (GBK)


def test_dltb_content(dltb, manifest):
    assert pyogrio.read_info(SAMPLE / "DLTB.zip")["crs"] == "EPSG:4527"
    assert len(dltb) == manifest["counts"]["DLTB"]
    assert dltb.BSM.is_unique
    assert dltb.BSM.str.match(r"^339901\d{12}$").all()
    assert set(dltb.DLBM) <= set(codes.GB21010)
    assert len(codes.GB21010) == 73
    assert (dltb.DLMC == dltb.DLBM.map(codes.GB21010)).all()
    assert "水田" in set(dltb.DLMC) and "乔木林地" in set(dltb.DLMC)
    assert dltb.ZLDWMC.str.endswith(("村", "社区")).all()
    assert (dltb.ZLDWDM.str[:6] == "339901").all() and (dltb.ZLDWDM.str.len() == 19).all()
    b = dltb.total_bounds
    assert b[0] > 39_000_000 and b[2] < 40_000_000 and 3_150_000 < b[1] < b[3] < 3_300_000
    # area identities
    assert np.allclose(dltb.KCMJ, np.round(dltb.TBMJ * dltb.KCXS, 2), atol=0.011)
    assert np.allclose(dltb.TBDLMJ, dltb.TBMJ - dltb.KCMJ, atol=0.011)
    farm = dltb.DLBM.isin(["0101", "0102", "0103"])
    assert set(dltb.GDPDJB[farm]) <= set("12345") and (dltb.GDPDJB[~farm] == "").all()
    assert (dltb.KCXS[~farm] == 0).all()
    # TBMJ is the ellipsoidal area
    geod = Geod(ellps="GRS80")
    sample = dltb.iloc[:: max(1, len(dltb) // 200)]
    ll = sample.to_crs(4490)
    for g, tbmj in zip(ll.geometry, sample.TBMJ):
        assert abs(abs(geod.geometry_area_perimeter(g)[0]) - tbmj) <= 0.02 + 1e-7 * tbmj


def test_dltb_coverage(dltb, county_4527):
    county, _ = county_4527
    geoms = dltb.geometry.values
    assert shapely.is_valid(geoms).all()
    total = float(shapely.area(geoms).sum())
    union = shapely.union_all(geoms, grid_size=0.001)
    ca = county.area
    assert abs(total - ca) / ca < 1e-6
    assert abs(union.area - ca) / ca < 1e-6
    assert shapely.symmetric_difference(union, county, grid_size=0.001).area / ca < 1e-6


def test_other_layers_open_with_crs(manifest):
    for name, layer in (("forest.gpkg", "XB"), ("admin.gpkg", "XZQ"), ("planning.gdb.zip", "GHFQ"),
                        ("planning.gdb.zip", "KZX")):
        info = pyogrio.read_info(SAMPLE / name, layer=layer)
        assert info["crs"] == "EPSG:4490", name
        assert info["geometry_type"] == "MultiPolygon", name
        assert info["features"] == manifest["counts"][layer]
    for name in ("water.geojson", "rivers.geojson", "demo_site.geojson"):
        info = pyogrio.read_info(SAMPLE / name)
        assert info["crs"] in ("EPSG:4326", "OGC:CRS84"), name
        assert "crs" not in json.loads((SAMPLE / name).read_text(encoding="utf-8"))
    with rasterio.open(SAMPLE / "dem.tif") as ds:
        assert ds.crs.to_epsg() == 4490
        assert ds.dtypes[0] == "float32" and ds.nodata == -9999
        assert ds.block_shapes[0] == (256, 256)
        assert abs(ds.res[0] - 1 / 3600) < 1e-12
        assert ds.compression.value.upper() == "DEFLATE"
        d = ds.read(1, masked=True)
        assert 20 < d.min() < 60 and 700 < d.max() < 1100


def test_forest_admin_planning(county_4527, ghfq, manifest):
    county, xzq = county_4527
    xb = pyogrio.read_dataframe(SAMPLE / "forest.gpkg", layer="XB")
    assert xb.XBH.is_unique
    assert (xb.XBH == xb.XIANG + xb.LIN_BAN + xb.XIAO_BAN).all()
    assert set(xb.DI_LEI) <= set(manifest["code_lists"]["XB_DI_LEI"])
    assert xb.YU_BI_DU.between(0.1, 0.95).all()
    assert np.allclose(xb.XIAOBAN_XJ, xb.MEI_GQ_XJ * xb.MIAN_JI, atol=0.06)
    town = xzq[xzq.JB == "township"].to_crs(4527)
    assert len(town) == 6 and town.XZQDM.str.match(r"^339901\d{3}$").all()
    assert abs(town.area.sum() - county.area) / county.area < 1e-6
    assert abs(shapely.union_all(town.geometry.values, grid_size=0.001).area - county.area) / county.area < 1e-6
    g = ghfq.to_crs(4527)
    assert set(g.GHFQDM) <= set(manifest["code_lists"]["GHFQDM"])
    assert abs(g.area.sum() - county.area) / county.area < 1e-6
    assert abs(shapely.union_all(g.geometry.values, grid_size=0.001).area - county.area) / county.area < 1e-6


def test_water_consistent_with_dltb(dltb):
    water = pyogrio.read_dataframe(SAMPLE / "water.geojson").to_crs(4527)
    assert set(water.TYPE) == {"river", "lake", "reservoir", "pond", "canal"}
    for kind, code in (("river", "1101"), ("lake", "1102"), ("reservoir", "1103"), ("pond", "1104"), ("canal", "1107")):
        a_w = water[water.TYPE == kind].area.sum()
        a_p = dltb[dltb.DLBM == code].area.sum()
        assert abs(a_w - a_p) / a_p < 1e-4, kind
    rivers = pyogrio.read_dataframe(SAMPLE / "rivers.geojson")
    assert len(rivers) >= 3 and rivers.LENGTH_M.gt(1000).all()


def _slope_from_dem(ds):
    """slope in degrees from the DEM in metres (geodesic pixel sizes per row)"""
    z = ds.read(1).astype(np.float64)
    z[z == ds.nodata] = np.nan
    geod = Geod(ellps="GRS80")
    res = ds.res[0]
    lat = ds.transform.f - (np.arange(ds.height) + 0.5) * res
    dx = np.array([geod.inv(118.2, la, 118.2 + res, la)[2] for la in lat])
    dy = geod.inv(118.2, 29.1, 118.2, 29.1 + res)[2]
    gy, gx = np.gradient(z)
    return np.degrees(np.arctan(np.hypot(gx / dx[:, None], gy / dy)))


def test_steep_farmland_from_dem(dltb, manifest):
    steep = manifest["steep_farmland"]
    assert len(steep) >= 20
    sel = dltb[dltb.BSM.isin(steep)]
    assert len(sel) == len(steep)
    assert sel.DLBM.isin(["0101", "0102", "0103"]).all() and (sel.GDPDJB == "5").all()
    # farmland not listed is below 25 degrees by its own GDPDJB
    farm = dltb[dltb.DLBM.isin(["0101", "0102", "0103"]) & ~dltb.BSM.isin(steep)]
    assert (farm.GDPDJB != "5").all()
    with rasterio.open(SAMPLE / "dem.tif") as ds:
        slope = _slope_from_dem(ds)
        t = ds.transform
        ll = sel.to_crs(4490)
        for bsm, g in zip(sel.BSM, ll.geometry):
            minx, miny, maxx, maxy = g.bounds
            c0, c1 = int((minx - t.c) / t.a), int((maxx - t.c) / t.a) + 1
            r0, r1 = int((maxy - t.f) / t.e), int((miny - t.f) / t.e) + 1
            cols, rows = np.meshgrid(np.arange(c0, c1 + 1), np.arange(r0, r1 + 1))
            x, y = t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e
            inside = shapely.contains_xy(g, x, y)
            if not inside.any():  # parcel smaller than a pixel: the pixel under its representative point
                p = g.representative_point()
                rows, cols = np.array([int((p.y - t.f) / t.e)]), np.array([int((p.x - t.c) / t.a)])
                inside = np.array([True])
            vals = slope[rows[inside], cols[inside]]
            assert np.nanmean(vals) > 25.0, bsm


def _over(a, b):
    """pairs (i, j) with intersection area > 1 m2, a/b GeoDataFrames in EPSG:4527"""
    tree = shapely.STRtree(b.geometry.values)
    i, j = tree.query(a.geometry.values, predicate="intersects")
    ar = shapely.area(shapely.intersection(a.geometry.values[i], b.geometry.values[j]))
    return i[ar > 1.0], j[ar > 1.0]


def test_planted_conflicts_are_exactly_these(dltb, kzx, ghfq, manifest):
    cl = manifest["code_lists"]
    conf = {c["id"]: c for c in manifest["conflicts"]}
    k = kzx.to_crs(4527)
    g = ghfq.to_crs(4527)
    red = k[k.KZXLX == "STBHHX"]
    con = dltb[dltb.DLBM.isin(cl["construction_dlbm"])]
    i, _ = _over(con, red)
    assert sorted(set(con.BSM.values[i])) == sorted(conf["C1"]["dltb_bsm"])
    assert 2 <= len(conf["C1"]["dltb_bsm"]) <= 3
    forest = dltb[dltb.DLBM.isin(cl["forest_dlbm"])]
    i, _ = _over(forest, g[g.GHFQDM == "041"])
    planted = sorted(b for p in conf["C3"]["patches"] for b in p["dltb_bsm"])
    assert sorted(set(forest.BSM.values[i])) == planted and planted
    cz, yj = k[k.KZXLX == "CZKFBJ"], k[k.KZXLX == "YJJBNT"]
    i, j = _over(cz, yj)
    assert sorted(set(cz.BSM.values[i]) | set(yj.BSM.values[j])) == sorted(conf["C2"]["kzx_bsm"])
    inter = shapely.union_all(shapely.intersection(cz.geometry.values[i], yj.geometry.values[j]))
    assert 10_000 < inter.area < 200_000  # a few hectares
    i, j = _over(red, cz)
    assert sorted(set(red.BSM.values[i]) | set(cz.BSM.values[j])) == sorted(conf["C4"]["kzx_bsm"])
    i, j = _over(red, yj)
    assert len(i) == 0
    # demo site touches farmland, forest, YJJBNT and lies partly outside CZKFBJ
    site = pyogrio.read_dataframe(SAMPLE / "demo_site.geojson").to_crs(4527).geometry.iloc[0]
    assert 1e6 <= site.area <= 5e6
    hit = dltb[dltb.intersects(site)]
    assert hit.DLBM.isin(["0101", "0102", "0103"]).any() and hit.DLBM.isin(cl["forest_dlbm"]).any()
    assert site.intersection(shapely.union_all(yj.geometry.values)).area > 1
    assert site.difference(shapely.union_all(cz.geometry.values)).area > 1

"""Foreign real datasets (../shared/realdata) with their quirks, into generic test layers."""

from __future__ import annotations

import pytest
from conftest import REALDATA
from geobase.ingest.pipeline import ingest
from test_ingest import make_test_specs, query


@pytest.fixture
def spec_db(new_db, tmp_path):
    """A fresh database whose registry also has the generic test_areas/test_lines/test_points layers."""
    return new_db(layers_dir=make_test_specs(tmp_path))


from geobase.errors import InvalidInput  # noqa: E402

pytestmark = pytest.mark.skipif(not REALDATA.exists(), reason="../shared/realdata not present")


def test_ngcc_gbk_without_prj_is_refused_with_a_lonlat_suggestion_then_loads_with_crs(spec_db):
    shp = REALDATA / "cn_ngcc_1to4m" / "bou2_4p.shp"
    with pytest.raises(InvalidInput, match=r"no \.prj.*longitude/latitude.*EPSG:4490.*EPSG:4326") as exc:
        ingest(spec_db, "test_areas", shp)
    assert exc.value.parameter == "crs"
    res = ingest(spec_db, "test_areas", shp, crs="EPSG:4490")
    assert res.rows_total == 925 and res.report["encoding"] == "gb18030"
    names = {r[0] for r in query(spec_db, "SELECT DISTINCT name FROM data.test_areas WHERE name IS NOT NULL")}
    assert "黑龙江省" in names and "浙江省" in names and len(names) == 33
    assert not any("Ê" in n or "º" in n for n in names)  # no mojibake


def test_amap_district_utf8_without_cpg_mixed_polygon_multipolygon(spec_db):
    shp = REALDATA / "cn_admin_amap_gcj02" / "district_by_province_2020_noprj" / "北京市.shp"
    res = ingest(spec_db, "test_areas", shp, crs="EPSG:4326")
    assert res.rows_total == 16 and res.report["encoding"] == "utf-8"
    assert ("怀柔区",) in query(spec_db, "SELECT name FROM data.test_areas")
    assert query(spec_db, "SELECT DISTINCT GeometryType(geom) FROM data.test_areas") == [("MULTIPOLYGON",)]


def test_taiwan_zoning_geojson_legacy_crs_and_invalid_geometries(spec_db):
    res = ingest(spec_db, "test_areas", REALDATA / "tw_urban_zoning" / "F0302.json")
    assert res.rows_total == 398
    assert "3826" in res.report["crs"]
    assert res.report["warnings"]["invalid_repaired"] == 5
    (xmin, ymin, xmax, ymax), = query(spec_db, "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                               "(SELECT ST_Extent(geom) e FROM data.test_areas) x")
    assert 119.9 < xmin < xmax < 122.1 and 21.8 < ymin < ymax < 25.4  # Taiwan, not metres
    assert query(spec_db, "SELECT bool_and(ST_IsValid(geom)) FROM data.test_areas")[0][0] is True
    assert query(spec_db, "SELECT count(*) FROM data.test_areas WHERE ratio IS NOT NULL")[0][0] > 0  # "35" -> 35.0


def test_alaska_nad27_feet_and_lines(spec_db):
    res = ingest(spec_db, "test_areas", REALDATA / "us_alaska_vmap0" / "trees.shp")
    assert res.rows_total == 444 and res.report["warnings"]["invalid_repaired"] == 24
    (xmin, ymin, xmax, ymax), = query(spec_db, "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                               "(SELECT ST_Extent(geom) e FROM data.test_areas) x")
    assert -180 <= xmin < -129 and 50 < ymin < ymax < 72
    res = ingest(spec_db, "test_lines", REALDATA / "us_alaska_vmap0" / "majrivers.shp")
    assert res.rows_total == 5354
    assert query(spec_db, "SELECT min(_length_m) > 0 FROM data.test_lines")[0][0] is True


def test_singapore_polygon_z_is_stored_2d(spec_db):
    res = ingest(spec_db, "test_areas", REALDATA / "sg_mp2019_planning" / "wgs84" / "MP2019-subzone.shp")
    assert res.rows_total == 332 and res.report["warnings"]["invalid_repaired"] == 6
    assert query(spec_db, "SELECT max(ST_NDims(geom)) FROM data.test_areas")[0][0] == 2


@pytest.mark.parametrize("tif,crs_part", [("qgis_training_forestry_dem/dem25.tif", "23030"),
                                          ("cn_sichuan_dem_30s/sichuan_basin.tif", "4326")])
def test_dem_becomes_a_registered_cog(db_settings, tif, crs_part):
    import rasterio

    res = ingest(db_settings, "dem", REALDATA / tif)
    meta = res.metadata
    assert res.version == 1 and crs_part in meta["crs"]
    with rasterio.open(meta["path"]) as ds:
        assert ds.profile.get("tiled") and ds.overviews(1) and ds.crs.to_string().endswith(crs_part)
    assert meta["stats"]["min"] < meta["stats"]["max"]
    stored = query(db_settings, "SELECT metadata, extent FROM catalog.layer_versions WHERE layer='dem'")[0]
    assert stored[0]["path"] == meta["path"] and stored[0]["nodata"] == meta["nodata"]
    assert stored[0]["resolution"] == pytest.approx(meta["resolution"])
    assert -180 <= stored[1][0] < stored[1][2] <= 180

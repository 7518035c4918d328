"""Indicator values of the sample county against independent computations (geopandas, shapely
and pyproj Geod on GRS80 over the same rows), the incremental recompute of a changed township
against a full one, and the indicator specs' validation."""

from __future__ import annotations

import psycopg
import pytest
from indicators_common import (  # noqa: F401 (computed_template: a fixture)
    area_in,
    category_codes,
    computed_template,
    frame,
    group_codes,
    in_codes,
    latest,
    townships,
    value_rows,
)

from geobase.errors import SpecError
from geobase.indicators.spec import get_indicators, load_indicators
from geobase.specs import get_registry, load_registry

REL = 1e-6  # PostGIS's geography areas of cut pieces against Geod's: ~1e-7 apart


@pytest.fixture(scope="module")
def computed(pg_server, computed_template):
    """A private copy of the sample county with every indicator computed once."""
    from conftest import create_database, drop_database, settings_for

    name, data_dir, steps = computed_template
    db = f"{name}_read"
    yield settings_for(create_database(pg_server, db, name), data_dir), steps
    drop_database(pg_server, db)


def test_at_least_twelve_indicators_validated_from_the_specs():
    reg = get_registry()
    inds = get_indicators(reg)
    assert len(inds) >= 12
    names = {i.model.name_zh for i in inds.values()}
    for must in ("耕地保有量", "永久基本农田保护面积", "生态保护红线面积", "建设用地总规模", "城镇开发边界内建设用地",
                 "城镇开发边界外建设用地", "林地保有量", "水域面积", "25°以上坡耕地面积"):
        assert must in names
    assert {i.model.unit for i in inds.values()} >= {"ha", "mu", "%", "m²"}


@pytest.mark.parametrize("text, problem", [
    ("layer: nowhere", "not a polygon layer"),
    ("where: {dlbm: ['9999']}", "unknown code"),
    ("unit: acre", "unit"),
])
def test_a_bad_indicator_spec_stops_the_start_naming_the_file(tmp_path, text, problem):
    import shutil

    root = tmp_path / "layers"
    shutil.copytree(get_registry().root, root)
    bad = {"layer: nowhere": "definition: {area_of: {layer: nowhere}}",
           "where: {dlbm: ['9999']}": "definition: {area_of: {layer: land_use, where: {dlbm: ['9999']}}}"}
    body = ("indicators:\n  - {id: broken, name_zh: 坏, name_en: Broken, unit: ha, applies_to: [township], "
            + (bad.get(text) or "definition: {area_of: {layer: land_use}}") + "}\n")
    if text == "unit: acre":
        body = body.replace("unit: ha", "unit: acre")
    (root / "indicators" / "zz_broken.yaml").write_text(body, encoding="utf-8")
    with pytest.raises(SpecError) as exc:
        load_indicators(load_registry(root))
    assert "zz_broken.yaml" in exc.value.message and problem in exc.value.message


def test_values_equal_independent_geod_areas_by_township(computed):
    settings, steps = computed
    assert steps["steps"][0]["kind"] == "full"
    reg = get_registry(settings)
    got = latest(settings)
    towns = townships(settings)
    assert len(towns) == 6
    lu = frame(settings, "land_use", ["dlbm"])
    cl = frame(settings, "control_lines", ["kind"])
    farmland = in_codes(lu, "dlbm", group_codes(reg, "01"))
    construction = in_codes(lu, "dlbm", category_codes(reg, "C"))
    udb = cl[cl["kind"] == "CZKFBJ"]
    county_farmland = 0.0
    for code, region in zip(towns["xzqdm"], towns.geometry):
        want = area_in(farmland, region)
        county_farmland += want
        assert got[("farmland_area", code)] == pytest.approx(want / 10_000, rel=REL)
        assert got[("basic_farmland_area", code)] == pytest.approx(
            area_in(cl[cl["kind"] == "YJJBNT"], region) / 10_000, rel=REL, abs=1e-6)
        inside = sum(area_in(construction, region.intersection(z)) for z in udb.geometry)
        allc = area_in(construction, region)
        assert got[("construction_inside_udb", code)] == pytest.approx(inside / 10_000, rel=REL, abs=1e-6)
        assert got[("construction_outside_udb", code)] == pytest.approx((allc - inside) / 10_000, rel=REL, abs=1e-6)
        assert got[("construction_land_area", code)] == pytest.approx(allc / 10_000, rel=REL)
    assert got[("farmland_area", "339901")] == pytest.approx(county_farmland / 10_000, rel=REL)


def test_shares_and_water_equal_independent_areas(computed):
    settings, _ = computed
    got = latest(settings)
    towns = townships(settings)
    pz = frame(settings, "planning_zones", ["ghfqdm"])
    water = frame(settings, "water_areas", ["kind"])
    lu = frame(settings, "land_use", ["dlbm"])
    farmland = in_codes(lu, "dlbm", group_codes(get_registry(settings), "01"))
    zone = pz[pz["ghfqdm"] == "030"]
    for code, region in zip(towns["xzqdm"], towns.geometry):
        assert got[("water_area", code)] == pytest.approx(area_in(water, region) / 10_000, rel=REL, abs=1e-6)
        whole = area_in(zone, region)
        part = sum(area_in(farmland, region.intersection(z)) for z in zone.geometry)
        share = got[("farmland_zone_cultivated_share", code)]
        if whole < 1:
            assert share is None
        else:
            assert share == pytest.approx(100 * part / whole, rel=REL)


def test_steep_farmland_equals_the_slope_analysis(computed):
    """25° farmland by township: the same parcels as the steep-farmland analysis (mean DEM slope)."""
    import asyncio

    from geobase.analysis.slope import steep_farmland

    settings, _ = computed
    reg = get_registry(settings)

    async def run():
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            return await steep_farmland(conn, settings, list(reg.layers.values()), threshold_deg=25.0)

    report = asyncio.run(run())
    keys = [p["key"] for p in report["parcels"]]
    got = latest(settings)
    towns = townships(settings)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT _key, ST_AsBinary(geom) FROM data.land_use WHERE _vto IS NULL "
                            "AND _key = ANY(%s)", (keys,)).fetchall()
    import geopandas as gpd
    import shapely

    steep = gpd.GeoDataFrame({"k": [r[0] for r in rows]}, geometry=shapely.from_wkb([bytes(r[1]) for r in rows]),
                             crs=4490)
    total = 0.0
    for code, region in zip(towns["xzqdm"], towns.geometry):
        want = area_in(steep, region)
        total += want
        assert got[("steep_farmland_area", code)] == pytest.approx(want / 10_000, rel=REL, abs=1e-6)
    assert total == pytest.approx(report["total"]["m2"], rel=1e-6)


def test_values_record_the_versions_they_came_from(computed):
    settings, _ = computed
    with psycopg.connect(settings.database_url) as conn:
        versions = conn.execute("SELECT versions FROM catalog.indicator_values WHERE indicator = 'farmland_area' "
                                "LIMIT 1").fetchone()[0]
        current = dict(conn.execute("SELECT name, current_version FROM catalog.layers WHERE name = ANY(%s)",
                                    (list(versions),)).fetchall())
    assert versions == current and "land_use" in versions and "admin_divisions" in versions
    assert all(r[2] is None for r in value_rows(settings, "farmland_area"))  # the first, full run has no cause

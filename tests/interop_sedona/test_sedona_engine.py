"""The Sedona engine gives the PostGIS results: the tabulation land use x planning zones (whole
county and a township as the area of interest) and steep farmland, on the committed sample
county, read by Sedona from GeoParquet exports.

Behind ``make interop-sedona`` (``scripts/setup.sh --sedona`` installs the engine); marked
``interop`` so the default ``make test`` leaves them out. Without the engine installed they FAIL
(the engine raises ServiceUnavailable), they never skip."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest

from geobase.security import Principal
from geobase.specs import get_registry

pytestmark = pytest.mark.interop
OPERATOR = Principal(name="test", role="admin", key_id="test")
REL = 1e-9
ABS_M2 = 1e-4


def _run(settings, fn):
    async def go():
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            from geobase.security import visible_layers

            registry = get_registry(settings)
            return await fn(conn, registry, await visible_layers(conn, OPERATOR, registry))
    return asyncio.run(go())


def _same_tabulation(pg: dict, sd: dict) -> None:
    assert [(c["a"], c["b"], c["pieces"]) for c in sd["cells"]] == [(c["a"], c["b"], c["pieces"]) for c in pg["cells"]]
    # 1e-9 of the area, and never more than a square centimetre apart: below that the numbers
    # are PostGIS's own rounding of ST_Area(geography) on small pieces (pyproj on the very
    # pieces PostGIS cut differs from ST_Area by up to ~7e-6 of a piece of a few m², while the
    # sums over thousands of pieces agree to 1e-12)
    off = [(p["a"], p["b"], s["m2"] - p["m2"]) for p, s in zip(pg["cells"], sd["cells"])
           if abs(s["m2"] - p["m2"]) > REL * p["m2"] + ABS_M2]
    assert off == [], off
    for key in ("totals_a", "totals_b"):
        assert [next(iter(r.values())) for r in sd[key]] == [next(iter(r.values())) for r in pg[key]]
        for p, s in zip(pg[key], sd[key]):
            assert abs(s["m2"] - p["m2"]) <= REL * p["m2"] + ABS_M2, (key, p, s)
    assert sd["total"]["m2"] == pytest.approx(pg["total"]["m2"], rel=REL)
    assert sd["coverage_of_aoi"] == pytest.approx(pg["coverage_of_aoi"], rel=REL)
    assert sd["versions"] == pg["versions"] and sd["aoi"].get("code") == pg["aoi"].get("code")


@pytest.mark.parametrize("aoi", [None, "339901002"])
def test_sedona_tabulation_equals_postgis(county_shared, tmp_path, aoi):
    from geobase.analysis import tabulate
    from geobase.analysis.engines import sedona

    pg = _run(county_shared, lambda c, r, v: tabulate(c, r, v, "land_use", "planning_zones", aoi_code=aoi,
                                                      principal=OPERATOR))
    sd = _run(county_shared, lambda c, r, v: sedona.tabulate(c, county_shared, r, v, "land_use", "planning_zones",
                                                             aoi_code=aoi, principal=OPERATOR, workdir=tmp_path))
    assert sd["engine"] == "sedona" and len(pg["cells"]) > 10
    _same_tabulation(pg, sd)
    (tmp_path / "pg.json").write_text(json.dumps(pg, ensure_ascii=False))


def test_sedona_steep_farmland_equals_postgis(county_shared, tmp_path):
    from geobase.analysis import steep_farmland
    from geobase.analysis.engines import sedona_steep

    pg = _run(county_shared, lambda c, r, v: steep_farmland(c, county_shared, v, threshold_deg=25.0))
    sd = _run(county_shared, lambda c, r, v: sedona_steep.steep_farmland(c, county_shared, r, v, threshold_deg=25.0,
                                                                         principal=OPERATOR, workdir=tmp_path))
    assert sd["engine"] == "sedona" and pg["parcels"], "the sample county has planted steep farmland"
    assert sd["parcels_checked"] == pg["parcels_checked"]
    assert sd["parcels"] == pg["parcels"]
    assert sd["by_township"] == pg["by_township"] and sd["total"] == pg["total"]
    assert sd["gdpdjb_disagreements"] == pg["gdpdjb_disagreements"] and sd["versions"] == pg["versions"]


def test_sedona_steep_farmland_names_a_provinces_parcels_as_postgis_does(db_settings, tmp_path):
    """Two counties holding the same keys: both engines name each steep parcel (and each gdpdjb
    disagreement) by its county-qualified id, the Features API's (the GeoParquet export's ``id``
    is that id), and agree on everything else."""
    from test_feature_ids import A, B, SHARED, load_steep_province

    from geobase.analysis import steep_farmland
    from geobase.analysis.engines import sedona_steep

    s = db_settings
    load_steep_province(s, tmp_path)
    pg = _run(s, lambda c, r, v: steep_farmland(c, s, v, threshold_deg=25.0))
    sd = _run(s, lambda c, r, v: sedona_steep.steep_farmland(c, s, r, v, threshold_deg=25.0, principal=OPERATOR,
                                                             workdir=tmp_path))
    keys = [p["key"] for p in pg["parcels"]]
    assert len(keys) == len(set(keys)) == 14 and {f"{A}-{SHARED}", f"{B}-{SHARED}"} <= set(keys), keys
    assert sd["engine"] == "sedona" and sd["parcels_checked"] == pg["parcels_checked"] == 14
    assert sd["parcels"] == pg["parcels"]
    assert sd["gdpdjb_disagreements"] == pg["gdpdjb_disagreements"] and len(pg["gdpdjb_disagreements"]) == 14
    assert sd["by_township"] == pg["by_township"] and sd["total"] == pg["total"] and sd["versions"] == pg["versions"]


def test_the_cli_runs_the_sedona_engine(county_shared, tmp_path, monkeypatch):
    """``geobase analysis tabulate --engine sedona`` writes the same outputs as the PostGIS run."""
    from typer.testing import CliRunner

    from geobase.cli import app

    monkeypatch.setenv("GEOBASE_DATABASE_URL", county_shared.database_url)
    monkeypatch.setenv("GEOBASE_DATA_DIR", str(county_shared.data_dir))
    from geobase.settings import get_settings
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        for engine in ("postgis", "sedona"):
            r = runner.invoke(app, ["analysis", "tabulate", "land_use", "planning_zones", "--engine", engine,
                                    "--out", str(tmp_path / engine)])
            assert r.exit_code == 0, r.output
        pg = json.loads((tmp_path / "postgis" / "tabulate.json").read_text(encoding="utf-8"))
        sd = json.loads((tmp_path / "sedona" / "tabulate.json").read_text(encoding="utf-8"))
        assert sd["engine"] == "sedona"
        _same_tabulation(pg, sd)
        r = runner.invoke(app, ["analysis", "steep-farmland", "--engine", "sedona", "--out", str(tmp_path / "steep")])
        assert r.exit_code == 0, r.output
    finally:
        get_settings.cache_clear()

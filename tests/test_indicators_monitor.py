"""Monitoring: a planted edit between two versions raises a warning naming the version and the
parcel that moved the indicator, the next version clears it; the recompute is incremental and
touches only the changed township (and its county), and equals a full recompute; a target table
is imported all or nothing, a bad row named."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import psycopg
import pytest
from indicators_common import computed_db, computed_template, latest, process, value_rows  # noqa: F401

from geobase.editing.service import Actor
from geobase.errors import InvalidInput
from geobase.indicators import targets
from geobase.indicators.spec import get_indicators
from geobase.specs import get_registry

TOWN = "339901003"


def _q(settings, text: str, params=()) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(text, params).fetchall()


def _inside_parcel(settings) -> tuple[str, str]:
    """The largest farmland parcel wholly inside township TOWN: (key, dlbm)."""
    return _q(settings, """
        SELECT x._key, x.dlbm FROM data.land_use x JOIN data.admin_divisions t ON t._vto IS NULL AND t.xzqdm = %s
        WHERE x._vto IS NULL AND x.dlbm IN ('0101', '0102', '0103') AND ST_CoveredBy(x.geom, t.geom)
        ORDER BY x._area_m2 DESC LIMIT 1""", (TOWN,))[0]


def _edit(settings, key: str, dlbm: str, message: str) -> int:
    from geobase.crs import parse_crs
    from geobase.editing.batch import apply_changes

    reg = get_registry(settings)
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "op": "update", "id": key, "properties": {"dlbm": dlbm}}]}
    return apply_changes(settings, reg.layers["land_use"], reg, doc, actor=Actor("cli:test", None, None, True),
                         message=message, crs=parse_crs(None, "crs"))["version"]


def _import(settings, text: str) -> dict:
    reg = get_registry(settings)

    async def go():
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            return await targets.import_targets(conn, reg, get_indicators(reg), text, source="test", user="test")

    return asyncio.run(go())


def test_a_planted_change_raises_a_warning_and_the_next_version_clears_it(computed_db):
    settings = computed_db
    assert process(settings)["steps"] == []  # computed, nothing queued
    before = latest(settings)
    farmland = before[("farmland_area", TOWN)]
    # the target: today's farmland is exactly at the yellow margin (1.01 x target): a loss of any
    # parcel crosses it
    target = farmland / 1.01
    out = _import(settings, f"indicator,division,target\nfarmland_area,{TOWN},{target!r}\n")
    assert out == {"imported": 1, "raised": 0, "cleared": 0}
    key, dlbm = _inside_parcel(settings)
    v1 = _edit(settings, key, "0601", "farmland built over")
    steps = process(settings)["steps"]
    assert [(s["layer"], s["version"], s["kind"]) for s in steps] == [("land_use", v1, "incremental")]
    # only the changed township and its county got new values
    assert steps[0]["divisions"] == ["339901", TOWN]
    after = latest(settings)
    assert after[("farmland_area", TOWN)] < farmland
    for (ind, div), v in before.items():
        if div not in ("339901", TOWN):
            assert after[(ind, div)] == v
    rows = value_rows(settings, "farmland_area")
    assert [r[0] for r in rows if r[2] == "land_use"] == ["339901003", "339901"] or \
        sorted(r[0] for r in rows if r[2] == "land_use") == ["339901", TOWN]
    assert all(r[3] == v1 for r in rows if r[2] == "land_use")
    w = _q(settings, "SELECT id, level, status, value, target, cause_layer, cause_version, parcels "
                     "FROM catalog.indicator_warnings WHERE indicator = 'farmland_area' AND division = %s", (TOWN,))
    assert len(w) == 1
    wid, level, status, value, target, layer, version, parcels = w[0]
    expected = "red" if after[("farmland_area", TOWN)] < farmland / 1.01 else "yellow"
    assert (level, status, layer, version) == (expected, "open", "land_use", v1)
    assert value == pytest.approx(after[("farmland_area", TOWN)]) and target == pytest.approx(farmland / 1.01)
    assert [(p["key"], p["change"], p["class"]) for p in parcels] == [(key, "retired", dlbm)]
    # the next version gives the parcel back: the warning is cleared by it
    v2 = _edit(settings, key, dlbm, "restored")
    steps = process(settings)["steps"]
    assert [(s["version"], s["kind"], s["divisions"]) for s in steps] == [(v2, "incremental", ["339901", TOWN])]
    assert latest(settings)[("farmland_area", TOWN)] == pytest.approx(farmland, rel=1e-12)
    assert _q(settings, "SELECT status, cleared_version FROM catalog.indicator_warnings WHERE id = %s",
              (wid,)) == [("cleared", v2)]
    events = _q(settings, "SELECT event FROM catalog.indicator_events WHERE warning_id = %s ORDER BY id", (wid,))
    assert [e[0] for e in events] == ["raised", "cleared"]


def test_the_incremental_values_equal_a_full_recompute(computed_db):
    settings = computed_db
    key, _ = _inside_parcel(settings)
    _edit(settings, key, "0301", "farmland to forest")
    # a control line moved too: the zone side of the terms changes
    zone = _q(settings, "SELECT _key FROM data.control_lines WHERE _vto IS NULL AND kind = 'YJJBNT' LIMIT 1")[0][0]
    reg = get_registry(settings)
    from geobase.crs import parse_crs
    from geobase.editing.batch import apply_changes

    apply_changes(settings, reg.layers["control_lines"], reg, {"type": "FeatureCollection", "features": [
        {"type": "Feature", "op": "delete", "id": zone}]}, actor=Actor("cli:test", None, None, True),
        message="line withdrawn", crs=parse_crs(None, "crs"))
    kinds = [s["kind"] for s in process(settings)["steps"]]
    assert kinds == ["incremental", "incremental"]
    incremental = latest(settings)
    _q(settings, "DELETE FROM catalog.indicator_state RETURNING 1")
    assert [s["kind"] for s in process(settings)["steps"]] == ["full"]
    full = latest(settings)
    assert set(full) == set(incremental)
    for k, v in full.items():
        if v is None:
            assert incremental[k] is None
        else:
            assert incremental[k] == pytest.approx(v, rel=1e-9, abs=1e-6), k


@pytest.mark.parametrize("line, problem", [
    ("nosuch,339901001,1", "row 3: unknown indicator 'nosuch'"),
    ("farmland_area,339901999,1", "row 3: unknown division '339901999'"),
    ("farmland_area,339901001,many", "row 3: target 'many' is not a number"),
    ("farmland_area,339901002,1", "row 3: farmland_area of 339901002 is given twice"),
])
def test_a_bad_target_row_is_named_and_nothing_is_imported(computed_db, line, problem):
    settings = computed_db
    text = f"indicator,division,target\nfarmland_area,339901002,5\n{line}\n"
    with pytest.raises(InvalidInput) as exc:
        _import(settings, text)
    assert problem in exc.value.message
    assert _q(settings, "SELECT count(*) FROM catalog.indicator_targets") == [(0,)]


def test_the_cli_imports_targets_and_recomputes(county_db, tmp_path):
    settings = county_db
    env = {"GEOBASE_DATABASE_URL": settings.database_url, "GEOBASE_DATA_DIR": str(settings.data_dir),
           "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "geobase.cli", "indicators", *a], env=env,
                                    capture_output=True, text=True, timeout=300)
    r = run("recompute")
    assert r.returncode == 0 and "full" in r.stdout, r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("indicator,division,target\nfarmland_area,339901001,10\nwater_area,12345,1\n", encoding="utf-8")
    r = run("targets", "import", str(bad))
    assert r.returncode != 0 and "row 3: unknown division '12345'" in r.stderr
    good = tmp_path / "targets.csv"
    good.write_text("\ufeffindicator,division,target\nfarmland_area,339901001,1000000\nfarmland_area,339901,1\n",
                    encoding="utf-8")
    r = run("targets", "import", str(good))
    assert r.returncode == 0 and "2 target(s) imported; warnings raised 1" in r.stdout, r.stderr
    r = run("show", "farmland_area", "--csv")
    assert r.returncode == 0 and r.stdout.startswith("\ufeffindicator,name_zh,unit,division")
    assert "耕地保有量" in r.stdout

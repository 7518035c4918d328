"""The county's area (the sum of layer A's areas, the report's ``aoi.area`` when no area of
interest is given) is summed on another connection while the table is computed, in a snapshot
checked to see the same layer state; when it cannot be (another state there), it is summed
after the table on the analysis's own connection. Either way it is the sum of the current rows.

Why: summed after the table, serially, it added 0.05-0.2 s to a cold county-wide tabulation;
summed on a connection that sees another layer version, it would report that version's area."""

from __future__ import annotations

import importlib

import psycopg
import pytest

from geobase import analysis
from geobase.specs import get_registry
from tests.analysis_data import run
from tests.test_tabulate_kept_pieces import _restart, zones  # noqa: F401

pieces = importlib.import_module("geobase.analysis.pieces")
tab = importlib.import_module("geobase.analysis.tabulate")


def _county(settings) -> float:
    reg = get_registry(settings)
    vis = list(reg.layers.values())
    t = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones"))
    assert t["reuse"] == "computed" and t["aoi"]["area_source"] == "sum of land_use areas"
    return t["aoi"]["area"]["m2"]


def _sum(settings) -> float:
    with psycopg.connect(settings.database_url) as conn:
        return float(conn.execute("SELECT sum(_area_m2) FROM data.land_use WHERE _vto IS NULL").fetchone()[0])


def _serial_calls(monkeypatch) -> list:
    calls = []
    real = tab._layer_area

    async def counted(*args):
        calls.append(args[1].name)
        return await real(*args)

    monkeypatch.setattr(tab, "_layer_area", counted)
    return calls


def test_the_county_area_is_summed_beside_the_table(zones, monkeypatch):
    settings, _, _ = zones
    calls = _serial_calls(monkeypatch)
    assert _county(settings) == pytest.approx(_sum(settings), rel=1e-12)
    assert calls == [], "summed on another connection, not after the table"


def test_another_state_beside_sums_it_on_the_own_connection(zones, monkeypatch):
    settings, _, _ = zones
    calls = _serial_calls(monkeypatch)
    real = pieces.beside

    async def other_state(conn, specs, states, *args):  # the other connection sees another version
        return await real(conn, specs, {k: None for k in states}, *args)

    monkeypatch.setattr(pieces, "beside", other_state)
    _restart()
    assert _county(settings) == pytest.approx(_sum(settings), rel=1e-12)
    assert calls == ["land_use"]

"""The zones' subdivision is kept per zone version in the database (geobase/analysis/subdivision.py,
migration 0013_s11tab): cut once, read back after a restart, cut again for a new zone version,
and never half-kept when its build is killed. Every table still equals the whole-geometry
computation cell for cell (the parcels of tests/test_tabulate_edges.py: border, holes,
multipolygons, a zone with a hole, corner contact).

Why: a cold tabulation (a server start) spent as much as a third of its time cutting the zones;
the kept pieces must be exactly those of the zone version tabulated, or the table silently
counts another version's zones."""

from __future__ import annotations

import importlib

import psycopg
import pytest
import shapely
from shapely.geometry import box

from geobase import analysis
from geobase.analysis import reuse, subdivision
from geobase.specs import get_registry
from tests.analysis_data import X0, Y0, D, insert, register_version, run
from tests.test_tabulate_edges import REFERENCE, _zones, seed_edges

pieces = importlib.import_module("geobase.analysis.pieces")


@pytest.fixture
def zones(db_settings, monkeypatch):
    seed_edges(db_settings, monkeypatch)
    monkeypatch.setattr(pieces, "SPLIT_CONNECTIONS", 2)
    builds, reads = [], []
    real_build, real_kept = subdivision.build, subdivision.kept

    async def build(conn, spec, state, *args):
        builds.append(state.version)
        return await real_build(conn, spec, state, *args)

    async def kept(conn, state, *args):
        got = await real_kept(conn, state, *args)
        reads.append(got is not None)
        return got

    monkeypatch.setattr(subdivision, "build", build)
    monkeypatch.setattr(subdivision, "kept", kept)
    _restart()
    yield db_settings, builds, reads
    _restart()


def _restart() -> None:
    """What a server start forgets: the kept tables and pieces in memory."""
    reuse.RESULTS.clear()
    reuse.PIECES.clear()


def _table_equals_whole_geometries(settings) -> dict:
    reg = get_registry(settings)
    vis = list(reg.layers.values())
    t = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones"))
    assert t["reuse"] == "computed"
    got = {(c["a"], c["b"]): c["m2"] for c in t["cells"]}
    with psycopg.connect(settings.database_url) as conn:
        ref = {(ca, cb): float(m2) for ca, cb, m2 in conn.execute(REFERENCE).fetchall() if float(m2) > 1e-6}
    assert set(got) == set(ref)
    off = {k: (got[k], v) for k, v in ref.items() if abs(got[k] - v) > 1e-9 * v + 5e-7}
    assert off == {}, f"cells off the whole-geometry areas: {off}"
    return got


def _kept(settings) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT s.layer, s.version, s.pieces, count(p.*) FROM analysis.subdivisions s "
                            "LEFT JOIN analysis.pieces p ON p.subdivision = s.id GROUP BY 1, 2, 3 ORDER BY 2").fetchall()


def test_the_pieces_are_cut_once_and_read_back_after_a_restart(zones):
    settings, builds, reads = zones
    first = _table_equals_whole_geometries(settings)
    # the analysis's look-up, then the builder's own under its lock: neither finds pieces
    assert builds == [1] and reads == [False, False], "the first tabulation of the zone version cuts and keeps them"
    (layer, version, n, stored), = _kept(settings)
    assert (layer, version) == ("planning_zones", 1) and n == stored > len(_zones())
    _restart()
    again = _table_equals_whole_geometries(settings)
    assert builds == [1] and reads == [False, False, True], "after a restart the kept pieces are read, not cut"
    assert again == first


def test_a_new_zone_version_is_cut_again_and_replaces_the_old_pieces(zones):
    settings, builds, _ = zones
    _table_equals_whole_geometries(settings)
    with psycopg.connect(settings.database_url) as conn:  # version 2: the west zone grows to the east
        conn.execute("UPDATE data.planning_zones SET _vto = 2 WHERE _key = 'ZW' AND _vto IS NULL")
        west = shapely.segmentize(box(X0, Y0, X0 + 2.3 * D, Y0 + 4 * D), D / 8)
        insert(conn, "planning_zones", [("ZW", {"bsm": "ZW", "ghfqdm": "030"}, west)], version=2, register=False)
        conn.execute("UPDATE data.planning_zones SET _vto = 2 WHERE _key = 'ZE' AND _vto IS NULL")
        east = next(z for k, _, z in _zones() if k == "ZE").difference(west)
        insert(conn, "planning_zones", [("ZE", {"bsm": "ZE", "ghfqdm": "041"}, east)], version=2, register=False)
        register_version(conn, "planning_zones", 2, 3)
        conn.commit()
    _restart()
    got = _table_equals_whole_geometries(settings)
    assert builds == [1, 2], "a new zone version is cut again"
    assert [r[:2] for r in _kept(settings)] == [("planning_zones", 2)], "the old version's pieces are gone"
    assert ("0101", "030") in got and ("0103", "041") in got


def test_a_killed_build_keeps_nothing_and_the_next_tabulation_builds_it(zones, monkeypatch):
    settings, builds, _ = zones
    real_fill = subdivision._fill

    async def killed(c2, *args):
        await real_fill(c2, *args)  # everything inserted, not yet committed
        await c2.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setattr(subdivision, "_fill", killed)
    _table_equals_whole_geometries(settings)  # the zones cut on the analysis's own connection
    assert builds == [1] and _kept(settings) == []
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM analysis.pieces").fetchone()[0] == 0
    monkeypatch.setattr(subdivision, "_fill", real_fill)
    _restart()
    _table_equals_whole_geometries(settings)
    assert builds == [1, 1] and [r[:2] for r in _kept(settings)] == [("planning_zones", 1)]


def test_a_version_dropped_from_the_catalog_takes_its_pieces(zones):
    settings, _, _ = zones
    _table_equals_whole_geometries(settings)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("DELETE FROM catalog.layer_versions WHERE layer = 'planning_zones' AND version = 1")
        conn.commit()
    assert _kept(settings) == []

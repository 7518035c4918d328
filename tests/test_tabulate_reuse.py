"""A tabulation of unchanged layer versions is answered from the kept table, and one whose
layer got a new version is the kept table corrected by that version's change: both must equal
a tabulation computed from the rows (geobase/analysis/reuse.py, geobase/analysis/tabulate.py)."""

from __future__ import annotations

import psycopg
import pytest
from shapely.geometry import box

from geobase import analysis
from geobase.analysis.input import parse_geojson
from geobase.specs import get_registry
from tests.analysis_data import D, X0, Y0, cell, insert, load_small_county, register_version, run


@pytest.fixture
def small(db_settings):
    load_small_county(db_settings.database_url)
    reg = get_registry(db_settings)
    return db_settings, reg, list(reg.layers.values())


def _table(t: dict) -> dict:
    return {(c["a"], c["b"]): (c["m2"], c["pieces"]) for c in t["cells"]}


def _same(got: dict, want: dict) -> None:
    assert set(got["cells_by_key"]) == set(want["cells_by_key"])
    for k, (m2, n) in want["cells_by_key"].items():
        assert got["cells_by_key"][k][1] == n, k
        assert got["cells_by_key"][k][0] == pytest.approx(m2, rel=1e-9, abs=1e-6), k
    assert got["total"]["m2"] == pytest.approx(want["total"]["m2"], rel=1e-12)
    # the whole county's area (sum of the land-use areas) is kept and corrected like the table
    assert got["aoi"]["area"]["m2"] == pytest.approx(want["aoi"]["area"]["m2"], rel=1e-12)
    assert got["coverage_of_aoi"] == pytest.approx(want["coverage_of_aoi"], rel=1e-9)


def _tab(settings, reg, vis, **kw) -> dict:
    t = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones", **kw))
    t["cells_by_key"] = _table(t)
    return t


def _new_land_use_version(url: str) -> None:
    """Version 2 of land use: parcel LU00 reclassified (retired and added again), LU11 removed,
    and a new parcel added that straddles both zones."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE data.land_use SET _vto = 2 WHERE _key IN ('LU00', 'LU11') AND _vto IS NULL")
        insert(conn, "land_use", [
            ("LU00", {"bsm": "LU00", "dlbm": "0601", "dlmc": "工业用地"}, cell(0, 0)),
            ("LUX", {"bsm": "LUX", "dlbm": "1001", "dlmc": "铁路用地"},
             box(X0 + 1.5 * D, Y0 + 1.2 * D, X0 + 2.5 * D, Y0 + 1.7 * D)),
        ], version=2, register=False)
        register_version(conn, "land_use", 2, 16)
        conn.commit()


@pytest.mark.parametrize("aoi", ["county", "township", "polygon"])
def test_kept_and_corrected_tables_equal_the_computed_ones(small, aoi):
    settings, reg, vis = small
    kw: dict = {}
    if aoi == "township":
        kw = {"aoi_code": "339901001"}
    elif aoi == "polygon":
        kw = {"aoi": parse_geojson({"type": "Polygon", "coordinates": [[
            [X0 + 0.005, Y0 + 0.004], [X0 + 0.031, Y0 + 0.004], [X0 + 0.031, Y0 + 0.027], [X0 + 0.005, Y0 + 0.027],
            [X0 + 0.005, Y0 + 0.004]]]}, settings)}
    first = _tab(settings, reg, vis, **kw)
    assert first["reuse"] == "computed"
    again = _tab(settings, reg, vis, **kw)
    assert again["reuse"] == "kept"
    _same(again, _tab(settings, reg, vis, reuse=False, **kw))

    _new_land_use_version(settings.database_url)
    corrected = _tab(settings, reg, vis, **kw)
    assert corrected["reuse"] == "corrected"
    assert corrected["versions"]["land_use"]["version"] == 2
    fresh = _tab(settings, reg, vis, reuse=False, **kw)
    assert fresh["reuse"] == "computed"
    _same(corrected, fresh)
    assert corrected["cells_by_key"] != first["cells_by_key"]  # the change shows
    assert {("1001", "030"), ("1001", "041")} <= set(fresh["cells_by_key"])  # the new parcel straddles both zones


def test_other_class_fields_or_versions_are_never_served_a_kept_table(small):
    settings, reg, vis = small
    by_code = _tab(settings, reg, vis)
    by_name = _tab(settings, reg, vis, class_a="dlmc")
    assert by_name["reuse"] == "computed"
    assert {a for a, _ in by_name["cells_by_key"]} == {"水田", "乔木林地", "城镇住宅用地", "工业用地"}
    assert {a for a, _ in by_code["cells_by_key"]} == {"0101", "0301", "0701", "0601"}


def test_a_reloaded_database_reusing_version_numbers_is_computed_again(small):
    """Rows rewritten under the same version number (a table truncated and reloaded by hand)
    carry new row ids: the kept table is not used."""
    settings, reg, vis = small
    before = _tab(settings, reg, vis)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("TRUNCATE data.land_use")
        insert(conn, "land_use", [("LU00", {"bsm": "LU00", "dlbm": "0101", "dlmc": "水田"},
                                   box(X0, Y0, X0 + 4 * D, Y0 + 4 * D))], register=False)
        conn.commit()
    after = _tab(settings, reg, vis)
    assert after["reuse"] == "computed"
    assert set(after["cells_by_key"]) == {("0101", "030"), ("0101", "041")} != set(before["cells_by_key"])


def test_outside_a_repeatable_read_snapshot_nothing_is_kept_or_reused(small):
    """In a read-committed transaction the layers' states and the rows could come from two
    moments (an ingest committing in between): such a table is computed, never filed."""
    import asyncio

    settings, reg, vis = small

    async def twice() -> list[str]:
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:  # read committed
            out = []
            for _ in range(2):
                t = await analysis.tabulate(conn, reg, vis, "land_use", "planning_zones")
                out.append(t["reuse"])
            return out

    assert asyncio.run(twice()) == ["computed", "computed"]
    assert _tab(settings, reg, vis)["reuse"] == "computed"  # nothing was filed by the two above

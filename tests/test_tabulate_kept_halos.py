"""The zones' halos are kept per (subdivision, grid side) in the database (migration 0017_s12tab,
geobase/analysis/subdivision.py ``build_halos``): clipped by the first county-wide tabulation of a
zone version, read by every later one, reused by a new land-use version of about the same parcel
size, never half-kept; and a table computed with them, without them, with a halo missing or with
no pair counted on the ``sole`` shortcut equals the whole-geometry computation cell for cell.

Why: a halo is the zone clipped to a cell; a kept halo of another zone version, another grid or a
half-built grid would measure boundary parcels against the wrong zone with no error. And the
``sole`` shortcut (a parcel strictly inside a lone box piece is counted without deduplication)
must only ever skip work, never change a cell."""

from __future__ import annotations

import importlib

import psycopg

from geobase.analysis import subdivision
from tests.analysis_data import register_version
from tests.test_tabulate_kept_pieces import _restart, _table_equals_whole_geometries, zones  # noqa: F401

pieces = importlib.import_module("geobase.analysis.pieces")


def _grids(settings) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT g.cell, g.halos, count(h.*), count(*) FILTER (WHERE h.covered), "
            "count(*) FILTER (WHERE NOT h.covered AND h.halo IS NOT NULL) FROM analysis.halo_grids g "
            "LEFT JOIN analysis.halos h ON h.grid = g.id GROUP BY g.id ORDER BY g.id").fetchall()


def _spy_grids(monkeypatch) -> list:
    """The halo grid each tabulation's query reads (None: the halos clipped in the query)."""
    seen = []
    real = pieces.load_pieces

    async def spy(*args):
        got = await real(*args)
        seen.append(got["grid"])
        return got

    monkeypatch.setattr(pieces, "load_pieces", spy)
    return seen


def test_halos_are_clipped_once_and_read_after_a_restart(zones, monkeypatch):
    settings, _, _ = zones
    monkeypatch.setattr(pieces, "HALO_FEATURES", 0.5)  # cells small enough that zones cover some
    seen = _spy_grids(monkeypatch)
    first = _table_equals_whole_geometries(settings)
    assert seen == [None], "the first tabulation's snapshot cannot see the halos it has kept"
    (cell, n, stored, covered, clipped), = _grids(settings)
    assert n == stored == covered + clipped and covered > 0 and clipped > 0
    assert cell == pieces.grid_side(cell), "the side is a power of two"
    _restart()
    again = _table_equals_whole_geometries(settings)
    assert seen[1] is not None, "after a restart the kept halos are read"
    assert again == first
    assert len(_grids(settings)) == 1


def test_a_new_land_use_version_of_the_same_parcels_reads_the_same_halos(zones, monkeypatch):
    settings, _, _ = zones
    seen = _spy_grids(monkeypatch)
    _table_equals_whole_geometries(settings)
    with psycopg.connect(settings.database_url) as conn:  # version 2: one parcel reclassified
        conn.execute("UPDATE data.land_use SET _vto = 2 WHERE _key = 'across' AND _vto IS NULL")
        conn.execute("""INSERT INTO data.land_use (_key, _hash, _vfrom, bsm, dlbm, dlmc, _area_m2, geom, geom_3857)
                        SELECT _key, md5(_key || '2'), 2, bsm, '0404', dlmc, _area_m2, geom, geom_3857
                        FROM data.land_use WHERE _key = 'across' AND _vto = 2""")
        register_version(conn, "land_use", 2, 14)
        conn.commit()
    _restart()
    got = _table_equals_whole_geometries(settings)
    assert ("0404", "030") in got
    assert len(_grids(settings)) == 1 and seen[1] is not None, "the same grid side: the kept halos serve it"


def test_a_missing_halo_is_measured_on_the_whole_geometries(zones, monkeypatch):
    settings, _, _ = zones
    seen = _spy_grids(monkeypatch)
    first = _table_equals_whole_geometries(settings)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("DELETE FROM analysis.halos")  # the grid says built, its halos are gone
        conn.commit()
    _restart()
    assert _table_equals_whole_geometries(settings) == first
    assert seen[1] is not None


def test_a_killed_halo_build_keeps_nothing(zones, monkeypatch):
    settings, _, _ = zones
    real_fill = subdivision._fill_halos

    async def killed(c2, *args):
        await real_fill(c2, *args)  # everything inserted, not yet committed
        await c2.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setattr(subdivision, "_fill_halos", killed)
    _table_equals_whole_geometries(settings)
    assert _grids(settings) == []
    monkeypatch.setattr(subdivision, "_fill_halos", real_fill)
    _restart()
    _table_equals_whole_geometries(settings)
    assert len(_grids(settings)) == 1


def test_no_pair_on_the_sole_shortcut_gives_the_same_table(zones, monkeypatch):
    settings, _, _ = zones
    first = _table_equals_whole_geometries(settings)
    monkeypatch.setattr(pieces, "alone", lambda params: [False] * len(params["rids"]))
    _restart()
    assert _table_equals_whole_geometries(settings) == first


def test_alone_pieces():
    """Boxes of one zone that only touch are alone; one overlapping another's inside is not;
    another zone's boxes do not count."""
    got = pieces.alone({"rids": [1, 1, 2, 3, 3], "x0": [0, 2, 1, 0, 1], "y0": [0, 0, 0, 0, 0.5],
                        "x1": [2, 4, 3, 2, 3], "y1": [1, 1, 1, 1, 2]})
    assert got == [True, True, True, False, False]

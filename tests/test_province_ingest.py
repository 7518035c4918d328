"""A county's first delivery into a province is a first load (issue 16, the ingest figure): the
ingest skips the staged rows' key index and statistics when none of the delivered counties has
current rows, however many other counties the layer holds (they cost ~2 s of a 30 s ingest of
20,000 parcels, the whole difference between ingesting into a province and into an empty
database); a county that has rows gets them, as before.

Real PostGIS, real ingests of shapefiles."""

from __future__ import annotations

import psycopg
from test_divisions import A, B, C, load

from geobase.catalog.versions import counties_have_current_rows, has_current_rows
from geobase.specs import get_registry
from geobase.storage import UNASSIGNED


def test_a_new_county_of_a_province_has_no_current_rows_whatever_the_others_hold(db_settings, tmp_path):
    s = db_settings
    spec = get_registry(s).layer("land_use")
    with psycopg.connect(s.database_url) as conn:
        assert not has_current_rows(conn, spec) and not counties_have_current_rows(conn, spec, [A])
    load(s, tmp_path, A)
    load(s, tmp_path, B)
    with psycopg.connect(s.database_url) as conn:
        assert has_current_rows(conn, spec)  # the layer: yes
        for counties, expected in (([C], False), ([A], True), ([C, B], True), ([""], False), ([UNASSIGNED], False)):
            assert counties_have_current_rows(conn, spec, counties) is expected, counties
        # a current version from before the per-county counts: the counties' partitions are read
        conn.execute("UPDATE catalog.layer_versions SET divisions = NULL WHERE layer = 'land_use'")
        for counties, expected in (([C], False), ([A], True), ([C, B], True)):
            assert counties_have_current_rows(conn, spec, counties) is expected, counties
        conn.rollback()
    r = load(s, tmp_path, C)  # the first load of C in a province of two: a new partition, 16 rows
    assert r.divisions == [C] and r.added == 16 and r.rows_total == 48

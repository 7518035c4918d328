"""A row's county computed by the ingest (``geobase.storage.division_values``, arrow; what
staging and direct loads COPY) is the one the database computes (``division_expr``, SQL; what
reads and migrations use), and a first load straight into its county's
table (DirectLoad) checks every row against the first row's county as it is COPYed: a delivery
of several counties, a first row that names none, or rows of another county than ``--division``
are sent to the staging path, which reports them exactly as it does for a small file.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from geobase.ingest import pipeline
from test_divisions import A, B, C, county_gdf, load, partitions
from test_ingest import query

from geobase.errors import InvalidInput
from geobase.specs import get_registry
from geobase.storage import division_expr, division_values

#: values a division field holds in real deliveries and in broken ones
EDGE_VALUES = [None, "", " ", "   ", "\t", " \t ", "339901", "3399011010010000000", "33990", "3399", "abc",
               "33A9021010010000000", " 339901", "339901 ", "３３９９０１1", "\u00a0339901", "3399-01", "0000001",
               "1234567890", "339901\n", "\n339901", "①②③④⑤⑥"]


@pytest.mark.parametrize("fallback", [None, B])
def test_division_values_agree_with_the_sql_of_a_rows_county(db_settings, fallback):
    spec = get_registry(db_settings).layer("land_use")
    got = division_values(pa.array(EDGE_VALUES, pa.string()), fallback).to_pylist()
    expr = division_expr(spec, fallback)
    sql_rows = query(db_settings, f"SELECT {expr.as_string(None)} FROM unnest(%s::text[]) WITH ORDINALITY "  # noqa: S608
                                  "AS t(zldwdm, i) ORDER BY i", (EDGE_VALUES,))
    assert got == [r[0] for r in sql_rows]


def test_a_direct_first_load_checks_each_rows_county_and_leaves_no_constraint(db_settings, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 0)
    runs = []
    run = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda settings, opts: runs.append(opts.direct) or run(settings, opts))
    s = db_settings
    r = load(s, tmp_path, A)
    assert r.divisions == [A] and r.rows_total == 16 and runs == [True]  # loaded direct, not redone via staging
    assert partitions(s) == ["land_use__000000", f"land_use__{A}"]
    assert query(s, "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'",
                 (f"data.land_use__{A}",))[0][0] == 0
    assert query(s, "SELECT DISTINCT division FROM data.land_use") == [(A,)]


def test_a_direct_load_of_several_counties_goes_via_staging_and_reports_like_it(db_settings, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 0)
    s = db_settings
    bad_first = county_gdf(B, 4)
    bad_first.loc[0, "ZLDWDM"] = "33A9021010010000000"  # the first row names no county
    with pytest.raises(InvalidInput, match="zldwdm does not begin with a 6-digit county code") as e:
        load(s, tmp_path, B, bad_first, "bad")
    assert e.value.details["report"]["errors"] == {"division": 1}
    with pytest.raises(InvalidInput, match=f"zldwdm names county {B}, not --division {C}"):
        load(s, tmp_path, B, county_gdf(B, 4), "other", division=C)
    later = county_gdf(C, 4)
    later.loc[2, "ZLDWDM"] = "33A9021010010000000"  # a later row: the COPY's check stops the direct load
    with pytest.raises(InvalidInput, match="zldwdm does not begin with a 6-digit county code") as e:
        load(s, tmp_path, C, later, "later")
    assert e.value.details["report"]["checks"]["divisions"] == {"(none)": 1, C: 3}
    assert partitions(s) == ["land_use__000000"]  # nothing was written
    mixed = county_gdf(A, 8)
    mixed.loc[5, "ZLDWDM"] = f"{B}1010010000000"  # a delivery of two counties: each its partition
    r = load(s, tmp_path, A, mixed, "two")
    assert r.divisions == [A, B] and r.rows_total == 8 and r.report["checks"]["divisions"] == {A: 7, B: 1}
    assert partitions(s) == ["land_use__000000", f"land_use__{A}", f"land_use__{B}"]

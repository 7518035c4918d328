"""The core's one version writer (geobase/catalog/versions.py) and the ingest's typed options
(ingest/options.py), used directly: the seams issue #14 made.

* the writer, handed a table of rows, writes the same version an ingest of those rows writes;
* a dry run's preview and the written version agree;
* an unknown mode is refused by the options and by the writer, naming it, with nothing written.
"""

from __future__ import annotations

import geopandas as gpd
import psycopg
import pytest
from geobase.ingest.options import IngestOptions
from geobase.ingest.pipeline import ingest
from psycopg import sql
from shapely.geometry import box
from test_ingest import X0, Y0, db_state, land_use_gdf, query, write_shp

from geobase.catalog.history import rollback
from geobase.catalog.versions import preview_version, write_version
from geobase.errors import InvalidInput
from geobase.specs import get_registry
from geobase.storage import as_of_filter, current_filter

ROWS = "new_rows"


def _two_versions(settings, tmp_path):
    """v1: 30 parcels; v2: 3 reclassified, 2 removed, 1 added (as in test_ingest)."""
    v1 = land_use_gdf(30)
    ingest(settings, "land_use", write_shp(v1, tmp_path / "v1"))
    v2 = v1.copy()
    v2.loc[v2.BSM.isin(["00000001", "00000006", "00000011"]), ["DLBM", "DLMC"]] = ["0702", "农村宅基地"]
    v2 = v2[~v2.BSM.isin(["00000029", "00000030"])]
    v2 = gpd.GeoDataFrame(
        list(v2.to_dict("records")) + [{"BSM": "00000099", "DLBM": "0101", "DLMC": "水田", "TBMJ": 100.0,
                                        "ZLDWMC": "示范村", "geometry": box(X0, Y0 - 10, X0 + 10, Y0)}],
        crs=v1.crs)
    return ingest(settings, "land_use", write_shp(v2, tmp_path / "v2"))


def _stage_rows_of(conn: psycopg.Connection, version: int) -> sql.Identifier:
    """The rows of ``version`` as a table the writer takes (what an ingest's staging holds)."""
    conn.execute(sql.SQL("CREATE TEMP TABLE {} AS SELECT * FROM data.land_use WHERE {}").format(
        sql.Identifier(ROWS), as_of_filter(version)))
    conn.commit()
    return sql.Identifier(ROWS)


def _rows(settings, where: sql.Composable) -> list[tuple]:
    return query(settings, sql.SQL("SELECT _key, _hash, _area_m2 FROM data.land_use WHERE {} ORDER BY _key")
                 .format(where).as_string(None))


def test_the_core_writer_used_directly_writes_the_version_an_ingest_writes(db_settings, tmp_path):
    res2 = _two_versions(db_settings, tmp_path)
    rollback(db_settings, "land_use", 1, user="tester")  # v3 = v1 again: v2's delivery is news once more
    spec = get_registry(db_settings).layer("land_use")
    report = {"errors": {}, "warnings": {}, "notes": ["written by the core directly"]}
    with psycopg.connect(db_settings.database_url) as conn:
        rows = _stage_rows_of(conn, 2)
        done = write_version(conn, spec, rows, mode="replace", version_row={
            "source_name": "direct", "source_checksum": "c" * 64, "source_format": "test", "created_by": "tester",
            "report": report, "metadata": {"by": "test"}})
    assert done.version == 4
    assert (done.rows_total, done.added, done.removed, done.changed) == \
        (res2.rows_total, res2.added, res2.removed, res2.changed) == (29, 1, 2, 3)
    assert done.extent == pytest.approx(res2.extent)
    assert _rows(db_settings, current_filter()) == _rows(db_settings, as_of_filter(2))
    (row,) = query(db_settings, "SELECT mode, source_name, created_by, rows_total, rows_added, rows_removed, "
                                "rows_changed, report, metadata FROM catalog.layer_versions "
                                "WHERE layer = 'land_use' AND version = 4")
    assert row == ("replace", "direct", "tester", 29, 1, 2, 3, report, {"by": "test"})
    assert query(db_settings, "SELECT current_version FROM catalog.layers WHERE name = 'land_use'")[0][0] == 4


@pytest.mark.parametrize("mode", ["replace", "upsert", "append", "delete"])
def test_a_dry_runs_preview_is_the_version_the_writer_then_writes(db_settings, tmp_path, mode):
    _two_versions(db_settings, tmp_path)
    rollback(db_settings, "land_use", 1, user="tester")
    spec = get_registry(db_settings).layer("land_use")
    with psycopg.connect(db_settings.database_url) as conn:
        rows = _stage_rows_of(conn, 2)
        if mode == "append":  # only keys that are not current yet may be appended
            conn.execute(sql.SQL("DELETE FROM {} s WHERE EXISTS (SELECT 1 FROM data.land_use d WHERE {} "
                                 "AND d._key = s._key)").format(rows, current_filter("d")))
            conn.commit()
        preview = preview_version(conn, spec, rows, mode)
        done = write_version(conn, spec, rows, mode=mode, version_row={
            "source_name": "x", "source_checksum": None, "source_format": None, "created_by": "tester",
            "report": {}})
    assert preview == (done.rows_total, done.added, done.removed, done.changed)
    assert done.rows_total == query(db_settings, sql.SQL("SELECT count(*) FROM data.land_use WHERE {}").format(
        current_filter()).as_string(None))[0][0]


def test_ingest_options_refuse_an_unknown_mode_or_policy_naming_it(tmp_path):
    with pytest.raises(InvalidInput, match=r"--mode: 'merge' is not one of replace, append, upsert, delete") as e:
        IngestOptions(layer="land_use", path=tmp_path / "x.shp", mode="merge")
    assert e.value.parameter == "mode"
    with pytest.raises(InvalidInput, match=r"--on-error: 'ignore' is not one of reject, skip, keep") as e:
        IngestOptions(layer="land_use", path=tmp_path / "x.shp", on_error="ignore")
    assert e.value.parameter == "on_error"
    opts = IngestOptions(layer="land_use", path=str(tmp_path / "x.shp"), mode="upsert")
    assert opts.path == tmp_path / "x.shp" and opts.on_error == "reject" and not opts.dry_run


def test_the_writer_refuses_an_unknown_mode_and_writes_nothing(db_settings, tmp_path):
    _two_versions(db_settings, tmp_path)
    before = db_state(db_settings, "land_use")
    spec = get_registry(db_settings).layer("land_use")
    with psycopg.connect(db_settings.database_url) as conn:
        rows = _stage_rows_of(conn, 1)
        with pytest.raises(InvalidInput, match="'merge' is not one of replace, append, upsert, delete"):
            write_version(conn, spec, rows, mode="merge", version_row={})
        with pytest.raises(InvalidInput, match="'merge'"):
            preview_version(conn, spec, rows, "merge")
    assert db_state(db_settings, "land_use") == before


def test_an_ingest_with_an_unknown_mode_is_refused_before_the_file_is_read(db_settings, tmp_path):
    missing = tmp_path / "never_written.shp"  # the options are checked before the file is looked at
    with pytest.raises(InvalidInput, match="--mode: 'merge'"):
        ingest(db_settings, "land_use", missing, mode="merge")

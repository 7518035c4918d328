"""A county's first load builds its partition's indexes in two sessions at once (issue 15: the
ingest at <= 0.8x a tuned ogr2ogr).

The rows of a first load are COPYed into a table of their own and committed (no reader sees
the table: it is not a partition yet); the GiST index is then built in a second session while
the first builds the b-trees, and the version's transaction attaches the table, adopting them.
Checked here: the two builds do overlap (each side waits for the other to have started), the
partition ends up with exactly the indexes and constraints of a partition made the ordinary way,
and an ingest killed while the indexes build leaves every county and version as it was, its
table never part of the layer, dropped by the next ingest.

Real PostGIS, real Shapefiles through GDAL, the killed ingest in its own process (SIGKILL).
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import textwrap
import threading

import psycopg
from conftest import REPO
from geobase.ingest import load_steps, pipeline
from geobase.ingest.loader import DirectLoad
from test_divisions import A, B, C, county_gdf, county_rows, load, partitions
from test_ingest import query, write_shp


def _indexes(settings, division: str) -> list[tuple]:
    """(name, definition, unique, primary) of county ``division``'s partition indexes, and its
    constraints, with the county code written as ``D``: comparable between partitions."""
    table = f"data.land_use__{division}"
    idx = query(settings, "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary, "
                          "(SELECT p.relname FROM pg_inherits h JOIN pg_class p ON p.oid = h.inhparent "
                          " WHERE h.inhrelid = i.indexrelid) "
                          "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass "
                          "ORDER BY 1", (table,))
    con = query(settings, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
                          "ORDER BY 1", (table,))
    opts = query(settings, "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (table,))
    return [tuple(str(v).replace(division, "D") for v in row) for row in idx + con + opts]


class _BarrierConnection:
    """A connection whose first CREATE INDEX waits at ``barrier`` (everything else passes)."""

    def __init__(self, conn, barrier: threading.Barrier):
        self._conn, self._barrier, self._waited = conn, barrier, False

    def execute(self, query, *args, **kw):
        text = query.as_string(self._conn) if hasattr(query, "as_string") else str(query)
        if not self._waited and text.startswith("CREATE") and " INDEX " in text and "__load_" in text \
                and self._built_after_copy():
            self._waited = True
            self._barrier.wait(timeout=60)  # BrokenBarrierError: the other session never started
        return self._conn.execute(query, *args, **kw)

    def _built_after_copy(self) -> bool:
        return self._conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._conn.close()

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_the_gist_and_the_btrees_of_a_first_load_are_built_at_once(db_settings, tmp_path, monkeypatch):
    s = db_settings
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 0)  # the path a bench-sized file takes, with 16 parcels
    load(s, tmp_path, A)  # the layer's first load; B below: a county's first delivery into a layer holding A
    barrier = threading.Barrier(2)
    sessions: list[str] = []

    @dataclasses.dataclass
    class Watched(DirectLoad):
        def __post_init__(self):
            main, more = self.conn, self.connect_more
            assert more is not None, "no second session for the index builds"
            self.conn = _BarrierConnection(main, barrier)

            def second():
                sessions.append("second")
                return _BarrierConnection(more(), barrier)
            self.connect_more = second

    monkeypatch.setattr(load_steps, "DirectLoad", Watched)
    gdf = county_gdf(B, dx=2000)
    r = load(s, tmp_path, B, gdf)
    assert r.divisions == [B] and r.added == len(gdf)
    assert sessions == ["second"] and not barrier.broken  # both sides reached their first build together
    assert query(s, "SELECT count(*) FROM data.land_use WHERE division = %s AND _vto IS NULL", (B,))[0][0] == len(gdf)
    # the same indexes, constraints and storage options as a partition made the ordinary way
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 10**9)
    load(s, tmp_path, C)  # through staging: its partition made by geobase.partitions.ensure_partition
    assert _indexes(s, B) == _indexes(s, C)
    assert _indexes(s, B) == _indexes(s, A)
    assert len([i for i in _indexes(s, B) if len(i) > 1 and "USING gist" in i[1]]) == 1
    assert query(s, "SELECT count(*) FROM pg_class WHERE position('__load_' in relname) > 0")[0][0] == 0


KILLER = textwrap.dedent("""
    import os, signal, sys
    from geobase.ingest import loader, pipeline
    from geobase.settings import Settings
    pipeline.DIRECT_MIN_ROWS = 0
    settings = Settings(database_url=sys.argv[1], data_dir=sys.argv[2])

    def die(*_args, **_kw):
        os.kill(os.getpid(), signal.SIGKILL)

    loader.DirectLoad._build_indexes = die  # the rows are committed, the indexes about to be built
    pipeline.ingest(settings, "land_use", sys.argv[3], coverage=False)
""")


def test_a_first_load_killed_while_its_indexes_build_leaves_the_layer_as_it_was(db_settings, tmp_path):
    s = db_settings
    load(s, tmp_path, A)
    load(s, tmp_path, B)
    before = {d: county_rows(s, d) for d in (A, B)}
    versions = query(s, "SELECT count(*) FROM catalog.layer_versions")[0][0]
    current = query(s, "SELECT current_version FROM catalog.layers WHERE name = 'land_use'")
    gdf = county_gdf(C, 16, dx=5000)
    shp = write_shp(gdf, tmp_path / "killed")
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run([sys.executable, str(script), s.database_url, str(s.data_dir), str(shp)], cwd=str(REPO),
                          capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert {d: county_rows(s, d) for d in (A, B)} == before
    assert query(s, "SELECT count(*) FROM catalog.layer_versions")[0][0] == versions
    assert query(s, "SELECT current_version FROM catalog.layers WHERE name = 'land_use'") == current
    assert partitions(s) == ["land_use__000000", f"land_use__{A}", f"land_use__{B}"]
    assert query(s, "SELECT count(*) FROM data.land_use WHERE division = %s", (C,))[0][0] == 0
    # its committed rows lie in a table that is no partition: nothing reads them
    left = query(s, "SELECT c.relname, c.relispartition FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'data' AND c.relkind = 'r' AND position('__load_' in c.relname) > 0")
    assert len(left) == 1 and left[0][1] is False
    assert query(s, f'SELECT count(*) FROM data."{left[0][0]}"')[0][0] == len(gdf)
    r = load(s, tmp_path, C, gdf, "again")  # the same delivery afterwards; the leftover dropped
    assert r.divisions == [C] and r.version == versions + 1 and r.added == len(gdf)
    assert "leftover load table" in " ".join(r.report["notes"])
    assert query(s, "SELECT count(*) FROM pg_class WHERE position('__load_' in relname) > 0")[0][0] == 0
    assert {d: county_rows(s, d) for d in (A, B)} == before


def test_a_first_load_into_a_layer_whose_partitions_carry_their_own_unique_indexes(db_settings, tmp_path,
                                                                                    monkeypatch):
    """Once a county of the layer is placed on a shard, the layer table has no unique index and
    each partition carries its own (row id, current key): a first load builds those instead of
    the primary key, the same as a partition made the ordinary way."""
    from geobase.partitions import has_unique_indexes, split_unique_indexes
    from geobase.specs import get_registry

    s = db_settings
    load(s, tmp_path, A)
    spec = get_registry(s).layer("land_use")
    with psycopg.connect(s.database_url) as conn:
        assert split_unique_indexes(conn, spec)  # what placing a county on a shard does first
        conn.commit()
        assert not has_unique_indexes(conn, spec)
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 0)
    r = load(s, tmp_path, B)
    assert r.divisions == [B] and r.added == 16
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 10**9)
    load(s, tmp_path, C)  # through staging
    assert _indexes(s, B) == _indexes(s, C)
    assert any(name.endswith("_rid__D") for name, *_ in _indexes(s, B))
    assert not any(len(i) > 2 and i[0].endswith("_pkey") for i in _indexes(s, B))
    assert query(s, "SELECT count(*) FROM pg_class WHERE position('__load_' in relname) > 0")[0][0] == 0

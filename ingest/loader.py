"""How rows reach the database: a binary COPY fed a batch at a time, and the first load of a
layer straight into its table (:class:`DirectLoad`). Staging tables (ingest/staging.py) use the
same COPY.

The new version itself is written by the core's one version writer
(:func:`geobase.catalog.versions.write_version`): retire, insert, the ``layer_versions`` row and
the current-version switch in one transaction. A direct first load records its version with
the core's :func:`~geobase.catalog.versions.insert_version_row` in the transaction that holds
its rows.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from geobase.catalog.divisions import carry_forward, division_stats, totals
from geobase.catalog.versions import CommitResult, insert_version_row, lock_key, lock_layer, next_version
from geobase.partitions import (
    attach,
    create_beside,
    foreign_partitions,
    has_unique_indexes,
    partition_divisions,
    partition_unique_indexes,
)
from geobase.ingest.leftover_loads import load_lock_name
from geobase.specs import LayerSpec
from geobase.storage import (
    DIVISION,
    UNASSIGNED,
    division_field,
    division_values,
    layer_indexes,
    measure_column,
    partition_ident,
    partition_name,
    retired_row_indexes,
    table_ident,
)

STAGING = "staging"
#: the constraint a direct load's table carries while its rows arrive (see DirectLoad._expect_county)
COUNTY_CHECK = "geobase_load_county"


def loaded_measure(spec: LayerSpec) -> list[str]:
    """The measure column the rows are COPYed with: polygon layers' ``_area_m2``, computed by
    :class:`~geobase.ingest.normalize.BatchNormalizer` with :mod:`geobase.ingest.area`
    (``ST_Area(geom::geography)`` per row was half the database's work of a bulk load). Line
    layers' lengths are still computed by the database."""
    return ["_area_m2"] if measure_column(spec) == "_area_m2" else []


def binary_copy(conn: psycopg.Connection, table: sql.Composable, columns: list[str], transform=None):
    """A binary ``COPY table (columns)`` fed a batch at a time: the context manager yields a
    writer whose ``write(fields)`` sends the batch's pre-encoded rows (see
    :mod:`geobase.ingest.copybin`) as one block, no per-row Python; ``transform`` maps a batch's
    fields to the table's columns first. The queued writer sends data to the server from its
    own thread, so the next batch is normalised meanwhile."""
    from contextlib import contextmanager

    from geobase.ingest.copybin import SIGNATURE, TRAILER, rows_payload
    from psycopg.copy import QueuedLibpqWriter

    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    ncols = len(columns)

    class _Writer:
        def __init__(self, cp):
            self.cp = cp

        def write(self, fields) -> None:
            if not fields:
                return
            payload = rows_payload(transform(fields) if transform else fields, ncols)
            if payload:
                self.cp.write(payload)

    @contextmanager
    def _cm():
        cur = conn.cursor()
        with cur.copy(stmt, writer=QueuedLibpqWriter(cur)) as cp:
            cp.write(SIGNATURE)
            yield _Writer(cp)
            cp.write(TRAILER)
    return _cm()


class RedoWithStaging(Exception):
    """A first load straight into the layer table met a case only the staging path handles
    (duplicate keys to report, a coverage check to run): roll back and load again via staging."""


@dataclass
class DirectLoad:
    """The first load of a county (its partition does not exist yet), COPYed straight into a
    table of its own beside the layer table, which the version's transaction attaches as the
    county's partition.

    Why: staging + ``INSERT ... SELECT`` writes every row twice; for a first load there is
    nothing to diff against, so the rows can go where they end up. The table has no index
    while the rows arrive; its indexes are built once after them, and every row is checked to
    be of the county as it arrives (a CHECK constraint added before the first row names the
    county of the first row, so the ATTACH needs no scan).

    Two transactions, the layer's advisory lock held by the session across both (the layer's
    other writers wait; its readers, of every county, do not: the new table is not part of the
    layer until the last commit): (1) the new table and its rows, COPYed and committed, in a
    table no reader sees; then its indexes, built at once in two sessions (the GiST in one, the
    b-trees in the other: on two cores the GiST no longer waits for four b-tree builds, about
    half the index building at 200,000 parcels; a second session sees only committed tables,
    hence the commit); (2) the version's: ATTACH (which adopts the indexes) and the version row.
    Nothing of the layer changes before (2) commits: a kill, a refusal or a lost connection
    during the COPY rolls (1) back, and later leaves at most an unattached
    ``<layer>__load_<job>`` table, which :meth:`abort` drops, and else the next ingest
    (:func:`drop_leftover_loads`: a table whose ingest's session lock is free). Taken when ``--division`` names a county without a
    partition, when the file's first row names one (``first_county``: a county's first
    delivery into a province, which its rows name, is as much a first load as one into an
    empty layer, and went through staging, rows written twice: 1.22x the empty database's
    ingest at 10 x 200,000), or when the layer table is empty (its first load: the county is
    read from the first row, and a row of another county makes the COPY fail, which sends the
    load to staging; the county's empty partition is dropped for the loaded one, see
    :func:`geobase.partitions.attach`). Areas come with the rows (:func:`loaded_measure`); a
    trigger that lives only inside the COPY's transaction fills in those the normaliser leaves
    to the database and a line layer's lengths, with the same
    ``ST_Area/ST_Length(geom::geography)`` as the staging path."""

    conn: psycopg.Connection
    spec: LayerSpec
    job: str
    division: str | None = None
    version: int = 0
    finished: bool = False
    layer_empty: bool = False
    #: the county every row was checked to be of (None: no row was written)
    county: str | None = None
    #: the county the file's first row names (read alone before the load; None: none or unread)
    first_county: str | None = None
    #: opens another connection to the database (autocommit), for the index built beside the
    #: others; None: every index is built on ``conn``, one after the other
    connect_more: Callable[[], psycopg.Connection] | None = None
    #: the session holds the layer's and the table's advisory locks
    holding: bool = False
    #: the rows are committed (in a table no reader sees until the version's commit)
    committed: bool = False

    @property
    def columns(self) -> list[str]:
        return ["_key", "_hash", "_vfrom", DIVISION, *self.spec.attribute_names, "geom", "geom_3857",
                *loaded_measure(self.spec)]

    @property
    def _trigger_fn(self) -> sql.Identifier:
        return sql.Identifier(STAGING, f"measure_{self.job[:12]}")

    @property
    def table_name(self) -> str:
        """The table the rows go to, renamed to the county's partition when it is attached."""
        return f"{self.spec.name[:40]}__load_{self.job[:12]}"

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier("data", self.table_name)

    def begin(self) -> bool:
        """Open the load's transaction (1) with the county's new table in it, the session holding
        the layer's lock; False (nothing held, nothing changed) when the county (``--division``,
        else the first row's) already has a partition, or the layer has rows and no county is
        known, so the caller uses staging."""
        conn, spec = self.conn, self.spec
        conn.commit()
        lock_layer(conn, spec.name)
        self.layer_empty = not foreign_partitions(conn, spec) and not conn.execute(sql.SQL(  # shards: never "empty"
            "SELECT EXISTS (SELECT 1 FROM {})").format(table_ident(spec))).fetchone()[0]
        county = self.division or self.first_county
        if not self.layer_empty and (county is None or county in partition_divisions(conn, spec)):
            conn.rollback()
            return False
        self.version = next_version(conn, spec.name)
        for key in (f"ingest:{spec.name}", self._lock_name):  # the session's, until finish or abort
            conn.execute(sql.SQL("SELECT pg_advisory_lock({})").format(lock_key(key)))
        self.holding = True
        create_beside(conn, spec, self.table_name)
        # no autovacuum ANALYZE of the committed rows: its lock would hold up the index builds
        conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(self.table))
        for idx, body in retired_row_indexes(spec):  # empty: built now, no scan of the loaded rows
            conn.execute(sql.SQL("CREATE INDEX {} ON {} {}").format(sql.Identifier(self._early_index(idx)), self.table,
                                                                    body))
        measure = measure_column(spec)
        if measure:  # rows that come without their measure get it from the database (dropped before commit)
            fn = sql.SQL("ST_Area" if measure == "_area_m2" else "ST_Length")
            m = sql.Identifier(measure)
            conn.execute(sql.SQL(
                "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$BEGIN NEW.{m} := {fn}(NEW.geom::geography); RETURN NEW; END$$").format(f=self._trigger_fn, m=m, fn=fn))
            conn.execute(sql.SQL("CREATE TRIGGER geobase_measure BEFORE INSERT ON {} FOR EACH ROW "
                                 "WHEN (NEW.{} IS NULL) EXECUTE FUNCTION {}()").format(self.table, m, self._trigger_fn))
        return True

    @property
    def _lock_name(self) -> str:
        return load_lock_name(self.table_name)

    @contextmanager
    def copy(self, values_of: Callable[[], list]):
        """Binary COPY into the county's new table; the writer's ``write(fields)`` takes the
        staging-order fields of :meth:`BatchNormalizer.process` (row, key, hash, attrs, geom,
        geom_3857): the staging row number is replaced by the version the rows start in and each
        row's county (:func:`geobase.storage.division_values` of ``values_of()``, the batch's
        attribute values). The COPY starts with the first batch, once the CHECK constraint for
        the first row's county is in place (:meth:`_expect_county`)."""
        with ExitStack() as stack:
            yield _DirectWriter(self, values_of, stack)

    def _expect_county(self, county: str) -> None:
        """Every row must be of ``county`` (the first row's): a CHECK constraint on the still
        empty table, which checks each row as the COPY writes it and which the ATTACH trusts
        instead of scanning the table. A first row that names no county, or another county than
        ``--division`` (or, in a layer holding other counties, than the ``first_county`` whose
        missing partition :meth:`begin` checked): RedoWithStaging (the staging path reports it)."""
        expected = self.division or (None if self.layer_empty else self.first_county)
        if not county or (expected is not None and county != expected):
            raise RedoWithStaging()
        self.conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} = {})").format(
            self.table, sql.Identifier(COUNTY_CHECK), sql.Identifier(DIVISION), sql.Literal(county)))
        self.county = county

    def _early_index(self, idx: str) -> str:
        """The name of layer index ``idx`` made before the county is known (renamed at attach)."""
        return f"{idx[:40]}__load_{self.job[:12]}"

    def _index_plan(self, division: str) -> list[tuple[str, sql.Composable, bool]]:
        """(final name, definition, unique) of every index the county's partition needs that the
        table does not have yet: the layer's, and the primary key's (a unique index made the
        constraint at attach) or, when the layer table has no unique index to adopt them, the
        partition's own unique ones (:func:`geobase.partitions.partition_unique_indexes`)."""
        conn, spec = self.conn, self.spec
        done = {idx for idx, _body in retired_row_indexes(spec)}
        plan = [(f"{idx}__{division}", body, unique) for idx, body, unique in layer_indexes(spec) if idx not in done]
        if has_unique_indexes(conn, spec):
            plan.append((f"{partition_name(spec, division)}_pkey", sql.SQL("(_rid, {})").format(
                sql.Identifier(DIVISION)), True))
        else:
            named = {name for name, _b, _u in plan}
            plan += [(f"{idx}__{division}", body, True) for idx, body in partition_unique_indexes(spec)
                     if f"{idx}__{division}" not in named]
        return plan

    def _build_indexes(self, division: str) -> list[tuple[str, str]]:
        """Build the partition's indexes on the committed, unattached table under their load
        names, the GiST ones in a second session while this one builds the b-trees (one after
        the other without :attr:`connect_more`); each index is committed as it is built (a
        killed load leaves them with its table). Returns (final name, load name) of each."""
        plan = self._index_plan(division)
        names = [(final, f"{self.spec.name[:30]}__load_{self.job[:12]}_{n}") for n, (final, _b, _u) in enumerate(plan)]
        stmts = [(final, sql.SQL("CREATE {} INDEX {} ON {} {}").format(
            sql.SQL("UNIQUE" if unique else ""), sql.Identifier(early), self.table, body),
            "gist" in body.as_string(self.conn).lower()) for (final, early), (_f, body, unique) in zip(names, plan)]
        conn = self.conn
        beside = [st for _f, st, gist in stmts if gist] if self.connect_more is not None else []
        here = [st for _f, st, gist in stmts if not (gist and beside)]
        if beside:
            from geobase.ingest.threads import in_thread

            def build_beside() -> None:
                with self.connect_more() as other:
                    for st in beside:
                        other.execute(st)
            done = in_thread(build_beside, name="ingest-index")
        try:
            for st in here:
                conn.execute(st)
                conn.commit()
        finally:
            if beside:
                done()
        return names

    def _attach(self, rows: int, built: list[tuple[str, str]]) -> str:
        """Attach the loaded table as its county's partition, its indexes already ``built``;
        RedoWithStaging when its rows are not all of one county (staging reports which and why).
        Returns the county."""
        conn = self.conn
        division = self.county or self.division or UNASSIGNED  # no row written: an empty county
        renames = [(f"{idx}__{division}", self._early_index(idx)) for idx, _body in retired_row_indexes(self.spec)]
        pkey = f"{partition_name(self.spec, division)}_pkey"
        for final, early in renames + built:  # under the name partitions.attach gives it
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'data."{final}"',)).fetchone()[0]:
                # the county's empty partition, which attach drops (replace_empty), holds the name
                conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier("data", final), sql.Identifier(f"{final[:40]}__old_{self.job[:12]}")))
            if final == pkey:  # the primary key the layer table's asks of its partitions: the index, renamed
                conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY USING INDEX {}").format(
                    self.table, sql.Identifier(pkey), sql.Identifier(early)))
            else:
                conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier("data", early), sql.Identifier(final)))
        conn.execute(sql.SQL("ALTER TABLE {} RESET (autovacuum_enabled)").format(self.table))
        try:
            attach(conn, self.spec, self.table_name, division, replace_empty=self.layer_empty)
        except psycopg.errors.CheckViolation:  # rows of several counties: the transaction is rolled back
            raise RedoWithStaging() from None
        if self.county is not None:  # the partition bound says the same now: the layout stays the layer's
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                partition_ident(self.spec, division), sql.Identifier(COUNTY_CHECK)))
        return division

    def finish(self, rows: int, *, mode: str, version_row: dict, after_insert=None,
               extent: list[float] | None = None) -> CommitResult:
        """Attach the county's partition (building its indexes) and commit the version.

        ``extent``: the loaded rows' bounds as the normaliser computed them from the very
        coordinates it wrote (what ``ST_Extent`` over the table returns), saving a table scan."""
        conn, spec = self.conn, self.spec
        if measure_column(spec):
            conn.execute(sql.SQL("DROP TRIGGER geobase_measure ON {}").format(self.table))
            conn.execute(sql.SQL("DROP FUNCTION {}()").format(self._trigger_fn))
        conn.commit()  # the table and its rows (transaction 1), which no reader sees yet
        self.committed = True
        built = self._build_indexes(self.county or self.division or UNASSIGNED)
        lock_layer(conn, spec.name)  # transaction 2, the version's (the session holds the lock already)
        division = self.division = self._attach(rows, built)
        fresh = ({division: {"rows": rows, "extent": [float(v) for v in extent]}} if extent is not None and rows
                 else division_stats(conn, spec, [division]))
        divs = carry_forward(conn, spec, [division], fresh)
        total, layer_extent = totals(divs)
        if after_insert is not None:
            version_row = {**version_row, "report": after_insert(conn, self.version)}
        insert_version_row(conn, spec.name, self.version, mode=mode, rows_total=total, added=rows,
                           removed=0, changed=0, extent=layer_extent, touched=[division], divisions=divs,
                           **version_row)
        conn.commit()
        self.finished = True
        self._release()
        return CommitResult(self.version, total, rows, 0, 0, layer_extent)

    def abort(self) -> None:
        """Undo everything of this load (a no-op after :meth:`finish`): roll back the open
        transaction and drop the committed table; a dead connection leaves the table to the
        next ingest (:func:`drop_leftover_loads`)."""
        if self.finished:
            return
        try:
            self.conn.rollback()
            if self.committed:
                self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table))
                self.conn.commit()
            self._release()
        except psycopg.Error:
            pass  # a dead connection: the server rolled back already and released the locks

    def _release(self) -> None:
        """Release the session's locks on the layer and the table."""
        if self.holding:
            for key in (self._lock_name, f"ingest:{self.spec.name}"):
                self.conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(lock_key(key)))
            self.conn.commit()
            self.holding = False


class _DirectWriter:
    """The writer of :meth:`DirectLoad.copy`: the first batch decides the county and opens the
    COPY, each batch gets its rows' version and county fields."""

    def __init__(self, load: DirectLoad, values_of: Callable[[], list], stack: ExitStack):
        import pyarrow as pa

        self.load, self.values_of, self.stack, self.cp = load, values_of, stack, None
        spec = load.spec
        field = division_field(spec)
        self.index = spec.attribute_names.index(field) if field else None
        self.pa = pa

    def write(self, fields: list) -> None:
        from geobase.ingest.copybin import encode_field, from_numpy

        if not fields:
            return
        pa, load = self.pa, self.load
        _row, key, hsh, *rest = fields
        n = len(key)
        values = self.values_of()
        county = division_values(values[self.index] if self.index is not None else None, load.division)
        if isinstance(county, str):  # a layer without a division field: every row is of one county
            county = pa.repeat(pa.scalar(county, pa.string()), n)
        if self.cp is None:
            load._expect_county(county[0].as_py())
            self.cp = self.stack.enter_context(binary_copy(load.conn, load.table, load.columns))
        version = encode_field(from_numpy(np.full(n, load.version, dtype=np.int32)))
        self.cp.write([key, hsh, version, encode_field(county), *rest])

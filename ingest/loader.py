"""Staging and the one-transaction commit of a new layer version.

Rows are COPYed into an unlogged table in schema ``staging`` named per job. The staging
connection holds a session advisory lock on that name for its lifetime, so a later ingest can
tell a leftover of a killed/crashed ingest (lock free -> drop it) from a live one (lock held).

The new version itself is written by the core's one version writer
(:func:`geobase.catalog.versions.write_version`): retire, insert, the ``layer_versions`` row and
the current-version switch in one transaction. A first load straight into the layer table
(:class:`DirectLoad`) records its version there too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from geobase.ingest.area import AREA_TOLERANCE, stated_area_factor

from geobase.catalog.versions import (
    CommitResult,
    current_extent,
    drop_secondary_indexes,
    has_current_rows,
    insert_version_row,
    lock_key,
    lock_layer,
    next_version,
    preview_version,
)
from geobase.specs import LayerSpec
from geobase.storage import current_filter, ensure_layer_table, key_collation, measure_column, table_ident

STAGING = "staging"
#: Coverage checks (overlaps/gaps) run in full up to this many rows; above, per grid cell sample.
COVERAGE_FULL_LIMIT = 200_000
#: Without --coverage/--no-coverage the coverage check runs up to this many rows.
COVERAGE_AUTO_LIMIT = 20_000
OVERLAP_MIN_M2 = 1.0
GAP_MIN_M2 = 1.0


def staging_name(layer: str, job: str | None = None) -> str:
    return f"{layer[:40]}__{(job or uuid.uuid4().hex)[:12]}"


def drop_leftover_staging(conn: psycopg.Connection) -> list[str]:
    """Drop staging tables whose ingest is gone (its session lock is free). Returns their names."""
    dropped = []
    names = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", (STAGING,)).fetchall()]
    for name in names:
        got = conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(lock_key("staging:" + name))).fetchone()[0]
        if not got:
            continue  # a live ingest owns it
        try:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(STAGING, name)))
            conn.commit()
            dropped.append(name)
        finally:
            conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(lock_key("staging:" + name)))
            conn.commit()
    return dropped


@dataclass
class Staging:
    conn: psycopg.Connection
    spec: LayerSpec
    name: str

    @property
    def ident(self) -> sql.Composed:
        return sql.Identifier(STAGING, self.name)

    @property
    def columns(self) -> list[str]:
        return ["_row", "_key", "_hash", *self.spec.attribute_names, "geom", "geom_3857", *loaded_measure(self.spec)]

    def create(self) -> None:
        self.conn.execute(sql.SQL("SELECT pg_advisory_lock({})").format(lock_key("staging:" + self.name)))
        # keys in the layer table's collation (byte order unless an old table could not convert),
        # so joins with it can use its key index
        coll = key_collation(self.conn, self.spec) or "C"
        cols = [sql.SQL("_row bigint"), sql.SQL("_key text COLLATE {}").format(sql.Identifier(coll)), sql.SQL("_hash text")]
        for a in self.spec.attributes:
            cols.append(sql.SQL("{} {}").format(sql.Identifier(a.name), sql.SQL(a.pg_type)))
        cols.append(sql.SQL("geom geometry({}, 4490)").format(sql.SQL(self.spec.geometry)))
        cols.append(sql.SQL("geom_3857 geometry({}, 3857)").format(sql.SQL(self.spec.geometry)))
        measure = measure_column(self.spec)
        if measure in loaded_measure(self.spec):  # areas come with the rows (the normaliser computes them)
            cols.append(sql.SQL("{} double precision").format(sql.Identifier(measure)))
        elif measure:  # lengths: computed by the COPY backend while Python reads the next batch
            cols.append(sql.SQL("{} double precision GENERATED ALWAYS AS (ST_Length(geom::geography)) STORED").format(
                sql.Identifier(measure)))
        self.conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(self.ident, sql.SQL(", ").join(cols)))
        self.conn.commit()

    def copy(self):
        """A binary COPY fed a batch at a time (see :func:`binary_copy`)."""
        return binary_copy(self.conn, self.ident, self.columns)

    def fill_missing_areas(self) -> None:
        """Areas of the staged rows the normaliser left to the database (long edges, see
        :mod:`geobase.ingest.area`)."""
        if loaded_measure(self.spec):
            self.conn.execute(sql.SQL("UPDATE {} SET _area_m2 = ST_Area(geom::geography) WHERE _area_m2 IS NULL")
                              .format(self.ident))

    def drop(self) -> None:
        try:
            if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.rollback()
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.ident))
            self.conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(lock_key("staging:" + self.name)))
            self.conn.commit()
        except psycopg.Error:
            pass  # a dead connection: the next ingest drops the leftover

    # -- checks in SQL -----------------------------------------------------------------------
    def analyze(self) -> None:
        """Statistics, and a key index when the staged keys will be joined with current rows."""
        if has_current_rows(self.conn, self.spec):  # first loads scan staging once: neither index nor statistics pay off
            self.conn.execute(sql.SQL("CREATE INDEX ON {} (_key)").format(self.ident))
            self.conn.execute(sql.SQL("ANALYZE {}").format(self.ident))
        self.conn.commit()

    def duplicate_keys(self, limit: int = 20) -> tuple[int, list[tuple[str, int, list[int]]]]:
        rows = self.conn.execute(sql.SQL(
            "SELECT _key, count(*), (array_agg(_row ORDER BY _row))[1:5] FROM {} GROUP BY _key HAVING count(*) > 1 "
            "ORDER BY min(_row)").format(self.ident)).fetchall()
        total = sum(r[1] - 1 for r in rows)
        return total, [(r[0], r[1], list(r[2])) for r in rows[:limit]]

    def drop_duplicates(self) -> int:
        cur = self.conn.execute(sql.SQL(
            "DELETE FROM {t} s USING {t} f WHERE s._key = f._key AND s._row > f._row").format(t=self.ident))
        self.conn.commit()
        return cur.rowcount

    def area_deviation(self, tolerance: float = AREA_TOLERANCE, limit: int = 20) -> tuple[int, list[dict]]:
        """Stated vs ellipsoidal area on the staged rows: every row of the file, in a dry run and a
        real run alike, so the same file always gets the same report."""
        return area_deviation(self.conn, self.spec, self.ident, sql.SQL("true"), sql.SQL("_area_m2"),
                              tolerance, limit)

    def coverage(self, limit: int = 20) -> dict:
        """Overlaps (pairs whose interiors share > OVERLAP_MIN_M2) and gaps (holes of the union)."""
        n = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.ident)).fetchone()[0]
        if n > COVERAGE_FULL_LIMIT:
            return {"skipped": True, "rows": n,
                    "note": f"coverage check runs up to {COVERAGE_FULL_LIMIT} rows; run `geobase` coverage analysis separately"}
        self.conn.execute(sql.SQL("CREATE INDEX ON {} USING gist (geom)").format(self.ident))
        overlaps = self.conn.execute(sql.SQL("""
            SELECT a._key, b._key, ST_Area(i::geography) AS m2, ST_X(ST_PointOnSurface(i)), ST_Y(ST_PointOnSurface(i))
            FROM {t} a JOIN {t} b ON a._row < b._row AND a.geom && b.geom
                 AND ST_Relate(a.geom, b.geom, '2********')
            CROSS JOIN LATERAL ST_CollectionExtract(ST_Intersection(a.geom, b.geom), 3) AS i
            WHERE NOT ST_IsEmpty(i) AND ST_Area(i::geography) > {minarea}
            ORDER BY m2 DESC
        """).format(t=self.ident, minarea=sql.Literal(OVERLAP_MIN_M2))).fetchall()
        gaps = self.conn.execute(sql.SQL("""
            WITH u AS (SELECT ST_Union(geom) AS g FROM {t}),
                 polys AS (SELECT (ST_Dump(g)).geom AS p FROM u),
                 holes AS (SELECT ST_MakePolygon(ST_InteriorRingN(p, n)) AS h
                           FROM polys CROSS JOIN LATERAL generate_series(1, ST_NumInteriorRings(p)) AS n)
            SELECT ST_Area(h::geography) AS m2, ST_X(ST_PointOnSurface(h)), ST_Y(ST_PointOnSurface(h))
            FROM holes WHERE ST_Area(h::geography) > {minarea} ORDER BY m2 DESC
        """).format(t=self.ident, minarea=sql.Literal(GAP_MIN_M2))).fetchall()
        self.conn.commit()
        return {
            "rows": n,
            "overlaps": len(overlaps),
            "overlap_area_m2": round(sum(r[2] for r in overlaps), 2),
            "overlap_samples": [{"keys": [r[0], r[1]], "area_m2": round(r[2], 2), "at": [round(r[3], 7), round(r[4], 7)]}
                                for r in overlaps[:limit]],
            "gaps": len(gaps),
            "gap_area_m2": round(sum(r[0] for r in gaps), 2),
            "gap_samples": [{"area_m2": round(r[0], 2), "at": [round(r[1], 7), round(r[2], 7)]} for r in gaps[:limit]],
        }

    def existing_keys(self) -> tuple[int, list[str]]:
        """Keys in the file (append mode) that are already current features."""
        rows = self.conn.execute(sql.SQL(
            "SELECT s._key FROM {s} s WHERE EXISTS (SELECT 1 FROM {d} d WHERE {cur} AND d._key = s._key)"
        ).format(s=self.ident, d=table_ident(self.spec), cur=current_filter("d"))).fetchall()
        self.conn.commit()
        return len(rows), [r[0] for r in rows[:20]]

    def drop_keys_existing(self) -> int:
        cur = self.conn.execute(sql.SQL(
            "DELETE FROM {s} s WHERE EXISTS (SELECT 1 FROM {d} d WHERE {cur} AND d._key = s._key)"
        ).format(s=self.ident, d=table_ident(self.spec), cur=current_filter("d")))
        self.conn.commit()
        return cur.rowcount

    def diff(self, mode: str) -> tuple[int, int, int, int]:
        """``(rows_total, added, removed, changed)`` that committing the staged rows in ``mode``
        would report, computed without writing (what a dry run shows)."""
        return preview_version(self.conn, self.spec, self.ident, mode)

    def unknown_keys(self) -> tuple[int, list[str]]:
        """Keys in the file (delete mode) that are not current features."""
        rows = self.conn.execute(sql.SQL(
            "SELECT s._key FROM {s} s WHERE NOT EXISTS (SELECT 1 FROM {d} d WHERE {cur} AND d._key = s._key)"
        ).format(s=self.ident, d=table_ident(self.spec), cur=current_filter("d"))).fetchall()
        self.conn.commit()
        return len(rows), [r[0] for r in rows[:20]]


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

    from psycopg.copy import QueuedLibpqWriter

    from geobase.ingest.copybin import SIGNATURE, TRAILER, rows_payload

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
    """The first load of a layer (its table has never held a row), COPYed straight into the
    versioned table inside the transaction that commits the version.

    Why: staging + ``INSERT ... SELECT`` writes every row twice; for a first load there is
    nothing to diff against, so the rows can go where they end up. Atomicity is the
    transaction's: the layer's advisory lock is taken first, the table's secondary indexes are
    dropped (rebuilt once at the end) and a kill, a refusal or a lost connection rolls all of it
    back. Areas come with the rows (:func:`loaded_measure`); a trigger that lives only inside
    the transaction fills in those the normaliser leaves to the database and a line layer's
    lengths, with the same ``ST_Area/ST_Length(geom::geography)`` as the staging path. Readers of the (empty)
    layer wait for the commit instead of seeing an empty table for the duration of the load."""

    conn: psycopg.Connection
    spec: LayerSpec
    job: str
    version: int = 0
    finished: bool = False

    @property
    def columns(self) -> list[str]:
        return ["_key", "_hash", "_vfrom", *self.spec.attribute_names, "geom", "geom_3857", *loaded_measure(self.spec)]

    @property
    def _trigger_fn(self) -> sql.Identifier:
        return sql.Identifier(STAGING, f"measure_{self.job[:12]}")

    def begin(self) -> bool:
        """Open the version's transaction on an empty layer table; False (nothing held, nothing
        changed) when the table has rows, so the caller uses staging."""
        conn, spec = self.conn, self.spec
        conn.commit()
        lock_layer(conn, spec.name)
        data = table_ident(spec)
        if not conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(data)).fetchone()[0]:
            conn.rollback()
            return False
        self.version = next_version(conn, spec.name)
        drop_secondary_indexes(conn, spec)
        measure = measure_column(spec)
        if measure:  # rows that come without their measure get it from the database
            fn = sql.SQL("ST_Area" if measure == "_area_m2" else "ST_Length")
            m = sql.Identifier(measure)
            conn.execute(sql.SQL(
                "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$BEGIN NEW.{m} := {fn}(NEW.geom::geography); RETURN NEW; END$$").format(f=self._trigger_fn, m=m, fn=fn))
            conn.execute(sql.SQL("CREATE TRIGGER geobase_measure BEFORE INSERT ON {} FOR EACH ROW "
                                 "WHEN (NEW.{} IS NULL) EXECUTE FUNCTION {}()").format(data, m, self._trigger_fn))
        return True

    def copy(self):
        """Binary COPY into the layer table; ``write(fields)`` takes the staging-order fields of
        :meth:`BatchNormalizer.process` (row, key, hash, attrs, geom, geom_3857): the staging row
        number is replaced by the version the rows start in."""
        import pyarrow as pa

        from geobase.ingest.copybin import encode_field

        version = self.version

        def layer_fields(fields: list) -> list:
            _row, key, hsh, *rest = fields
            return [key, hsh, encode_field(pa.array(np.full(len(key), version, dtype=np.int32))), *rest]

        return binary_copy(self.conn, table_ident(self.spec), self.columns, layer_fields)

    def finish(self, rows: int, *, mode: str, version_row: dict, after_insert=None,
               extent: list[float] | None = None) -> CommitResult:
        """Rebuild the indexes and commit the version (the rows are in place already).

        ``extent``: the loaded rows' bounds as the normaliser computed them from the very
        coordinates it wrote (what ``ST_Extent`` over the table returns), saving a table scan."""
        conn, spec = self.conn, self.spec
        if measure_column(spec):
            conn.execute(sql.SQL("DROP TRIGGER geobase_measure ON {}").format(table_ident(spec)))
            conn.execute(sql.SQL("DROP FUNCTION {}()").format(self._trigger_fn))
        ensure_layer_table(conn, spec)
        extent = [float(v) for v in extent] if extent is not None and rows else current_extent(conn, spec)
        if after_insert is not None:
            version_row = {**version_row, "report": after_insert(conn, self.version)}
        insert_version_row(conn, spec.name, self.version, mode=mode, rows_total=rows, added=rows,
                           removed=0, changed=0, extent=extent, **version_row)
        conn.commit()
        self.finished = True
        return CommitResult(self.version, rows, rows, 0, 0, extent)

    def abort(self) -> None:
        """Roll back everything of this load (a no-op after :meth:`finish`)."""
        if self.finished:
            return
        try:
            self.conn.rollback()
        except psycopg.Error:
            pass  # a dead connection: the server rolled back already


def area_deviation(conn: psycopg.Connection, spec: LayerSpec, table: sql.Composable, where: sql.Composable,
                   area_expr: sql.Composable, tolerance: float = AREA_TOLERANCE, limit: int = 20
                   ) -> tuple[int, list[dict]]:
    """Rows whose stated area (spec.stated_area_field, in spec.stated_area_unit) deviates from
    the ellipsoidal area by more than ``tolerance``: count and the worst examples."""
    field = spec.stated_area_field
    if not field or spec.geometry != "MultiPolygon":
        return 0, []
    factor = stated_area_factor(spec.stated_area_unit)
    q = sql.SQL("""
        WITH a AS (SELECT _key, {f}::float8 * {k} AS stated, {area} AS area
                   FROM {t} WHERE {w} AND {f} IS NOT NULL AND {f} > 0)
        SELECT _key, stated, area, count(*) OVER () FROM a
        WHERE abs(area - stated) > {tol} * stated ORDER BY abs(area - stated) / stated DESC LIMIT {lim}
    """).format(f=sql.Identifier(field), k=sql.Literal(factor), area=area_expr, t=table, w=where,
                tol=sql.Literal(tolerance), lim=sql.Literal(limit))
    rows = conn.execute(q).fetchall()
    total = rows[0][3] if rows else 0
    return total, [{"key": r[0], "stated_m2": round(r[1], 2), "ellipsoidal_m2": round(r[2], 2),
                    "deviation": round((r[2] - r[1]) / r[1], 4)} for r in rows]


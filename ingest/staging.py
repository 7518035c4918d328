"""Staging: the delivered rows COPYed into an unlogged table of schema ``staging`` (one per job),
checked there in SQL (duplicate keys, stated areas, coverage, keys a delete or append refers
to) before the core writes them as a version.

The staging connection holds a session advisory lock on the table's name for its lifetime, so a
later ingest can tell a leftover of a killed/crashed ingest (lock free -> drop it) from a live
one (lock held).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from geobase.ingest.area import AREA_TOLERANCE, stated_area_factor
from geobase.ingest.loader import STAGING, binary_copy, loaded_measure
from psycopg import sql

from geobase.catalog.versions import (
    counties_have_current_rows,
    has_current_rows,
    lock_key,
    preview_version,
    staged_divisions,
)
from geobase.specs import LayerSpec
from geobase.storage import (
    DIVISION,
    current_filter,
    division_field,
    division_filter,
    division_values,
    key_collation,
    measure_column,
    table_ident,
)

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
    """One ingest's staging table. Its ``division`` column is each row's county, computed from
    the row's division field by the normaliser's thread as the rows are COPYed (``division``: the
    ingest's ``--division``), see :func:`geobase.storage.division_values` (the same as the SQL
    :func:`~geobase.storage.division_expr`, which a generated column evaluated per row in the COPY
    backend); ``''`` marks a field that names no county."""

    conn: psycopg.Connection
    spec: LayerSpec
    name: str
    division: str | None = None

    @property
    def ident(self) -> sql.Composed:
        return sql.Identifier(STAGING, self.name)

    @property
    def columns(self) -> list[str]:
        return ["_row", "_key", "_hash", DIVISION, *self.spec.attribute_names, "geom", "geom_3857",
                *loaded_measure(self.spec)]

    def create(self) -> None:
        self.conn.execute(sql.SQL("SELECT pg_advisory_lock({})").format(lock_key("staging:" + self.name)))
        # keys in the layer table's collation (byte order unless an old table could not convert),
        # so joins with it can use its key index
        coll = key_collation(self.conn, self.spec) or "C"
        cols = [sql.SQL("_row bigint"), sql.SQL("_key text COLLATE {}").format(sql.Identifier(coll)), sql.SQL("_hash text")]
        for a in self.spec.attributes:
            cols.append(sql.SQL("{} {}").format(sql.Identifier(a.name), sql.SQL(a.pg_type)))
        cols.append(sql.SQL("{} text NOT NULL").format(sql.Identifier(DIVISION)))
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

    def copy(self, values_of: Callable[[], list]):
        """A binary COPY fed a batch at a time (see :func:`binary_copy`): the normaliser's fields
        with each row's county (:func:`~geobase.storage.division_values` of ``values_of()``, the
        batch's attribute values) after the row number, key and hash."""
        import pyarrow as pa

        from geobase.ingest.copybin import encode_field

        field = division_field(self.spec)
        index = self.spec.attribute_names.index(field) if field else None

        def with_county(fields: list) -> list:
            row, key, hsh, *rest = fields
            county = division_values(values_of()[index] if index is not None else None, self.division)
            if isinstance(county, str):  # a layer without a division field: one county for all rows
                county = pa.repeat(pa.scalar(county, pa.string()), len(key))
            return [row, key, hsh, encode_field(county), *rest]
        return binary_copy(self.conn, self.ident, self.columns, with_county)

    def fill_missing_areas(self, missing: int) -> None:
        """Areas of the ``missing`` staged rows the normaliser left to the database (long edges,
        see :mod:`geobase.ingest.area`); no scan of staging when there are none."""
        if missing and loaded_measure(self.spec):
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
        # first loads (of the layer, or of the staged counties) scan staging once: neither index nor statistics pay off
        if has_current_rows(self.conn, self.spec) and counties_have_current_rows(self.conn, self.spec, self.scope()):
            self.conn.execute(sql.SQL("CREATE INDEX ON {} (_key)").format(self.ident))
            self.conn.execute(sql.SQL("ANALYZE {}").format(self.ident))
        self.conn.commit()

    def duplicate_keys(self, limit: int = 20) -> tuple[int, list[tuple[str, int, list[int]]]]:
        rows = self.conn.execute(sql.SQL(
            "SELECT _key, count(*), (array_agg(_row ORDER BY _row))[1:5] FROM {} GROUP BY _key, division "
            "HAVING count(*) > 1 "
            "ORDER BY min(_row)").format(self.ident)).fetchall()
        total = sum(r[1] - 1 for r in rows)
        return total, [(r[0], r[1], list(r[2])) for r in rows[:limit]]

    def drop_duplicates(self) -> int:
        cur = self.conn.execute(sql.SQL(
            "DELETE FROM {t} s USING {t} f WHERE s._key = f._key AND s.division = f.division AND s._row > f._row").format(t=self.ident))
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
            "SELECT s._key FROM {s} s WHERE EXISTS (SELECT 1 FROM {d} d WHERE {cur} "
            "AND {scope} AND d._key = s._key AND d.division = s.division)"
        ).format(s=self.ident, d=table_ident(self.spec), cur=current_filter("d"),
                   scope=self._scope_filter())).fetchall()
        self.conn.commit()
        return len(rows), [r[0] for r in rows[:20]]

    def drop_keys_existing(self) -> int:
        cur = self.conn.execute(sql.SQL(
            "DELETE FROM {s} s WHERE EXISTS (SELECT 1 FROM {d} d WHERE {cur} "
            "AND {scope} AND d._key = s._key AND d.division = s.division)"
        ).format(s=self.ident, d=table_ident(self.spec), cur=current_filter("d"),
                   scope=self._scope_filter()))
        self.conn.commit()
        return cur.rowcount

    def diff(self, mode: str) -> tuple[int, int, int, int]:
        """``(rows_total, added, removed, changed)`` that committing the staged rows in ``mode``
        would report, computed without writing (what a dry run shows)."""
        return preview_version(self.conn, self.spec, self.ident, mode, self.scope())

    def _scope_filter(self) -> sql.Composable:
        """The staged counties' current rows only (literal codes: partitions of other counties,
        on shards too, are pruned and never opened)."""
        return division_filter([d for d in self.scope() if len(d) == 6 and d.isdigit()], "d")

    def scope(self) -> list[str]:
        """The counties of the staged rows, and the ``--division`` named."""
        return sorted(set(staged_divisions(self.conn, self.ident)) | ({self.division} if self.division else set()))

    def division_counts(self) -> dict[str, int]:
        """Staged rows per county (``''``: the division field names no county)."""
        rows = self.conn.execute(sql.SQL("SELECT division, count(*) FROM {} GROUP BY 1").format(self.ident)).fetchall()
        self.conn.commit()
        return {r[0]: r[1] for r in rows}

    def rows_of_division(self, division: str, limit: int = 20) -> list[tuple[int, str, str | None]]:
        """``(row, key, value of the division field)`` of the first staged rows of ``division``."""
        field = division_field(self.spec)
        value = sql.Identifier(field) if field else sql.SQL("NULL")
        rows = self.conn.execute(sql.SQL("SELECT _row, _key, {} FROM {} WHERE division = {} ORDER BY _row LIMIT {}")
                                 .format(value, self.ident, sql.Literal(division), sql.Literal(limit))).fetchall()
        self.conn.commit()
        return [(r[0], r[1], r[2]) for r in rows]

    def drop_division(self, division: str) -> int:
        cur = self.conn.execute(sql.SQL("DELETE FROM {} WHERE division = {}").format(self.ident, sql.Literal(division)))
        self.conn.commit()
        return cur.rowcount

    def unknown_keys(self) -> tuple[int, list[str]]:
        """Keys in the file (delete mode) that are not current features."""
        rows = self.conn.execute(sql.SQL(
            "SELECT s._key FROM {s} s WHERE NOT EXISTS (SELECT 1 FROM {d} d WHERE {cur} "
            "AND {scope} AND d._key = s._key AND d.division = s.division)"
        ).format(s=self.ident, d=table_ident(self.spec), cur=current_filter("d"),
                   scope=self._scope_filter())).fetchall()
        self.conn.commit()
        return len(rows), [r[0] for r in rows[:20]]


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


"""Layer versions: the one version writer, and listing, diffing and rolling back versions.

Every ingest is a version (``catalog.layer_versions``); a row of ``data.<layer>`` is part of
version v when ``_vfrom <= v AND (_vto IS NULL OR _vto > v)`` (geobase/storage.py). Writing a
version is ONE transaction under a per-layer transaction advisory lock: retire changed and
removed rows (``_vto = v``), insert new rows (``_vfrom = v``), insert the ``layer_versions`` row
and set ``catalog.layers.current_version``. Readers see the old version or the new one, never a
mix; a failure or a kill before COMMIT leaves the previous version exactly as it was.

Why here: the ingest pipeline (an adapter: files in), the rollback (a CLI command) and the raster
loader all write versions; each used to do part of it itself, and the core imported the ingest
package upward to roll back. The writer takes the new rows as a table (the ingest's staging
table), so it knows nothing about files.

A diff is a comparison of two row sets by feature key and content hash, and a rollback is a new
version whose rows equal an old version's rows: history only grows, nothing is rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from geobase.db import connect
from geobase.errors import InvalidInput, NotFound
from geobase.settings import Settings
from geobase.specs import LayerSpec, get_registry
from geobase.storage import (
    DATA_SCHEMA,
    as_of_filter,
    current_filter,
    ensure_layer_table,
    measure_column,
    table_ident,
)
from geobase.vocab import INGEST_MODES  # what a new version does with the delivered rows

#: ``after_insert(conn, version)`` -> the report stored with the version (checks on the new rows)
AfterInsert = Callable[[psycopg.Connection, int], dict]


@dataclass
class CommitResult:
    version: int
    rows_total: int
    added: int
    removed: int
    changed: int
    extent: list[float] | None


def lock_key(text: str) -> sql.Composed:
    """An advisory lock key for ``text`` (a layer, a staging table)."""
    return sql.SQL("hashtextextended({}, 0)").format(sql.Literal(text))


def lock_layer(conn: psycopg.Connection, layer: str) -> None:
    """Serialise writers of one layer (transaction-scoped: released at COMMIT/ROLLBACK)."""
    conn.execute(sql.SQL("SELECT pg_advisory_xact_lock({})").format(lock_key("ingest:" + layer)))


def next_version(conn: psycopg.Connection, layer: str) -> int:
    return conn.execute("SELECT coalesce(max(version), 0) + 1 FROM catalog.layer_versions WHERE layer = %s",
                        (layer,)).fetchone()[0]


def insert_version_row(conn: psycopg.Connection, layer: str, version: int, *, mode: str, rows_total: int,
                       added: int, removed: int, changed: int, extent: list[float] | None, source_name: str | None,
                       source_checksum: str | None, source_format: str | None, created_by: str, report: dict,
                       metadata: dict | None = None, restored_from: int | None = None) -> None:
    """The catalog half of a commit; the caller's transaction makes it atomic with the rows."""
    conn.execute(
        """
        INSERT INTO catalog.layer_versions (layer, version, mode, source_name, source_checksum, source_format,
            created_by, rows_total, rows_added, rows_removed, rows_changed, extent, restored_from, report, metadata)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (layer, version, mode, source_name, source_checksum, source_format, created_by, rows_total, added, removed,
         changed, extent, restored_from, json.dumps(report, ensure_ascii=False, default=str),
         json.dumps(metadata or {}, ensure_ascii=False, default=str)),
    )
    conn.execute("UPDATE catalog.layers SET current_version = %s, updated_at = now() WHERE name = %s",
                 (version, layer))


def add_version(conn: psycopg.Connection, layer: str, **version_row) -> int:
    """A new version made of its catalog row only (a raster: the file is the content), in the
    caller's transaction: lock the layer, number the version, record it. Returns its number."""
    lock_layer(conn, layer)
    v = next_version(conn, layer)
    insert_version_row(conn, layer, v, **version_row)
    return v


def has_current_rows(conn: psycopg.Connection, spec: LayerSpec) -> bool:
    return conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(
        table_ident(spec), current_filter())).fetchone()[0]


def drop_secondary_indexes(conn: psycopg.Connection, spec: LayerSpec) -> None:
    """Bulk loads into an empty table build the indexes once, after the rows. An index of
    retired rows only (``WHERE _vto IS NOT NULL``) stays: no loaded row enters it, and
    rebuilding it would scan the whole table for nothing."""
    for (idx,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s "
            "AND indexname NOT LIKE %s AND indexdef NOT LIKE %s",
            (DATA_SCHEMA, spec.name, "%_pkey", "%WHERE (_vto IS NOT NULL)")).fetchall():
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(DATA_SCHEMA, idx)))


def current_extent(conn: psycopg.Connection, spec: LayerSpec) -> list[float] | None:
    ext = conn.execute(sql.SQL(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) AS e FROM {} "
        "WHERE {}) x").format(table_ident(spec), current_filter())).fetchone()
    return [float(x) for x in ext] if ext and ext[0] is not None else None


def _retire_where(mode: str) -> sql.SQL:
    """Which current rows ``d`` a version in ``mode`` retires, given the new rows ``s``."""
    if mode == "replace":
        return sql.SQL("NOT EXISTS (SELECT 1 FROM {s} s WHERE s._key = d._key AND s._hash = d._hash)")
    if mode == "upsert":
        return sql.SQL("EXISTS (SELECT 1 FROM {s} s WHERE s._key = d._key AND s._hash <> d._hash)")
    if mode == "delete":
        return sql.SQL("EXISTS (SELECT 1 FROM {s} s WHERE s._key = d._key)")
    if mode == "append":
        return sql.SQL("false")
    raise InvalidInput(f"--mode: {mode!r} is not one of {', '.join(INGEST_MODES)}", parameter="mode")


def preview_version(conn: psycopg.Connection, spec: LayerSpec, rows: sql.Composable, mode: str
                    ) -> tuple[int, int, int, int]:
    """``(rows_total, added, removed, changed)`` that :func:`write_version` would report for the
    new rows in table ``rows`` in ``mode``, computed without writing (what a dry run shows)."""
    d = table_ident(spec)
    same = sql.SQL("EXISTS (SELECT 1 FROM {s} s WHERE s._key = c._key AND s._hash = c._hash)").format(s=rows)
    in_file = sql.SQL("EXISTS (SELECT 1 FROM {s} s WHERE s._key = c._key)").format(s=rows)
    _retire_where(mode)  # refuses an unknown mode
    retire = {"replace": sql.SQL("NOT {}").format(same),
              "upsert": sql.SQL("{} AND NOT {}").format(in_file, same),
              "delete": in_file, "append": sql.SQL("false")}[mode]
    old, retired, retired_replaced = conn.execute(sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE {r}), count(*) FILTER (WHERE ({r}) AND {f}) "
        "FROM {d} c WHERE {cur}").format(r=retire, f=in_file, d=d, cur=current_filter("c"))).fetchone()
    inserted = 0
    if mode != "delete":  # new rows with no current row of the same key and content
        inserted = conn.execute(sql.SQL(
            "SELECT count(*) FROM {s} s WHERE NOT EXISTS (SELECT 1 FROM {d} c WHERE {cur} "
            "AND c._key = s._key AND c._hash = s._hash)").format(s=rows, d=d, cur=current_filter("c"))).fetchone()[0]
    conn.commit()
    changed = retired_replaced if mode in ("replace", "upsert") else 0
    return old - retired + inserted, inserted - changed, retired - changed, changed


def _insert_new_rows(conn: psycopg.Connection, spec: LayerSpec, rows: sql.Composable, v: int,
                     first_load: bool) -> int:
    """Insert the rows of ``rows`` whose key has no current row (those with the same content
    were kept, the others retired just before) as starting in version ``v``."""
    data = table_ident(spec)
    measure = measure_column(spec)
    measure_expr = sql.SQL("")
    measure_col = sql.SQL("")
    if measure:  # staged with the rows (a generated column of the staging table)
        measure_col = sql.SQL(", {}").format(sql.Identifier(measure))
        measure_expr = sql.SQL(", s.{}").format(sql.Identifier(measure))
    attrs = spec.attribute_names
    attr_cols = sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(a)) for a in attrs)
    attr_sel = sql.SQL("").join(sql.SQL(", s.{}").format(sql.Identifier(a)) for a in attrs)
    cond = sql.SQL("true") if first_load else sql.SQL(
        "NOT EXISTS (SELECT 1 FROM {d} d WHERE {cur} AND d._key = s._key)").format(d=data, cur=current_filter("d"))
    cur = conn.execute(sql.SQL("""
        INSERT INTO {d} (_key, _hash, _vfrom{cols}{mcol}, geom, geom_3857)
        SELECT s._key, s._hash, {v}{sel}{mexpr}, s.geom, s.geom_3857 FROM {s} s
        WHERE {cond}
    """).format(d=data, cols=attr_cols, mcol=measure_col, v=sql.Literal(v), sel=attr_sel, mexpr=measure_expr,
                s=rows, cond=cond))
    return cur.rowcount


def write_version(conn: psycopg.Connection, spec: LayerSpec, rows: sql.Composable, *, mode: str,
                  version_row: dict, after_insert: AfterInsert | None = None) -> CommitResult:
    """Apply the rows of table ``rows`` (columns ``_key, _hash``, the spec's attributes, the
    measure, ``geom, geom_3857``; keys unique) as a new version of the layer in ``mode``, in one
    transaction. ``version_row``: source_name, source_checksum, source_format, created_by,
    report, metadata of the ``layer_versions`` row; ``after_insert`` may replace the report
    after the rows are in (checks that need the inserted rows)."""
    retire_where = _retire_where(mode)
    data = table_ident(spec)
    conn.commit()  # end the checks' read transaction: the block below must be a real transaction, not a savepoint
    with conn.transaction():
        lock_layer(conn, spec.name)
        v = next_version(conn, spec.name)
        old_keys = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
            data, current_filter())).fetchone()[0]
        retired_total, retired_replaced = conn.execute(sql.SQL("""
            WITH r AS (UPDATE {d} d SET _vto = {v} WHERE {cur} AND ({w}) RETURNING d._key)
            SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {s} s WHERE s._key = r._key)) FROM r
        """).format(d=data, v=sql.Literal(v), cur=current_filter("d"), w=retire_where.format(s=rows),
                    s=rows)).fetchone()
        inserted = 0
        first_load = mode != "delete" and conn.execute(
            sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(data)).fetchone()[0]
        if first_load:  # bulk load into an empty table: build the indexes once, after the rows
            drop_secondary_indexes(conn, spec)
        if mode != "delete":
            inserted = _insert_new_rows(conn, spec, rows, v, first_load)
        if first_load:
            ensure_layer_table(conn, spec)  # recreates the indexes (CREATE INDEX IF NOT EXISTS)
        changed = retired_replaced if mode in ("replace", "upsert") else 0
        removed = retired_total - changed
        added = inserted - changed
        total = old_keys - retired_total + inserted
        extent = current_extent(conn, spec)
        if after_insert is not None:  # checks on the rows just inserted (areas are computed once)
            version_row = {**version_row, "report": after_insert(conn, v)}
        insert_version_row(conn, spec.name, v, mode=mode, rows_total=total, added=added, removed=removed,
                           changed=changed, extent=extent, **version_row)
    return CommitResult(v, total, added, removed, changed, extent)


# -- reading, comparing and restoring versions ---------------------------------------------------

def _spec(settings: Settings, layer: str) -> LayerSpec:
    return get_registry(settings).layer(layer)


def _current_version(conn: psycopg.Connection, layer: str) -> int | None:
    row = conn.execute("SELECT current_version FROM catalog.layers WHERE name = %s", (layer,)).fetchone()
    return row[0] if row else None


def list_versions(settings: Settings, layer: str) -> list[dict]:
    _spec(settings, layer)
    with connect(settings) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur_v = _current_version(conn, layer)
        rows = cur.execute(
            """
            SELECT version, mode, source_name, source_checksum, source_format, created_at, created_by, rows_total,
                   rows_added, rows_removed, rows_changed, extent, restored_from,
                   report->'errors' AS errors, report->'warnings' AS warnings, metadata
            FROM catalog.layer_versions WHERE layer = %s ORDER BY version
            """, (layer,)).fetchall()
    for r in rows:
        r["current"] = r["version"] == cur_v
    return rows


def _version_exists(conn: psycopg.Connection, layer: str, version: int, parameter: str) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM catalog.layer_versions WHERE layer = %s AND version = %s",
                          (layer, int(version))).fetchone()
    if row is None:
        raise NotFound(f"layer {layer!r} has no version {version}", parameter=parameter)
    return row


def _class_changes(conn: psycopg.Connection, spec: LayerSpec, f1: sql.Composable, f2: sql.Composable) -> list[dict]:
    """Area (m², ellipsoidal) that moved between classes of ``spec.class_field`` from f1 to f2."""
    rows = conn.execute(sql.SQL("""
        WITH a AS (SELECT {c} AS cls, geom FROM {t} WHERE {f1} AND NOT {f2}),
             b AS (SELECT {c} AS cls, geom FROM {t} WHERE {f2} AND NOT {f1})
        SELECT a.cls, b.cls, sum(ST_Area(ST_Intersection(a.geom, b.geom)::geography))
        FROM a JOIN b ON a.geom && b.geom AND ST_Intersects(a.geom, b.geom)
        WHERE a.cls IS DISTINCT FROM b.cls
        GROUP BY 1, 2 HAVING sum(ST_Area(ST_Intersection(a.geom, b.geom)::geography)) > 0.01
        ORDER BY 3 DESC
    """).format(c=sql.Identifier(spec.class_field), t=table_ident(spec), f1=f1, f2=f2)).fetchall()
    return [{"from": r[0], "to": r[1], "area_m2": round(float(r[2]), 2)} for r in rows]


def diff(settings: Settings, layer: str, v1: int, v2: int) -> dict:
    """Added/removed/changed feature counts from v1 to v2 and, for a classified polygon layer,
    the area (m², ellipsoidal) that moved between classes (e.g. land use ``dlbm``)."""
    spec = _spec(settings, layer)
    with connect(settings) as conn:
        a = _version_exists(conn, layer, v1, "v1")
        b = _version_exists(conn, layer, v2, "v2")
        if spec.kind == "raster":
            a, b = a["metadata"], b["metadata"]
            return {"layer": layer, "v1": v1, "v2": v2, "kind": "raster",
                    "changed": a.get("path") != b.get("path"),
                    "v1_metadata": a, "v2_metadata": b}
        f1, f2 = as_of_filter(v1), as_of_filter(v2)
        counts = conn.execute(sql.SQL("""
            WITH a AS (SELECT _key, _hash FROM {t} WHERE {f1}), b AS (SELECT _key, _hash FROM {t} WHERE {f2})
            SELECT count(*) FILTER (WHERE a._key IS NULL), count(*) FILTER (WHERE b._key IS NULL),
                   count(*) FILTER (WHERE a._key IS NOT NULL AND b._key IS NOT NULL AND a._hash <> b._hash),
                   count(*) FILTER (WHERE a._hash = b._hash)
            FROM a FULL JOIN b ON a._key = b._key
        """).format(t=table_ident(spec), f1=f1, f2=f2)).fetchone()
        out = {"layer": layer, "v1": v1, "v2": v2, "added": counts[0], "removed": counts[1], "changed": counts[2],
               "unchanged": counts[3]}
        if spec.class_field and spec.geometry == "MultiPolygon":
            out["class_field"] = spec.class_field
            out["class_changes"] = _class_changes(conn, spec, f1, f2)
        return out


def _restore_rows(conn: psycopg.Connection, spec: LayerSpec, version: int, v: int) -> tuple[int, int, int, int]:
    """Make the rows of ``version`` current again as version ``v``: ``(total, added, removed,
    changed)``. Keys present now and in the target with the same content stay untouched."""
    t = table_ident(spec)
    fv = as_of_filter(version)
    measure = measure_column(spec)
    cols = ["_key", "_hash", *spec.attribute_names, *([measure] if measure else []), "geom", "geom_3857"]
    retired = conn.execute(sql.SQL("""
        WITH r AS (UPDATE {t} d SET _vto = {v} WHERE {cur} AND NOT {fv} RETURNING _key)
        SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {t} o WHERE {fv} AND o._key = r._key))
        FROM r
    """).format(t=t, v=sql.Literal(v), fv=fv, cur=current_filter("d"))).fetchone()
    inserted = conn.execute(sql.SQL("""
        INSERT INTO {t} (_vfrom, {cols}) SELECT {v}, {cols} FROM {t} WHERE {fv} AND _vto IS NOT NULL
          AND _vto <> {v}
    """).format(t=t, v=sql.Literal(v), fv=fv, cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols))).rowcount
    changed = retired[1]
    total = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(t, current_filter())).fetchone()[0]
    return total, inserted - changed, retired[0] - changed, changed


def rollback(settings: Settings, layer: str, version: int, *, user: str = "cli") -> dict:
    """Make a new version whose content equals ``version`` (one transaction, per-layer lock)."""
    spec = _spec(settings, layer)
    with connect(settings) as conn, conn.transaction():
        lock_layer(conn, layer)
        old = _version_exists(conn, layer, version, "version")
        if _current_version(conn, layer) == version:
            raise InvalidInput(f"version {version} of {layer!r} is already the current version",
                               parameter="version")
        v = next_version(conn, layer)
        row = {"extent": old["extent"], "source_name": old["source_name"],
               "source_checksum": old["source_checksum"], "source_format": old["source_format"],
               "created_by": user, "report": {"rollback_of": version, "errors": {}, "warnings": {}},
               "metadata": old["metadata"] or {}, "restored_from": version}
        if spec.kind == "raster":
            insert_version_row(conn, layer, v, mode="rollback", rows_total=old["rows_total"], added=0, removed=0,
                               changed=1, **row)
            return {"layer": layer, "version": v, "restored_from": version}
        total, added, removed, changed = _restore_rows(conn, spec, version, v)
        insert_version_row(conn, layer, v, mode="rollback", rows_total=total, added=added, removed=removed,
                           changed=changed, **row)
    return {"layer": layer, "version": v, "restored_from": version, "rows_total": total, "added": added,
            "removed": removed, "changed": changed}


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2, default=str)

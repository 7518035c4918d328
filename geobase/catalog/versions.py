"""Layer versions: the one version writer (listing, diffing and rolling back: geobase/catalog/history.py).

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

Counties: a version changes the partitions of the counties it is for (:func:`version_scope`)
and no other county's rows; a county new to the layer gets its partition built beside the layer
table and attached (geobase/partitions.py), an existing county's partition is written in place,
its rows selected by a literal county filter so that the statement opens that partition only.
The version row names the counties (``touched``) and carries every county's rows and extent
forward (geobase/catalog/divisions.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from geobase.catalog import indicators as indicator_queue
from geobase.catalog.divisions import Divisions, carry_forward, current_divisions, dumps, totals
from geobase.errors import InvalidInput
from geobase.partitions import attach, create_beside, partition_divisions
from geobase.specs import LayerSpec
from geobase.storage import (
    UNASSIGNED,
    current_filter,
    division_filter,
    measure_column,
    partition_name,
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
                       metadata: dict | None = None, restored_from: int | None = None,
                       touched: list[str] | None = None, divisions: Divisions | None = None) -> None:
    """The catalog half of a commit; the caller's transaction makes it atomic with the rows.
    ``touched``: the counties the version changed; ``divisions``: every current county's rows
    and extent (geobase/catalog/divisions.py)."""
    conn.execute(
        """
        INSERT INTO catalog.layer_versions (layer, version, mode, source_name, source_checksum, source_format,
            created_by, rows_total, rows_added, rows_removed, rows_changed, extent, restored_from, report, metadata,
            touched, divisions)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (layer, version, mode, source_name, source_checksum, source_format, created_by, rows_total, added, removed,
         changed, extent, restored_from, json.dumps(report, ensure_ascii=False, default=str),
         json.dumps(metadata or {}, ensure_ascii=False, default=str), touched, dumps(divisions)),
    )
    conn.execute("UPDATE catalog.layers SET current_version = %s, updated_at = now() WHERE name = %s",
                 (version, layer))
    indicator_queue.version_published(conn, layer, version)  # the indicators recompute it (a job, later)


def add_version(conn: psycopg.Connection, layer: str, **version_row) -> int:
    """A new version made of its catalog row only (a raster: the file is the content), in the
    caller's transaction: lock the layer, number the version, record it. Returns its number."""
    lock_layer(conn, layer)
    v = next_version(conn, layer)
    insert_version_row(conn, layer, v, **version_row)
    return v


def has_current_rows(conn: psycopg.Connection, spec: LayerSpec) -> bool:
    if current_divisions(conn, spec.name):  # the catalog's per-county counts: no partition (nor shard) is read
        return True
    return conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(
        table_ident(spec), current_filter())).fetchone()[0]


def counties_have_current_rows(conn: psycopg.Connection, spec: LayerSpec, divisions: list[str]) -> bool:
    """Whether any of these counties has current rows: a county's first delivery into a province
    is a first load (what its ingest does with the staged rows: no key index, no statistics)
    however many other counties the layer holds. From the catalog's per-county counts; only the
    counties' partitions are read when the current version predates them."""
    divisions = [d for d in divisions if len(d) == 6 and d.isdigit()]
    if not divisions:
        return False
    known = current_divisions(conn, spec.name)
    if known is not None:
        return any(known.get(d, {}).get("rows") for d in divisions)
    return conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {} AND {})").format(
        table_ident(spec), current_filter(), division_filter(divisions))).fetchone()[0]


def staged_divisions(conn: psycopg.Connection, rows: sql.Composable) -> list[str]:
    """The counties of the new rows in table ``rows`` (its ``division`` column)."""
    return [r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT division FROM {}").format(rows)).fetchall()]


def version_scope(conn: psycopg.Connection, rows: sql.Composable, divisions: list[str] | None) -> list[str]:
    """The counties a version of the rows in ``rows`` is for: those of its rows and those named
    (an ingest's ``--division``); :data:`~geobase.storage.UNASSIGNED` for an empty, unnamed one.
    A replace retires the current rows of these counties that it does not deliver again, and
    no row of any other county."""
    scope = set(divisions or ()) | set(staged_divisions(conn, rows))
    return sorted(scope or {UNASSIGNED})


def _retire_where(mode: str) -> sql.SQL:
    """Which current rows ``d`` a version in ``mode`` retires, given the new rows ``s``."""
    same_key = "s._key = d._key AND s.division = d.division"
    if mode == "replace":
        return sql.SQL("NOT EXISTS (SELECT 1 FROM {s} s WHERE " + same_key + " AND s._hash = d._hash)")
    if mode == "upsert":
        return sql.SQL("EXISTS (SELECT 1 FROM {s} s WHERE " + same_key + " AND s._hash <> d._hash)")
    if mode == "delete":
        return sql.SQL("EXISTS (SELECT 1 FROM {s} s WHERE " + same_key + ")")
    if mode == "append":
        return sql.SQL("false")
    raise InvalidInput(f"--mode: {mode!r} is not one of {', '.join(INGEST_MODES)}", parameter="mode")


def preview_version(conn: psycopg.Connection, spec: LayerSpec, rows: sql.Composable, mode: str,
                    divisions: list[str] | None = None) -> tuple[int, int, int, int]:
    """``(rows_total, added, removed, changed)`` that :func:`write_version` would report for the
    new rows in table ``rows`` in ``mode``, computed without writing (what a dry run shows)."""
    d = table_ident(spec)
    _retire_where(mode)  # refuses an unknown mode
    scope = version_scope(conn, rows, divisions)
    in_scope = division_filter(scope, "c")
    same = sql.SQL("EXISTS (SELECT 1 FROM {s} s WHERE s._key = c._key AND s.division = c.division "
                   "AND s._hash = c._hash)").format(s=rows)
    in_file = sql.SQL("EXISTS (SELECT 1 FROM {s} s WHERE s._key = c._key AND s.division = c.division)").format(s=rows)
    retire = {"replace": sql.SQL("NOT {}").format(same),
              "upsert": sql.SQL("{} AND NOT {}").format(in_file, same),
              "delete": in_file, "append": sql.SQL("false")}[mode]
    old, retired, retired_replaced = conn.execute(sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE {r}), count(*) FILTER (WHERE ({r}) AND {f}) "
        "FROM {d} c WHERE {cur} AND {scope}").format(r=retire, f=in_file, d=d, cur=current_filter("c"),
                                                     scope=in_scope)).fetchone()
    others = conn.execute(sql.SQL("SELECT count(*) FROM {d} c WHERE {cur} AND NOT {scope}").format(
        d=d, cur=current_filter("c"), scope=in_scope)).fetchone()[0]
    inserted = 0
    if mode != "delete":  # new rows with no current row of the same key and content
        inserted = conn.execute(sql.SQL(
            "SELECT count(*) FROM {s} s WHERE NOT EXISTS (SELECT 1 FROM {d} c WHERE {cur} AND {scope} "
            "AND c._key = s._key AND c.division = s.division AND c._hash = s._hash)").format(
            s=rows, d=d, cur=current_filter("c"), scope=in_scope)).fetchone()[0]
    conn.commit()
    changed = retired_replaced if mode in ("replace", "upsert") else 0
    return others + old - retired + inserted, inserted - changed, retired - changed, changed


def _insert_into(conn: psycopg.Connection, spec: LayerSpec, rows: sql.Composable, v: int, target: sql.Composable,
                 cond: sql.Composable) -> int:
    """INSERT the rows of ``rows`` that meet ``cond`` into ``target`` as starting in version ``v``."""
    measure = measure_column(spec)
    cols = ["_key", "_hash", "division", *spec.attribute_names, *([measure] if measure else []), "geom", "geom_3857"]
    cur = conn.execute(sql.SQL("INSERT INTO {d} (_vfrom, {cols}) SELECT {v}, {sel} FROM {s} s WHERE {cond}").format(
        d=target, cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols), v=sql.Literal(v),
        sel=sql.SQL(", ").join(sql.Identifier("s", c) for c in cols), s=rows, cond=cond))
    return cur.rowcount


def _insert_new_rows(conn: psycopg.Connection, spec: LayerSpec, rows: sql.Composable, v: int,
                     live: list[str], new: list[str]) -> int:
    """Insert the rows of ``rows`` whose key has no current row in their county (those with the
    same content were kept, the others retired just before) as starting in version ``v``.
    Counties without a partition yet (``new``) get theirs built beside the layer table, filled,
    then attached (indexes built once, after the rows)."""
    n = 0
    for division in new:
        name = partition_name(spec, division)
        n += _insert_into(conn, spec, rows, v, create_beside(conn, spec, name),
                          sql.SQL("s.division = {}").format(sql.Literal(division)))
        attach(conn, spec, name, division)
    if live:
        data = table_ident(spec)
        cond = sql.SQL("{scope} AND NOT EXISTS (SELECT 1 FROM {d} d WHERE {dscope} AND {cur} AND d._key = s._key "
                       "AND d.division = s.division)").format(
            scope=division_filter(live, "s"), d=data, dscope=division_filter(live, "d"), cur=current_filter("d"))
        n += _insert_into(conn, spec, rows, v, data, cond)
    return n


def write_version(conn: psycopg.Connection, spec: LayerSpec, rows: sql.Composable, *, mode: str,
                  version_row: dict, after_insert: AfterInsert | None = None,
                  divisions: list[str] | None = None) -> CommitResult:
    """Apply the rows of table ``rows`` (columns ``_key, _hash, division``, the spec's attributes,
    the measure, ``geom, geom_3857``; keys unique per county) as a new version of the layer in
    ``mode``, in one transaction, changing the counties of :func:`version_scope` only (their
    partitions; a county new to the layer gets its partition built beside and attached).
    ``version_row``: source_name, source_checksum, source_format, created_by, report, metadata
    of the ``layer_versions`` row; ``after_insert`` may replace the report after the rows are in
    (checks that need the inserted rows)."""
    retire_where = _retire_where(mode)
    data = table_ident(spec)
    conn.commit()  # end the checks' read transaction: the block below must be a real transaction, not a savepoint
    with conn.transaction():
        lock_layer(conn, spec.name)
        v = next_version(conn, spec.name)
        scope = version_scope(conn, rows, divisions)
        existing = set(partition_divisions(conn, spec))
        live = [d for d in scope if d in existing]
        retired_total = retired_replaced = 0
        if live:
            retired_total, retired_replaced = conn.execute(sql.SQL("""
                WITH r AS (UPDATE {d} d SET _vto = {v} WHERE {scope} AND {cur} AND ({w}) RETURNING d._key, d.division)
                SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {s} s WHERE s._key = r._key
                                                               AND s.division = r.division)) FROM r
            """).format(d=data, v=sql.Literal(v), scope=division_filter(live, "d"), cur=current_filter("d"),
                        w=retire_where.format(s=rows), s=rows)).fetchone()
        inserted = 0
        if mode != "delete":
            inserted = _insert_new_rows(conn, spec, rows, v, live, [d for d in scope if d not in existing])
        changed = retired_replaced if mode in ("replace", "upsert") else 0
        divs = carry_forward(conn, spec, scope)
        total, extent = totals(divs)
        if after_insert is not None:  # checks on the rows just inserted (areas are computed once)
            version_row = {**version_row, "report": after_insert(conn, v)}
        insert_version_row(conn, spec.name, v, mode=mode, rows_total=total, added=inserted - changed,
                           removed=retired_total - changed, changed=changed, extent=extent, touched=scope,
                           divisions=divs, **version_row)
    return CommitResult(v, total, inserted - changed, retired_total - changed, changed, extent)

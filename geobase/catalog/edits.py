"""Edit sessions and the version an edit session commits: the SQL of :mod:`geobase.editing`.

A session (``catalog.edit_sessions``) collects the staged state of every feature it touched
(``catalog.edit_changes``: ``upsert`` with attributes as JSON and the geometry in EPSG:4490, or
``delete``) and the content hash the feature had when the session first touched it
(``base_hash``; NULL: the feature did not exist). Committing writes ONE layer version in the
caller's transaction under the layer's writer lock (:func:`geobase.catalog.versions.lock_layer`,
the lock every ingest and rollback takes): every staged feature whose current hash is no longer
its ``base_hash`` is a conflict (someone changed it since: 412, nothing written); otherwise the
touched current rows are retired and the staged rows inserted with ``_vfrom`` = the new version,
so diff, change feed, rollback and time travel treat the version like an ingest's.

Why the inserted columns are read from the table: a layer table may carry columns the spec does
not list (e.g. a partition key such as a division code). Such a column keeps the value of the
feature's retired row; a new feature takes it from the current feature its point-on-surface
falls in (its neighbour, e.g. in the same county), else NULL.
"""

from __future__ import annotations

import json

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from geobase.catalog.divisions import Divisions, carry_forward, current_divisions
from geobase.catalog.versions import CommitResult, insert_version_row, lock_layer, next_version
from geobase.errors import PreconditionFailed
from geobase.specs import LayerSpec
from geobase.features.ids import FeatureRef
from geobase.storage import (DIVISION, UNASSIGNED, current_filter, division_field, division_filter, shared_key_conflict,
                             table_ident)

_SESSION_COLS = "id::text AS id, layer, status, created_by, key_id, department, created_at, finished_at, message, version"


def open_session(conn: psycopg.Connection, sid: str, layer: str, *, created_by: str, key_id: str | None,
                 department: str | None) -> None:
    conn.execute("INSERT INTO catalog.edit_sessions (id, layer, created_by, key_id, department) "
                 "VALUES (%s, %s, %s, %s, %s)", (sid, layer, created_by, key_id, department))


def session_row(conn: psycopg.Connection, sid: str, *, lock: bool = False) -> dict | None:
    """The session (``lock``: FOR UPDATE, so two commits or a commit and a change serialise)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {_SESSION_COLS}, (SELECT count(*) FROM catalog.edit_changes c "
                           "WHERE c.session_id = s.id) AS changes FROM catalog.edit_sessions s WHERE id = %s"
                           + (" FOR UPDATE" if lock else ""), (sid,)).fetchone()


def finish_session(conn: psycopg.Connection, sid: str, status: str, *, message: str | None = None,
                   version: int | None = None) -> None:
    conn.execute("UPDATE catalog.edit_sessions SET status = %s, message = coalesce(%s, message), version = %s, "
                 "finished_at = now() WHERE id = %s", (status, message, version, sid))


def staged_change(conn: psycopg.Connection, sid: str, key: str) -> dict | None:
    """The session's staged state of feature ``key`` (geometry as EWKB; its county, if known),
    None if untouched. A session stages one feature per key (:func:`geobase.editing.service.seen`)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT key, op, base_hash, hash, attributes, ST_AsEWKB(geom) AS geom, division "
                           "FROM catalog.edit_changes WHERE session_id = %s AND key = %s", (sid, key)).fetchone()


def session_changes(conn: psycopg.Connection, sid: str) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT key, division, op, seq, base_hash, hash FROM catalog.edit_changes "
                           "WHERE session_id = %s "
                           "ORDER BY seq", (sid,)).fetchall()


def stage_change(conn: psycopg.Connection, sid: str, key: str, *, op: str, base_hash: str | None,
                 new_hash: str | None, attributes: dict | None, ewkb: bytes | None, division: str | None = None
                 ) -> None:
    """Record the staged state of ``key`` (of county ``division``: None for a new feature whose
    county the commit derives); a later change of the same feature replaces it but keeps the
    ``base_hash`` and county of the session's first touch (what the commit checks against)."""
    conn.execute(
        """INSERT INTO catalog.edit_changes (session_id, key, seq, op, base_hash, hash, attributes, geom, division)
           VALUES (%s, %s, (SELECT coalesce(max(seq), 0) + 1 FROM catalog.edit_changes WHERE session_id = %s),
                   %s, %s, %s, %s, ST_GeomFromEWKB(%s), %s)
           ON CONFLICT (session_id, key) DO UPDATE SET seq = EXCLUDED.seq, op = EXCLUDED.op, hash = EXCLUDED.hash,
               attributes = EXCLUDED.attributes, geom = EXCLUDED.geom,
               division = coalesce(catalog.edit_changes.division, EXCLUDED.division)""",
        (sid, key, sid, op, base_hash, new_hash,
         json.dumps(attributes, ensure_ascii=False) if attributes is not None else None, ewkb, division))


def current_feature(conn: psycopg.Connection, spec: LayerSpec, key: str, division: str | None = None
                    ) -> dict | None:
    """The current row of feature ``key`` of county ``division``: ``_hash``, the spec's
    attributes, ``geom`` as EWKB, ``_division``. Without a county, a key current in two counties
    is refused: an edit by it would pick one county's feature."""
    cols = sql.SQL(", ").join(sql.Identifier(a) for a in spec.attribute_names)
    county = division_filter(division) if division is not None else sql.SQL("TRUE")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql.SQL("SELECT _hash, {c}, ST_AsEWKB(geom) AS geom, division AS _division FROM {t} "
                                   "WHERE {cur} AND {county} AND _key = %s LIMIT 2")
                           .format(c=cols, t=table_ident(spec), cur=current_filter(), county=county),
                           (key,)).fetchall()
    if len(rows) > 1:
        raise shared_key_conflict(spec.name, key, [r["_division"] for r in rows])
    return rows[0] if rows else None


def refuse_shared_keys(conn: psycopg.Connection, spec: LayerSpec, sid: str) -> None:
    """At commit, no change of the session without a county may name a key current in two
    counties (one may have arrived by an ingest after the change was staged); then each such
    change gets the county of the one current row of its key, if any: from here on every
    change names its row by key and county, and the commit, its checks and the coverage match
    rows by both (a change still without a county names no current row)."""
    row = conn.execute(sql.SQL(
        "SELECT d._key, array_agg(DISTINCT d.division) FROM {t} d WHERE {cur} AND d._key IN "
        "(SELECT key FROM catalog.edit_changes WHERE session_id = %s AND division IS NULL) GROUP BY d._key "
        "HAVING count(DISTINCT d.division) > 1 LIMIT 1").format(t=table_ident(spec), cur=current_filter("d")),
        (sid,)).fetchone()
    if row is not None:
        raise shared_key_conflict(spec.name, row[0], row[1])
    conn.execute(sql.SQL(
        "UPDATE catalog.edit_changes c SET division = d.division FROM {t} d WHERE c.session_id = %s "
        "AND c.division IS NULL AND {cur} AND d._key = c.key").format(t=table_ident(spec), cur=current_filter("d")),
        (sid,))


#: the columns an edit computes itself (the others are carried, see the module docstring)
_COMPUTED = ("_key", "_hash", "_vfrom", "_vto", "geom", "geom_3857", "_area_m2", "_length_m")


def _table_columns(conn: psycopg.Connection, spec: LayerSpec) -> list[str]:
    """The layer table's columns an edit writes, in table order: not identity or generated ones,
    nor one with a default (a row id from a sequence) unless the edit computes it."""
    rows = conn.execute(
        "SELECT attname, atthasdef FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped AND attidentity = '' AND attgenerated = '' ORDER BY attnum",
        (f'data."{spec.name}"',)).fetchall()
    known = set(_COMPUTED) | set(spec.attribute_names) | {DIVISION}
    return [name for name, has_default in rows if name in known or (not has_default and name != "_rid")]


def _value_of(column: str, spec: LayerSpec, v: int) -> sql.Composable:
    """The SQL for ``column`` of a row inserted from staged change ``c`` in version ``v``."""
    t = table_ident(spec)
    attrs = {a.name: a.pg_type for a in spec.attributes}
    fixed = {"_key": sql.SQL("c.key"), "_hash": sql.SQL("c.hash"), "_vfrom": sql.Literal(v),
             "_vto": sql.SQL("NULL::integer"), "geom": sql.SQL("c.geom"),
             "geom_3857": sql.SQL("ST_Transform(c.geom, 3857)"),
             "_area_m2": sql.SQL("ST_Area(c.geom::geography)"), "_length_m": sql.SQL("ST_Length(c.geom::geography)")}
    if column in fixed:
        return fixed[column]
    if column in attrs:
        return sql.SQL("(c.attributes ->> {})::{}").format(sql.Literal(column), sql.SQL(attrs[column]))
    col = sql.Identifier(column)
    if column == DIVISION:  # the county partition: from the row's own division field as an ingest
        # derives it, else the county of the row it replaces, else of the feature it lies in
        field = division_field(spec)
        own = sql.SQL("CASE WHEN left(c.attributes ->> {f}, 6) ~ '^[0-9]{{6}}$' THEN left(c.attributes ->> {f}, 6) END, ").format(
            f=sql.Literal(field)) if field else sql.SQL("")
        return sql.SQL("coalesce({own}(SELECT o.{col} FROM {t} o WHERE o._key = c.key AND o.division = c.division "
                       "AND o._vto = {v} LIMIT 1), (SELECT n.{col} FROM {t} n WHERE {cur} "
                       "AND ST_Intersects(n.geom, ST_PointOnSurface(c.geom)) "
                       "LIMIT 1), {u})").format(own=own, col=col, t=t, v=sql.Literal(v), cur=current_filter("n"),
                                                 u=sql.Literal(UNASSIGNED))
    return sql.SQL("coalesce((SELECT o.{col} FROM {t} o WHERE o._key = c.key AND o.division = c.division "
                   "AND o._vto = {v} LIMIT 1), "
                   "(SELECT n.{col} FROM {t} n WHERE {cur} AND ST_Intersects(n.geom, ST_PointOnSurface(c.geom)) "
                   "LIMIT 1))").format(col=col, t=t, v=sql.Literal(v), cur=current_filter("n"))


def check_bases(conn: psycopg.Connection, spec: LayerSpec, sid: str) -> None:
    """412 when a staged feature changed since the session first touched it (a lost update)."""
    stale = conn.execute(sql.SQL(
        "SELECT c.key FROM catalog.edit_changes c "
        "LEFT JOIN {t} d ON d._key = c.key AND d.division = c.division AND {cur} "
        "WHERE c.session_id = %s AND d._hash IS DISTINCT FROM c.base_hash ORDER BY c.seq LIMIT 10").format(
        t=table_ident(spec), cur=current_filter("d")), (sid,)).fetchall()
    if stale:
        keys = [r[0] for r in stale]
        raise PreconditionFailed(f"features changed by someone else since this session edited them: "
                                 f"{', '.join(keys)}; nothing was committed (reload them and edit again)",
                                 details={"features": keys})


def write_edit_version(conn: psycopg.Connection, spec: LayerSpec, sid: str, *, created_by: str,
                       message: str) -> CommitResult:
    """Commit session ``sid`` as one new version of ``spec`` in the caller's transaction, which
    holds the layer's lock and has run :func:`refuse_shared_keys` (before the coverage check):
    every change names its row by key and county, and the rows are retired by both."""
    lock_layer(conn, spec.name)
    check_bases(conn, spec, sid)
    t = table_ident(spec)
    v = next_version(conn, spec.name)
    retired_in = conn.execute(sql.SQL(
        "WITH r AS (UPDATE {t} d SET _vto = {v} WHERE {cur} AND (d._key, d.division) IN "
        "(SELECT key, division FROM catalog.edit_changes WHERE session_id = %s) RETURNING d.division) "
        "SELECT division, count(*) FROM r GROUP BY division").format(
        t=t, v=sql.Literal(v), cur=current_filter("d")), (sid,)).fetchall()
    retired = sum(n for _, n in retired_in)
    cols = _table_columns(conn, spec)
    inserted_in = conn.execute(sql.SQL(
        "WITH i AS (INSERT INTO {t} ({cols}) SELECT {vals} FROM catalog.edit_changes c WHERE c.session_id = %s "
        "AND c.op = 'upsert' ORDER BY c.seq RETURNING division, geom) SELECT division, n, ST_XMin(e), ST_YMin(e), "
        "ST_XMax(e), ST_YMax(e) FROM (SELECT division, count(*) AS n, ST_Extent(geom) AS e FROM i GROUP BY division) x").format(
        t=t, cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        vals=sql.SQL(", ").join(_value_of(c, spec, v) for c in cols)), (sid,)).fetchall()
    inserted = sum(n for _, n, *_ in inserted_in)
    # the counties this version changed, and every county's rows and extent carried forward
    # (geobase/catalog/divisions.py), as an ingest's version records them
    touched = sorted({d for d, _ in retired_in} | {d for d, *_ in inserted_in})
    fresh = _grown_divisions(conn, spec, retired_in, inserted_in)
    changed = conn.execute(sql.SQL(
        "SELECT count(*) FROM catalog.edit_changes WHERE session_id = %s AND op = 'upsert' AND base_hash IS NOT NULL"),
        (sid,)).fetchone()[0]
    prev = conn.execute("SELECT rows_total, extent FROM catalog.layer_versions WHERE layer = %s AND version = "
                        "(SELECT current_version FROM catalog.layers WHERE name = %s)",
                        (spec.name, spec.name)).fetchone()
    total = (prev[0] if prev else 0) - retired + inserted
    extent = _extent(conn, sid, prev[1] if prev else None)
    added, removed = inserted - changed, retired - changed
    insert_version_row(conn, spec.name, v, mode="edit", rows_total=total, added=added, removed=removed,
                       changed=changed, extent=extent, source_name=None, source_checksum=None, source_format="edit",
                       created_by=created_by, report={"session": sid, "message": message, "errors": {},
                                                      "warnings": {}},
                       metadata={"edit_session": sid, "message": message},
                       touched=touched, divisions=carry_forward(conn, spec, touched, fresh))
    finish_session(conn, sid, "committed", message=message, version=v)
    return CommitResult(v, total, added, removed, changed, extent)


def _grown_divisions(conn: psycopg.Connection, spec: LayerSpec, retired_in: list, inserted_in: list) -> Divisions | None:
    """The touched counties' rows and extents: the current version's, changed by what this version
    retired and inserted (an extent grows, never shrinks, as the layer's does) instead of counting
    the county's partition again: a one-parcel edit must not read a million rows. None (count
    them) when the current version has no per-county map."""
    prev = current_divisions(conn, spec.name)
    if not prev:
        return None
    fresh: Divisions = {}
    for d in {d for d, _ in retired_in} | {d for d, *_ in inserted_in}:
        p = prev.get(d) or {"rows": 0, "extent": None}
        fresh[d] = {"rows": int(p["rows"]), "extent": list(p["extent"]) if p.get("extent") else None}
    for d, n in retired_in:
        fresh[d]["rows"] -= n
    for d, n, *box in inserted_in:
        fresh[d]["rows"] += n
        e = fresh[d]["extent"]
        if box[0] is not None:
            fresh[d]["extent"] = [float(x) for x in box] if e is None else [
                min(e[0], box[0]), min(e[1], box[1]), max(e[2], box[2]), max(e[3], box[3])]
    return None if any(v["rows"] < 0 for v in fresh.values()) else fresh


def _extent(conn: psycopg.Connection, sid: str, previous: list[float] | None) -> list[float] | None:
    """The previous version's extent grown by the staged geometries (an extent never shrinks on
    an edit: a deleted edge feature leaves the box a little large, which no reader relies on)."""
    box = conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) AS e "
                       "FROM catalog.edit_changes WHERE session_id = %s AND op = 'upsert') x", (sid,)).fetchone()
    parts = [list(previous)] if previous else []
    if box and box[0] is not None:
        parts.append([float(x) for x in box])
    if not parts:
        return None
    return [min(p[0] for p in parts), min(p[1] for p in parts), max(p[2] for p in parts), max(p[3] for p in parts)]


async def feature_history(conn: psycopg.AsyncConnection, spec: LayerSpec, ref: FeatureRef,
                          columns: list[str]) -> list[dict]:
    """Every stored state of feature ``ref`` (its key in its county), oldest first: the version
    that made it (when, by whom, why) and the one that ended it, its content hash and the
    attributes in ``columns``."""
    props = sql.SQL(", ").join(sql.SQL("{}, r.{}").format(sql.Literal(c), sql.Identifier(c)) for c in columns)
    q = sql.SQL("""
        SELECT r._vfrom, r._vto, r._hash, jsonb_build_object({props}), r.division,
               f.created_at, f.created_by, f.mode, coalesce(f.metadata->>'message', f.source_name),
               t.created_at, t.created_by, t.mode, coalesce(t.metadata->>'message', t.source_name),
               EXISTS (SELECT 1 FROM {t} n WHERE n._key = r._key AND n.division = r.division AND n._vfrom = r._vto)
        FROM {t} r JOIN catalog.layer_versions f ON f.layer = %(layer)s AND f.version = r._vfrom
        LEFT JOIN catalog.layer_versions t ON t.layer = %(layer)s AND t.version = r._vto
        WHERE r._key = %(key)s AND {county} ORDER BY r._vfrom LIMIT 1000""").format(
        props=props if columns else sql.SQL(""), t=table_ident(spec), county=division_filter(ref.division, "r"))
    cur = await conn.execute(q, {"layer": spec.name, "key": ref.key})
    out = []
    for vfrom, vto, h, attrs, div, at, by, mode, why, t_at, t_by, t_mode, t_why, replaced in await cur.fetchall():
        out.append({"version": vfrom, "until": vto, "etag": f'"{h}"', "at": at, "by": by, "mode": mode,
                    "reason": why, "division": div, "properties": attrs})
        if vto is not None and not replaced:
            out.append({"version": vto, "until": None, "deleted": True, "at": t_at, "by": t_by, "mode": t_mode,
                        "reason": t_why, "division": div})
    return out


async def versions_since(conn: psycopg.AsyncConnection, layer: str, after: int, limit: int = 100) -> list[dict]:
    """The versions of ``layer`` after ``after``, oldest first (what a change stream sends),
    with the counties each touched (``touched``: None for a version from before partitioning)."""
    cur = await conn.execute(
        "SELECT version, mode, created_at, created_by, rows_added, rows_removed, rows_changed, rows_total, "
        "coalesce(metadata->>'message', source_name) AS message, touched FROM catalog.layer_versions "
        "WHERE layer = %s AND version > %s ORDER BY version LIMIT %s", (layer, after, limit))
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in await cur.fetchall()]

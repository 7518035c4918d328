"""Editing features (OGC API - Features Part 4): create, replace, update, delete, in edit sessions
that commit as one layer version, with no lost update and the ingest's checks on every change.

Home of the editing logic (no web framework here; the HTTP adapter is ``api/editing.py``):
:mod:`geobase.editing.rows` (a GeoJSON feature -> a checked row, its content hash),
:mod:`geobase.editing.service` (sessions, preconditions, commits), :mod:`geobase.editing.coverage`
(coverage layers stay without gaps or overlaps), :mod:`geobase.editing.topology` (split, merge). The SQL of sessions and of the committed
version lives in :mod:`geobase.catalog.edits`; who may edit in :func:`geobase.security.require_editor`.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from geobase.specs import LayerSpec
from geobase.storage import as_of_filter, current_filter, division_filter, shared_key_conflict, table_ident


async def feature_hash(conn: psycopg.AsyncConnection, spec: LayerSpec, key: str, version: int | None,
                       division: str | None = None) -> str | None:
    """The content hash of feature ``key`` (current, or as of ``version``; in county ``division``
    when named): its ETag's core. A key that is a feature of two counties is refused
    (:func:`geobase.storage.shared_key_conflict`) rather than answered with either."""
    cond = as_of_filter(version) if version is not None else current_filter()
    if division is not None:
        cond = sql.SQL("{} AND {}").format(cond, division_filter(division))
    cur = await conn.execute(sql.SQL("SELECT _hash, division FROM {} WHERE {} AND _key = %s LIMIT 2").format(
        table_ident(spec), cond), (key,))
    rows = await cur.fetchall()
    if len(rows) > 1:
        raise shared_key_conflict(spec.name, key, [d for _, d in rows])
    return rows[0][0] if rows else None

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
from geobase.features.ids import FeatureRef
from geobase.storage import as_of_filter, current_filter, division_filter, table_ident


async def feature_hash(conn: psycopg.AsyncConnection, spec: LayerSpec, ref: FeatureRef,
                       version: int | None) -> str | None:
    """The content hash of feature ``ref`` (resolved by :func:`geobase.features.ids.resolve`;
    current, or as of ``version``): its ETag's core."""
    cond = as_of_filter(version) if version is not None else current_filter()
    cur = await conn.execute(sql.SQL("SELECT _hash FROM {} WHERE {} AND {} AND _key = %s").format(
        table_ident(spec), cond, division_filter(ref.division)), (ref.key,))
    row = await cur.fetchone()
    return row[0] if row else None

"""Catalog reads the loaders need about what was delivered before: the provenance of a layer's
current version (the sample loader replaces only versions it made itself) and the checksums a
raster's COG was recorded with (a file altered on disk is written again).

Why here: the SQL of ``catalog.layers`` / ``catalog.layer_versions`` lives in geobase/catalog/;
the loaders in ingest/ ask these functions instead of querying the tables.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

_CURRENT_ORIGIN_SQL = (
    "SELECT v.version, v.source_name, v.source_checksum, v.created_by, v.restored_from, v.metadata "
    "FROM catalog.layers l JOIN catalog.layer_versions v ON v.layer = l.name AND v.version = l.current_version "
    "WHERE l.name = %s")


def current_origin_row(conn: psycopg.Connection, layer: str) -> dict[str, Any] | None:
    """The current version of ``layer`` with where it came from: version, source_name,
    source_checksum, created_by, restored_from, metadata (None: the layer has no version)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_CURRENT_ORIGIN_SQL, (layer,)).fetchone()


def recorded_cog_checksums(conn: psycopg.Connection, layer: str, path: str) -> set[str]:
    """The ``cog_sha256`` every version of ``layer`` whose COG is ``path`` recorded for it."""
    rows = conn.execute("SELECT metadata->>'cog_sha256' FROM catalog.layer_versions "
                        "WHERE layer = %s AND metadata->>'path' = %s", (layer, path)).fetchall()
    return {r[0] for r in rows if r[0]}

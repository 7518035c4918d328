"""Reads of the layer catalog: each layer's current version, its version list, its access facts
(owner, sharing) and where a raster version's file is. The one place that joins
``catalog.layers`` to the row of its current version in ``catalog.layer_versions``; every
service asks here instead of writing the join. A statement that must read current versions in
its own snapshot embeds :func:`current_versions_sql` (tiles).

Both psycopg flavours are served (the API is async, ingest and the CLI are sync); they share the
SQL text and the row mapping, so the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from geobase.errors import NotFound

#: the "current version of a layer" join, written once
CURRENT_SQL = """
    SELECT l.name, l.department, l.sharing, l.shared_with, l.current_version,
           v.created_at, v.rows_total, v.extent, v.source_name, v.metadata
    FROM catalog.layers l
    LEFT JOIN catalog.layer_versions v ON v.layer = l.name AND v.version = l.current_version
"""
_ALL = CURRENT_SQL + " ORDER BY l.name"
_NAMED = CURRENT_SQL + " WHERE l.name = ANY(%s) ORDER BY l.name"

#: a layer's access facts (owner, sharing, effective grade and openness: an admin's override,
#: else the synced spec's), what every visibility decision reads; the spec's two values from
#: the columns PostgreSQL generates from the spec (migration 0016_s12cold), not out of the spec
#: jsonb, which each read decompressed twice per layer (most of a states read, every cold tile)
GRADE_SQL = "coalesce(grade, spec_grade), coalesce(openness, spec_openness)"
ACCESS_SQL = "SELECT name, department, sharing, shared_with, " + GRADE_SQL + " FROM catalog.layers"
_ACCESS_ALL = ACCESS_SQL + " ORDER BY name"
_ACCESS_ONE = ACCESS_SQL + " WHERE name = %s"

VERSIONS_SQL = ("SELECT version, created_at, rows_total, extent FROM catalog.layer_versions "
                "WHERE layer = %s ORDER BY version")
FIRST_CREATED_SQL = "SELECT layer, min(created_at) FROM catalog.layer_versions GROUP BY layer"

#: the metadata keys a raster version's file has been recorded under, newest first
RASTER_PATH_KEYS = ("path", "cog", "cog_path", "file", "uri", "href")


@dataclass(frozen=True)
class CurrentLayer:
    """A layer's catalog row with its current version's row (``version`` None: never loaded)."""

    name: str
    department: str | None
    sharing: str
    shared_with: tuple[str, ...]
    version: int | None
    created_at: dt.datetime | None
    rows_total: int | None
    extent: list[float] | None
    source_name: str | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class VersionInfo:
    version: int
    created_at: dt.datetime
    rows_total: int | None
    extent: list[float] | None


def _current(rows) -> dict[str, CurrentLayer]:
    return {r[0]: CurrentLayer(r[0], r[1], r[2], tuple(r[3] or ()), r[4], r[5], r[6],
                               list(r[7]) if r[7] else None, r[8], r[9]) for r in rows}


def _versions(rows) -> dict[int, VersionInfo]:
    return {r[0]: VersionInfo(r[0], r[1], r[2], list(r[3]) if r[3] else None) for r in rows}


def _query(names: list[str] | None) -> tuple[str, tuple]:
    return (_ALL, ()) if names is None else (_NAMED, (list(names),))


async def current_layers(conn: psycopg.AsyncConnection, names: list[str] | None = None) -> dict[str, CurrentLayer]:
    """Every layer (or those named) with its current version, by name."""
    cur = await conn.execute(*_query(names))
    return _current(await cur.fetchall())


def current_layers_sync(conn: psycopg.Connection, names: list[str] | None = None) -> dict[str, CurrentLayer]:
    return _current(conn.execute(*_query(names)).fetchall())


async def layer_versions(conn: psycopg.AsyncConnection, name: str) -> dict[int, VersionInfo]:
    """Every version a layer has had, oldest first."""
    cur = await conn.execute(VERSIONS_SQL, (name,))
    return _versions(await cur.fetchall())


def layer_versions_sync(conn: psycopg.Connection, name: str) -> dict[int, VersionInfo]:
    return _versions(conn.execute(VERSIONS_SQL, (name,)).fetchall())


async def first_created(conn: psycopg.AsyncConnection) -> dict[str, dt.datetime]:
    """When each layer's first version was loaded (the start of its temporal extent)."""
    cur = await conn.execute(FIRST_CREATED_SQL)
    return {name: created for name, created in await cur.fetchall()}


def current_versions_sql(names: list[str]) -> sql.Composed:
    """A scalar sub-select: {name: current version} of the layers ``names`` as jsonb, for a
    statement that must read the versions in the same snapshot as the rows it returns (a
    tile's content and the versions it is cached under, one round trip)."""
    return sql.SQL("(SELECT jsonb_object_agg(name, current_version) FROM catalog.layers "
                   "WHERE name = ANY({}))").format(sql.Literal(list(names)))


AccessRow = tuple[str, str, str, tuple[str, ...], str | None, str | None]


def _access(rows) -> list[AccessRow]:
    return [(n, d, s, tuple(w or ()), g, o) for n, d, s, w, g, o in rows]


async def access_rows(conn: psycopg.AsyncConnection, name: str | None = None) -> list[AccessRow]:
    """(name, department, sharing, shared_with, grade, openness) of every layer in name order, or of the one named
    (an empty list when it is not in the catalog): the facts :mod:`geobase.security` decides
    visibility from. Reads ``catalog.layers`` alone, no version join: it runs on every request."""
    cur = await conn.execute(*((_ACCESS_ALL, ()) if name is None else (_ACCESS_ONE, (name,))))
    return _access(await cur.fetchall())


def union_extent(layers: list[CurrentLayer]) -> list[float] | None:
    """The bounding box of the current versions of ``layers`` (None: none has an extent)."""
    boxes = [c.extent for c in layers if c.extent]
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def raster_file(layer: CurrentLayer, data_path: Path, parameter: str = "layer") -> Path:
    """Where the ingest put the current version's raster file (absolute); NotFound when the
    layer has no loaded version or its metadata names no file."""
    meta = layer.metadata or {}
    for key in RASTER_PATH_KEYS:
        if meta.get(key):
            p = Path(meta[key])
            return p if p.is_absolute() else data_path / p
    raise NotFound(f"raster layer {layer.name!r} has no loaded version with a raster file", parameter=parameter)

"""The GeoParquet export a batch engine reads: one layer's current version, as the caller may
see it (masked attributes left out, by the same query builder as the features API), with the
stored coordinates unchanged (``crs=EPSG:4490``: no ST_Transform, so an engine overlays exactly
the doubles PostGIS overlays)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg

from geobase.analysis.common import hidden
from geobase.catalog.state import layer_state
from geobase.crs import STORAGE_CRS
from geobase.db import database_url
from geobase.features import ItemsParams, build_query
from geobase.features.ids import qualified_ids
from geobase.geoparquet import write_geoparquet_file
from geobase.settings import Settings
from geobase.specs import Registry


async def export_layer(conn: psycopg.AsyncConnection, settings: Settings, registry: Registry, layer: str,
                       directory: Path, principal=None) -> tuple[Path, int]:
    """Write ``<directory>/<layer>.parquet``; returns (path, rows)."""
    spec = registry.layer(layer)
    state = await layer_state(conn, spec)
    # ``id``: the id the Features API gives each feature (county-qualified in a province), which a
    # report of the engine names it by, as the PostGIS engine's report does
    q = build_query(state, hidden(principal, spec), ItemsParams(crs=STORAGE_CRS), default_limit=None, max_limit=None,
                    qualified_ids=await qualified_ids(conn, spec, state.current_version, state.divisions))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{layer}.parquet"
    rows = await asyncio.to_thread(write_geoparquet_file, database_url(settings), q.rows_sql("wkb"),
                                   q.export_columns(), not q.skip_geometry, 4490, path,
                                   settings.analysis_statement_timeout_ms)
    return path, rows

"""What every analysis shares: the area units of a report, the check-only mode that lets a job
refuse bad input at submission, the caller's view of a layer (masked attributes), the report's
layer versions and the read-only snapshot an analysis runs in.

Conventions (domain.md §6): layers are intersected in EPSG:4490; every piece's area is
ellipsoidal on the CGCS2000 ellipsoid (``ST_Area(geom::geography)``, or the stored ``_area_m2``
when a feature lies wholly inside the other geometry, which is the same number computed once at
ingest); pieces below the sliver threshold are dropped and their count and total reported;
areas are given in m², ha and mu. Input geometries are bound as WKB parameters, never
formatted into SQL; identifiers come from validated specs via ``psycopg.sql``.

All analyses take an open ``psycopg.AsyncConnection`` and the layer specs the caller may see
(``security.visible_layers``), so access control is decided by the caller once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from psycopg import sql

from geobase.catalog import layers as layer_reads
from geobase.errors import InvalidInput
from geobase.features.ids import id_sql, qualified_ids
from geobase.limits import set_local_timeout
from geobase.security import PUBLIC, hidden_attributes, require_field
from geobase.specs import LayerSpec, Registry

MU_PER_M2 = 15 / 10_000

#: how a long analysis reports progress: (units done, units in all, message); a job stores it in
#: the one unit of every job (percent, :func:`geobase.jobs.percent`)
Progress = Callable[[float, float | None, str], Awaitable[None]]

_CHECK_ONLY: ContextVar[bool] = ContextVar("geobase_analysis_check_only", default=False)


class InputsChecked(Exception):
    """Raised at an analysis's :func:`inputs_checked` point in check-only mode."""


def inputs_checked() -> None:
    """Each analysis calls this once it has validated every input and before it computes:
    in check-only mode (:func:`check_inputs`) it stops there. So an async job refuses bad
    input at submission (400) with the very checks the run makes, not after a 201."""
    if _CHECK_ONLY.get():
        raise InputsChecked()


async def check_inputs(run: Callable[[], Awaitable[Any]]) -> None:
    """Run an analysis up to its :func:`inputs_checked` point; its InvalidInput propagates."""
    token = _CHECK_ONLY.set(True)
    try:
        await run()
    except InputsChecked:
        pass
    finally:
        _CHECK_ONLY.reset(token)


def units(m2: float) -> dict:
    """An area in m², hectares and mu (1 mu = 10 000/15 m²), rounded only for display."""
    return {"m2": round(m2, 6), "ha": round(m2 / 10_000, 8), "mu": round(m2 * MU_PER_M2, 6)}


def hidden(principal, spec: LayerSpec) -> set[str]:
    """The caller's masked attributes of a layer (no principal: the public's, failing closed)."""
    return hidden_attributes(principal or PUBLIC, spec)


def filter_readable(registry: Registry, principal, layer: str, flt: dict) -> bool:
    """Whether a declared rule's filter names only attributes this caller may read: a rule over
    a masked attribute would reveal it through its verdict, so it is reported not-evaluated."""
    spec = registry.layers.get(layer)
    return spec is not None and not (set(flt or {}) & hidden(principal, spec))


def readable_column(principal, spec: LayerSpec, name: str | None, alias: str | None = None) -> sql.Composable:
    """An output column of a report, or NULL when the layer lacks it or it is masked for the caller."""
    if not name or name not in spec.attribute_names or name in hidden(principal, spec):
        return sql.SQL("NULL::text")
    ident = sql.Identifier(alias, name) if alias else sql.Identifier(name)
    return sql.SQL("{}::text").format(ident)


def class_column(registry: Registry, spec: LayerSpec, field: str | None, parameter: str, principal=None) -> str:
    """The field to group by: the named one or the layer's class field, if the caller may read
    it (security.require_field: the same check as items' properties and sortby)."""
    field = field or spec.class_field
    if not field:
        raise InvalidInput(f"{parameter}: layer {spec.name!r} has no class field; name one", parameter=parameter)
    return require_field(spec, field, parameter, hidden=hidden(principal, spec))


async def feature_ids(conn: psycopg.AsyncConnection, specs: list[LayerSpec], alias: str,
                      versions: dict[str, dict] | None = None) -> dict[str, sql.Composable]:
    """Per layer: the SQL of its features' ids (``alias``: the table's alias), the id the Features
    API gives (geobase/features/ids.py), so an analysis names a feature by what
    ``/collections/{layer}/items/{id}`` answers: the bare key in a county's database, the
    county-qualified id in a province, where a bare key names a feature of every county holding it.
    ``versions``: the report's :func:`layer_versions`, when the caller has them (no query then)."""
    return {n: id_sql(q, alias) for n, q in (await qualified_layers(conn, specs, versions)).items()}


async def qualified_layers(conn: psycopg.AsyncConnection, specs: list[LayerSpec],
                           versions: dict[str, dict] | None = None) -> dict[str, bool]:
    """Per layer: whether its feature ids are county-qualified (:func:`feature_ids`)."""
    if versions is None:
        current = await layer_reads.current_layers(conn, [s.name for s in specs])
        versions = {n: {"version": c.version} for n, c in current.items()}
    return {s.name: await qualified_ids(conn, s, versions.get(s.name, {}).get("version")) for s in specs}


async def layer_versions(conn: psycopg.AsyncConnection, names: list[str]) -> dict[str, dict]:
    """Current version and its time of every layer used: part of every report."""
    layers = await layer_reads.current_layers(conn, names)
    return {n: {"version": c.version, "created_at": c.created_at.isoformat() if c.created_at else None,
                "source": c.source_name} for n, c in layers.items()}


@asynccontextmanager
async def read_only_snapshot(conn: psycopg.AsyncConnection) -> AsyncIterator[None]:
    """The queries inside in one read-only snapshot; a caller's open transaction keeps its own
    (SET TRANSACTION must be a transaction's first statement)."""
    own = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    async with conn.transaction():
        if own:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


@asynccontextmanager
async def analysis_transaction(conn: psycopg.AsyncConnection, timeout_ms: int) -> AsyncIterator[None]:
    """A synchronous analysis's own transaction: one read-only snapshot under the analysis
    statement timeout (the pooled connection's own is the ordinary request's), whose local
    settings end with it, so nothing leaks to the connection's next user."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await set_local_timeout(conn, timeout_ms)
        yield


@asynccontextmanager
async def interactive_snapshot(conn: psycopg.AsyncConnection) -> AsyncIterator[None]:
    """All the queries of an interactive analysis in one read-only snapshot (the report's
    versions and pieces agree even when an ingest commits meanwhile), without parallel
    workers: a worker process must first load PostGIS and look up the CGCS2000 spheroid,
    which made a site check's pieces query half again as slow as running it alone."""
    async with read_only_snapshot(conn):
        await conn.execute("SELECT set_config('max_parallel_workers_per_gather', '0', true)")
        yield


def table_report(layer_a: str, fa: str, layer_b: str, fb: str, rows: list[tuple], aoi_m2: float | None,
                 aoi_info: dict, versions: dict) -> dict[str, Any]:
    """The tabulation report from (class a, class b, m², pieces) rows, whichever engine computed
    them (PostGIS in tabulate.py, Sedona in engines/sedona.py): one shape and rounding."""
    cells: dict[tuple[str, str], list[float]] = {}
    for ca, cb, m2, n in rows:
        if float(m2 or 0) <= 1e-6:  # features that only touch along an edge
            continue
        acc = cells.setdefault((ca, cb), [0.0, 0])
        acc[0] += float(m2 or 0)
        acc[1] += int(n)
    total = sum(v[0] for v in cells.values())
    row_tot: dict[str, float] = {}
    col_tot: dict[str, float] = {}
    for (ca, cb), (m2, _) in cells.items():
        row_tot[ca] = row_tot.get(ca, 0.0) + m2
        col_tot[cb] = col_tot.get(cb, 0.0) + m2
    return {
        "analysis": "tabulate",
        "layer_a": {"name": layer_a, "class_field": fa}, "layer_b": {"name": layer_b, "class_field": fb},
        "aoi": aoi_info,
        "cells": [{"a": ca, "b": cb, **units(v[0]), "pieces": v[1]} for (ca, cb), v in sorted(cells.items())],
        "totals_a": [{"a": k, **units(v)} for k, v in sorted(row_tot.items())],
        "totals_b": [{"b": k, **units(v)} for k, v in sorted(col_tot.items())],
        "total": units(total),
        "coverage_of_aoi": round(total / aoi_m2, 8) if aoi_m2 else None,
        "versions": versions,
    }

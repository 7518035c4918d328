"""What a vector tile draws of each layer for one caller (:class:`~geobase.tiles.mvt.LayerPlan`):
made once per spec, zoom and caller, with the class pyramid where one is built. Used by
:mod:`geobase.tiles.service` for every tile."""

from __future__ import annotations

from dataclasses import replace

import psycopg
from geobase.tiles import pyramid
from geobase.tiles.mvt import AGGREGATE_BELOW, LayerPlan, plan_layer
from geobase.tiles.tms import TileMatrixSet

from geobase.catalog.state import LayerState
from geobase.security import Principal, caller_view
from geobase.specs import LayerSpec, Registry


async def layer_plans(conn: psycopg.AsyncConnection, registry: Registry, principal: Principal,
                      states: dict[str, LayerState], specs: list[LayerSpec], tms: TileMatrixSet, z: int,
                      pyramid_url: str | None, divisions: tuple[str, ...] | None = None) -> list[LayerPlan]:
    """The plans of the layers a tile draws for this caller: only layers with a current version,
    those counties' rows only given ``divisions``, the class pyramid where it is built."""
    # a layer without a current version has nothing to draw: its table is not even read (during
    # a layer's first load the table is locked until the version commits)
    plans = [p for p in (layer_plan(s, registry, z, principal) for s in specs
                         if states[s.name].current_version is not None) if p]
    if divisions is not None:  # those counties' rows only: the class cells too, never the pyramid's
        return [replace(p, counties=divisions) for p in plans]
    if pyramid_url and tms.srid == 3857:
        plans = [await _with_pyramid(conn, pyramid_url, p, states[p.name].current_version) for p in plans]
    return plans


#: (spec, registry, zoom, caller) -> (spec, registry, plan): see :func:`layer_plan`
_plans_made: dict[tuple, tuple] = {}


def layer_plan(spec: LayerSpec, registry: Registry, z: int, principal: Principal) -> LayerPlan | None:
    """``plan_layer`` for this caller's view of ``spec`` (:func:`caller_view`), made once per
    spec, registry, zoom and caller: both are pure functions of those (the spec's attributes,
    code lists and rules, the caller's role, department, key scope and box), and making them
    again for every cold tile cost a tenth of a small tile's time in Python. The spec and
    registry are held with the plan, so the ids in the key are never another object's."""
    key = (id(spec), id(registry), z, principal)
    made = _plans_made.get(key)
    if made is None:
        if len(_plans_made) > 4096:
            _plans_made.clear()
        made = _plans_made[key] = (spec, registry, plan_layer(spec, registry, z, *caller_view(principal, spec)))
    return made[2]


async def _with_pyramid(conn: psycopg.AsyncConnection, url: str, plan: LayerPlan, version: int | None) -> LayerPlan:
    """Use the layer version's pyramid when built; otherwise start building it (on-the-fly now)."""
    if not plan.aggregate or version is None:
        return plan
    try:
        if await pyramid.is_ready(conn, url, plan.name, version):
            return replace(plan, pyramid_version=version)
    except psycopg.errors.UndefinedTable:  # database not migrated to 0004_tiles: on-the-fly only
        return plan
    spec = plan.spec
    pyramid.build_in_background(url, spec, version, spec.style.class_field or spec.class_field,
                                spec.tiles.detail_zoom if spec.tiles.detail_zoom is not None else AGGREGATE_BELOW)
    return plan

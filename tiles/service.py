"""Vector tiles for a caller: access, versions, cache, rendering — the part routers and the
seeding CLI share.

Per request: one small query reads every layer's access facts and current version (so an
ingest is visible on the very next request, no restart, no notification needed); then the
cache is looked up under the key built from those versions; on a miss one statement renders
the tile and returns the versions it read, under which the tile is stored."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, replace

import psycopg
from geobase.tiles import pyramid
from geobase.tiles.cache import TileCache, cache_key, etag_for
from geobase.tiles.mvt import AGGREGATE_BELOW, LayerPlan, plan_layer, tile_sql
from geobase.tiles.tms import TileMatrixSet

from geobase.errors import InvalidInput, NotFound
from geobase.security import LayerAccess, Principal, can_see, hidden_attributes, note_read, view_signature
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry

ONEMAP = "onemap"
STATE_SQL = "SELECT name, department, sharing, shared_with, current_version FROM catalog.layers ORDER BY name"


@dataclass
class LayerState:
    access: LayerAccess
    version: int | None


@dataclass
class TileResult:
    body: bytes  # gzip-compressed for MVT (may be b"" for an empty tile)
    etag: str
    cached: bool


async def layer_states(conn: psycopg.AsyncConnection) -> dict[str, LayerState]:
    cur = await conn.execute(STATE_SQL)
    return {n: LayerState(LayerAccess(n, d, s, tuple(w or ())), v) for n, d, s, w, v in await cur.fetchall()}


def resolve_layers(layers: str, states: dict[str, LayerState], principal: Principal,
                   registry: Registry) -> list[LayerSpec]:
    """The vector layers named by a ``{layers}`` path segment: a comma list or ``onemap``.

    Hidden and unknown layers are both 404 (never 403) so their existence does not leak;
    ``onemap`` is every vector layer the caller may see."""
    def visible(name: str) -> bool:
        st = states.get(name)
        return st is not None and name in registry.layers and can_see(principal, st.access)

    if layers == ONEMAP:
        out = [registry.layers[n] for n in sorted(states) if visible(n) and registry.layers[n].kind == "vector"]
        for spec in out:  # audit: reads of non-public layers (security.note_read decides)
            note_read(principal, states[spec.name].access, spec)
        return out
    names = [n.strip() for n in layers.split(",") if n.strip()]
    if not names:
        raise InvalidInput("layers: give a comma-separated list of layer names or 'onemap'", parameter="layers")
    if len(set(names)) != len(names):
        raise InvalidInput("layers: a layer is named twice", parameter="layers")
    out = []
    for n in names:
        if not visible(n):
            raise NotFound(f"layer {n!r} not found", parameter="layers")
        spec = registry.layers[n]
        if spec.kind != "vector":
            raise InvalidInput(f"layer {n!r} is a raster; use /tiles/{n}/{{style}}/{{z}}/{{x}}/{{y}}.png",
                               parameter="layers")
        out.append(spec)
        note_read(principal, states[n].access, spec)
    return out


def signature(principal: Principal, states: dict[str, LayerState], registry: Registry) -> str:
    return view_signature(principal, [s.access for s in states.values()], registry)


async def vector_tile(conn: psycopg.AsyncConnection, cache: TileCache | None, registry: Registry,
                      principal: Principal, states: dict[str, LayerState], specs: list[LayerSpec],
                      tms: TileMatrixSet, z: int, row: int, col: int,
                      if_none_match: str | None = None, timeout_ms: int | None = None,
                      pyramid_url: str | None = None) -> TileResult | None:
    """The gzip-compressed MVT (None when ``if_none_match`` matches: answer 304)."""
    tms.validate(z, row, col)
    sig = signature(principal, states, registry)
    names = [s.name for s in specs]
    key = cache_key({n: states[n].version for n in names}, tms.id, z, row, col, "mvt", sig)
    etag = etag_for(key)
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return None
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return TileResult(hit, etag, True)
    plans = [p for p in (plan_layer(s, registry, z, hidden_attributes(principal, s)) for s in specs) if p]
    if pyramid_url and tms.srid == 3857:
        plans = [await _with_pyramid(conn, pyramid_url, p, states[p.name].version) for p in plans]
    if not plans:
        body = b""
        versions = {n: states[n].version for n in names}
    else:
        # one network round trip: BEGIN, SET LOCAL statement_timeout, the tile, COMMIT (pipelined)
        async with conn.pipeline():  # noqa: SIM117 — COMMIT must be sent before the pipeline syncs
            async with conn.transaction():
                if timeout_ms:  # SET LOCAL: ends with this transaction, never leaks into the pool
                    await conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout_ms)}ms",))
                cur = await conn.execute(tile_sql(plans, names, tms, z, row, col))
        raw, versions = await cur.fetchone()
        raw = bytes(raw or b"")
        body = gzip.compress(raw, compresslevel=5, mtime=0) if raw else b""
        versions = {n: (versions or {}).get(n) for n in names}
    key = cache_key(versions, tms.id, z, row, col, "mvt", sig)
    if cache is not None:
        cache.put(key, body)
    return TileResult(body, etag_for(key), False)


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


def cache_for(settings: Settings) -> TileCache:
    return TileCache(settings.data_path / "tiles", settings.tile_cache_max_bytes)

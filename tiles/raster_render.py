"""Picture tiles (PNG) of vector layers for WMTS clients, drawn by the same matplotlib code as
the map sheets (:mod:`geobase.printing.draw`): same class colours, opacities and line styles.

A tile is read in one read-only snapshot: the layers' states (access, current version) and
their rows, so the tile is cached under exactly the versions its content came from (the key of
:func:`geobase.tiles.cache.cache_key`, format ``wmts-png:<style>``) and a new version of a
layer is a new key: nothing is purged, nothing is stale."""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import replace

import psycopg
from geobase.tiles.cache import TileCache, cache_key, etag_for
from geobase.tiles.service import TileResult, resolve_layers, signature, tile_format, version_tag
from geobase.tiles.tms import WEB_MERCATOR_HALF, TileMatrixSet
from geobase.tiles.wmts_cells import CellLayer, cell_plan, cells_image, fetch_cells, with_pyramid

from geobase.analysis.common import interactive_snapshot
from geobase.catalog.state import layer_states
from geobase.errors import InvalidInput
from geobase.printing.data import LayerData, fetch_layer
from geobase.printing.draw import draw_layer, matplotlib_modules
from geobase.security import Principal, geometry_exact, hidden_attributes
from geobase.settings import Settings
from geobase.specs import Registry

STYLE = "default"


def _lonlat(x: float, y: float) -> tuple[float, float]:
    lon = x / WEB_MERCATOR_HALF * 180.0
    lat = math.degrees(2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2)
    return lon, lat


def filter_box(tms: TileMatrixSet, bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The tile's CGCS2000 lon/lat box (the rows' index is on ``geom``), a pixel wider each side."""
    pad = (bounds[2] - bounds[0]) / 256
    b = (bounds[0] - pad, bounds[1] - pad, bounds[2] + pad, bounds[3] + pad)
    if tms.srid == 3857:
        (x0, y0), (x1, y1) = _lonlat(b[0], b[1]), _lonlat(b[2], b[3])
        return x0, y0, x1, y1
    return b


def _key(principal: Principal, registry: Registry, states, specs, tms: TileMatrixSet, z: int, row: int,
         col: int, divisions: tuple[str, ...] | None = None) -> tuple[str, str, str]:
    """(cache key, ETag, version tag) of a picture tile of ``specs`` for this caller."""
    sig = signature(principal, states, registry)
    versions = {s.name: states[s.name].current_version for s in specs}
    key = cache_key(versions, tms.id, z, row, col, tile_format(f"wmts-png:{STYLE}", divisions), sig)
    return key, etag_for(key), version_tag(versions, sig)


def draw_tile(layers: list[LayerData | CellLayer], registry: Registry, bounds: tuple[float, float, float, float],
              z: int) -> bytes:
    """A 256 x 256 transparent PNG of ``layers`` (already in the tile's CRS) over ``bounds``:
    features as paths, a coverage layer's low-zoom cells as one image with its big parcels
    over it (:mod:`geobase.tiles.wmts_cells`)."""
    figure_mod = matplotlib_modules()[0]
    fig = figure_mod.Figure(figsize=(1, 1), dpi=256)
    fig.patch.set_alpha(0)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(bounds[0], bounds[2])
    ax.set_ylim(bounds[1], bounds[3])
    for d in layers:
        if isinstance(d, CellLayer):
            ax.imshow(cells_image(d, registry), extent=(bounds[0], bounds[2], bounds[1], bounds[3]), origin="upper",
                      interpolation="nearest", resample=False, aspect="auto")
            d = d.big
        draw_layer(ax, d, registry, points_per_unit=0.5, edges=z >= 15)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=256, transparent=True)
    return buf.getvalue()


async def png_tile(conn: psycopg.AsyncConnection, cache: TileCache | None, registry: Registry, principal: Principal,
                   settings: Settings, layers: str, tms: TileMatrixSet, z: int, row: int, col: int,
                   if_none_match: str | None = None, pyramid_url: str | None = None,
                   divisions: tuple[str, ...] | None = None) -> TileResult:
    """The PNG tile of ``layers`` (a layer, a comma list or ``onemap``) for this caller: the
    same access rules as vector tiles (:func:`geobase.tiles.service.resolve_layers`: hidden and
    unknown layers 404), cached under the layers' versions and the caller's view. Coverage
    layers below their detail zoom are drawn from class cells (``pyramid_url``: the database
    whose pyramid is read or built, :mod:`geobase.tiles.wmts_cells`). ``divisions``: only those
    counties' features and cells (checked codes, ``division=``; never the pyramid, which holds
    every county's cells), cached apart."""
    tms.validate(z, row, col)
    # a hit or a 304 needs only today's states (one round trip); a miss reads them again with
    # the rows, in one snapshot, so the tile is stored under the versions it was drawn from
    states = await layer_states(conn)
    specs = resolve_layers(layers, states, principal, registry)
    key, etag, tag = _key(principal, registry, states, specs, tms, z, row, col, divisions)
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return TileResult(b"", etag, True, tag, not_modified=True)
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        return TileResult(hit, etag, True, tag)
    async with interactive_snapshot(conn):
        fresh = await layer_states(conn)
        if fresh != states:  # an ingest or a sharing change in between: decide again on the fresh facts
            specs = resolve_layers(layers, fresh, principal, registry, note=False)
            key, etag, tag = _key(principal, registry, fresh, specs, tms, z, row, col, divisions)
        versions = {s.name: fresh[s.name].current_version for s in specs}
        bounds = tms.bounds(z, row, col)
        fbox = filter_box(tms, bounds)
        pad = (bounds[2] - bounds[0]) / 256
        draw_box = (bounds[0] - pad, bounds[1] - pad, bounds[2] + pad, bounds[3] + pad)
        drawn = []
        for spec in sorted(specs, key=lambda s: (s.style.order, s.name)):
            if versions[spec.name] is None or not spec.tiles.minzoom <= z <= spec.tiles.maxzoom:
                continue
            if not geometry_exact(principal, spec):  # rounded/township/boxed for this caller: not drawn
                continue
            plan = cell_plan(spec, registry, tms, z, hidden_attributes(principal, spec))
            if plan is not None:
                if divisions is not None:
                    plan = replace(plan, counties=divisions)
                else:
                    plan = await with_pyramid(conn, pyramid_url, plan, versions[spec.name])
                drawn.append(await fetch_cells(conn, plan, tms, z, row, col, draw_box))
                continue
            try:
                drawn.append(await fetch_layer(conn, spec, fbox, draw_box, srid=tms.srid, tolerance=pad / 2,
                                               hidden=hidden_attributes(principal, spec),
                                               limit=settings.print_max_features, divisions=divisions))
            except InvalidInput:  # never a picture of part of the rows: refused, naming the level
                raise InvalidInput(f"tileMatrix: more than {settings.print_max_features} features of {spec.name!r} "
                                   f"in this tile (GEOBASE_PRINT_MAX_FEATURES); ask a deeper level",
                                   parameter="tileMatrix") from None
    body = await asyncio.to_thread(draw_tile, drawn, registry, bounds, z)
    if cache is not None:
        cache.put(key, body)
    return TileResult(body, etag, False, tag)

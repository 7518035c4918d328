"""OGC WMTS 1.0.0 over HTTP, KVP and RESTful (capabilities: :mod:`geobase.tiles.wmts`; tiles:
:mod:`geobase.tiles.raster_render` and, below a coverage layer's detail zoom,
:mod:`geobase.tiles.wmts_cells`; feature info: :mod:`geobase.tiles.wmts_info`).

  /wmts?SERVICE=WMTS&REQUEST=GetCapabilities | GetTile&LAYER=..&STYLE=..&TILEMATRIXSET=..
        &TILEMATRIX=..&TILEROW=..&TILECOL=..&FORMAT=image/png          (KVP, names in any case)
        | GetFeatureInfo&...&TILECOL=..&I=..&J=..&INFOFORMAT=application/json|text/html
  /wmts/1.0.0/WMTSCapabilities.xml
  /wmts/1.0.0/{layers}/{style}/{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.png
  /wmts/1.0.0/{layers}/{style}/{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}/{J}/{I}.json|html

Layers are the vector layers the caller may see plus ``onemap`` (all of them); a hidden or
unknown layer is 404 as for vector tiles. KVP names are case-insensitive (OGC 06-121r9 11.5.2),
so this route checks its own parameters: an unknown one is a 400 naming it, as everywhere."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from geobase.api.routing import LazyAPIRoute
from geobase.api import imagery_ogc
from geobase.api.deps import base_url, get_conn, get_registry_dep, get_settings_dep, not_modified
from geobase.api.gate import get_principal
from geobase.api.params import allows_property_filters
from geobase.api.tile_fast import cache_control
from geobase.api.deps import DIVISION_PARAM
from geobase.api.tiles import tile_cache, tiles_db_url
from geobase.division_check import tile_divisions
from geobase.tiles import imagery_wmts
from geobase.tiles.raster_render import STYLE, png_tile
from geobase.tiles.service import ONEMAP, resolve_layers
from geobase.tiles.wmts import FORMAT, WmtsLayer, capabilities, tile_address
from geobase.tiles.wmts_info import feature_info, info_format, info_html, pixel

from geobase.catalog import current_layers
from geobase.catalog.state import layer_states
from geobase.errors import InvalidInput
from geobase.security import Principal, require_format
from geobase.settings import Settings
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["WMTS"])
XML = "application/xml; charset=utf-8"
KVP = ("service", "request", "version", "acceptversions", "sections", "updatesequence", "acceptformats",
       "layer", "style", "tilematrixset", "tilematrix", "tilerow", "tilecol", "format", "i", "j", "infoformat",
       "division")


async def _capabilities(request: Request, conn, registry: Registry, principal: Principal) -> Response:
    states = await layer_states(conn)
    specs = resolve_layers(ONEMAP, states, principal, registry)
    current = await current_layers(conn, [s.name for s in specs])
    specs = [s for s in specs if s.name in current and current[s.name].version is not None]
    boxes = [current[s.name].extent for s in specs if current[s.name].extent]
    union = ([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
             if boxes else None)
    layers = [WmtsLayer(ONEMAP, "一张图 one map", "every layer the caller may see, in draw order", union)]
    layers += [WmtsLayer(s.name, f"{s.title.zh} {s.title.en}", s.department, current[s.name].extent) for s in specs]
    doc = await imagery_ogc.wmts_layers(capabilities(base_url(request), layers), request, conn, registry, principal)
    return Response(doc, media_type=XML, headers={"Cache-Control": cache_control(principal, None, None),
                                                  "Vary": "Authorization, X-API-Key"})


async def _tile(request: Request, conn, registry: Registry, principal: Principal, settings: Settings, layer: str,
                style: str, tms_id: str, matrix: str, row: str, col: str, names: dict[str, str],
                division: str | None = None) -> Response:
    t0 = time.perf_counter()
    require_format(principal, "png")
    if style not in (STYLE, ""):
        raise InvalidInput(f"{names['style']}: {style[:40]!r} is not a style of this layer (default)",
                           parameter=names["style"])
    s, z, r, c = tile_address(tms_id, matrix, row, col, names)
    divisions = await tile_divisions(conn, registry, layer, division)
    result = await png_tile(conn, tile_cache(request), registry, principal, settings, layer, s.tms, z, r, c,
                            if_none_match=request.headers.get("if-none-match"), pyramid_url=tiles_db_url(request),
                            divisions=divisions)
    headers = {"Cache-Control": cache_control(principal, None, result.tag), "ETag": result.etag,
               "Vary": "Authorization, X-API-Key"}
    if result.not_modified or not_modified(request, result.etag):
        return Response(status_code=304, headers=headers)
    headers["X-Tile-Cache"] = "hit" if result.cached else "miss"
    headers["Server-Timing"] = f"tile;dur={(time.perf_counter() - t0) * 1000:.2f}"
    return Response(result.body, media_type="image/png", headers=headers)


async def _info(request: Request, conn, registry: Registry, principal: Principal, layer: str, style: str,
                tms_id: str, matrix: str, row: str, col: str, j: str, i: str, fmt: str,
                names: dict[str, str]) -> Response:
    """GetFeatureInfo (KVP or RESTful): the features under pixel (i, j) of the tile, for this caller."""
    require_format(principal, fmt, download=False)
    if style not in (STYLE, ""):
        raise InvalidInput(f"{names['style']}: {style[:40]!r} is not a style of this layer (default)",
                           parameter=names["style"])
    s, z, r, c = tile_address(tms_id, matrix, row, col, names)
    doc = await feature_info(conn, registry, principal, layer, s.tms, z, r, c,
                             pixel(i, "I" if names["tms"] == "TILEMATRIXSET" else "i"),
                             pixel(j, "J" if names["tms"] == "TILEMATRIXSET" else "j"))
    headers = {"Cache-Control": "private, no-store", "Vary": "Authorization, X-API-Key"}
    if fmt == "html":
        return Response(info_html(doc), media_type="text/html; charset=utf-8", headers=headers)
    return Response(json.dumps(doc, ensure_ascii=False, default=str), media_type="application/json", headers=headers)


def _kvp(request: Request, known: tuple[str, ...]) -> dict[str, str]:
    """The query's KVP parameters by lower-case name; an unknown or repeated one is a 400 naming it."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        key = name.lower()
        if key not in known:
            raise InvalidInput(f"{name[:40]}: not a WMTS 1.0.0 parameter here (known: {', '.join(k.upper() for k in known)})",
                               parameter=name[:40])
        if key in params:
            raise InvalidInput(f"{name[:40]}: given twice", parameter=name[:40])
        params[key] = value
    if params.get("service", "WMTS").upper() != "WMTS":
        raise InvalidInput("SERVICE: must be WMTS", parameter="SERVICE")
    return params


@allows_property_filters  # clients (OWSLib) add SERVICE/REQUEST/VERSION to this URL too: checked here
@router.get("/wmts/1.0.0/WMTSCapabilities.xml", summary="WMTS 1.0.0 capabilities (RESTful)")
async def wmts_capabilities(request: Request, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                            principal: Principal = Depends(get_principal)) -> Response:
    params = _kvp(request, KVP[:7])
    if params.get("request", "GetCapabilities").lower() != "getcapabilities":
        raise InvalidInput("REQUEST: this URL answers GetCapabilities only", parameter="REQUEST")
    return await _capabilities(request, conn, registry, principal)


@router.get("/wmts/1.0.0/{layers}/{style}/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}.png",
            summary="A WMTS tile (RESTful; PNG drawn server-side in the layers' styles)")
async def wmts_rest_tile(request: Request, layers: str, style: str, tileMatrixSetId: str, tileMatrix: str,
                         tileRow: str, tileCol: str, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                         principal: Principal = Depends(get_principal),
                         settings: Settings = Depends(get_settings_dep),
                         division: str | None = DIVISION_PARAM) -> Response:
    names = {"style": "style", "tms": "tileMatrixSetId", "matrix": "tileMatrix", "row": "tileRow", "col": "tileCol"}
    return await _tile(request, conn, registry, principal, settings, layers, style, tileMatrixSetId, tileMatrix,
                       tileRow, tileCol, names, division)


@allows_property_filters  # WMTS KVP names are case-insensitive: checked here, unknown ones refused
@router.get("/wmts", summary="WMTS 1.0.0 KVP: GetCapabilities, GetTile, GetFeatureInfo")
async def wmts_kvp(request: Request, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                   principal: Principal = Depends(get_principal),
                   settings: Settings = Depends(get_settings_dep)) -> Response:
    params = _kvp(request, KVP)
    req = params.get("request", "")
    if "division" in params and req.lower() != "gettile":  # never a filter silently left out
        raise InvalidInput(f"DIVISION: not a {req[:40] or 'GetCapabilities'} parameter (GetTile only)",
                           parameter="division")
    if req.lower() == "getcapabilities":
        return await _capabilities(request, conn, registry, principal)
    if req.lower() not in ("gettile", "getfeatureinfo"):
        raise InvalidInput(f"REQUEST: {req[:40]!r} is not supported (GetCapabilities, GetTile, GetFeatureInfo)",
                           parameter="REQUEST")
    info = req.lower() == "getfeatureinfo"
    needed = ("layer", "tilematrixset", "tilematrix", "tilerow", "tilecol") + (("i", "j") if info else ())
    missing = [k.upper() for k in needed if k not in params]
    if missing:
        raise InvalidInput(f"{missing[0]}: required by {'GetFeatureInfo' if info else 'GetTile'}", parameter=missing[0])
    names = {"style": "STYLE", "tms": "TILEMATRIXSET", "matrix": "TILEMATRIX", "row": "TILEROW", "col": "TILECOL"}
    if info:
        extra = [k.upper() for k in ("format",) if k in params]
        if extra:
            raise InvalidInput(f"{extra[0]}: not a GetFeatureInfo parameter (INFOFORMAT names the answer's format)",
                               parameter=extra[0])
        return await _info(request, conn, registry, principal, params["layer"], params.get("style", STYLE),
                           params["tilematrixset"], params["tilematrix"], params["tilerow"], params["tilecol"],
                           params["j"], params["i"], info_format(params.get("infoformat")), names)
    extra = [k.upper() for k in ("i", "j", "infoformat") if k in params]
    if extra:
        raise InvalidInput(f"{extra[0]}: not a GetTile parameter", parameter=extra[0])
    if "division" in params and imagery_wmts.collection_of(params["layer"]) is not None:
        raise InvalidInput(f"division: {params['layer'][:60]!r} is imagery, not partitioned by county",
                           parameter="division")
    if (imagery := await imagery_ogc.wmts_kvp_tile(request, conn, registry, principal, settings, params)) is not None:
        return imagery
    if params.get("format", FORMAT) != FORMAT:
        raise InvalidInput(f"FORMAT: only {FORMAT} is offered", parameter="FORMAT")
    return await _tile(request, conn, registry, principal, settings, params["layer"], params.get("style", STYLE),
                       params["tilematrixset"], params["tilematrix"], params["tilerow"], params["tilecol"], names,
                       params.get("division"))


@router.get("/wmts/1.0.0/{layers}/{style}/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}/{j}/{i}.{ext}",
            summary="WMTS GetFeatureInfo (RESTful): the features under pixel (i, j) of a tile, as json or html")
async def wmts_rest_info(request: Request, layers: str, style: str, tileMatrixSetId: str, tileMatrix: str,
                         tileRow: str, tileCol: str, j: str, i: str, ext: str, conn=Depends(get_conn),
                         registry: Registry = Depends(get_registry_dep),
                         principal: Principal = Depends(get_principal)) -> Response:
    names = {"style": "style", "tms": "tileMatrixSetId", "matrix": "tileMatrix", "row": "tileRow", "col": "tileCol"}
    return await _info(request, conn, registry, principal, layers, style, tileMatrixSetId, tileMatrix, tileRow,
                       tileCol, j, i, info_format(ext, "ext"), names)

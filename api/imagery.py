"""Imagery tiles, point queries, polygon statistics and the scene files, per collection:

  /imagery/{collectionId}/tiles/{tileMatrixSetId}/{z}/{x}/{y}.{format}   png | webp | tif
  /imagery/{collectionId}/point/{lon},{lat}
  POST /imagery/{collectionId}/statistics                                 GeoJSON polygon body
  /imagery/{collectionId}/items/{itemId}/data.tif                         the scene's COG

The mosaic is the collection's scenes, latest on top (``order=cloud``: least cloudy on top),
optionally within ``datetime=``; tiles go through the tile cache (:mod:`geobase.tiles.imagery`). Thin:
reading and drawing are :mod:`geobase.imagery.render` and :mod:`geobase.imagery.stats`; who may
see imagery is :func:`geobase.security.require_imagery` (the DEM layer's sharing rule), in which
formats a key granted a list: :func:`geobase.security.require_format` (tiles ``png``, their
``.tif`` and the COGs ``geotiff``, points and statistics ``json``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from geobase.api.routing import LazyAPIRoute
from geobase.api.deps import get_conn, get_settings_dep
from geobase.api.stac import imagery_caller
from geobase.api.deps import not_modified
from geobase.tiles import imagery as imagery_tiles
from geobase.api.tiles import tile_cache
from geobase.tiles.imagery import ORDER_HELP, ImageryTile
from geobase.tiles.tms import get_tms

from geobase.catalog import imagery as cat
from geobase.errors import InvalidInput, NotFound
from geobase.imagery import render, stats
from geobase.security import Principal, require_format
from geobase.settings import Settings
from geobase.vocab import is_name

router = APIRouter(route_class=LazyAPIRoute, tags=["Imagery"])
MEDIA = {"png": "image/png", "webp": "image/webp", "tif": "image/tiff; application=geotiff"}

_BANDS = Query(None, description="bands to draw, e.g. b3,b2,b1 (default b1,b2,b3)")
_EXPR = Query(None, description="band arithmetic, e.g. (b4-b3)/(b4+b3): band names, numbers, + - * / ( )")
_RESCALE = Query(None, description="min,max (or one pair per band separated by ;) mapped to 0..255")
_CMAP = Query(None, description="a rio-tiler colour map for one band or an expression, e.g. rdylgn")
_DT = Query(None, description="scenes acquired in this instant or interval a/b (.. for open)")


_ORDER = Query(None, description=ORDER_HELP)


def _headers(principal: Principal) -> dict[str, str]:
    return {"Cache-Control": ("public" if principal.is_public else "private") + ", max-age=60",
            "Vary": "Accept, Authorization, X-API-Key"}


def tile_response(request: Request, result: ImageryTile, fmt: str, principal: Principal) -> Response:
    """204 outside the mosaic, 304 for the caller's ETag, else the tile (``X-Tile-Cache``)."""
    headers = {**_headers(principal), "ETag": result.etag, "X-Tile-Cache": "hit" if result.cached else "miss"}
    if not_modified(request, result.etag):
        return Response(status_code=304, headers=headers)
    if result.body is None:
        return Response(status_code=204, headers=headers)
    return Response(result.body, media_type=MEDIA[fmt], headers=headers)


async def _files(conn, settings: Settings, collection: str, datetime: str | None, order: str | None = None) -> list[Path]:
    """The collection's scene files, topmost first; 404 for an unknown collection."""
    return list((await imagery_tiles.mosaic(conn, settings, collection, datetime, order)).files)


@router.get("/imagery/{collectionId}/tiles/{tileMatrixSetId}/{z}/{x}/{y}.{format}",
            summary="A tile of the collection's mosaic (latest scene on top, or least cloudy with order=cloud)")
async def tile(request: Request, collectionId: str, tileMatrixSetId: str, z: int, x: int, y: int, format: str,
               bands: str | None = _BANDS, expression: str | None = _EXPR, rescale: str | None = _RESCALE,
               colormap_name: str | None = _CMAP, datetime: str | None = _DT, order: str | None = _ORDER,
               conn=Depends(get_conn), settings: Settings = Depends(get_settings_dep),
               principal: Principal = Depends(imagery_caller)):
    if format not in MEDIA:
        raise InvalidInput(f"format {format!r} is not one of {', '.join(MEDIA)}", parameter="format")
    require_format(principal, format)  # a key granted formats: pictures are "png", raw values "geotiff"
    tms = get_tms(tileMatrixSetId)
    tms.validate(z, y, x)
    m = await imagery_tiles.mosaic(conn, settings, collectionId, datetime, order)
    req = render.BandRequest(bands, expression, rescale, colormap_name)
    result = await imagery_tiles.imagery_tile(tile_cache(request), m, tms, z, y, x, format, req)
    return tile_response(request, result, format, principal)


@router.get("/imagery/{collectionId}/point/{lon},{lat}", summary="Band or expression values at a point")
async def point(collectionId: str, lon: float, lat: float, bands: str | None = _BANDS,
                expression: str | None = _EXPR, datetime: str | None = _DT, order: str | None = _ORDER,
                conn=Depends(get_conn),
                settings: Settings = Depends(get_settings_dep), principal: Principal = Depends(imagery_caller)):
    require_format(principal, "json", download=False)
    files = await _files(conn, settings, collectionId, datetime, order)
    req = render.BandRequest(bands, expression)
    doc = await asyncio.to_thread(render.point_values, files, lon, lat, req)
    return JSONResponse(doc, headers=_headers(principal))


@router.post("/imagery/{collectionId}/statistics", summary="Statistics of bands or an expression over a polygon")
async def statistics(collectionId: str, body: dict = Body(..., description="a GeoJSON Polygon or Feature (EPSG:4326)"),
                     bands: str | None = _BANDS, expression: str | None = _EXPR, datetime: str | None = _DT,
                     order: str | None = _ORDER, conn=Depends(get_conn), settings: Settings = Depends(get_settings_dep),
                     principal: Principal = Depends(imagery_caller)):
    require_format(principal, "json", download=False)
    files = await _files(conn, settings, collectionId, datetime, order)
    req = render.BandRequest(bands, expression)
    doc = await asyncio.to_thread(stats.polygon_stats, files, body, req)
    return JSONResponse(doc, headers=_headers(principal))


@router.get("/imagery/{collectionId}/items/{itemId}/data.tif", summary="The scene's Cloud-Optimized GeoTIFF")
async def data(request: Request, collectionId: str, itemId: str, conn=Depends(get_conn),
               settings: Settings = Depends(get_settings_dep), principal: Principal = Depends(imagery_caller)):
    require_format(principal, "geotiff")
    if not is_name(collectionId) or not await cat.collection_exists(conn, collectionId):
        raise NotFound(f"collection {collectionId[:100]!r} not found", parameter="collectionId")
    rows, _ = await cat.search_items(conn, cat.ItemQuery(collections=(collectionId,), ids=(itemId,), limit=1)) \
        if is_name(itemId) else ([], 0)
    if not rows:
        raise NotFound(f"item {itemId[:100]!r} of imagery collection {collectionId[:100]!r} not found",
                       parameter="itemId")
    return FileResponse(settings.data_path / rows[0]["file"], media_type=MEDIA["tif"] + "; profile=cloud-optimized",
                        headers=_headers(principal))

"""Imagery as OGC API - Tiles and WMTS:

  /imagery/{collectionId}/tiles                         tilesets (WebMercatorQuad, CGCS2000Quad)
  /imagery/{collectionId}/tiles/{tileMatrixSetId}       tileset metadata (templated tile links)
  /imagery/{collectionId}/wmts/{style}/{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.{png|webp}
                                                        the WMTS layer's RESTful tiles

and the two hooks the WMTS router calls (one line each): :func:`wmts_layers` adds the imagery
layers to its capabilities, :func:`wmts_kvp_tile` answers a KVP GetTile of an ``imagery.*``
layer. Documents: :mod:`geobase.tiles.imagery_wmts`; tiles and presets:
:mod:`geobase.tiles.imagery`; who may see imagery: :func:`geobase.security.require_imagery`
(in every output: a caller who may not gets 404 here and no imagery layer in WMTS)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from geobase.api.routing import LazyAPIRoute
from geobase.api.deps import base_url, get_conn, get_settings_dep
from geobase.api.imagery import tile_response
from geobase.api.tiles import tile_cache
from geobase.api.stac import imagery_caller
from geobase.tiles import imagery as imagery_tiles
from geobase.tiles import imagery_wmts
from geobase.tiles.tms import get_tms
from geobase.tiles.wmts import tile_address

from geobase.catalog import imagery as cat
from geobase.errors import InvalidInput, NotFound
from geobase.security import Principal, require_format, require_imagery
from geobase.settings import Settings
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["Imagery"])


async def _collection(conn, collection: str) -> dict:
    rows = [r for r in await cat.collection_ids(conn) if r["id"] == collection]
    if not rows:
        raise NotFound(f"collection {collection[:100]!r} not found", parameter="collectionId")  # or no scene yet
    return rows[0]


def _bbox(row: dict) -> tuple[float, float, float, float]:
    return row["xmin"], row["ymin"], row["xmax"], row["ymax"]


@router.get("/imagery/{collectionId}/tiles", summary="Tilesets of an imagery collection (OGC API - Tiles)")
async def tilesets(request: Request, collectionId: str, conn=Depends(get_conn),
                   principal: Principal = Depends(imagery_caller)):
    row = await _collection(conn, collectionId)
    return JSONResponse(imagery_wmts.tilesets(base_url(request), collectionId, row["title"] or collectionId))


@router.get("/imagery/{collectionId}/tiles/{tileMatrixSetId}", summary="Tileset metadata of an imagery collection")
async def tileset(request: Request, collectionId: str, tileMatrixSetId: str, conn=Depends(get_conn),
                  principal: Principal = Depends(imagery_caller)):
    tms = get_tms(tileMatrixSetId)
    row = await _collection(conn, collectionId)
    return JSONResponse(imagery_wmts.tileset(base_url(request), collectionId, row["title"] or collectionId, tms.id,
                                             _bbox(row)))


async def _wmts_tile(request: Request, conn, settings: Settings, principal: Principal, collection: str, style: str,
                     tms_id: str, matrix: str, row: str, col: str, fmt: str, names: dict[str, str],
                     datetime: str | None = None, order: str | None = None) -> Response:
    require_format(principal, fmt)  # picture tiles: a key granted formats needs "png"
    s, z, r, c = tile_address(tms_id, matrix, row, col, names)
    m = await imagery_tiles.mosaic(conn, settings, collection, datetime, order)
    bands = await imagery_tiles.collection_bands(conn, settings, collection)
    req = imagery_tiles.preset(bands, style or "default", names["style"])
    result = await imagery_tiles.imagery_tile(tile_cache(request), m, s.tms, z, r, c, fmt, req)
    return tile_response(request, result, fmt, principal)


@router.get("/imagery/{collectionId}/wmts/{style}/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}.{format}",
            summary="A WMTS tile of an imagery layer (RESTful; styles are the drawing presets)")
async def wmts_rest_tile(request: Request, collectionId: str, style: str, tileMatrixSetId: str, tileMatrix: str,
                         tileRow: str, tileCol: str, format: str,
                         datetime: str | None = Query(None, description="scenes acquired in this instant or interval"),
                         order: str | None = Query(None, description=imagery_tiles.ORDER_HELP),
                         conn=Depends(get_conn), settings: Settings = Depends(get_settings_dep),
                         principal: Principal = Depends(imagery_caller)) -> Response:
    if format not in imagery_wmts.FORMATS.values():
        raise InvalidInput(f"format {format[:20]!r} is not one of png, webp", parameter="format")
    names = {"style": "style", "tms": "tileMatrixSetId", "matrix": "tileMatrix", "row": "tileRow", "col": "tileCol"}
    return await _wmts_tile(request, conn, settings, principal, collectionId, style, tileMatrixSetId, tileMatrix,
                            tileRow, tileCol, format, names, datetime, order)


async def _visible_layers(conn, settings: Settings, registry: Registry,
                          principal: Principal) -> list[imagery_wmts.ImageryLayer]:
    try:
        await require_imagery(conn, principal, registry)
    except NotFound:
        return []
    out = []
    for row in await cat.collection_ids(conn):
        b = await imagery_tiles.collection_bands(conn, settings, row["id"])
        styles = tuple(p for p in imagery_tiles.PRESETS if imagery_tiles.has_preset(b, p))
        out.append(imagery_wmts.ImageryLayer(row["id"], row["title"] or row["id"], _bbox(row), styles))
    return out


async def wmts_layers(doc: str, request: Request, conn, registry: Registry, principal: Principal) -> str:
    """Hook of the WMTS capabilities: ``doc`` with the imagery layers the caller may see."""
    settings: Settings = request.app.state.settings
    return imagery_wmts.add_layers(doc, base_url(request), await _visible_layers(conn, settings, registry, principal))


async def wmts_kvp_tile(request: Request, conn, registry: Registry, principal: Principal, settings: Settings,
                        params: dict[str, str]) -> Response | None:
    """Hook of the WMTS KVP GetTile: the tile when LAYER is ``imagery.<collection>``, else None
    (the vector layers' own path goes on)."""
    collection = imagery_wmts.collection_of(params["layer"])
    if collection is None:
        return None
    await require_imagery(conn, principal, registry)
    mime = params.get("format", "image/png")
    if mime not in imagery_wmts.FORMATS:
        raise InvalidInput(f"FORMAT: {mime[:40]!r} is not offered ({', '.join(imagery_wmts.FORMATS)})",
                           parameter="FORMAT")
    names = {"style": "STYLE", "tms": "TILEMATRIXSET", "matrix": "TILEMATRIX", "row": "TILEROW", "col": "TILECOL"}
    return await _wmts_tile(request, conn, settings, principal, collection, params.get("style", "default"),
                            params["tilematrixset"], params["tilematrix"], params["tilerow"], params["tilecol"],
                            imagery_wmts.FORMATS[mime], names)


async def map_imagery(request: Request, conn, registry: Registry, principal: Principal) -> list[dict]:
    """Hook of ``/map/config``: the imagery collections the caller may see, as map layers drawn
    under the parcels: per preset an XYZ tile template (``{datetime}`` filled by the map's date
    picker, empty for the latest mosaic), the scenes' dates and the bbox."""
    settings: Settings = request.app.state.settings
    root = base_url(request)
    out = []
    for lay in await _visible_layers(conn, settings, registry, principal):
        dates = sorted({d.date().isoformat() for d in await cat.scene_dates(conn, lay.collection)})
        out.append({"collection": lay.collection, "title": lay.title, "bbox": list(lay.bbox), "dates": dates,
                    "presets": {p: f"{root}/imagery/{lay.collection}/wmts/{p}/WebMercatorQuad/{{z}}/{{y}}/{{x}}.png"
                                for p in lay.styles}})
    return out

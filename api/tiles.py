"""OGC API - Tiles and plain XYZ tiles: per layer, the composite one map, the DEM; TileJSON,
tile matrix sets, the MapLibre style and the legend.

Routes (z/row/col in the OGC tree, z/x/y in XYZ URLs — the same numbers for WebMercatorQuad):
  /tileMatrixSets, /tileMatrixSets/{tms}
  /collections/{layer}/tiles, /collections/{layer}/tiles/{tms}, .../{tms}/{z}/{row}/{col}
  /map/tiles, /map/tiles/{tms}, /map/tiles/{tms}/{z}/{row}/{col}     (composite one map)
  /tiles/{layers}/{z}/{x}/{y}.mvt      ({layers}: comma list or 'onemap')
  /tiles/{layers}.json                  (TileJSON 3.0)
  /tiles/{raster}/{style}/{z}/{x}/{y}.png   (dem: hillshade | elevation | slope)
  /styles/onemap.json = /map/style.json, /legend
"""

from __future__ import annotations

import asyncio
import time

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from geobase.api.routing import LazyAPIRoute
from geobase.api import negotiation
from geobase.api.deps import DIVISION_PARAM, base_url, get_conn, get_registry_dep, get_settings_dep, not_modified
from geobase.api.tile_fast import cache_control, tile_answer
from geobase.tiles import raster as raster_tiles
from geobase.tiles.cache import TileCache, cache_key, etag_for
from geobase.tiles.ogc import MVT_TYPE
from geobase.tiles.service import (
    ONEMAP,
    StatesHint,
    layers_tag,
    raster_tag,
    resolve_layers,
    signature,
    tile_at_version,
    tile_for,
)
from geobase.tiles.style import legend, onemap_style
from geobase.tiles.tms import TILE_MATRIX_SETS, get_tms

from geobase.catalog import CurrentLayer, current_layers, raster_file, union_extent
from geobase.catalog.state import layer_states
from geobase.catalog.divisions import counties_extent
from geobase.division_check import tile_divisions
from geobase.errors import InvalidInput, NotFound
from geobase.api.gate import get_principal
from geobase.security import Principal, require_format, require_layer, visible_layers
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["Tiles"])


def tile_cache(request: Request) -> TileCache:
    """The app's one tile cache (vector tiles, WMTS pictures and imagery tiles share it)."""
    cache = getattr(request.app.state, "tile_cache", None)
    if cache is None:
        s: Settings = request.app.state.settings
        cache = TileCache(s.data_path / "tiles", s.tile_cache_max_bytes)
        request.app.state.tile_cache = cache
    return cache


def _states_hint(request: Request) -> StatesHint:
    hint = getattr(request.app.state, "tile_states_hint", None)
    if hint is None:
        hint = request.app.state.tile_states_hint = StatesHint()
    return hint


def tiles_db_url(request: Request) -> str:
    """The database whose tile pyramids low-zoom tiles read (and build)."""
    url = getattr(request.app.state, "tiles_db_url", None)
    if url is None:
        from geobase.db import database_url

        url = request.app.state.tiles_db_url = database_url(request.app.state.settings)
    return url


#: Query parameter of tile URLs carrying the layer versions (TileJSON and the style write it)
VERSION_PARAM = Query(None, max_length=64, description="version tag of the layers, as written by TileJSON "
                      "and the style into tile URLs: a tile answered for the current tag is cached for good")


def _mvt_response(request: Request, result, principal: Principal, v: str | None = None) -> Response:
    status, headers, body, media = tile_answer(result, principal, v, request.headers.get("accept-encoding", ""))
    return Response(body, status_code=status, headers=headers, media_type=media)


async def _render(request: Request, conn: psycopg.AsyncConnection, registry: Registry, principal: Principal,
                  layers: str, tms_id: str, z: int, row: int, col: int, *, per_layer: bool = False,
                  v: str | None = None, version: int | None = None, at: str | None = None,
                  division: str | None = None) -> Response:
    t0 = time.perf_counter()
    require_format(principal, "mvt")  # a key granted only some formats: vector tiles only if "mvt"
    tms = get_tms(tms_id)
    if per_layer:
        await require_layer(conn, principal, registry, layers)
    opts = {"if_none_match": request.headers.get("if-none-match"), "pyramid_url": tiles_db_url(request),
            "timeout_ms": request.app.state.settings.tile_statement_timeout_ms}
    opts["divisions"] = await tile_divisions(conn, registry, layers, division)  # checked as on items
    if version is None and at is None:  # today's map: the one-round-trip path (StatesHint)
        result = await tile_for(conn, tile_cache(request), registry, principal, layers, tms, z, row, col,
                                hint=_states_hint(request), **opts)
    else:
        result = await tile_at_version(conn, tile_cache(request), registry, principal, layers, tms, z, row, col,
                                       version, at=at, **opts)
    response = _mvt_response(request, result, principal, v)
    # time spent in the tile handler (versions lookup, cache, render), for operators and the benchmark
    response.headers["Server-Timing"] = f"tile;dur={(time.perf_counter() - t0) * 1000:.2f}"
    return response


# ---- tile matrix sets ----------------------------------------------------------------------
@router.get("/tileMatrixSets", summary="Tile matrix sets")
async def tile_matrix_sets(request: Request):
    root = base_url(request)
    return {"tileMatrixSets": [
        {"id": t.id, "title": t.title, "uri": t.uri, "crs": t.crs,
         "links": [{"rel": "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", "type": "application/json",
                    "href": f"{root}/tileMatrixSets/{t.id}"}]}
        for t in TILE_MATRIX_SETS.values()]}


@router.get("/tileMatrixSets/{tileMatrixSetId}", summary="A tile matrix set definition")
async def tile_matrix_set(request: Request, tileMatrixSetId: str):
    return get_tms(tileMatrixSetId).as_json(base_url(request))


# ---- tileset metadata ----------------------------------------------------------------------
def _tileset(root: str, path: str, specs: list[LayerSpec], tms_id: str, title: str) -> dict:
    tms = get_tms(tms_id)
    vector = [s for s in specs if s.kind == "vector"]
    data_type = "vector" if vector else "map"
    suffix = "" if vector else "?style=hillshade"
    doc = {
        "title": title, "dataType": data_type, "crs": tms.crs, "tileMatrixSetURI": tms.uri,
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{root}{path}/{tms.id}"},
            {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", "type": "application/json",
             "href": f"{root}/tileMatrixSets/{tms.id}"},
            {"rel": "item", "type": MVT_TYPE if vector else "image/png", "templated": True,
             "href": f"{root}{path}/{tms.id}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}{suffix}"},
        ],
    }
    if vector:
        doc["layers"] = [{
            "id": s.name, "title": s.title.en, "dataType": "vector",
            "geometryDimension": {"MultiPolygon": 2, "MultiLineString": 1, "MultiPoint": 0}[s.geometry],
            "minTileMatrix": str(max(s.tiles.minzoom, tms.minzoom)), "maxTileMatrix": str(min(s.tiles.maxzoom, tms.maxzoom)),
            "propertiesSchema": {"type": "object", "properties": {
                a: {"type": {"integer": "integer", "number": "number", "boolean": "boolean"}.get(
                    s.attribute(a).type, "string")} for a in dict.fromkeys(s.tiles.attributes + s.tiles.detail_attributes)}},
        } for s in vector]
    return doc


def _tilesets(root: str, path: str, specs: list[LayerSpec], title: str) -> dict:
    return {"tilesets": [
        {"title": f"{title} ({t.id})", "dataType": "vector" if any(s.kind == "vector" for s in specs) else "map",
         "crs": t.crs, "tileMatrixSetURI": t.uri,
         "links": [{"rel": "self", "type": "application/json", "href": f"{root}{path}/{t.id}"}]}
        for t in TILE_MATRIX_SETS.values() if any(s.kind == "vector" for s in specs) or t.id == "WebMercatorQuad"]}


@router.get("/collections/{collectionId}/tiles", summary="Tilesets of a collection")
async def collection_tilesets(request: Request, collectionId: str, conn=Depends(get_conn),
                              registry: Registry = Depends(get_registry_dep), principal=Depends(get_principal)):
    spec = await require_layer(conn, principal, registry, collectionId)
    return _tilesets(base_url(request), f"/collections/{collectionId}/tiles", [spec], spec.title.en)


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}", summary="Tileset metadata of a collection")
async def collection_tileset(request: Request, collectionId: str, tileMatrixSetId: str, conn=Depends(get_conn),
                             registry: Registry = Depends(get_registry_dep), principal=Depends(get_principal)):
    spec = await require_layer(conn, principal, registry, collectionId)
    return _tileset(base_url(request), f"/collections/{collectionId}/tiles", [spec], tileMatrixSetId, spec.title.en)


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
            summary="A tile of a collection (MVT; PNG for the DEM with ?style=)")
async def collection_tile(request: Request, collectionId: str, tileMatrixSetId: str, tileMatrix: int,
                          tileRow: int, tileCol: int,
                          style: str = Query("hillshade", description="DEM only: hillshade, elevation or slope"),
                          v: str | None = VERSION_PARAM, division: str | None = DIVISION_PARAM,
                          conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                          principal=Depends(get_principal), settings: Settings = Depends(get_settings_dep)):
    spec = await require_layer(conn, principal, registry, collectionId)
    if spec.kind == "raster":
        if division is not None:
            raise InvalidInput(f"division: {collectionId!r} is a raster, not partitioned by county", parameter="division")
        return await _raster(request, conn, settings, spec, style, tileMatrixSetId, tileMatrix, tileCol, tileRow,
                             principal, v)
    return await _render(request, conn, registry, principal, collectionId, tileMatrixSetId,
                         tileMatrix, tileRow, tileCol, v=v, division=division)


# ---- composite dataset tiles ---------------------------------------------------------------
@router.get("/map/tiles", summary="Tilesets of the one map (all visible layers)")
async def map_tilesets(request: Request, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                       principal=Depends(get_principal)):
    specs = await visible_layers(conn, principal, registry)
    return _tilesets(base_url(request), "/map/tiles", specs, "One map")


@router.get("/map/tiles/{tileMatrixSetId}", summary="Tileset metadata of the one map")
async def map_tileset(request: Request, tileMatrixSetId: str, conn=Depends(get_conn),
                      registry: Registry = Depends(get_registry_dep), principal=Depends(get_principal)):
    specs = await visible_layers(conn, principal, registry)
    return _tileset(base_url(request), "/map/tiles", specs, tileMatrixSetId, "One map")


@router.get("/map/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
            summary="A composite one-map tile: every layer the caller may see, one MVT layer each")
async def map_tile(request: Request, tileMatrixSetId: str, tileMatrix: int, tileRow: int, tileCol: int,
                   v: str | None = VERSION_PARAM, division: str | None = DIVISION_PARAM,
                   conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                   principal=Depends(get_principal)):
    return await _render(request, conn, registry, principal, ONEMAP, tileMatrixSetId, tileMatrix, tileRow, tileCol,
                         v=v, division=division)


# ---- XYZ + TileJSON ------------------------------------------------------------------------
@router.get("/tiles/{layers}/{z}/{x}/{y}.mvt", summary="XYZ vector tile (WebMercatorQuad)")
async def xyz_tile(request: Request, layers: str, z: int, x: int, y: int,
                   tms: str = Query("WebMercatorQuad", description="tile matrix set id"),
                   v: str | None = VERSION_PARAM,
                   version: int | None = Query(None, ge=1, description="draw the layer as it was in this "
                                               "version (one layer only; 400 for a version it never had)"),
                   at: str | None = Query(None, alias="datetime", description="draw the layer as it was at this "
                                          "instant (RFC 3339): the version current then, as for its features"),
                   division: str | None = DIVISION_PARAM,
                   conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                   principal=Depends(get_principal)):
    return await _render(request, conn, registry, principal, layers, tms, z, y, x, v=v, version=version, at=at,
                         division=division)


@router.get("/tiles/{layers}.json", summary="TileJSON 3.0 of one layer, a comma list or 'onemap'")
async def tilejson(request: Request, layers: str, conn=Depends(get_conn),
                   registry: Registry = Depends(get_registry_dep), principal=Depends(get_principal),
                   division: str | None = DIVISION_PARAM):
    """``division=``: the tile URL carries the (checked) counties, and ``bounds`` is their extent."""
    divisions = await tile_divisions(conn, registry, layers, division)
    states = await layer_states(conn)
    root = base_url(request)
    if layers in registry.layers and registry.layers[layers].kind == "raster":
        spec = await require_layer(conn, principal, registry, layers)
        tag = raster_tag(spec.name, states[spec.name].current_version)
        return {"tilejson": "3.0.0", "name": spec.name, "scheme": "xyz", "minzoom": spec.tiles.minzoom,
                "maxzoom": spec.tiles.maxzoom,
                "tiles": [f"{root}/tiles/{spec.name}/hillshade/{{z}}/{{x}}/{{y}}.png?v={tag}"]}
    specs = resolve_layers(layers, states, principal, registry)
    extents = await counties_extent(conn, [s.name for s in specs], divisions)
    tag = layers_tag(principal, states, registry, specs)
    only = "" if divisions is None else f"&division={','.join(divisions)}"
    doc = {
        "tilejson": "3.0.0", "name": layers, "scheme": "xyz", "format": "pbf",
        "tiles": [f"{root}/tiles/{layers}/{{z}}/{{x}}/{{y}}.mvt?v={tag}{only}"],
        "minzoom": min((s.tiles.minzoom for s in specs), default=0),
        "maxzoom": max((s.tiles.maxzoom for s in specs), default=16),
        "vector_layers": [{
            "id": s.name, "description": s.title.en, "minzoom": s.tiles.minzoom, "maxzoom": s.tiles.maxzoom,
            "fields": {a: s.attribute(a).type for a in dict.fromkeys(s.tiles.attributes + s.tiles.detail_attributes)},
        } for s in specs],
        "version": ",".join(f"{s.name}@{states[s.name].current_version}" for s in specs),
    }
    if extents:
        doc["bounds"] = extents
        doc["center"] = [(extents[0] + extents[2]) / 2, (extents[1] + extents[3]) / 2, max(doc["minzoom"], 10)]
    return doc


# ---- raster DEM ----------------------------------------------------------------------------
@router.get("/tiles/{layer}/{style}/{z}/{x}/{y}.png", summary="DEM tile: hillshade, elevation or slope PNG")
async def raster_tile(request: Request, layer: str, style: str, z: int, x: int, y: int,
                      v: str | None = VERSION_PARAM,
                      conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                      principal=Depends(get_principal), settings: Settings = Depends(get_settings_dep)):
    spec = await require_layer(conn, principal, registry, layer)
    if spec.kind != "raster":
        raise InvalidInput(f"layer {layer!r} is a vector layer; use /tiles/{layer}/{{z}}/{{x}}/{{y}}.mvt",
                           parameter="layer")
    return await _raster(request, conn, settings, spec, style, "WebMercatorQuad", z, x, y, principal, v)


async def _current_raster(conn, spec: LayerSpec, parameter: str) -> CurrentLayer:
    """The raster layer's current version (its metadata says where ingest put the COG)."""
    current = (await current_layers(conn, [spec.name])).get(spec.name)
    if current is None or current.version is None:
        raise NotFound(f"layer {spec.name!r} has no loaded version yet", parameter=parameter)
    return current


async def _raster(request: Request, conn, settings: Settings, spec: LayerSpec, style: str, tms_id: str,
                  z: int, x: int, y: int, principal: Principal, v: str | None = None) -> Response:
    require_format(principal, "png")
    tms = get_tms(tms_id)
    if style not in raster_tiles.STYLES:
        raise InvalidInput(f"style {style!r} is not one of {', '.join(raster_tiles.STYLES)}", parameter="style")
    tms.validate(z, y, x)
    current = await _current_raster(conn, spec, "layer")
    key = cache_key({spec.name: current.version}, tms.id, z, y, x, f"png:{style}", "raster")
    etag = etag_for(key)
    headers = {"Cache-Control": cache_control(principal, v, raster_tag(spec.name, current.version)), "ETag": etag}
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    cache = tile_cache(request)
    body = cache.get(key)
    headers["X-Tile-Cache"] = "hit" if body is not None else "miss"
    if body is None:
        path = raster_file(current, settings.data_path)
        nodata = spec.raster.nodata if spec.raster else None
        png = await asyncio.to_thread(raster_tiles.render_dem_tile, path, style, tms, z, x, y, nodata)
        body = png or raster_tiles.transparent_png()
        cache.put(key, body)
    return Response(body, media_type="image/png", headers=headers)


# ---- style and legend ----------------------------------------------------------------------
async def _style(request: Request, conn, registry: Registry, principal: Principal) -> dict:
    specs = await visible_layers(conn, principal, registry)
    current = await current_layers(conn, [s.name for s in specs])
    dem = next((s for s in specs if s.kind == "raster" and s.name == "dem"), None)
    if dem is not None and (dem.name not in current or current[dem.name].version is None):
        dem = None
    extent = union_extent([current[s.name] for s in specs if s.name in current])
    dem_bounds = union_extent([current[dem.name]]) if dem is not None else None
    center, zoom = (105.0, 35.0), 3.0  # no layer has an extent yet: all of China
    if extent:
        center, zoom = ((extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2), 10.0
    states = await layer_states(conn)
    # the very layers and versions the onemap tile route resolves and keys its tiles by
    tags = {"onemap": layers_tag(principal, states, registry,
                                 resolve_layers(ONEMAP, states, principal, registry, note=False))}
    if dem is not None:
        tags["dem"] = raster_tag(dem.name, states[dem.name].current_version)
    return onemap_style(base_url(request), specs, registry, dem=dem, center=center, zoom=zoom, dem_bounds=dem_bounds,
                        tags=tags, basemap=request.app.state.settings.map_basemap_url)


@router.get("/styles/onemap.json", summary="MapLibre style of the one map")
async def style_doc(request: Request, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                    principal=Depends(get_principal)):
    return JSONResponse(await _style(request, conn, registry, principal), headers={"Cache-Control": "no-cache"})


@router.get("/map/style.json", summary="MapLibre style of the one map (alias)")
async def style_alias(request: Request, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                      principal=Depends(get_principal)):
    return JSONResponse(await _style(request, conn, registry, principal), headers={"Cache-Control": "no-cache"})


@router.get("/legend", summary="Legend of the one map (JSON, or HTML with f=html)")
async def legend_doc(request: Request, f: str | None = Query(None, description="json or html"),
                     conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                     principal=Depends(get_principal)):
    specs = await visible_layers(conn, principal, registry)
    entries = legend(specs, registry)
    if (f or "").lower() == "html" or (not f and negotiation.chosen(request, "json") == "html"):
        import html

        parts = ["<!doctype html><meta charset='utf-8'><title>Legend</title><body style='font-family:sans-serif'>"]
        for e in entries:
            parts.append(f"<h3>{html.escape(e['title']['zh'])} / {html.escape(e['title']['en'])}</h3><ul>")
            for c in e["classes"] or [{"code": "", "color": e["color"], "zh": e["title"]["zh"], "en": ""}]:
                parts.append(f"<li><span style='display:inline-block;width:14px;height:14px;background:"
                             f"{html.escape(c['color'])}'></span> {html.escape(c['code'])} "
                             f"{html.escape(c['zh'])} {html.escape(c['en'])}</li>")
            parts.append("</ul>")
        return HTMLResponse("".join(parts))
    return {"layers": entries, "view": signature(principal, await layer_states(conn), registry)}


# ---- raster download -----------------------------------------------------------------------
@router.get("/collections/{collection_id}/coverage", tags=["Coverages"],
            summary="The raster layer's current Cloud-Optimized GeoTIFF (HTTP range requests supported)")
async def coverage(collection_id: str, request: Request, conn: psycopg.AsyncConnection = Depends(get_conn),
                   registry: Registry = Depends(get_registry_dep), principal: Principal = Depends(get_principal),
                   settings: Settings = Depends(get_settings_dep)):
    """The whole COG as a file, so GDAL reads it remotely (``/vsicurl/``) by ranges."""
    from fastapi.responses import FileResponse

    spec = await require_layer(conn, principal, registry, collection_id)
    if spec.kind != "raster":
        raise InvalidInput(f"collection {collection_id!r} is a vector layer: use /items", parameter="collectionId")
    require_format(principal, "geotiff")
    current = await _current_raster(conn, spec, "collectionId")
    version = current.version
    path = raster_file(current, settings.data_path, "collectionId")
    if not path.exists():
        raise NotFound(f"the raster file of {spec.name!r} version {version} is missing on the server")
    return FileResponse(path, media_type="image/tiff; application=geotiff; profile=cloud-optimized",
                        filename=f"{spec.name}-v{version}.tif",
                        headers={"ETag": f'"{spec.name}-{version}"', "Cache-Control": "public, max-age=60"})

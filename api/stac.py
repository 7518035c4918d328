"""STAC API over the imagery catalogue: ``/stac`` (landing, conformsTo), ``/stac/collections``,
``/stac/collections/{id}``, its ``/items`` and one item, and ``/stac/search`` (GET and POST:
bbox, datetime, collections, ids, limit, CQL2 ``filter`` over ``/stac/queryables``, with next
links). Thin: documents and parameters are
:mod:`geobase.imagery.search`, the SQL :mod:`geobase.catalog.imagery`; who may see imagery is
:func:`geobase.security.require_imagery`."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from geobase.api.routing import LazyAPIRoute
from geobase.api.deps import base_url, caller_cache_headers, get_conn, get_registry_dep
from geobase.api.gate import get_principal

from geobase.catalog import imagery as cat
from geobase.errors import InvalidInput, NotFound
from geobase.imagery import search as stac
from geobase.security import Principal, require_imagery
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["Imagery (STAC)"])
GEOJSON = "application/geo+json"


async def imagery_caller(conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                         principal: Principal = Depends(get_principal)) -> Principal:
    """The caller, once it is known they may see imagery (404 otherwise, never 403)."""
    await require_imagery(conn, principal, registry)
    return principal


def _reply(doc: dict, principal: Principal, media: str = "application/json") -> JSONResponse:
    body = json.dumps(doc, sort_keys=True, default=str).encode()
    headers = caller_cache_headers(principal, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    return JSONResponse(doc, media_type=media, headers=headers)


@router.get("/stac", summary="STAC API landing page")
async def landing(request: Request, principal: Principal = Depends(imagery_caller)):
    return _reply(stac.landing(base_url(request)), principal)


@router.get("/stac/queryables", summary="Properties a STAC search filter may name (JSON Schema)")
async def queryables(request: Request, principal: Principal = Depends(imagery_caller)):
    return _reply(stac.queryables(base_url(request)), principal, "application/schema+json")


@router.get("/stac/collections", summary="Imagery collections (STAC)")
async def collections(request: Request, conn=Depends(get_conn), principal: Principal = Depends(imagery_caller)):
    return _reply(await stac.collections_doc(conn, base_url(request)), principal)


@router.get("/stac/collections/{collectionId}", summary="One imagery collection (STAC)")
async def collection(request: Request, collectionId: str, conn=Depends(get_conn),
                     principal: Principal = Depends(imagery_caller)):
    return _reply(await stac.collection_doc(conn, collectionId, base_url(request)), principal)


def _get_next(request: Request):
    def make(offset: int) -> dict:
        params = dict(request.query_params)
        params["token"] = str(offset)
        return {"rel": "next", "href": f"{base_url(request)}{request.url.path}?{urlencode(params)}",
                "type": GEOJSON, "method": "GET"}
    return make


@router.get("/stac/collections/{collectionId}/items", summary="A collection's items (STAC ItemCollection)")
async def collection_items(
    request: Request, collectionId: str,
    bbox: str | None = Query(None, description="minlon,minlat,maxlon,maxlat (EPSG:4326)"),
    datetime: str | None = Query(None, description="an instant or an interval a/b (.. for open)"),
    limit: int | None = Query(None, description=f"1..{stac.LIMIT_MAX} (default {stac.LIMIT_DEFAULT})"),
    token: int | None = Query(None, description="the next page's position (from a next link)"),
    conn=Depends(get_conn), principal: Principal = Depends(imagery_caller),
):
    await stac.collection_doc(conn, collectionId, base_url(request))  # 404 for an unknown collection
    q = stac.item_query({"collections": collectionId, "bbox": bbox, "datetime": datetime, "limit": limit,
                         "token": token})
    return _reply(await stac.search(conn, q, base_url(request), _get_next(request)), principal, GEOJSON)


@router.get("/stac/collections/{collectionId}/items/{itemId}", summary="One imagery item (STAC Item)")
async def item(request: Request, collectionId: str, itemId: str, conn=Depends(get_conn),
               principal: Principal = Depends(imagery_caller)):
    await stac.collection_doc(conn, collectionId, base_url(request))  # 404 for an unknown collection
    q = stac.item_query({"collections": collectionId, "ids": itemId})
    rows, _ = await cat.search_items(conn, q)
    if not rows:
        raise NotFound(f"item {itemId[:100]!r} of imagery collection {collectionId[:100]!r} not found",
                       parameter="itemId")
    return _reply(stac.item_document(rows[0], base_url(request)), principal, GEOJSON)


@router.get("/stac/search", summary="STAC item search (GET)")
async def search_get(
    request: Request,
    bbox: str | None = Query(None, description="minlon,minlat,maxlon,maxlat (EPSG:4326)"),
    datetime: str | None = Query(None, description="an instant or an interval a/b (.. for open)"),
    collections: str | None = Query(None, description="collection ids, comma-separated"),
    ids: str | None = Query(None, description="item ids, comma-separated"),
    limit: int | None = Query(None, description=f"1..{stac.LIMIT_MAX} (default {stac.LIMIT_DEFAULT})"),
    token: int | None = Query(None, description="the next page's position (from a next link)"),
    filter: str | None = Query(None, description="CQL2 over item properties (see /stac/queryables), e.g. "
                               "\"eo:cloud_cover\" < 10 AND platform = 'landsat-7'"),
    filter_lang: str | None = Query(None, alias="filter-lang", description="cql2-text (default) or cql2-json"),
    conn=Depends(get_conn), principal: Principal = Depends(imagery_caller),
):
    q = stac.item_query({"bbox": bbox, "datetime": datetime, "collections": collections, "ids": ids,
                         "limit": limit, "token": token, "filter": filter, "filter-lang": filter_lang})
    return _reply(await stac.search(conn, q, base_url(request), _get_next(request)), principal, GEOJSON)


@router.post("/stac/search", summary="STAC item search (POST, JSON body)")
async def search_post(request: Request, body: dict = Body(default_factory=dict), conn=Depends(get_conn),
                      principal: Principal = Depends(imagery_caller)):
    if not isinstance(body, dict):
        raise InvalidInput("body: a JSON object of search parameters", parameter="body")
    q = stac.item_query(body)
    base = base_url(request)

    def next_link(offset: int) -> dict:
        return {"rel": "next", "href": f"{base}/stac/search", "type": GEOJSON, "method": "POST",
                "body": {**body, "token": offset}, "merge": False}

    return _reply(await stac.search(conn, q, base, next_link), principal, GEOJSON)

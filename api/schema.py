"""Feature schemas (OGC API - Features Part 5) of every vector collection (thin router over
geobase.schema).

/collections/{id}/schema           the Part 5 schema (``[ogc-rel:schema]``)
/collections/{id}/schema/geojson   the schema of one GeoJSON Feature (``describedby``: what
                                   GDAL's OAPIF driver reads its field types from)

Both are in the caller's view: masked attributes are left out, as in the items.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from geobase.api.routing import LazyAPIRoute
from geobase import schema
from geobase.api.deps import (
    Collection,
    base_url,
    caller_cache_headers,
    feature_collection,
    get_registry_dep,
    not_modified,
    representation,
)
from geobase.api.gate import get_principal
from geobase.security import Principal
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["Schemas"])


def schema_links(root: str, cid: str) -> list[dict]:
    """The collection's links to its two schemas.

    ``describedby`` is written twice, as ``describedby`` and ``describedBy``: link relations
    compare case-insensitively (RFC 8288), but GDAL up to 3.6 (Debian 12's) compares
    ``== "describedBy"`` byte for byte, while later GDAL and other clients match the
    registered lower-case name. Both point at the same document."""
    part5 = f"{root}/collections/{cid}/schema"
    geojson = f"{root}/collections/{cid}/schema/geojson"
    return [
        {"rel": schema.REL_SCHEMA, "type": schema.MEDIA_TYPE, "title": "Schema of the features (Part 5)",
         "href": part5},
        {"rel": schema.REL_SCHEMA_CURIE, "type": schema.MEDIA_TYPE, "title": "Schema of the features (Part 5)",
         "href": part5},
        {"rel": "describedby", "type": schema.MEDIA_TYPE, "title": "JSON Schema of one feature as GeoJSON",
         "href": geojson},
        {"rel": "describedBy", "type": schema.MEDIA_TYPE, "title": "JSON Schema of one feature as GeoJSON",
         "href": geojson},
    ]


#: ``f`` values answered (JSON Schema is JSON: both name the one representation)
schema_format = representation(("json",), "json (the only representation)",
                               aliases={"application/json": "json", "application/schema+json": "json"})


def _schema_response(request: Request, principal: Principal, registry: Registry, coll: Collection,
                     path: str, build: Callable[..., dict]) -> Response:
    """One schema of a vector collection in the caller's view (masked attributes left out),
    with an ETag of its bytes (304 on If-None-Match) and per-caller caching."""
    spec = coll.spec
    url = f"{base_url(request)}/collections/{spec.name}/{path}"
    body = orjson.dumps(build(spec, set(coll.hidden), registry, url))
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = caller_cache_headers(principal, etag)
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=schema.MEDIA_TYPE, headers=headers)


@router.get("/collections/{collectionId}/schema", summary="Schema of the collection's features (JSON Schema, Part 5)",
            responses={200: {"content": {schema.MEDIA_TYPE: {}}}})
async def feature_schema(request: Request, fmt: str = Depends(schema_format),
                         coll: Collection = Depends(feature_collection),
                         principal: Principal = Depends(get_principal),
                         registry: Registry = Depends(get_registry_dep)):
    return _schema_response(request, principal, registry, coll, "schema", schema.feature_schema)


@router.get("/collections/{collectionId}/schema/geojson",
            summary="JSON Schema of one feature of the collection as GeoJSON (describedby)",
            responses={200: {"content": {schema.MEDIA_TYPE: {}}}})
async def geojson_schema(request: Request, fmt: str = Depends(schema_format),
                         coll: Collection = Depends(feature_collection),
                         principal: Principal = Depends(get_principal),
                         registry: Registry = Depends(get_registry_dep)):
    return _schema_response(request, principal, registry, coll, "schema/geojson", schema.geojson_feature_schema)

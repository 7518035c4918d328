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
import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from geobase.api.deps import base_url, caller_cache_headers, get_conn, get_registry_dep, not_modified

from geobase import schema
from geobase.errors import InvalidInput, NotFound
from geobase.api.gate import get_principal
from geobase.security import Principal, hidden_attributes, require_layer
from geobase.specs import Registry

router = APIRouter(tags=["Schemas"])

#: ``f`` values answered (JSON Schema is JSON: both name the one representation)
_FORMATS = {"json": "json", "application/json": "json", "application/schema+json": "json"}


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


async def _schema_response(request: Request, conn, principal: Principal, registry: Registry, cid: str,
                           f: str | None, path: str, build: Callable[..., dict]) -> Response:
    """One schema of a vector collection in the caller's view (masked attributes left out),
    with an ETag of its bytes (304 on If-None-Match) and per-caller caching."""
    if f is not None and f.strip().lower() not in _FORMATS:
        raise InvalidInput(f"f: {f!r} is not json (a schema is JSON Schema)", parameter="f")
    spec = await require_layer(conn, principal, registry, cid)
    if spec.kind != "vector":
        raise NotFound(f"collection {spec.name!r} is a raster coverage: it has no features and no feature "
                       f"schema; see /collections/{spec.name}/coverage", parameter="collectionId")
    url = f"{base_url(request)}/collections/{spec.name}/{path}"
    body = orjson.dumps(build(spec, hidden_attributes(principal, spec), registry, url))
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = caller_cache_headers(principal, etag)
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=schema.MEDIA_TYPE, headers=headers)


@router.get("/collections/{collectionId}/schema", summary="Schema of the collection's features (JSON Schema, Part 5)",
            responses={200: {"content": {schema.MEDIA_TYPE: {}}}})
async def feature_schema(request: Request, collectionId: str,
                         f: str | None = Query(None, description="json (the only representation)"),
                         conn: psycopg.AsyncConnection = Depends(get_conn),
                         principal: Principal = Depends(get_principal),
                         registry: Registry = Depends(get_registry_dep)):
    return await _schema_response(request, conn, principal, registry, collectionId, f, "schema",
                                  schema.feature_schema)


@router.get("/collections/{collectionId}/schema/geojson",
            summary="JSON Schema of one feature of the collection as GeoJSON (describedby)",
            responses={200: {"content": {schema.MEDIA_TYPE: {}}}})
async def geojson_schema(request: Request, collectionId: str,
                         f: str | None = Query(None, description="json (the only representation)"),
                         conn: psycopg.AsyncConnection = Depends(get_conn),
                         principal: Principal = Depends(get_principal),
                         registry: Registry = Depends(get_registry_dep)):
    return await _schema_response(request, conn, principal, registry, collectionId, f, "schema/geojson",
                                  schema.geojson_feature_schema)

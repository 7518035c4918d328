"""Features of a collection (OGC API - Features Parts 1-3) and what changed between versions:
/collections/{id}/items (GeoJSON, HTML, CSV, GeoPackage, FlatGeobuf), /items/{featureId} and
/collections/{id}/changes. Thin router: the collection, the representation and the items
parameters are dependencies (api/deps.py, api/item_params.py); the query is built by
:func:`geobase.features.build_query`; the answer is streamed by api/item_responses.py."""

from __future__ import annotations

import orjson
import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from geobase.api.routing import LazyAPIRoute
from geobase import formats
from geobase.api.deps import (
    Collection,
    base_url,
    caller_cache_headers,
    check_item_divisions,
    divisions_param,
    feature_collection,
    get_conn,
    not_modified,
    representation,
    streamed_feature_collection,
)
from geobase.api.item_params import (
    BOM,
    DOWNLOAD,
    NUMBER_MATCHED,
    changes_params,
    csv_bom,
    item_params,
    items_params,
    parse_bool,
    required_int,
)
from geobase.api.item_responses import DOWNLOADS, ItemsAnswer
from geobase.api.negotiation import GEOJSON
from geobase.api.pages import page_url, render, script_json
from geobase.api.params import allows_property_filters
from geobase.errors import InvalidInput
from geobase.catalog.state import LayerState
from geobase.editing import feature_hash
from geobase.features import ItemsParams, build_query, changes_source, etag_for, ids
from geobase.features.params import parse_list
from geobase.api.gate import get_principal
from geobase.security import Principal, require_format

router = APIRouter(route_class=LazyAPIRoute, tags=["Features"])

items_format = representation(("json", "geojson", "html", "csv", "gpkg", "fgb", "parquet"),
                              "geojson (default), html, csv (WKT geometry), gpkg, fgb, parquet (GeoParquet 1.1)")
item_format = representation(("json", "geojson", "html"), "geojson (default) or html")
changes_format = representation(("json", "geojson", "csv", "gpkg", "fgb", "parquet", "html"),
                                "geojson (default), csv, gpkg, fgb, parquet (GeoParquet 1.1)")


def _limits(request: Request, download: bool) -> dict[str, int | None]:
    """Page size bounds: a download is not paged (``limit`` caps it only when given)."""
    s = request.app.state.settings
    return {"default_limit": None if download else s.default_limit, "max_limit": None if download else s.max_limit}


@router.get("/collections/{collectionId}/items", summary="Features of a collection (paged, filtered, any CRS)",
            responses={200: {"content": {GEOJSON: {}, "text/html": {}, "text/csv": {},
                                         formats.MEDIA["gpkg"]: {}, formats.MEDIA["fgb"]: {},
                                         formats.MEDIA["parquet"]: {}}}})
@allows_property_filters
async def items(request: Request, fmt: str = Depends(items_format),
                c: Collection = Depends(streamed_feature_collection),
                p: ItemsParams = Depends(items_params),
                numberMatched: str | None = NUMBER_MATCHED, download: str | None = DOWNLOAD,
                bom: str | None = BOM, principal: Principal = Depends(get_principal)):
    dl = parse_bool(download, "download") or fmt in DOWNLOADS
    require_format(principal, fmt, dl)  # a request's key: only the file formats it was granted
    await check_item_divisions(request, c.spec.name, p)  # an unknown county is a 400, as on every endpoint
    q = build_query(c.state, set(c.hidden), p, desensitise=c.desensitise, within=c.within,
                    qualified_ids=c.qualified_ids, **_limits(request, dl))
    answer = ItemsAnswer(request, principal, c, f"/collections/{c.spec.name}/items")
    answer.bom = csv_bom(bom, fmt)
    return await answer.respond(q, fmt, dl, parse_bool(numberMatched, "numberMatched"))


@router.get("/collections/{collectionId}/items/{featureId}", summary="One feature by its stable key")
async def item(request: Request, featureId: str, fmt: str = Depends(item_format),
               c: Collection = Depends(feature_collection), p: ItemsParams = Depends(item_params),
               conn: psycopg.AsyncConnection = Depends(get_conn),
               principal: Principal = Depends(get_principal)):
    spec = c.spec
    require_format(principal, fmt, download=False)
    await check_item_divisions(request, spec.name, p)  # an unknown county is a 400, as on the lists
    q = build_query(c.state, set(c.hidden), p, desensitise=c.desensitise, within=c.within,
                    qualified_ids=c.qualified_ids, default_limit=1, max_limit=1)
    # the id names one feature, or none (404), or several (409 naming their qualified ids)
    ref = (await ids.resolve(conn, spec, featureId, version=q.version, current=q.is_current,
                             divisions=parse_list(p.extra.get("division")) or None) if q.version is not None else None)
    ref = ids.require(ref, spec, featureId, q.version)
    q.only_feature(ref)
    etag = etag_for(spec.name, q.version, c.state.current_version, featureId,
                    sorted(request.query_params.multi_items()), sorted(c.hidden), fmt)
    content = await feature_hash(conn, spec, ref, q.version)
    if c.desensitise is not None:
        content = None  # not the clear content's hash when desensitised
    if content is not None:  # strong: the content's hash (what If-Match of an edit names), then the representation
        etag = f'"{content}-{etag[1:17]}"'
    headers = caller_cache_headers(principal, etag)
    headers["Content-Crs"] = f"<{q.out_crs.uri}>"
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    row = await q.first_row(conn)
    if row is None:  # outside the caller's box, or filtered out by the request's own filters
        ids.require(None, spec, featureId, q.version)
    feat = orjson.loads(row[-1])
    root = base_url(request)
    feat["links"] = [
        {"rel": "self", "type": GEOJSON, "title": "This feature", "href": page_url(request, request.url.path, f="json")},
        {"rel": "alternate", "type": "text/html", "title": "This feature as HTML",
         "href": page_url(request, request.url.path, f="html")},
        {"rel": "collection", "type": "application/json", "title": "The collection",
         "href": f"{root}/collections/{spec.name}"},
    ]
    if fmt == "html":
        return render("feature.html", spec=spec, feature=feat, feature_json=script_json(orjson.dumps(feat).decode()),
                      root=root)
    return Response(orjson.dumps(feat), media_type=GEOJSON, headers=headers)


def _versions_compared(state: LayerState, from_: str, to: str | None) -> tuple[int, int]:
    """(from, to) of /changes: existing versions (0 = the empty layer), from < to."""
    v_from = required_int(from_, "from")
    v_to = required_int(to, "to") if to is not None else state.current_version
    if v_to is None:
        raise InvalidInput("to: the layer has no version yet", parameter="to")
    if v_from < 0 or (v_from != 0 and v_from not in state.versions):
        raise InvalidInput(f"from: version {v_from} does not exist; versions: {sorted(state.versions)}", parameter="from")
    if v_to not in state.versions:
        raise InvalidInput(f"to: version {v_to} does not exist; versions: {sorted(state.versions)}", parameter="to")
    if v_from >= v_to:
        raise InvalidInput(f"from: must be lower than to ({v_from} >= {v_to})", parameter="from")
    return v_from, v_to


@router.get("/collections/{collectionId}/changes",
            summary="Features added, removed and changed between two versions (paged like items)")
async def changes(request: Request, fmt: str = Depends(changes_format),
                  c: Collection = Depends(streamed_feature_collection),
                  from_: str = Query(..., alias="from", description="Version to compare from (0 = empty layer)"),
                  to: str | None = Query(None, description="Version to compare to (default: current)"),
                  p: ItemsParams = Depends(changes_params), bom: str | None = BOM,
                  divisions: list[str] | None = Depends(divisions_param),
                  principal: Principal = Depends(get_principal)):
    v_from, v_to = _versions_compared(c.state, from_, to)
    require_format(principal, fmt, fmt in DOWNLOADS)
    q = build_query(c.state, set(c.hidden), p, desensitise=c.desensitise, within=c.within,
                    qualified_ids=c.qualified_ids, **_limits(request, fmt in DOWNLOADS))
    q.source, change = changes_source(c.spec, v_from, v_to, divisions)
    q.extra_property = ("change", change)
    q.version = v_to
    q.has_spatial_or_filter = True
    answer = ItemsAnswer(request, principal, c, f"/collections/{c.spec.name}/changes")
    answer.bom = csv_bom(bom, fmt)
    return await answer.respond(q, fmt, fmt in DOWNLOADS, False, extra_etag=(v_from, v_to, divisions))

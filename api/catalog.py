"""The open catalog over HTTP: OGC API - Records Part 1 (``/collections/catalog`` and its
``/items``, also under ``/catalog``), DCAT JSON-LD (``/catalog/dcat.jsonld``), the CSV export
(``/catalog/items?f=csv``), CSW 2.0.2 (``/csw``, pycsw), the page for people (``/catalog`` in a
browser) and the admin's metadata and grade overrides.

Routes only: the records are built in :mod:`geobase.catalog.records`, encoded in
:mod:`geobase.opendata.encode`; which records a caller finds is decided in
:func:`geobase.security.record_visible` (zone, grade, openness, sharing).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path as FsPath

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from geobase.api.routing import LazyAPIRoute
from geobase.api import negotiation
from geobase.api.deps import base_url, get_conn, get_registry_dep, get_settings_dep, request_connection
from geobase.api.gate import get_principal
from geobase.api.params import allows_property_filters
from geobase.tiles.fresh import StatesFeed

from geobase import audit
from geobase.catalog.records import RecordCache, read_stamp, save_meta, set_grade
from geobase.db import connect
from geobase.errors import InvalidInput, NotFound
from geobase.opendata import encode
from geobase.opendata.grades import zone_table_rows
from geobase.security import LayerAccess, Principal, network_zone, record_visible, require_role
from geobase.settings import Settings
from geobase.specs import Registry
from geobase.vocab import NAME_PATTERN

router = APIRouter(route_class=LazyAPIRoute, tags=["Catalog"])
TEMPLATE = FsPath(__file__).resolve().parents[1] / "tiles" / "templates" / "catalog.html"
_CACHE = RecordCache()
GEOJSON = "application/geo+json"


async def visible_records(request: Request, conn, registry: Registry, principal: Principal) -> list[dict]:
    """The records this caller may find, in id order, of the catalog state read after the
    request arrived: on ``conn``, or (None) by the shared stamp read (:func:`_stamp_feed`) with a
    pooled connection taken only to build the records of a new state."""
    cache: RecordCache = getattr(request.app.state, "catalog_records", None) or _CACHE
    view = (principal.is_admin, principal.is_public, principal.department, principal.scope, network_zone())

    def visible(r: dict) -> bool:
        return record_visible(principal, LayerAccess(*r["access"], r["grade"], r["openness"]))

    if conn is not None:
        return await cache.view(conn, registry, view, visible)
    stamp = await _stamp_feed(request).states()
    got = cache.kept_view(stamp, registry, view, visible)
    if got is None:
        async with request_connection(request) as c:
            got = await cache.view(c, registry, view, visible, stamp)
    return got


def _stamp_feed(request: Request) -> StatesFeed:
    """The catalog state's stamp for many searches at once: one read serves every request that
    arrived before it started, so each is as fresh as a read of its own (the tiles' single-flight
    reader, :class:`geobase.tiles.fresh.StatesFeed`, here reading :func:`read_stamp`)."""
    state = request.app.state
    feed = getattr(state, "catalog_stamp_feed", None)
    if feed is None:
        async def read() -> tuple:
            async with state.pool.connection(timeout=state.settings.pool_timeout_s) as conn:
                return await read_stamp(conn)

        feed = state.catalog_stamp_feed = StatesFeed(read)
    return feed


def _collection(root: str) -> dict:
    return {
        "id": "catalog", "itemType": "record", "type": "Collection",
        "title": "自然资源数据资源目录 / Natural resources data catalog",
        "description": "Every dataset of this one map: layers, rasters and registered resources, by theme, "
                       "class (现状/规划/管理/社会经济), level (国家/省/市/县), grade and openness.",
        "conformsTo": ["http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/record-core",
                       "http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/record-collection"],
        "networkZone": network_zone(),
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{root}/collections/catalog"},
            {"rel": "items", "type": GEOJSON, "href": f"{root}/collections/catalog/items"},
            {"rel": "alternate", "type": "text/html", "href": f"{root}/catalog?f=html"},
            {"rel": "describedby", "type": "application/ld+json", "title": "DCAT", "href": f"{root}/catalog/dcat.jsonld"},
            {"rel": "alternate", "type": "text/csv", "title": "CSV export", "href": f"{root}/catalog/items?f=csv"},
            {"rel": "service", "type": "application/xml", "title": "CSW 2.0.2",
             "href": f"{root}/csw?service=CSW&version=2.0.2&request=GetCapabilities"},
        ],
    }


def _fmt(request: Request, f: str | None, allowed: tuple[str, ...]) -> str:
    """``f=`` (checked: 400 naming it) or what the Accept header chose."""
    if f is None:
        return negotiation.chosen(request, allowed[0])
    if f.lower() not in allowed:
        raise InvalidInput(f"f: one of {', '.join(allowed)}", parameter="f")
    return f.lower()


def _page() -> HTMLResponse:
    return HTMLResponse(TEMPLATE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})


@router.get("/catalog", summary="The catalog: the page for people, or the records collection (JSON)")
@router.get("/collections/catalog", summary="The catalog records collection (OGC API - Records)")
async def catalog_landing(request: Request, f: str | None = Query(None, description="json or html")):
    if _fmt(request, f, ("json", "html")) == "html":
        return _page()
    return JSONResponse(_collection(base_url(request)))


async def _search(request, registry, principal, q, bbox, datetime, type, facets):
    query = encode.parse_query(q, bbox, datetime, type, facets)
    return encode.search(await visible_records(request, None, registry, principal), query)


@router.get("/catalog/items", summary="Search the catalog (OGC API - Records)")
@router.get("/collections/catalog/items", summary="Search the catalog (OGC API - Records)")
async def catalog_items(
    request: Request, registry: Registry = Depends(get_registry_dep),
    principal: Principal = Depends(get_principal),
    q: str | None = Query(None, max_length=400, description="words, all of which a record must contain"),
    bbox: str | None = Query(None, max_length=200, description="minx,miny,maxx,maxy (CRS84)"),
    datetime: str | None = Query(None, max_length=100, description="instant or interval a/b (.. open)"),
    type: str | None = Query(None, max_length=100, description="record type (dataset)"),
    theme: str | None = Query(None, max_length=400), class_: str | None = Query(None, alias="class", max_length=200),
    level: str | None = Query(None, max_length=200), grade: str | None = Query(None, max_length=200),
    openness: str | None = Query(None, max_length=200), department: str | None = Query(None, max_length=400),
    tag: str | None = Query(None, max_length=400), kind: str | None = Query(None, max_length=100),
    limit: int = Query(10, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000),
    f: str | None = Query(None, description="json, html or csv"), lang: str = Query("zh", pattern="^(zh|en)$"),
):
    facets = {"theme": theme, "class": class_, "level": level, "grade": grade, "openness": openness,
              "department": department, "tag": tag, "kind": kind}
    hits, counts = await _search(request, registry, principal, q, bbox, datetime, type, facets)
    fmt = _fmt(request, f, ("json", "html", "csv"))
    root = base_url(request)
    if fmt == "csv":
        return Response(encode.catalog_csv(hits, root), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="catalog.csv"'})
    if fmt == "html":
        return _page()
    page = hits[offset:offset + limit]
    params = {k: v for k, v in request.query_params.items() if k not in ("offset", "f")}
    links = [{"rel": "self", "type": GEOJSON, "href": str(request.url)},
             {"rel": "collection", "type": "application/json", "href": f"{root}/collections/catalog"}]
    if offset + limit < len(hits):
        nxt = request.url.replace_query_params(**params, offset=offset + limit)
        links.append({"rel": "next", "type": GEOJSON, "href": str(nxt)})
    if offset > 0:
        prev = request.url.replace_query_params(**params, offset=max(0, offset - limit))
        links.append({"rel": "prev", "type": GEOJSON, "href": str(prev)})
    return Response(orjson.dumps({"type": "FeatureCollection", "numberMatched": len(hits), "numberReturned": len(page),
                                  "features": [encode.record_json(r, root, lang) for r in page],
                                  "facets": counts, "links": links}), media_type=GEOJSON)


@router.get("/catalog/items/{recordId}", summary="One catalog record")
@router.get("/collections/catalog/items/{recordId}", summary="One catalog record")
async def catalog_record(request: Request, recordId: str = Path(max_length=63), conn=Depends(get_conn),
                         registry: Registry = Depends(get_registry_dep), principal: Principal = Depends(get_principal),
                         f: str | None = Query(None, description="json or html"),
                         lang: str = Query("zh", pattern="^(zh|en)$")):
    for r in await visible_records(request, conn, registry, principal):
        if r["id"] == recordId:
            if _fmt(request, f, ("json", "html")) == "html":
                return _page()
            return Response(orjson.dumps(encode.record_json(r, base_url(request), lang)), media_type=GEOJSON)
    raise NotFound(f"record {recordId[:63]!r} not found", parameter="recordId")


@router.get("/catalog/dcat.jsonld", summary="The catalog as DCAT (JSON-LD)")
async def catalog_dcat(request: Request, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                       principal: Principal = Depends(get_principal)):
    records = await visible_records(request, conn, registry, principal)
    return JSONResponse(encode.dcat_catalog(records, base_url(request)), media_type="application/ld+json")


@router.get("/catalog/zones", summary="Which grade x openness may exist in which network zone")
async def catalog_zones():
    return {"zone": network_zone(), "table": zone_table_rows()}


#: the KVP parameter names of CSW 2.0.2 (OGC 07-006r1, tables 5-6 and 7.2-10.6; compared
#: case-insensitively, as the standard says); pycsw ignores a name it does not know, so any other
#: name is refused here with a 400 naming it (a misspelt ``constraint`` must not return everything)
CSW_KVP = frozenset({
    "service", "version", "request", "acceptversions", "sections", "updatesequence", "acceptformats",
    "outputformat", "typename", "typenames", "namespace", "resulttype", "requestid", "outputschema",
    "startposition", "maxrecords", "elementsetname", "elementname", "constraintlanguage", "constraint",
    "constraint_language_version", "sortby", "distributedsearch", "hopcount", "responsehandler", "id",
    "schemalanguage", "source", "resourcetype", "harvestinterval", "language",
})
CSW_RESPONSES = {200: {"content": {"application/xml": {}}, "description": "a CSW 2.0.2 document"},
                 400: {"content": {"application/xml": {},
                                   "application/json": {"schema": {"$ref": "#/components/schemas/Exception"}}},
                       "description": "a refused parameter (JSON) or a CSW ExceptionReport (XML)"}}


def _csw_parameters_checked(request: Request) -> None:
    """CSW KVP names only on GET; none on POST (the request is the XML body)."""
    for name in request.query_params.keys():
        if request.method == "POST" or name.lower() not in CSW_KVP:
            where = "POST /csw takes its request as an XML body" if request.method == "POST" else \
                "not a CSW 2.0.2 KVP parameter"
            raise InvalidInput(f"unknown query parameter {name!r}: {where}", parameter=name)


@router.get("/csw", summary="CSW 2.0.2 (pycsw) over the catalog records: KVP", operation_id="csw_get",
            response_class=Response, responses=CSW_RESPONSES)
@router.post("/csw", summary="CSW 2.0.2 (pycsw) over the catalog records: XML", operation_id="csw_post",
             response_class=Response, responses=CSW_RESPONSES)
@allows_property_filters   # CSW's KVP parameters (case-insensitive) are checked against CSW_KVP below
async def csw(request: Request, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
              principal: Principal = Depends(get_principal)):
    from geobase.opendata.csw import CswEndpoint

    _csw_parameters_checked(request)
    records = await visible_records(request, conn, registry, principal)
    endpoint: CswEndpoint = getattr(request.app.state, "csw_endpoint", None) or CswEndpoint()
    request.app.state.csw_endpoint = endpoint
    body = await request.body()
    url = f"{base_url(request)}/csw"
    status, headers, content = await asyncio.to_thread(
        endpoint.handle, records, url, request.method, str(request.url.query), body,
        request.headers.get("content-type", ""))
    return Response(content, status_code=status, headers=headers)


def _admin(principal: Principal = Depends(get_principal)) -> Principal:
    require_role(principal, "admin")
    return principal


@router.put("/admin/catalog/{dataset}", summary="Set a record's metadata (titles, abstracts, class, level, ...)")
def admin_record_meta(dataset: str = Path(pattern=NAME_PATTERN), meta: dict = Body(...),
                      principal: Principal = Depends(_admin), settings: Settings = Depends(get_settings_dep),
                      registry: Registry = Depends(get_registry_dep)):
    audit.note(action="catalog.meta", layer=dataset, meta=sorted(meta)[:50] if isinstance(meta, dict) else None)
    with connect(settings) as conn:
        out = save_meta(conn, registry, dataset, meta, principal.name)
        conn.commit()
    return {"dataset": dataset, "meta": out}


@router.put("/admin/catalog/{dataset}/grade", summary="Override a layer's grade and openness (null: the spec's)")
def admin_grade(dataset: str = Path(pattern=NAME_PATTERN), body: dict = Body(...),
                _: Principal = Depends(_admin), settings: Settings = Depends(get_settings_dep),
                registry: Registry = Depends(get_registry_dep)):
    grade, openness = body.get("grade"), body.get("openness")
    audit.note(action="catalog.grade", layer=dataset, grade=grade, openness=openness)
    with connect(settings) as conn:
        out = set_grade(conn, registry, dataset, grade, openness)
        conn.commit()
    return out


_PREPARING: dict[str, asyncio.Lock] = {}


@router.get("/catalog/items/{recordId}/download", summary="The whole dataset as one file (prepared once per "
            "version; Range requests; SHA-256 in the headers)")
async def catalog_download(request: Request, recordId: str = Path(max_length=63),
                           f: str = Query("parquet", description="shp (zipped), parquet, gpkg, fgb or geojson"),
                           conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                           principal: Principal = Depends(get_principal)):
    from fastapi.responses import FileResponse

    from geobase.db import database_url
    from geobase.opendata import bulk
    from geobase.security import desensitisation, hidden_attributes, require_format, require_layer, scope_box

    if f not in bulk.FORMATS:
        raise InvalidInput(f"f: one of {', '.join(bulk.FORMATS)}", parameter="f")
    spec = await require_layer(conn, principal, registry, recordId)   # zone, grade, openness, sharing, scope
    require_format(principal, f)
    if spec.kind != "vector":
        raise InvalidInput(f"{recordId!r} is a raster: download it from /collections/{recordId}/coverage",
                           parameter="recordId")
    settings: Settings = request.app.state.settings
    # the caller's view: readable attributes, masked ones (masked), the desensitised geometry, a key's box
    d, box = desensitisation(principal, spec), scope_box(principal)
    hidden = hidden_attributes(principal, spec) - set(d.shown_masked if d else ())
    attributes = [a for a in spec.attribute_names if a not in hidden]
    lock = _PREPARING.setdefault(bulk.cache_key(spec, attributes, f, d, box), asyncio.Lock())
    async with lock:   # one preparation per file, the others wait for it
        path = await asyncio.to_thread(bulk.prepare, database_url(settings), spec, attributes, f,
                                       settings.data_path, settings.analysis_statement_timeout_ms, d,
                                       list(box) if box else None)
    digest = bulk.sha256_of(path)
    audit.note(action="catalog.download", layer=spec.name, format=f)
    ext, media = bulk.FORMATS[f]
    version = path.parent.name.split("-")[0]
    return FileResponse(path, media_type=media, filename=f"{spec.name}-{version}.{ext}",
                        headers={"ETag": f'"{digest}"', "X-Checksum-SHA256": digest,
                                 "Digest": "sha-256=" + base64.b64encode(bytes.fromhex(digest)).decode()})

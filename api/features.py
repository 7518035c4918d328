"""OGC API - Features Parts 1, 2 and 3 over every layer (thin router over geobase.features).

/conformance, /collections, /collections/{id}, /collections/{id}/queryables,
/collections/{id}/items (GeoJSON, HTML, CSV, GeoPackage, FlatGeobuf), /items/{featureId}
and /collections/{id}/changes (what changed between two versions).

Every endpoint resolves the caller (``get_principal``) and only shows layers and attributes
the caller may see (``require_layer``/``visible_layers``/``hidden_attributes``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from urllib.parse import urlencode

import orjson
import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from geobase.api import negotiation
from geobase.api.deps import (
    base_url,
    caller_cache_headers,
    get_conn,
    get_registry_dep,
    not_modified,
    request_connection,
)
from geobase.api.schema import schema_links
from geobase.api.params import allows_property_filters, extra_query_parameters
from jinja2 import Environment, FileSystemLoader, select_autoescape
from psycopg import sql

from geobase import audit, formats
from geobase.catalog import layers as catalog_layers
from geobase.catalog.state import LayerState, layer_state
from geobase.crs import CRS84, STORAGE_CRS
from geobase.db import database_url
from geobase.errors import InvalidInput, NotFound, ServiceUnavailable
from geobase.features import (
    ItemsParams,
    build_query,
    changes_source,
    encode_cursor,
    etag_for,
    queryable_types,
)
from geobase.security import Principal, get_principal, hidden_attributes, require_layer, visible_layers
from geobase.specs import LayerSpec, Registry

router = APIRouter(tags=["Features"])
TEMPLATES = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                        autoescape=select_autoescape(["html"]))

OGC = "http://www.opengis.net/spec"
CONFORMANCE = [
    f"{OGC}/ogcapi-features-1/1.0/conf/core",
    f"{OGC}/ogcapi-features-1/1.0/conf/geojson",
    f"{OGC}/ogcapi-features-1/1.0/conf/html",
    f"{OGC}/ogcapi-features-1/1.0/conf/oas30",
    f"{OGC}/ogcapi-features-2/1.0/conf/crs",
    f"{OGC}/ogcapi-features-3/1.0/conf/queryables",
    f"{OGC}/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    f"{OGC}/ogcapi-features-3/1.0/conf/filter",
    f"{OGC}/ogcapi-features-3/1.0/conf/features-filter",
    f"{OGC}/cql2/1.0/conf/cql2-text",
    f"{OGC}/cql2/1.0/conf/cql2-json",
    f"{OGC}/cql2/1.0/conf/basic-cql2",
    f"{OGC}/cql2/1.0/conf/advanced-comparison-operators",
    f"{OGC}/cql2/1.0/conf/property-property",
    f"{OGC}/cql2/1.0/conf/basic-spatial-functions",
    f"{OGC}/cql2/1.0/conf/basic-spatial-functions-plus",
    f"{OGC}/cql2/1.0/conf/spatial-functions",
]


def _declared_conformance() -> list[str]:
    """Features classes plus those of the other areas that are mounted (tiles, processes)."""
    classes = list(CONFORMANCE)
    try:
        from geobase.tiles.ogc import TILES_CONFORMANCE

        classes += TILES_CONFORMANCE
    except ImportError:  # pragma: no cover - tiles not installed
        pass
    try:
        from geobase.api.analysis import PROCESSES_CONFORMANCE  # type: ignore[attr-defined]

        classes += PROCESSES_CONFORMANCE
    except ImportError:
        pass
    return classes
GEOJSON = "application/geo+json"
DOWNLOADS = {"csv", "gpkg", "fgb"}
FORMATS = {"json", "geojson", "html", "csv", "gpkg", "fgb"}


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _format(request: Request, f: str | None, allowed: set[str] = FORMATS) -> str:
    if f:
        v = f.lower().strip()
        v = {"application/geo+json": "geojson", "application/json": "json", "text/html": "html",
             "text/csv": "csv", "flatgeobuf": "fgb", "geopackage": "gpkg"}.get(v, v)
        if v not in allowed:
            raise InvalidInput(f"f: {f!r} is not one of {', '.join(sorted(allowed))}", parameter="f")
        return v
    # Accept, with q-values, was weighed once for every route (api/negotiation.py)
    v = negotiation.chosen(request, "json")
    return v if v in allowed else "json"


def _render(name: str, **ctx) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**ctx))


def _url(request: Request, path: str, **params) -> str:
    """An absolute link with the request's query parameters replaced by ``params`` (None drops)."""
    q = dict(request.query_params)
    for k, v in params.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = v
    return f"{base_url(request)}{path}" + (("?" + urlencode(q)) if q else "")


async def _layer(conn, principal, registry, cid) -> tuple[LayerSpec, LayerState, set[str]]:
    spec = await require_layer(conn, principal, registry, cid)
    state = await layer_state(conn, spec)
    return spec, state, hidden_attributes(principal, spec)


def _params(request: Request, **kw) -> ItemsParams:
    qp = request.query_params
    return ItemsParams(bbox_crs=qp.get("bbox-crs"), filter_lang=qp.get("filter-lang"),
                       filter_crs=qp.get("filter-crs"), **kw)


def _bool(value: str | None, parameter: str) -> bool:
    if value is None:
        return False
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no", ""):
        return False
    raise InvalidInput(f"{parameter}: {value!r} is not true/false", parameter=parameter)


def collection_doc(request: Request, spec: LayerSpec, state: LayerState, first_created: dt.datetime | None,
                   registry: Registry) -> dict:
    root = base_url(request)
    cid = spec.name
    dept = registry.departments.get(spec.department)
    links = [
        {"rel": "self", "type": "application/json", "title": "This collection", "href": f"{root}/collections/{cid}?f=json"},
        {"rel": "alternate", "type": "text/html", "title": "This collection as HTML", "href": f"{root}/collections/{cid}?f=html"},
        {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector" if spec.kind == "vector"
         else "http://www.opengis.net/def/rel/ogc/1.0/tilesets-map",
         "type": "application/json", "title": "Tiles", "href": f"{root}/collections/{cid}/tiles"},
        {"rel": "license", "type": "text/html", "title": spec.licence, "href": f"{root}/collections/{cid}?f=html#licence"},
    ]
    doc = {
        "id": cid,
        "title": f"{spec.title.zh} / {spec.title.en}",
        "description": spec.description.strip(),
        "keywords": spec.keywords,
        "attribution": dept.name.zh + " / " + dept.name.en if dept else spec.department,
        "department": spec.department,
        "license": spec.licence,
        "contact": spec.contact,
        "updateFrequency": spec.update_frequency,
        "kind": spec.kind,
        "currentVersion": state.current_version,
        "links": links,
    }
    ext = state.extent
    created = [v["created_at"] for v in state.versions.values()]
    doc["extent"] = {
        "spatial": {"bbox": [ext] if ext else [[-180, -90, 180, 90]], "crs": CRS84},
        "temporal": {"interval": [[(first_created or (min(created) if created else None)).isoformat()
                                   if (first_created or created) else None, None]],
                     "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"},
    }
    if spec.kind == "vector":
        doc["itemType"] = "feature"
        doc["geometryType"] = spec.geometry
        doc["crs"] = state.crs_uris()
        doc["storageCrs"] = STORAGE_CRS
        cur = state.versions.get(state.current_version or -1)
        doc["featureCount"] = cur["rows_total"] if cur else 0
        links += [
            {"rel": "items", "type": GEOJSON, "title": "Features (GeoJSON)", "href": f"{root}/collections/{cid}/items"},
            {"rel": "items", "type": "text/html", "title": "Features (HTML)", "href": f"{root}/collections/{cid}/items?f=html"},
            {"rel": "items", "type": "text/csv", "title": "Download CSV (WKT)", "href": f"{root}/collections/{cid}/items?f=csv"},
            {"rel": "items", "type": formats.MEDIA["gpkg"], "title": "Download GeoPackage",
             "href": f"{root}/collections/{cid}/items?f=gpkg"},
            {"rel": "items", "type": formats.MEDIA["fgb"], "title": "Download FlatGeobuf",
             "href": f"{root}/collections/{cid}/items?f=fgb"},
            {"rel": "items", "type": "text/csv", "title": "Download CSV for Excel (UTF-8 with BOM)",
             "href": f"{root}/collections/{cid}/items?f=csv&bom=true"},
            {"rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables", "type": "application/schema+json",
             "title": "Queryables", "href": f"{root}/collections/{cid}/queryables"},
            *schema_links(root, cid),
            {"rel": "describedby", "type": "application/json", "title": "Change feed between versions",
             "href": f"{root}/collections/{cid}/changes?from={max((state.current_version or 1) - 1, 0)}"},
        ]
    else:
        # not an item collection: no itemType and no items link, and the names clients use to
        # skip such collections when they copy every item collection (GDAL's OAPIF driver
        # skips a collection whose layerDataType is "Coverage"; OGC API - Common's dataType)
        doc["layerDataType"] = "Coverage"
        doc["dataType"] = "coverage"
        links.append({"rel": "http://www.opengis.net/def/rel/ogc/1.0/coverage", "type": "image/tiff; application=geotiff",
                      "title": "Coverage (COG)", "href": f"{root}/collections/{cid}/coverage"})
    return doc


# ------------------------------------------------------------------------------------------
# capabilities
# ------------------------------------------------------------------------------------------
@router.get("/conformance", summary="Conformance classes implemented", tags=["Capabilities"])
async def conformance(request: Request, f: str | None = Query(None, description="json or html")):
    if _format(request, f, {"json", "html"}) == "html":
        return _render("conformance.html", classes=_declared_conformance(), root=base_url(request))
    return JSONResponse({"conformsTo": _declared_conformance()})


@router.get("/collections", summary="The collections (layers) the caller may see")
async def collections(request: Request, f: str | None = Query(None, description="json or html"),
                      conn: psycopg.AsyncConnection = Depends(get_conn),
                      principal: Principal = Depends(get_principal),
                      registry: Registry = Depends(get_registry_dep)):
    fmt = _format(request, f, {"json", "html"})
    specs = await visible_layers(conn, principal, registry)
    first = await catalog_layers.first_created(conn)
    docs = [collection_doc(request, s, await layer_state(conn, s), first.get(s.name), registry) for s in specs]
    root = base_url(request)
    body = {
        "links": [
            {"rel": "self", "type": "application/json", "title": "This document", "href": f"{root}/collections?f=json"},
            {"rel": "alternate", "type": "text/html", "title": "This document as HTML", "href": f"{root}/collections?f=html"},
        ],
        "collections": docs,
        "crs": sorted({c for d in docs for c in d.get("crs", [])}),
    }
    if fmt == "html":
        return _render("collections.html", collections=docs, root=root)
    return JSONResponse(body)


@router.get("/collections/{collectionId}", summary="One collection: extent, CRSs, versions, links")
async def collection(request: Request, collectionId: str, f: str | None = Query(None, description="json or html"),
                     conn: psycopg.AsyncConnection = Depends(get_conn),
                     principal: Principal = Depends(get_principal),
                     registry: Registry = Depends(get_registry_dep)):
    fmt = _format(request, f, {"json", "html"})
    spec, state, hidden = await _layer(conn, principal, registry, collectionId)
    doc = collection_doc(request, spec, state, None, registry)
    if fmt == "html":
        return _render("collection.html", c=doc, spec=spec, hidden=hidden, root=base_url(request))
    return JSONResponse(doc)


@router.get("/collections/{collectionId}/queryables", summary="Queryable properties (JSON Schema)")
async def queryables(request: Request, collectionId: str, f: str | None = Query(None, description="json or html"),
                     conn: psycopg.AsyncConnection = Depends(get_conn),
                     principal: Principal = Depends(get_principal),
                     registry: Registry = Depends(get_registry_dep)):
    fmt = _format(request, f, {"json", "html"})
    spec, state, hidden = await _layer(conn, principal, registry, collectionId)
    if spec.kind != "vector":
        raise NotFound(f"collection {spec.name!r} is a raster coverage: it has no queryable properties",
                       parameter="collectionId")
    json_types = {"text": "string", "integer": "integer", "number": "number", "boolean": "boolean",
                  "date": "string", "datetime": "string"}
    props: dict[str, dict] = {
        "geometry": {"title": "Geometry", "format": f"geometry-{(spec.geometry or 'any').lower()}",
                     "x-ogc-role": "primary-geometry"},
    }
    for name, typ in queryable_types(spec, hidden).items():
        schema: dict = {"type": json_types[typ]}
        try:
            attr = spec.attribute(name)
        except KeyError:
            attr = None
        if attr is None:
            schema.update({"title": "Ellipsoidal area (m²)" if name == "_area_m2" else "Ellipsoidal length (m)",
                           "x-ogc-unit": "m2" if name == "_area_m2" else "m", "readOnly": True})
        else:
            if attr.title:
                schema["title"] = f"{attr.title.zh} / {attr.title.en}"
            if attr.description:
                schema["description"] = attr.description
            if typ == "date":
                schema["format"] = "date"
            if typ == "datetime":
                schema["format"] = "date-time"
            if attr.unit:
                schema["x-ogc-unit"] = attr.unit
            if attr.code_list:
                codes = registry.code_lists[attr.code_list].codes
                schema["enum"] = [c.code for c in codes]
                schema["oneOf"] = [{"const": c.code, "title": f"{c.zh} / {c.en}"} for c in codes]
                schema["x-ogc-codelist"] = attr.code_list
            if name == spec.class_field:
                schema["x-ogc-role"] = "type"
            if spec.source_key == [name]:
                schema["x-ogc-role"] = "id"
        props[name] = schema
    root = base_url(request)
    doc = {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$id": f"{root}/collections/{spec.name}/queryables",
        "type": "object",
        "title": f"{spec.title.zh} / {spec.title.en}",
        "properties": props,
        "additionalProperties": False,
    }
    if fmt == "html":
        return _render("queryables.html", doc=doc, spec=spec, root=root)
    return JSONResponse(doc, media_type="application/schema+json")


# ------------------------------------------------------------------------------------------
# items
# ------------------------------------------------------------------------------------------
_ITEM_PARAMS = dict(
    limit=Query(None, ge=1, description="Page size: 1..GEOBASE_MAX_LIMIT (default 100, max 10,000). Downloads "
                "(csv/gpkg/fgb, download=true) are not paged: limit caps them only when given.",
                json_schema_extra={"default": 100, "maximum": 10_000}),
    bbox=Query(None, description="minx,miny,maxx,maxy (4 or 6 numbers) in bbox-crs axis order (default CRS84 lon/lat)"),
    datetime=Query(None, description="Instant or interval (RFC 3339, '..' open): the features as they were in the "
                   "layer version current at the instant (or at the end of the interval)"),
    crs=Query(None, description="Output CRS URI (see the collection's crs list); EPSG:4326/4490 are output lat/lon"),
    filter=Query(None, description="CQL2 filter (text or JSON, see filter-lang)"),
    properties=Query(None, description="Comma-separated properties to return"),
    sortby=Query(None, description="Comma-separated properties, prefix - for descending (+ or none ascending)"),
    skipGeometry=Query(None, description="true: features without geometry"),
    precision=Query(None, ge=0, le=15, description="Coordinate decimals (default 7 for degrees, 2 for metres)"),
    distance=Query(None, ge=0, description="Metres (ellipsoidal): features within this distance of point or geometry"),
    point=Query(None, description="lon,lat (CRS84) for distance"),
    geometry=Query(None, description="WKT geometry (CRS84) for distance"),
    cursor=Query(None, description="Paging token from next/prev links"),
    numberMatched=Query(None, description="true: also count all matching features"),
    download=Query(None, description="true: the whole result as an attachment (not paged)"),
    bom=Query(None, description="With f=csv, true: start with a UTF-8 byte order mark, so that Excel shows "
              "Chinese text right"),
    f=Query(None, description="geojson (default), html, csv (WKT geometry), gpkg, fgb"),
)


def _streaming(request: Request, body, media_type: str, headers: dict) -> formats.ClosingStreamingResponse:
    """A streamed response, gzipped here (fast level, off the event loop) when the client
    accepts it."""
    if formats.accepts_gzip(request.headers.get("accept-encoding")):
        headers = dict(headers, **{"Content-Encoding": "gzip"})
        headers.pop("Content-Length", None)
        body = formats.gzipped(body)
    headers["Vary"] = headers.get("Vary", "Accept") + ", Accept-Encoding"
    return formats.ClosingStreamingResponse(body, media_type=media_type, headers=headers)


class _Items:
    """The shared flow of /items and /changes: parse, ETag, run, stream in the asked format."""

    def __init__(self, request: Request, principal: Principal, spec: LayerSpec, state: LayerState,
                 hidden: set[str], path: str):
        self.request, self.principal, self.spec, self.state, self.hidden = request, principal, spec, state, hidden
        self.path = path
        self.settings = request.app.state.settings
        self.pool = request.app.state.pool
        self.bom = False  # CSV with a UTF-8 byte order mark (set from ``bom=true``)

    async def respond(self, q, fmt: str, download: bool, want_count: bool, extra_etag=()):
        """Answer from connections taken here, one at a time (the caller holds none)."""
        settings = self.settings
        gz = formats.accepts_gzip(self.request.headers.get("accept-encoding"))
        etag = etag_for(self.spec.name, q.version, self.state.current_version, sorted(self.request.query_params.multi_items()),
                        sorted(self.hidden), fmt, gz, *extra_etag)
        headers = caller_cache_headers(self.principal, etag)
        headers["Content-Crs"] = f"<{q.out_crs.uri}>"
        if not_modified(self.request, etag):
            return Response(status_code=304, headers=headers)
        if fmt in DOWNLOADS or download:
            return await self._download(q, fmt, headers)
        number_matched = None
        if want_count:
            try:
                async with self.pool.connection(timeout=settings.pool_timeout_s) as conn:
                    cur = await conn.execute(q.count_sql())
                    number_matched = (await cur.fetchone())[0]
            except formats.CLIENT_ERRORS as exc:
                raise formats.client_error(exc) from None
        elif not q.has_spatial_or_filter and q.source is None and q.cursor_values is None:
            info = self.state.versions.get(q.version or -1)
            number_matched = info["rows_total"] if info else 0
        stream = await formats.RowStream(self.pool, q.page_sql(), timeout_ms=settings.statement_timeout_ms,
                                         pool_timeout=settings.pool_timeout_s, fast_start=q.limit is None).open()
        nkeys = len(q.sort)
        forward = q.cursor_dir == "n"
        st = {"n": 0, "more": False, "first": None, "last": None}

        async def rows():
            buffered: list[tuple] = []
            batches = stream.batches()
            try:
                async for batch in batches:
                    for row in batch:
                        if q.limit is not None and st["n"] >= q.limit:
                            st["more"] = True
                            break
                        st["n"] += 1
                        if forward:
                            if st["first"] is None:
                                st["first"] = list(row[:nkeys])
                            st["last"] = list(row[:nkeys])
                            yield row[nkeys]
                        else:
                            buffered.append(row)
                    if st["more"]:
                        break
            finally:
                await batches.aclose()
                await stream.close()
            if not forward:
                buffered.reverse()
                if buffered:
                    st["first"], st["last"] = list(buffered[0][:nkeys]), list(buffered[-1][:nkeys])
                for row in buffered:
                    yield row[nkeys]

        def links() -> list[dict]:
            out = [
                {"rel": "self", "type": GEOJSON, "title": "This page", "href": _url(self.request, self.path, f="json")},
                {"rel": "alternate", "type": "text/html", "title": "This page as HTML",
                 "href": _url(self.request, self.path, f="html")},
                {"rel": "collection", "type": "application/json", "title": "The collection",
                 "href": f"{base_url(self.request)}/collections/{self.spec.name}"},
            ]
            has_next = st["more"] if forward else (st["last"] is not None)
            has_prev = (q.cursor_values is not None and st["first"] is not None) if forward else st["more"]
            if has_next and st["last"] is not None:
                out.append({"rel": "next", "type": GEOJSON, "title": "Next page", "href": _url(
                    self.request, self.path, cursor=encode_cursor(q.version, "n", q.sort_sig, st["last"]))})
            if has_prev:
                out.append({"rel": "prev", "type": GEOJSON, "title": "Previous page", "href": _url(
                    self.request, self.path, cursor=encode_cursor(q.version, "p", q.sort_sig, st["first"]))})
            return out

        if fmt == "html":
            feats = [orjson.loads(t) async for t in rows()]
            return _render("items.html", spec=self.spec, features=feats, links=links(), root=base_url(self.request),
                           features_json=orjson.dumps({"type": "FeatureCollection", "features": feats}).decode().replace("</", "<\\/"),
                           number_matched=number_matched, version=q.version)

        def tail() -> bytes:
            audit.note(count=st["n"])
            doc = {"numberReturned": st["n"], "links": links(),
                   "timeStamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            if number_matched is not None:
                doc["numberMatched"] = number_matched
            if q.version is not None:
                doc["version"] = q.version
            return b"]," + orjson.dumps(doc)[1:]

        return _streaming(self.request, formats.geojson_body(b'{"type":"FeatureCollection","features":[', rows(), tail),
                          GEOJSON, headers)

    async def _download(self, q, fmt: str, headers: dict):
        settings = self.settings
        sem = getattr(self.request.app.state, "export_semaphore", None)
        if sem is None:
            sem = self.request.app.state.export_semaphore = asyncio.Semaphore(settings.export_concurrency)
        try:
            await asyncio.wait_for(sem.acquire(), timeout=settings.pool_timeout_s)
        except TimeoutError:
            raise ServiceUnavailable("too many downloads at once; retry shortly") from None
        released = False

        def release():
            nonlocal released
            if not released:
                released = True
                sem.release()

        ext = formats.EXTENSIONS.get(fmt, "geojson")
        stamp = f"v{q.version}" if q.version is not None else "empty"
        headers["Content-Disposition"] = f'attachment; filename="{self.spec.name}_{stamp}.{ext}"'
        timeout = settings.analysis_statement_timeout_ms
        try:
            if fmt in ("json", "geojson"):
                stream = await formats.RowStream(self.pool, q.page_sql(), timeout_ms=timeout,
                                                 pool_timeout=settings.pool_timeout_s).open()
                nkeys = len(q.sort)
                count = {"n": 0}

                async def rows():
                    batches = stream.batches()
                    try:
                        async for batch in batches:
                            count["n"] += len(batch)
                            for row in batch:
                                yield row[nkeys]
                    finally:
                        try:
                            await batches.aclose()
                            await stream.close()
                        finally:
                            release()

                def tail() -> bytes:
                    audit.note(count=count["n"])
                    return b'],"numberReturned":' + str(count["n"]).encode() + b"}"

                return _streaming(self.request, formats.geojson_body(b'{"type":"FeatureCollection","features":[', rows(),
                                                                     tail), GEOJSON, headers)
            if fmt == "csv":
                async def body():
                    inner = formats.csv_body(self.pool, q.rows_sql("wkt"), timeout_ms=timeout,
                                             pool_timeout=settings.pool_timeout_s, bom=self.bom)
                    try:
                        async for chunk in inner:
                            yield chunk
                    finally:
                        try:
                            await inner.aclose()
                        finally:
                            release()

                return _streaming(self.request, body(), formats.MEDIA["csv"], headers)
            driver = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}[fmt]
            path = formats.temp_path(settings.data_path / "exports", ext)
            try:
                await asyncio.to_thread(
                    formats.write_file, database_url(settings), q.rows_sql("wkb"), q.export_columns(),
                    not q.skip_geometry, driver, path, self.spec.name, q.out_crs.srid, timeout,
                    self.spec.geometry)
            except formats.CLIENT_ERRORS as exc:
                path.unlink(missing_ok=True)
                raise formats.client_error(exc) from None
            except BaseException:  # timeout, cancelled request: no file is left behind
                path.unlink(missing_ok=True)
                raise
            headers["Content-Length"] = str(path.stat().st_size)

            async def filebody():
                inner = formats.file_body(path)
                try:
                    async for chunk in inner:
                        yield chunk
                finally:
                    try:
                        await inner.aclose()
                    finally:
                        release()

            return formats.ClosingStreamingResponse(filebody(), media_type=formats.MEDIA[fmt], headers=headers)
        except BaseException:
            release()
            raise


def _int(value: str | int | None, parameter: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{parameter}: {value!r} is not an integer", parameter=parameter) from None


def _property_filters(request: Request) -> dict[str, str]:
    """``name=value`` query parameters that are not the endpoint's own: equality filters on
    queryables (checked against the caller's queryables in build_query)."""
    out: dict[str, str] = {}
    for name, value in extra_query_parameters(request):
        if name in out:
            raise InvalidInput(f"{name}: given more than once (use filter={name} IN (...))", parameter=name)
        out[name] = value
    return out


def _required_int(value: str, parameter: str) -> int:
    """An integer parameter that has no default: given empty is a 400, not "absent"."""
    out = _int(value, parameter)
    if out is None:
        raise InvalidInput(f"{parameter}: empty; give a version number", parameter=parameter)
    return out


def _float(value: str | float | None, parameter: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"{parameter}: {value!r} is not a number", parameter=parameter) from None


def _csv_bom(value: str | None, fmt: str) -> bool:
    """``bom=true`` is a CSV option: refused with any other format rather than ignored."""
    bom = _bool(value, "bom")
    if value is not None and fmt != "csv":
        raise InvalidInput(f"bom: applies only to f=csv (not {fmt})", parameter="bom")
    return bom


def _items_params(request: Request, a: dict) -> ItemsParams:
    return _params(
        request, limit=_int(a["limit"], "limit"), bbox=a["bbox"], crs=a["crs"], datetime=a["datetime"],
        filter=a["filter"], properties=a["properties"], sortby=a["sortby"],
        skip_geometry=_bool(a["skipGeometry"], "skipGeometry"), precision=_int(a["precision"], "precision"),
        distance=_float(a["distance"], "distance"), point=a["point"], geometry=a["geometry"], cursor=a["cursor"])


@router.get("/collections/{collectionId}/items", summary="Features of a collection (paged, filtered, any CRS)",
            responses={200: {"content": {GEOJSON: {}, "text/html": {}, "text/csv": {},
                                         formats.MEDIA["gpkg"]: {}, formats.MEDIA["fgb"]: {}}}})
@allows_property_filters
async def items(request: Request, collectionId: str,
                limit: int | None = _ITEM_PARAMS["limit"], bbox: str | None = _ITEM_PARAMS["bbox"],
                bbox_crs: str | None = Query(None, alias="bbox-crs", description="CRS URI of bbox (default CRS84)"),
                datetime: str | None = _ITEM_PARAMS["datetime"], crs: str | None = _ITEM_PARAMS["crs"],
                filter: str | None = _ITEM_PARAMS["filter"],
                filter_lang: str | None = Query(None, alias="filter-lang", description="cql2-text (default) or cql2-json"),
                filter_crs: str | None = Query(None, alias="filter-crs", description="CRS URI of geometries in filter"),
                properties: str | None = _ITEM_PARAMS["properties"], sortby: str | None = _ITEM_PARAMS["sortby"],
                skipGeometry: str | None = _ITEM_PARAMS["skipGeometry"], precision: int | None = _ITEM_PARAMS["precision"],
                distance: float | None = _ITEM_PARAMS["distance"], point: str | None = _ITEM_PARAMS["point"],
                geometry: str | None = _ITEM_PARAMS["geometry"], cursor: str | None = _ITEM_PARAMS["cursor"],
                numberMatched: str | None = _ITEM_PARAMS["numberMatched"],
                download: str | None = _ITEM_PARAMS["download"], f: str | None = _ITEM_PARAMS["f"],
                bom: str | None = _ITEM_PARAMS["bom"],
                principal: Principal = Depends(get_principal),
                registry: Registry = Depends(get_registry_dep)):
    fmt = _format(request, f)
    async with request_connection(request) as conn:  # given back before the rows stream
        spec, state, hidden = await _layer(conn, principal, registry, collectionId)
    if spec.kind != "vector":
        raise NotFound(f"collection {spec.name!r} is a coverage (raster), not a feature collection: it has no "
                       f"items; read it at /collections/{spec.name}/coverage or /collections/{spec.name}/tiles",
                       parameter="collectionId")
    dl = _bool(download, "download") or fmt in DOWNLOADS
    p = _items_params(request, dict(limit=limit, bbox=bbox, crs=crs, datetime=datetime, filter=filter,
                                    properties=properties, sortby=sortby, skipGeometry=skipGeometry,
                                    precision=precision, distance=distance, point=point, geometry=geometry,
                                    cursor=cursor))
    p.extra = _property_filters(request)
    s = request.app.state.settings
    q = build_query(state, hidden, p, default_limit=None if dl else s.default_limit,
                    max_limit=None if dl else s.max_limit)
    answer = _Items(request, principal, spec, state, hidden, f"/collections/{spec.name}/items")
    answer.bom = _csv_bom(bom, fmt)
    return await answer.respond(q, fmt, dl, _bool(numberMatched, "numberMatched"))


@router.get("/collections/{collectionId}/items/{featureId}", summary="One feature by its stable key")
async def item(request: Request, collectionId: str, featureId: str,
               crs: str | None = _ITEM_PARAMS["crs"], datetime: str | None = _ITEM_PARAMS["datetime"],
               properties: str | None = _ITEM_PARAMS["properties"], precision: int | None = _ITEM_PARAMS["precision"],
               f: str | None = Query(None, description="geojson (default) or html"),
               conn: psycopg.AsyncConnection = Depends(get_conn),
               principal: Principal = Depends(get_principal),
               registry: Registry = Depends(get_registry_dep)):
    fmt = _format(request, f, {"json", "geojson", "html"})
    spec, state, hidden = await _layer(conn, principal, registry, collectionId)
    if spec.kind != "vector":
        raise NotFound(f"collection {spec.name!r} is a raster coverage without items", parameter="collectionId")
    q = build_query(state, hidden, ItemsParams(crs=crs, datetime=datetime, properties=properties,
                                               precision=_int(precision, "precision")),
                    default_limit=1, max_limit=1)
    q.where.append(sql.SQL("_key = {}").format(sql.Literal(featureId)))
    etag = etag_for(spec.name, q.version, state.current_version, featureId, sorted(request.query_params.multi_items()),
                    sorted(hidden), fmt)
    headers = caller_cache_headers(principal, etag)
    headers["Content-Crs"] = f"<{q.out_crs.uri}>"
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    cur = await conn.execute(q.page_sql())
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"feature {featureId!r} not found in {spec.name!r}"
                       + (f" (version {q.version})" if q.version is not None else ""), parameter="featureId")
    feat = orjson.loads(row[-1])
    root = base_url(request)
    feat["links"] = [
        {"rel": "self", "type": GEOJSON, "title": "This feature", "href": _url(request, request.url.path, f="json")},
        {"rel": "alternate", "type": "text/html", "title": "This feature as HTML",
         "href": _url(request, request.url.path, f="html")},
        {"rel": "collection", "type": "application/json", "title": "The collection",
         "href": f"{root}/collections/{spec.name}"},
    ]
    if fmt == "html":
        return _render("feature.html", spec=spec, feature=feat, feature_json=orjson.dumps(feat).decode().replace("</", "<\\/"), root=root)
    return Response(orjson.dumps(feat), media_type=GEOJSON, headers=headers)


@router.get("/collections/{collectionId}/changes",
            summary="Features added, removed and changed between two versions (paged like items)")
async def changes(request: Request, collectionId: str,
                  from_: str = Query(..., alias="from", description="Version to compare from (0 = empty layer)"),
                  to: str | None = Query(None, description="Version to compare to (default: current)"),
                  limit: int | None = _ITEM_PARAMS["limit"], crs: str | None = _ITEM_PARAMS["crs"],
                  properties: str | None = _ITEM_PARAMS["properties"], cursor: str | None = _ITEM_PARAMS["cursor"],
                  skipGeometry: str | None = _ITEM_PARAMS["skipGeometry"], precision: int | None = _ITEM_PARAMS["precision"],
                  f: str | None = Query(None, description="geojson (default), csv, gpkg, fgb"),
                  bom: str | None = _ITEM_PARAMS["bom"],
                  principal: Principal = Depends(get_principal),
                  registry: Registry = Depends(get_registry_dep)):
    fmt = _format(request, f, {"json", "geojson", "csv", "gpkg", "fgb", "html"})
    async with request_connection(request) as conn:  # given back before the rows stream
        spec, state, hidden = await _layer(conn, principal, registry, collectionId)
    if spec.kind != "vector":
        raise NotFound(f"collection {spec.name!r} is a raster coverage without items", parameter="collectionId")
    v_from = _required_int(from_, "from")
    v_to = _required_int(to, "to") if to is not None else state.current_version
    if v_to is None:
        raise InvalidInput("to: the layer has no version yet", parameter="to")
    if v_from < 0 or (v_from != 0 and v_from not in state.versions):
        raise InvalidInput(f"from: version {v_from} does not exist; versions: {sorted(state.versions)}", parameter="from")
    if v_to not in state.versions:
        raise InvalidInput(f"to: version {v_to} does not exist; versions: {sorted(state.versions)}", parameter="to")
    if v_from >= v_to:
        raise InvalidInput(f"from: must be lower than to ({v_from} >= {v_to})", parameter="from")
    dl = fmt in DOWNLOADS
    s = request.app.state.settings
    q = build_query(state, hidden, ItemsParams(limit=_int(limit, "limit"), crs=crs, properties=properties,
                                               cursor=cursor, skip_geometry=_bool(skipGeometry, "skipGeometry"),
                                               precision=_int(precision, "precision")),
                    default_limit=None if dl else s.default_limit, max_limit=None if dl else s.max_limit)
    q.source, change = changes_source(spec, v_from, v_to)
    q.extra_property = ("change", change)
    q.version = v_to
    q.has_spatial_or_filter = True
    answer = _Items(request, principal, spec, state, hidden, f"/collections/{spec.name}/changes")
    answer.bom = _csv_bom(bom, fmt)
    return await answer.respond(q, fmt, dl, False, extra_etag=(v_from, v_to))

"""OGC API - Features Parts 1, 2 and 3: the capabilities and the collections (thin router).

/conformance, /collections, /collections/{id} and /collections/{id}/queryables; the features
themselves (/items, /items/{featureId}, /changes) are served by api/items.py.

Every endpoint resolves the caller (``get_principal``) and only shows layers and attributes
the caller may see (``require_layer``/``visible_layers``/``hidden_attributes``).
"""

from __future__ import annotations

import datetime as dt

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from geobase.api.routing import LazyAPIRoute
from geobase import formats
from geobase.api.deps import (
    Collection,
    base_url,
    collection as collection_param,
    feature_collection,
    get_conn,
    get_registry_dep,
    representation,
)
from geobase.api.negotiation import GEOJSON
from geobase.api.pages import render
from geobase.api.schema import schema_links
from geobase.crs import CRS84, STORAGE_CRS
from geobase.catalog import layers as catalog_layers
from geobase.catalog.state import LayerState, layer_state
from geobase.features import queryable_types
from geobase.partitions import partition_divisions_async
from geobase.storage import DIVISION
from geobase.api.gate import get_principal
from geobase.security import Principal, visible_layers
from geobase.specs import LayerSpec, Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["Features"])

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
        from geobase.api.editing import EDITING_CONFORMANCE

        classes += EDITING_CONFORMANCE
    except ImportError:  # pragma: no cover - editing not mounted
        pass
    try:
        from geobase.api.analysis import PROCESSES_CONFORMANCE  # type: ignore[attr-defined]

        classes += PROCESSES_CONFORMANCE
    except ImportError:
        pass
    return classes


#: json or html: the representations of the capabilities and collection documents
json_or_html = representation(("json", "html"), "json or html")


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
            {"rel": "items", "type": formats.MEDIA["parquet"], "title": "Download GeoParquet",
             "href": f"{root}/collections/{cid}/items?f=parquet"},
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
async def conformance(request: Request, fmt: str = Depends(json_or_html)):
    if fmt == "html":
        return render("conformance.html", classes=_declared_conformance(), root=base_url(request))
    return JSONResponse({"conformsTo": _declared_conformance()})


@router.get("/collections", summary="The collections (layers) the caller may see")
async def collections(request: Request, fmt: str = Depends(json_or_html),
                      conn: psycopg.AsyncConnection = Depends(get_conn),
                      principal: Principal = Depends(get_principal),
                      registry: Registry = Depends(get_registry_dep)):
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
        return render("collections.html", collections=docs, root=root)
    return JSONResponse(body)


@router.get("/collections/{collectionId}", summary="One collection: extent, CRSs, versions, links")
async def collection(request: Request, fmt: str = Depends(json_or_html),
                     coll: Collection = Depends(collection_param),
                     registry: Registry = Depends(get_registry_dep)):
    doc = collection_doc(request, coll.spec, coll.state, None, registry)
    if fmt == "html":
        return render("collection.html", c=doc, spec=coll.spec, hidden=set(coll.hidden), root=base_url(request))
    return JSONResponse(doc)


_JSON_TYPES = {"text": "string", "integer": "integer", "number": "number", "boolean": "boolean",
               "date": "string", "datetime": "string"}


def _queryable(spec: LayerSpec, name: str, typ: str, registry: Registry) -> dict:
    """The JSON Schema of one queryable property (an attribute, or the stored area/length)."""
    schema: dict = {"type": _JSON_TYPES[typ]}
    try:
        attr = spec.attribute(name)
    except KeyError:
        attr = None
    if attr is None:
        schema.update({"title": "Ellipsoidal area (m²)" if name == "_area_m2" else "Ellipsoidal length (m)",
                       "x-ogc-unit": "m2" if name == "_area_m2" else "m", "readOnly": True})
        return schema
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
    return schema


def _division_queryable(counties: list[str]) -> dict:
    """The county code every row carries (not a spec attribute: the partition key), with the
    counties the layer has, so that a CQL2 client can discover the filter and its values."""
    out = {"title": "County code (行政区划代码)", "type": "string", "pattern": "^[0-9]{6}$",
           "description": "The 6-digit county code of the row (the partition key): filter with division=339901 or "
                          "CQL2 division = '339901' / division IN ('339901','339902'); only that county's rows "
                          "are read. The values listed are the layer's county partitions; 000000 holds the rows "
                          "of deliveries that named no county"}
    if counties:
        out["enum"] = counties
    return out


@router.get("/collections/{collectionId}/queryables", summary="Queryable properties (JSON Schema)")
async def queryables(request: Request, fmt: str = Depends(json_or_html),
                     coll: Collection = Depends(feature_collection),
                     registry: Registry = Depends(get_registry_dep),
                     conn: psycopg.AsyncConnection = Depends(get_conn)):
    spec = coll.spec
    props: dict[str, dict] = {
        "geometry": {"title": "Geometry", "format": f"geometry-{(spec.geometry or 'any').lower()}",
                     "x-ogc-role": "primary-geometry"},
    }
    for name, typ in queryable_types(spec, set(coll.hidden)).items():
        props[name] = _queryable(spec, name, typ, registry)
    if DIVISION not in props:  # the partition key: CQL2 and division= filter on it in every layer
        props[DIVISION] = _division_queryable(await partition_divisions_async(conn, spec.name))
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
        return render("queryables.html", doc=doc, spec=spec, root=root)
    return JSONResponse(doc, media_type="application/schema+json")

"""The items parameters, declared once and parsed once (a parameter family, the tipg model).

``/items``, ``/items/{featureId}`` and ``/changes`` share their query parameters. Each group is
declared here once, as a dependency (its ``Query`` declarations are what the OpenAPI document
shows and what :mod:`geobase.api.params` accepts), and parsed here once into
:class:`geobase.features.ItemsParams`, which :func:`geobase.features.build_query` validates
against the layer and the caller's view:

* :func:`output_params`: ``crs``, ``properties``, ``precision`` (every route);
* :func:`version_param`: ``datetime`` (items, one item);
* :func:`page_params`: ``limit``, ``cursor``, ``skipGeometry`` (items, changes);
* :func:`filter_params`: ``bbox`` (+ ``bbox-crs``), ``filter`` (+ ``filter-lang``,
  ``filter-crs``), ``sortby``, ``distance`` with ``point`` or ``geometry``, and the property
  filters (``name=value`` for a queryable: OGC API - Features Part 1);
* :func:`items_params` / :func:`item_params` / :func:`changes_params`: the families combined.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Query, Request

from geobase.api.params import extra_query_parameters
from geobase.errors import InvalidInput
from geobase.features import ItemsParams

LIMIT = Query(None, ge=1, description="Page size: 1..GEOBASE_MAX_LIMIT (default 100, max 10,000). Downloads "
              "(csv/gpkg/fgb, download=true) are not paged: limit caps them only when given.",
              json_schema_extra={"default": 100, "maximum": 10_000})
BBOX = Query(None, description="minx,miny,maxx,maxy (4 or 6 numbers) in bbox-crs axis order (default CRS84 lon/lat)")
DATETIME = Query(None, description="Instant or interval (RFC 3339, '..' open): the features as they were in the "
                 "layer version current at the instant (or at the end of the interval)")
CRS = Query(None, description="Output CRS URI (see the collection's crs list); EPSG:4326/4490 are output lat/lon")
FILTER = Query(None, description="CQL2 filter (text or JSON, see filter-lang)")
PROPERTIES = Query(None, description="Comma-separated properties to return")
SORTBY = Query(None, description="Comma-separated properties, prefix - for descending (+ or none ascending)")
SKIP_GEOMETRY = Query(None, description="true: features without geometry")
PRECISION = Query(None, ge=0, le=15, description="Coordinate decimals (default 7 for degrees, 2 for metres)")
DISTANCE = Query(None, ge=0, description="Metres (ellipsoidal): features within this distance of point or geometry")
POINT = Query(None, description="lon,lat (CRS84) for distance")
GEOMETRY = Query(None, description="WKT geometry (CRS84) for distance")
CURSOR = Query(None, description="Paging token from next/prev links")
NUMBER_MATCHED = Query(None, description="true: also count all matching features")
DOWNLOAD = Query(None, description="true: the whole result as an attachment (not paged)")
BOM = Query(None, description="With f=csv, true: start with a UTF-8 byte order mark, so that Excel shows "
            "Chinese text right")


# ------------------------------------------------------------------------------------------
# values
# ------------------------------------------------------------------------------------------
def parse_bool(value: str | None, parameter: str) -> bool:
    """true/1/yes or false/0/no (or empty); anything else is a 400 naming the parameter."""
    if value is None:
        return False
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no", ""):
        return False
    raise InvalidInput(f"{parameter}: {value!r} is not true/false", parameter=parameter)


def parse_int(value: str | int | None, parameter: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{parameter}: {value!r} is not an integer", parameter=parameter) from None


def required_int(value: str, parameter: str) -> int:
    """An integer parameter that has no default: given empty is a 400, not "absent"."""
    out = parse_int(value, parameter)
    if out is None:
        raise InvalidInput(f"{parameter}: empty; give a version number", parameter=parameter)
    return out


def csv_bom(value: str | None, fmt: str) -> bool:
    """``bom=true`` is a CSV option: refused with any other format rather than ignored."""
    bom = parse_bool(value, "bom")
    if value is not None and fmt != "csv":
        raise InvalidInput(f"bom: applies only to f=csv (not {fmt})", parameter="bom")
    return bom


def property_filters(request: Request) -> dict[str, str]:
    """``name=value`` query parameters that are not the endpoint's own: equality filters on
    queryables (checked against the caller's queryables in build_query)."""
    out: dict[str, str] = {}
    for name, value in extra_query_parameters(request):
        if name in out:
            raise InvalidInput(f"{name}: given more than once (use filter={name} IN (...))", parameter=name)
        out[name] = value
    return out


# ------------------------------------------------------------------------------------------
# the groups (each returns ItemsParams fields)
# ------------------------------------------------------------------------------------------
async def output_params(crs: str | None = CRS, properties: str | None = PROPERTIES,
                        precision: int | None = PRECISION) -> dict[str, Any]:
    """What each feature is written as: its CRS, its properties, its coordinate decimals."""
    return {"crs": crs, "properties": properties, "precision": precision}


async def version_param(datetime: str | None = DATETIME) -> dict[str, Any]:
    """Which version of the layer is read (the one current at ``datetime``)."""
    return {"datetime": datetime}


async def page_params(limit: int | None = LIMIT, cursor: str | None = CURSOR,
                      skipGeometry: str | None = SKIP_GEOMETRY) -> dict[str, Any]:
    """Which page, how long, with or without geometry."""
    return {"limit": limit, "cursor": cursor, "skip_geometry": parse_bool(skipGeometry, "skipGeometry")}


async def filter_params(
        request: Request, bbox: str | None = BBOX,
        bbox_crs: str | None = Query(None, alias="bbox-crs", description="CRS URI of bbox (default CRS84)"),
        filter: str | None = FILTER,
        filter_lang: str | None = Query(None, alias="filter-lang", description="cql2-text (default) or cql2-json"),
        filter_crs: str | None = Query(None, alias="filter-crs", description="CRS URI of geometries in filter"),
        sortby: str | None = SORTBY, distance: float | None = DISTANCE, point: str | None = POINT,
        geometry: str | None = GEOMETRY) -> dict[str, Any]:
    """Which features: bbox, CQL2 filter, distance, property filters, and their order."""
    return {"bbox": bbox, "bbox_crs": bbox_crs, "filter": filter, "filter_lang": filter_lang,
            "filter_crs": filter_crs, "sortby": sortby, "distance": distance, "point": point,
            "geometry": geometry, "extra": property_filters(request)}


# ------------------------------------------------------------------------------------------
# the families
# ------------------------------------------------------------------------------------------
async def items_params(output: dict = Depends(output_params), version: dict = Depends(version_param),
                       page: dict = Depends(page_params), filters: dict = Depends(filter_params)) -> ItemsParams:
    """/collections/{id}/items: every group."""
    return ItemsParams(**output, **version, **page, **filters)


async def item_params(output: dict = Depends(output_params), version: dict = Depends(version_param),
                      division: str | None = Query(None, description=(
                          "6-digit county code: the county whose feature this key names (a key is unique "
                          "per county; a key of two counties' features answers 409 without it)"))) -> ItemsParams:
    """/collections/{id}/items/{featureId}: how the one feature is written, its version and county."""
    return ItemsParams(**output, **version, extra={"division": division} if division is not None else {})


async def changes_params(output: dict = Depends(output_params), page: dict = Depends(page_params)) -> ItemsParams:
    """/collections/{id}/changes: paged like items; the versions compared are its own."""
    return ItemsParams(**output, **page)

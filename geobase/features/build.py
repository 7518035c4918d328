"""Every parameter of an items request checked against the layer spec and the caller's view,
then composed into a :class:`~geobase.features.query.FeatureQuery`.

:func:`build_query` runs the checks in a fixed order — collection kind, CRSs, properties,
limit, precision, sortby, version (datetime, cursor), then the spatial and attribute filters
— so a request with several faults is always refused for the same one."""

from __future__ import annotations

import hashlib
import math

from psycopg import sql

from geobase import cql2
from geobase.catalog.state import LayerState
from geobase.crs import Crs, parse_crs, to_storage
from geobase.errors import InvalidInput
from geobase.features.cursors import decode_cursor
from geobase.features.params import ItemsParams, parse_bbox, parse_list, parse_point, resolve_datetime
from geobase.features.query import FeatureQuery, SortKey, queryable_types
from geobase.security import require_field
from geobase.specs import LayerSpec
from geobase.storage import DIVISION, division_filter


def _wkb_sql(geom) -> sql.Composable:
    """A checked EPSG:4490 shapely geometry as a bound WKB parameter."""
    import shapely

    return sql.SQL("ST_GeomFromWKB({}, 4490)").format(sql.Literal(shapely.to_wkb(geom, output_dimension=2)))


def _geometry_literal(crs: Crs):
    """SQL of a CQL2 geometry literal given in ``crs`` (axis order honoured) -> EPSG:4490."""

    def make(geojson: dict) -> sql.Composable:
        import shapely
        from shapely.geometry import shape

        try:
            geom = shapely.force_2d(shape(geojson))
        except Exception as exc:  # shapely raises several types for malformed coordinates
            raise InvalidInput(f"filter: malformed {geojson.get('type', 'geometry')} literal: {exc}",
                               parameter="filter") from None
        return _wkb_sql(to_storage(geom, crs, "filter"))

    return make


def _envelope_sql(box: tuple[float, float, float, float], crs: Crs) -> sql.Composable:
    """The bbox (x/y in ``crs``, already in PostGIS order) as an EPSG:4490 polygon."""
    from shapely.geometry import box as make_box

    return _wkb_sql(to_storage(make_box(*box), crs, "bbox", axis_order=False))


def _distance_sql(geom: sql.Composable, metres: float, max_abs_lat: float) -> sql.Composable:
    """Features within ``metres`` (ellipsoidal, via geography) of ``geom`` (EPSG:4490);
    a degree-box pre-filter keeps the GiST index in use."""
    dlat = metres / 110_574.0 * 1.01 + 1e-6
    coslat = math.cos(math.radians(min(89.0, max_abs_lat + dlat)))
    dlon = metres / (111_320.0 * max(coslat, 0.01)) * 1.01 + 1e-6
    return sql.SQL("(geom && ST_Expand({g}, {dx}, {dy}) AND ST_DWithin(geom::geography, {g}::geography, {d}))").format(
        g=geom, dx=sql.Literal(dlon), dy=sql.Literal(dlat), d=sql.Literal(float(metres)))


def build_query(state: LayerState, hidden: set[str], p: ItemsParams, *, default_limit: int | None,
                max_limit: int | None, desensitise=None, within: tuple | None = None,
                qualified_ids: bool = False) -> FeatureQuery:
    """Validate every parameter against the spec and the caller's view; compose the query.
    ``desensitise``: the caller's :func:`geobase.security.desensitisation` of the layer;
    ``within``: a request key's box (:func:`geobase.security.scope_box`): nothing outside it;
    ``qualified_ids``: the layer's ids are county-qualified (:mod:`geobase.features.ids`)."""
    spec = _vector_spec(state)
    allowed = state.crs_uris()
    out_crs = parse_crs(p.crs, "crs", allowed)
    bbox_crs = parse_crs(p.bbox_crs, "bbox-crs", allowed)
    filter_crs = parse_crs(p.filter_crs, "filter-crs", allowed)
    if p.bbox_crs and not p.bbox:
        raise InvalidInput("bbox-crs: given without bbox", parameter="bbox-crs")
    qtypes = queryable_types(spec, hidden)
    props = _properties(spec, hidden, qtypes, p.properties, tuple(desensitise.shown_masked) if desensitise else ())
    limit = _limit(p.limit, default_limit, max_limit)
    if p.precision is not None and not (0 <= p.precision <= 15):
        raise InvalidInput("precision: must be 0..15 decimals", parameter="precision")
    precision = p.precision if p.precision is not None else out_crs.default_precision
    sort = _sort(spec, hidden, qtypes, p.sortby, qualified_ids)
    sort_sig = _sort_signature(sort)
    version, cursor_dir, cursor_values = _version(state, p, sort_sig)
    where = _filters(spec, qtypes, p, bbox_crs, filter_crs)
    if within is not None:
        env = sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, 4490)").format(*(sql.Literal(float(v)) for v in within))
        where.append(sql.SQL("(geom && {e} AND ST_Intersects(geom, {e}))").format(e=env))
    return FeatureQuery(
        spec=spec, version=version, is_current=version is not None and version == state.current_version,
        properties=props, out_crs=out_crs, precision=precision, skip_geometry=p.skip_geometry, where=where,
        sort=sort, sort_sig=sort_sig, limit=limit, cursor_dir=cursor_dir, cursor_values=cursor_values,
        has_spatial_or_filter=bool(where), desensitise=desensitise, qualified_ids=qualified_ids)


def _vector_spec(state: LayerState) -> LayerSpec:
    """The layer's spec; a raster layer has no items (InvalidInput naming the collection)."""
    spec = state.spec
    if spec is None:
        raise TypeError("build_query needs a LayerState read with its spec (catalog.state.layer_state)")
    if spec.kind != "vector":
        raise InvalidInput(f"collection {spec.name!r} is a raster (coverage): it has no items; "
                           f"use /collections/{spec.name}/tiles", parameter="collectionId")
    return spec


def _properties(spec: LayerSpec, hidden: set[str], qtypes: dict[str, str], value: str | None,
                masked: tuple[str, ...] = ()) -> list[str]:
    """The output properties: those asked for (each readable by the caller), else every visible one."""
    if value is None:  # masked attributes are output (masked) but never named by a caller
        return [a for a in spec.attribute_names if a in qtypes or a in masked] + [q for q in qtypes if q not in
                                                                                   spec.attribute_names]
    props = parse_list(value)
    for name in props:  # the one field check of items and analyses alike
        require_field(spec, name, "properties", hidden=hidden, extra=tuple(qtypes))
    return props


def _limit(limit: int | None, default_limit: int | None, max_limit: int | None) -> int | None:
    limit = limit if limit is not None else default_limit
    if limit is not None and (limit < 1 or (max_limit is not None and limit > max_limit)):
        raise InvalidInput(f"limit: {limit} is outside 1..{max_limit}", parameter="limit")
    return limit


def _sort(spec: LayerSpec, hidden: set[str], qtypes: dict[str, str], value: str | None,
          qualified_ids: bool = False) -> list[SortKey]:
    """The sort keys of ``sortby``, ending in a unique key (the id: ``_key``, and its county when
    ids are county-qualified; else ``_rid``) so that keyset paging has a total order. A key
    alone is not unique in a province: a page boundary between two counties' ``00000007`` made
    the next page start after both (the second was never served)."""
    def by_id(desc: bool) -> list[SortKey]:
        return [SortKey("_key", desc)] + ([SortKey(DIVISION, desc)] if qualified_ids else [])

    sort: list[SortKey] = []
    for item in parse_list(value):
        desc = item.startswith("-")
        name = item.lstrip("+- ")
        if name == "id":
            sort += by_id(desc)
            continue
        require_field(spec, name, "sortby", hidden=hidden, extra=tuple(qtypes))
        sort.append(SortKey(name, desc, cql2._CASTS[qtypes[name]]))
    if not sort:
        sort = by_id(False)
    elif sort[-1].column not in ("_key", DIVISION):
        sort.append(SortKey("_rid", False, "bigint"))
    return sort


def _sort_signature(sort: list[SortKey]) -> str:
    """A short tag of the sort order: a cursor is valid only for the order it was issued under."""
    return hashlib.md5(",".join(f"{k.column}{'-' if k.desc else ''}" for k in sort).encode()).hexdigest()[:8]


def _version(state: LayerState, p: ItemsParams, sort_sig: str) -> tuple[int | None, str, list | None]:
    """The layer version to read (``datetime``, overridden by the cursor's own version, which
    must still exist), the paging direction and the cursor's boundary values."""
    version = resolve_datetime(state, p.datetime)
    if not p.cursor:
        return version, "n", None
    v, cursor_dir, cursor_values = decode_cursor(p.cursor, sort_sig)
    if v is not None and v not in state.versions:
        raise InvalidInput("cursor: its layer version no longer exists", parameter="cursor")
    return v, cursor_dir, cursor_values


def _filters(spec: LayerSpec, qtypes: dict[str, str], p: ItemsParams, bbox_crs: Crs,
             filter_crs: Crs) -> list[sql.Composable]:
    """The spatial and attribute conditions: bbox, CQL2 filter, property equalities, distance."""
    where: list[sql.Composable] = []
    box = parse_bbox(p.bbox, bbox_crs)
    if box:
        where.append(sql.SQL("ST_Intersects(geom, {})").format(_envelope_sql(box, bbox_crs)))
    if p.filter:  # the county (partition key) is a text property of every layer in CQL2
        where.append(cql2.to_sql(p.filter, p.filter_lang, {**qtypes, DIVISION: "text"}, _geometry_literal(filter_crs)))
    elif p.filter_lang or p.filter_crs:
        which = "filter-lang" if p.filter_lang else "filter-crs"
        raise InvalidInput(f"{which}: given without filter", parameter=which)
    for name, value in p.extra.items():
        if name == DIVISION and name not in qtypes:  # division=339901,339902: the counties' partitions only
            where.append(division_filter(parse_list(value) or [value], None))
            continue
        if name not in qtypes:
            raise InvalidInput(f"{name}: unknown query parameter; neither a parameter of this endpoint nor a "
                               f"queryable of {spec.name!r} (queryables: {', '.join(qtypes)})", parameter=name)
        where.append(cql2.equality_sql(name, qtypes[name], value))
    if p.distance is not None or p.point or p.geometry:
        where.append(_distance_filter(p))
    return where


def _distance_filter(p: ItemsParams) -> sql.Composable:
    """``distance`` metres of ``point`` (lon,lat) or ``geometry`` (WKT), both CRS84."""
    if p.distance is None:
        raise InvalidInput("distance: required with point/geometry (metres)", parameter="distance")
    if not (0 <= p.distance <= 1_000_000):
        raise InvalidInput("distance: must be 0..1,000,000 metres", parameter="distance")
    if bool(p.point) == bool(p.geometry):
        raise InvalidInput("distance: give exactly one of point=lon,lat or geometry=<WKT in CRS84>",
                           parameter="point")
    if p.point:
        lon, lat = parse_point(p.point)
        g = sql.SQL("ST_SetSRID(ST_MakePoint({}, {}), 4490)").format(sql.Literal(lon), sql.Literal(lat))
        return _distance_sql(g, p.distance, abs(lat))
    import shapely

    try:
        shp = shapely.from_wkt(p.geometry)
    except Exception:
        raise InvalidInput("geometry: not valid WKT", parameter="geometry") from None
    if shp is None or shp.is_empty:
        raise InvalidInput("geometry: empty", parameter="geometry")
    minx, miny, maxx, maxy = shp.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise InvalidInput("geometry: coordinates must be lon/lat (CRS84)", parameter="geometry")
    g = sql.SQL("ST_GeomFromText({}, 4490)").format(sql.Literal(shp.wkt))
    return _distance_sql(g, p.distance, max(abs(miny), abs(maxy)))

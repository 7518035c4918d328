"""The features query service: OGC API - Features requests -> one SQL statement per page.

Everything a request may vary — bbox (in any supported CRS), datetime (mapped to a layer
version), CQL2 filter, distance, properties, sortby, output CRS and precision, paging — is
validated here against the layer spec and the caller's view (masked attributes are neither
output nor filterable) and composed with ``psycopg.sql`` and bound parameters.

GeoJSON is assembled by PostGIS (``json_build_object`` + ``ST_AsGeoJSON``): Python only
concatenates the feature texts it streams from a server-side cursor.

Paging is keyset, never OFFSET: rows are ordered by ``_key`` (unique within a version) or by
the ``sortby`` keys with ``_rid`` as tiebreak (NULLs last), and the opaque ``cursor`` token
carries the boundary row's sort values, the direction and the *version* — so a client paging
through a layer while it is replaced keeps reading the version it started on.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from geobase import cql2
from geobase.catalog.state import LayerState
from geobase.crs import CRS84, Crs, parse_crs, to_storage
from geobase.errors import InvalidInput, NotFound
from geobase.security import require_field
from geobase.specs import LayerSpec
from geobase.storage import as_of_filter, empty_rows, measure_column, table_ident

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?)?$")


# ------------------------------------------------------------------------------------------
# layer facts
# ------------------------------------------------------------------------------------------
def queryable_types(spec: LayerSpec, hidden: set[str]) -> dict[str, str]:
    """Property name -> spec type of what this caller may filter and sort on (the attributes
    not masked for the caller, plus the stored ellipsoidal area/length)."""
    types = {a.name: a.type for a in spec.attributes if a.name not in hidden}
    m = measure_column(spec)
    if m:
        types[m] = "number"
    return types


def number_columns(spec: LayerSpec) -> set[str]:
    """The double precision columns of a layer: its ``number`` attributes and the stored
    ellipsoidal area/length."""
    names = {a.name for a in spec.attributes if a.type == "number"}
    m = measure_column(spec)
    if m:
        names.add(m)
    return names


def json_real_sql(column: sql.Composable) -> sql.Composable:
    """A double precision column as a JSON value that reads as a real number.

    PostgreSQL writes an integral double as ``5`` (and ``0``), and clients that type a field
    from the JSON (GDAL's GeoJSON and OAPIF readers, QGIS) then make it an Integer and
    truncate every later ``0.8`` to 0. Integral values below 1e15 (above, PostgreSQL already
    writes an exponent) get a ``.0``; every other value is PostgreSQL's shortest exact text,
    so no precision is lost. NULL stays null; NaN and infinities stay the strings
    ``to_json`` writes for them."""
    return sql.SQL("CASE WHEN {c} = trunc({c}) AND abs({c}) < 1e15 THEN ({c}::text || '.0')::json "
                   "ELSE to_json({c}) END").format(c=column)


# ------------------------------------------------------------------------------------------
# parameter parsing
# ------------------------------------------------------------------------------------------
def _parse_instant(text: str, parameter: str, end: bool = False) -> dt.datetime:
    t = text.strip()
    if not RFC3339.match(t):
        raise InvalidInput(f"{parameter}: {text!r} is not an RFC 3339 date or date-time", parameter=parameter)
    try:
        if len(t) == 10:
            d = dt.date.fromisoformat(t)
            value = dt.datetime.combine(d, dt.time.max if end else dt.time.min, tzinfo=dt.UTC)
        else:
            value = dt.datetime.fromisoformat(t.replace("z", "Z").replace("Z", "+00:00").replace(" ", "T"))
    except ValueError as exc:
        raise InvalidInput(f"{parameter}: {text!r}: {exc}", parameter=parameter) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def resolve_datetime(state: LayerState, value: str | None) -> int | None:
    """The layer version a ``datetime`` selects: the version current at the instant (or at
    the end of an interval): the highest version created at or before it. None = no version
    existed then (the layer was empty). Without ``datetime``: the current version."""
    if value is None or value.strip() == "":
        return state.current_version
    parts = value.split("/")
    if len(parts) > 2:
        raise InvalidInput(f"datetime: {value!r} is neither an instant nor an interval", parameter="datetime")
    if len(parts) == 2:
        start, end = (p.strip() for p in parts)
        if start in ("", "..") and end in ("", ".."):
            return state.current_version
        t0 = _parse_instant(start, "datetime") if start not in ("", "..") else None
        t1 = _parse_instant(end, "datetime", end=True) if end not in ("", "..") else None
        if t0 and t1 and t0 > t1:
            raise InvalidInput("datetime: the interval starts after it ends", parameter="datetime")
        if t1 is None:
            return state.current_version
        at = t1
    else:
        at = _parse_instant(parts[0], "datetime", end=True)
    chosen = None
    for v, info in state.versions.items():
        if info["created_at"] <= at and (chosen is None or v > chosen) and (
                state.current_version is None or v <= state.current_version):
            chosen = v
    return chosen


def parse_bbox(value: str | None, crs: Crs) -> tuple[float, float, float, float] | None:
    """``minx,miny,maxx,maxy`` (or 6 numbers with heights) in ``bbox-crs``'s axis order,
    returned as PostGIS x/y (lon/lat, easting/northing)."""
    if value is None or value.strip() == "":
        return None
    try:
        nums = [float(x) for x in value.split(",")]
    except ValueError:
        raise InvalidInput(f"bbox: {value!r} must be 4 (or 6) comma-separated numbers", parameter="bbox") from None
    if len(nums) == 6:
        nums = [nums[0], nums[1], nums[3], nums[4]]
    if len(nums) != 4 or not all(math.isfinite(n) for n in nums):
        raise InvalidInput(f"bbox: {value!r} must be 4 (or 6) finite comma-separated numbers", parameter="bbox")
    a, b, c, d = nums
    if crs.flip:
        a, b, c, d = b, a, d, c
    if a > c or b > d:
        raise InvalidInput(f"bbox: {value!r}: the lower corner must come first (min <= max on both axes; "
                           "boxes across the antimeridian are not supported)", parameter="bbox")
    if crs.srid in (4326, 4490) and (a < -180 or c > 180 or b < -90 or d > 90):
        raise InvalidInput(f"bbox: {value!r} is outside longitude -180..180 / latitude -90..90", parameter="bbox")
    return a, b, c, d


def parse_list(value: str | None) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()] if value else []


def parse_point(value: str, parameter: str = "point") -> tuple[float, float]:
    try:
        lon, lat = (float(x) for x in value.split(","))
    except ValueError:
        raise InvalidInput(f"{parameter}: {value!r} must be lon,lat (CRS84)", parameter=parameter) from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput(f"{parameter}: {value!r} is outside lon -180..180 / lat -90..90", parameter=parameter)
    return lon, lat


# ------------------------------------------------------------------------------------------
# cursor tokens
# ------------------------------------------------------------------------------------------
def encode_cursor(version: int | None, direction: str, sort_sig: str, values: list[Any]) -> str:
    raw = json.dumps([version, direction, sort_sig, values], separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, sort_sig: str) -> tuple[int | None, str, list[Any]]:
    """The (version, direction, boundary values) a cursor token carries. A token is opaque
    but not trusted: anything but what :func:`encode_cursor` writes is a 400 naming ``cursor``
    (the values are bound as SQL parameters of the sort columns' types, see ``_keyset``)."""
    bad = InvalidInput("cursor: not a cursor this server issued (follow the next/prev links)", parameter="cursor")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        parts = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        raise bad from None
    if not (isinstance(parts, list) and len(parts) == 4):
        raise bad
    version, direction, sig, values = parts
    if (direction not in ("n", "p") or not isinstance(values, list) or not isinstance(sig, str)
            or not (version is None or (isinstance(version, int) and not isinstance(version, bool)))
            or not all(v is None or isinstance(v, (str, int, float)) for v in values)):
        raise bad
    if sig != sort_sig:
        raise InvalidInput("cursor: it belongs to a different sortby; follow the links of the same query",
                           parameter="cursor")
    return version, direction, values


# ------------------------------------------------------------------------------------------
# the query
# ------------------------------------------------------------------------------------------
@dataclass
class SortKey:
    column: str  # a spec attribute, "_key" or "_rid"
    desc: bool = False
    cast: str = "text"


def _check_cursor_value(v: Any, cast: str) -> None:
    """A cursor's boundary value must fit its sort column's type (else the cast would fail in SQL)."""
    if v is None:
        return
    ok = {"bigint": isinstance(v, int) and not isinstance(v, bool),
          "double precision": isinstance(v, (int, float)) and not isinstance(v, bool),
          "boolean": isinstance(v, bool)}.get(cast, isinstance(v, str))
    if ok and cast in ("date", "timestamptz"):
        try:
            dt.datetime.fromisoformat(v)
        except ValueError:
            ok = False
    if not ok:
        raise InvalidInput("cursor: does not match this query (follow the next/prev links)", parameter="cursor")


@dataclass
class FeatureQuery:
    """A validated items request for one layer (built by :func:`build_query`)."""

    spec: LayerSpec
    version: int | None
    is_current: bool
    properties: list[str]
    out_crs: Crs
    precision: int
    skip_geometry: bool
    where: list[sql.Composable]
    sort: list[SortKey]
    sort_sig: str
    limit: int | None
    cursor_dir: str = "n"
    cursor_values: list[Any] | None = None
    has_spatial_or_filter: bool = False
    extra_property: tuple[str, sql.Composable] | None = None  # change feeds: ("change", expr)
    source: sql.Composable | None = None  # FROM clause; default: the layer table

    # -- SQL pieces ----------------------------------------------------------------------------
    def geometry_sql(self, axis_order: bool = True) -> sql.Composable:
        """The geometry in the output CRS; ``axis_order``: in the CRS's own axis order (GeoJSON
        per OGC Part 2), else x/y as files (GeoPackage, FlatGeobuf, WKT in CSV) store it."""
        g: sql.Composable = sql.Identifier("geom")
        if self.out_crs.srid not in (4326, 4490):
            g = sql.SQL("ST_Transform({}, {})").format(g, sql.Literal(self.out_crs.srid))
        if self.out_crs.flip and axis_order:
            g = sql.SQL("ST_FlipCoordinates({})").format(g)
        return g

    def properties_sql(self) -> sql.Composable:
        numbers = number_columns(self.spec)
        pairs: list[sql.Composable] = []
        for name in self.properties:
            value = json_real_sql(sql.Identifier(name)) if name in numbers else sql.Identifier(name)
            pairs.append(sql.SQL("{}, {}").format(sql.Literal(name), value))
        if self.extra_property:
            pairs.append(sql.SQL("{}, {}").format(sql.Literal(self.extra_property[0]), self.extra_property[1]))
        if not pairs:
            return sql.SQL("'{}'::json")
        chunks = [pairs[i:i + 45] for i in range(0, len(pairs), 45)]  # json_build_object takes <= 100 args
        objs = [sql.SQL("json_build_object({})").format(sql.SQL(", ").join(c)) for c in chunks]
        if len(objs) == 1:
            return objs[0]
        return sql.SQL("({})::json").format(sql.SQL(" || ").join(sql.SQL("{}::jsonb").format(o) for o in objs))

    def feature_sql(self) -> sql.Composable:
        geom = (sql.SQL("NULL") if self.skip_geometry else
                sql.SQL("ST_AsGeoJSON({}, {}, 0)::json").format(self.geometry_sql(), sql.Literal(self.precision)))
        return sql.SQL("json_build_object('type', 'Feature', 'id', _key, 'geometry', {}, 'properties', {})::text").format(
            geom, self.properties_sql())

    def from_sql(self) -> sql.Composable:
        if self.source is not None:
            return self.source
        if self.version is None:
            # no version, no rows: and no wait for the table a first load holds locked
            return sql.SQL("{} AS t").format(empty_rows(self.spec))
        return sql.SQL("{} AS t").format(table_ident(self.spec))

    def version_sql(self) -> sql.Composable:
        if self.source is not None:
            return sql.SQL("TRUE")
        if self.version is None:
            return sql.SQL("FALSE")
        return sql.SQL("_vto IS NULL") if self.is_current else as_of_filter(self.version)

    def where_sql(self, with_cursor: bool = True) -> sql.Composable:
        parts = [self.version_sql(), *self.where]
        if with_cursor and self.cursor_values is not None:
            parts.append(self._keyset(self.cursor_values, forward=self.cursor_dir == "n"))
        return sql.SQL(" AND ").join(parts)

    def _keyset(self, values: list[Any], forward: bool) -> sql.Composable:
        """Rows strictly after the boundary row in the (forward or reversed) order."""
        if len(values) != len(self.sort):
            raise InvalidInput("cursor: does not match this query", parameter="cursor")
        ors: list[sql.Composable] = []
        eqs: list[sql.Composable] = []
        for key, v in zip(self.sort, values):
            _check_cursor_value(v, key.cast)
            col = sql.Identifier(key.column)
            asc = (not key.desc) if forward else key.desc
            nulls_last = forward
            op = sql.SQL(">" if asc else "<")
            lit = sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(key.cast)) if v is not None else None
            if v is None:
                after = sql.SQL("FALSE") if nulls_last else sql.SQL("{} IS NOT NULL").format(col)
                eq = sql.SQL("{} IS NULL").format(col)
            else:
                cmp = sql.SQL("{} {} {}").format(col, op, lit)
                after = sql.SQL("({} OR {} IS NULL)").format(cmp, col) if nulls_last else cmp
                eq = sql.SQL("{} = {}").format(col, lit)
            ors.append(sql.SQL(" AND ").join([*eqs, after]) if eqs else after)
            eqs.append(eq)
        return sql.SQL("({})").format(sql.SQL(" OR ").join(ors))

    def order_sql(self, forward: bool = True) -> sql.Composable:
        items = []
        for key in self.sort:
            desc = key.desc if forward else not key.desc
            items.append(sql.SQL("{} {} NULLS {}").format(
                sql.Identifier(key.column), sql.SQL("DESC" if desc else "ASC"), sql.SQL("LAST" if forward else "FIRST")))
        return sql.SQL(", ").join(items)

    def page_sql(self) -> sql.Composable:
        """SELECT sort values..., feature text — one row per feature, ``limit + 1`` rows to
        know whether a next page exists."""
        forward = self.cursor_dir == "n"
        keys = sql.SQL(", ").join(sql.Identifier(k.column) for k in self.sort)
        q = sql.SQL("SELECT {keys}, {feat} FROM {src} WHERE {where} ORDER BY {order}").format(
            keys=keys, feat=self.feature_sql(), src=self.from_sql(), where=self.where_sql(),
            order=self.order_sql(forward))
        if self.limit is not None:
            q = sql.SQL("{} LIMIT {}").format(q, sql.Literal(self.limit + 1))
        return q

    def count_sql(self) -> sql.Composable:
        return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(self.from_sql(), self.where_sql(with_cursor=False))

    def export_columns(self) -> list[tuple[str, str]]:
        """(property, spec type) of the output columns of downloads."""
        types = {a.name: a.type for a in self.spec.attributes}
        cols = [(p, types.get(p, "number")) for p in self.properties]
        if self.extra_property:
            cols.append((self.extra_property[0], "text"))
        return cols

    def rows_sql(self, geometry: str = "wkb") -> sql.Composable:
        """Plain rows for downloads: id, properties..., geometry (WKB or WKT) in the output CRS."""
        cols: list[sql.Composable] = [sql.SQL("_key AS id")]
        for name in self.properties:
            cols.append(sql.Identifier(name))
        if self.extra_property:
            cols.append(sql.SQL("{} AS {}").format(self.extra_property[1], sql.Identifier(self.extra_property[0])))
        if not self.skip_geometry:
            g = self.geometry_sql(axis_order=False)
            if geometry == "wkt":
                cols.append(sql.SQL("ST_AsText({}, {}) AS wkt").format(g, sql.Literal(self.precision)))
            else:
                cols.append(sql.SQL("ST_AsBinary({}) AS geometry").format(g))
        q = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
            sql.SQL(", ").join(cols), self.from_sql(), self.where_sql(), self.order_sql(True))
        if self.limit is not None:
            q = sql.SQL("{} LIMIT {}").format(q, sql.Literal(self.limit))
        return q


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


@dataclass
class ItemsParams:
    """The raw request parameters (strings as received) of /items, /changes and downloads."""

    limit: int | None = None
    bbox: str | None = None
    bbox_crs: str | None = None
    crs: str | None = None
    datetime: str | None = None
    filter: str | None = None
    filter_lang: str | None = None
    filter_crs: str | None = None
    properties: str | None = None
    sortby: str | None = None
    skip_geometry: bool = False
    precision: int | None = None
    distance: float | None = None
    point: str | None = None
    geometry: str | None = None
    cursor: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def build_query(state: LayerState, hidden: set[str], p: ItemsParams, *, default_limit: int | None,
                max_limit: int | None) -> FeatureQuery:
    """Validate every parameter against the spec and the caller's view; compose the query."""
    spec = state.spec
    if spec.kind != "vector":
        raise InvalidInput(f"collection {spec.name!r} is a raster (coverage): it has no items; "
                           f"use /collections/{spec.name}/tiles", parameter="collectionId")
    allowed = state.crs_uris()
    out_crs = parse_crs(p.crs, "crs", allowed)
    bbox_crs = parse_crs(p.bbox_crs, "bbox-crs", allowed)
    filter_crs = parse_crs(p.filter_crs, "filter-crs", allowed)
    if p.bbox_crs and not p.bbox:
        raise InvalidInput("bbox-crs: given without bbox", parameter="bbox-crs")
    qtypes = queryable_types(spec, hidden)
    visible = list(qtypes)

    # -- properties --------------------------------------------------------------------------
    if p.properties is not None:
        props = parse_list(p.properties)
        for name in props:  # the one field check of items and analyses alike
            require_field(spec, name, "properties", hidden=hidden, extra=tuple(qtypes))
    else:
        props = visible

    # -- limit -------------------------------------------------------------------------------
    limit = p.limit if p.limit is not None else default_limit
    if limit is not None:
        if limit < 1 or (max_limit is not None and limit > max_limit):
            raise InvalidInput(f"limit: {limit} is outside 1..{max_limit}", parameter="limit")

    if p.precision is not None and not (0 <= p.precision <= 15):
        raise InvalidInput("precision: must be 0..15 decimals", parameter="precision")
    precision = p.precision if p.precision is not None else out_crs.default_precision

    # -- sortby ------------------------------------------------------------------------------
    sort: list[SortKey] = []
    for item in parse_list(p.sortby):
        desc = item.startswith("-")
        name = item.lstrip("+- ")
        if name == "id":
            sort.append(SortKey("_key", desc))
            continue
        require_field(spec, name, "sortby", hidden=hidden, extra=tuple(qtypes))
        sort.append(SortKey(name, desc, cql2._CASTS[qtypes[name]]))
    if not sort:
        sort = [SortKey("_key")]
    elif sort[-1].column != "_key":
        sort.append(SortKey("_rid", False, "bigint"))
    sort_sig = hashlib.md5(",".join(f"{k.column}{'-' if k.desc else ''}" for k in sort).encode()).hexdigest()[:8]

    # -- version -----------------------------------------------------------------------------
    version = resolve_datetime(state, p.datetime)
    cursor_dir, cursor_values = "n", None
    if p.cursor:
        v, cursor_dir, cursor_values = decode_cursor(p.cursor, sort_sig)
        if v is not None and v not in state.versions:
            raise InvalidInput("cursor: its layer version no longer exists", parameter="cursor")
        version = v

    # -- spatial and attribute filters -------------------------------------------------------
    where: list[sql.Composable] = []
    box = parse_bbox(p.bbox, bbox_crs)
    if box:
        where.append(sql.SQL("ST_Intersects(geom, {})").format(_envelope_sql(box, bbox_crs)))
    if p.filter:
        where.append(cql2.to_sql(p.filter, p.filter_lang, qtypes, _geometry_literal(filter_crs)))
    elif p.filter_lang or p.filter_crs:
        which = "filter-lang" if p.filter_lang else "filter-crs"
        raise InvalidInput(f"{which}: given without filter", parameter=which)
    for name, value in p.extra.items():
        if name not in qtypes:
            raise InvalidInput(f"{name}: unknown query parameter; neither a parameter of this endpoint nor a "
                               f"queryable of {spec.name!r} (queryables: {', '.join(visible)})", parameter=name)
        where.append(cql2.equality_sql(name, qtypes[name], value))
    if p.distance is not None or p.point or p.geometry:
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
            max_lat = abs(lat)
        else:
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
            max_lat = max(abs(miny), abs(maxy))
        where.append(_distance_sql(g, p.distance, max_lat))

    return FeatureQuery(
        spec=spec, version=version, is_current=version is not None and version == state.current_version,
        properties=props, out_crs=out_crs, precision=precision, skip_geometry=p.skip_geometry, where=where,
        sort=sort, sort_sig=sort_sig, limit=limit, cursor_dir=cursor_dir, cursor_values=cursor_values,
        has_spatial_or_filter=bool(where))


def changes_source(spec: LayerSpec, v_from: int, v_to: int) -> tuple[sql.Composable, sql.Composable]:
    """FROM clause of the change feed between two versions and the ``change`` expression.

    Rows current at ``v_to`` that appeared after ``v_from`` (n), FULL JOINed on ``_key`` with
    rows current at ``v_from`` retired by ``v_to`` (o): both -> changed, n only -> added,
    o only -> removed (the old row is output)."""
    cols = ["_rid", "_hash", *spec.attribute_names]
    m = measure_column(spec)
    if m:
        cols.append(m)
    cols.append("geom")
    pick = sql.SQL(", ").join(
        sql.SQL("CASE WHEN n._key IS NULL THEN o.{c} ELSE n.{c} END AS {c}").format(c=sql.Identifier(c)) for c in cols)
    f, t = sql.Literal(int(v_from)), sql.Literal(int(v_to))
    src = sql.SQL(
        "(SELECT COALESCE(n._key, o._key) AS _key, {pick}, "
        "CASE WHEN o._key IS NULL THEN 'added' WHEN n._key IS NULL THEN 'removed' ELSE 'changed' END AS change "
        "FROM (SELECT * FROM {tbl} WHERE _vfrom > {f} AND _vfrom <= {t} AND (_vto IS NULL OR _vto > {t})) n "
        "FULL JOIN (SELECT * FROM {tbl} WHERE _vfrom <= {f} AND _vto > {f} AND _vto <= {t}) o USING (_key) "
        "WHERE n._hash IS DISTINCT FROM o._hash) AS t").format(pick=pick, tbl=table_ident(spec), f=f, t=t)
    return src, sql.Identifier("change")


def etag_for(*parts: Any) -> str:
    return '"' + hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:32] + '"'


__all__ = [
    "CRS84",
    "FeatureQuery",
    "ItemsParams",
    "NotFound",
    "build_query",
    "changes_source",
    "decode_cursor",
    "encode_cursor",
    "etag_for",
    "queryable_types",
    "resolve_datetime",
]

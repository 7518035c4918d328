"""STAC API item search and the documents around it (landing, collections, item collections):
parameters read and checked here (GET query or POST body alike), the SQL in
:mod:`geobase.catalog.imagery`. Links are made absolute against the server's base URL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time

import psycopg
from psycopg import sql

from geobase.catalog import imagery as cat
from geobase.cql2 import GEOMETRY_NAMES, Translator
from geobase.cql2_parse import parse
from geobase.errors import InvalidInput, NotFound
from geobase.imagery.stac import STAC_VERSION, build_collection
from geobase.vocab import is_name

LIMIT_DEFAULT, LIMIT_MAX = 10, 1000
SEARCH_FIELDS = ("bbox", "datetime", "collections", "ids", "limit", "token", "filter", "filter-lang")
CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]


def _instant(text: str, end: bool) -> datetime | None:
    if text in ("", ".."):
        return None
    try:
        if len(text) == 10:  # a date: the whole day
            d = datetime.fromisoformat(text)
            return datetime.combine(d.date(), time.max if end else time.min, tzinfo=UTC)
        t = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"datetime: {text!r} is not an RFC 3339 date-time", parameter="datetime") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_interval(text: str | None) -> tuple[datetime | None, datetime | None]:
    """``a``, ``a/b``, ``../b``, ``a/..`` -> (start, end), both inclusive."""
    if not text:
        return None, None
    if "/" in text:
        a, _, b = text.partition("/")
        start, end = _instant(a, False), _instant(b, True)
        if start is None and end is None:
            raise InvalidInput("datetime: an interval needs at least one end", parameter="datetime")
        if start and end and start > end:
            raise InvalidInput("datetime: the interval's start is after its end", parameter="datetime")
        return start, end
    return _instant(text, False), _instant(text, True)


def parse_bbox(value) -> tuple[float, float, float, float] | None:
    if value is None or value == "":
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        b = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        b = ()
    if len(b) == 6:
        b = (b[0], b[1], b[3], b[4])
    if len(b) != 4 or not (-180 <= b[0] <= b[2] <= 180 and -90 <= b[1] <= b[3] <= 90):
        raise InvalidInput(f"bbox: {value!r} is not minlon,minlat,maxlon,maxlat in EPSG:4326", parameter="bbox")
    return b  # type: ignore[return-value]


def _names(value, parameter: str) -> tuple[str, ...] | None:
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) and is_name(v.strip()) for v in items):
        raise InvalidInput(f"{parameter}: a list of names (lowercase letters, digits, _)", parameter=parameter)
    return tuple(v.strip() for v in items)


def _int(value, parameter: str, lo: int, hi: int, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = lo - 1
    if not lo <= n <= hi or isinstance(value, bool | float):
        raise InvalidInput(f"{parameter}: an integer {lo}..{hi}", parameter=parameter)
    return n


def item_query(params: dict) -> cat.ItemQuery:
    """The search from GET query parameters or a POST body (the same names); unknown names 400."""
    unknown = sorted(set(params) - set(SEARCH_FIELDS))
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown search parameter (known: {', '.join(SEARCH_FIELDS)})",
                           parameter=unknown[0])
    dt = params.get("datetime")
    if dt is not None and not isinstance(dt, str):
        raise InvalidInput("datetime: a string", parameter="datetime")
    start, end = parse_interval(dt)
    return cat.ItemQuery(collections=_names(params.get("collections"), "collections"),
                         ids=_names(params.get("ids"), "ids"), bbox=parse_bbox(params.get("bbox")), start=start,
                         end=end, limit=_int(params.get("limit"), "limit", 1, LIMIT_MAX, LIMIT_DEFAULT),
                         offset=_int(params.get("token"), "token", 0, 10**9, 0),
                         where=compile_filter(params.get("filter"), params.get("filter-lang")))


def item_document(row: dict, base: str) -> dict:
    """A stored Item with absolute links and asset href."""
    item = dict(row["item"])
    c, i = row["collection"], row["id"]
    item["links"] = [
        {"rel": "self", "href": f"{base}/stac/collections/{c}/items/{i}", "type": "application/geo+json"},
        {"rel": "collection", "href": f"{base}/stac/collections/{c}", "type": "application/json"},
        {"rel": "parent", "href": f"{base}/stac/collections/{c}", "type": "application/json"},
        {"rel": "root", "href": f"{base}/stac", "type": "application/json"},
    ]
    assets = {k: dict(v) for k, v in item["assets"].items()}
    assets["data"]["href"] = f"{base}/imagery/{c}/items/{i}/data.tif"
    item["assets"] = assets
    return item


def landing(base: str) -> dict:
    return {"type": "Catalog", "id": "geobase", "stac_version": STAC_VERSION, "conformsTo": CONFORMS,
            "title": "geobase imagery", "description": "Imagery scenes catalogued as STAC Items",
            "links": [{"rel": "self", "href": f"{base}/stac", "type": "application/json"},
                      {"rel": "root", "href": f"{base}/stac", "type": "application/json"},
                      {"rel": "data", "href": f"{base}/stac/collections", "type": "application/json"},
                      {"rel": "search", "href": f"{base}/stac/search", "type": "application/geo+json",
                       "method": "GET"},
                      {"rel": "search", "href": f"{base}/stac/search", "type": "application/geo+json",
                       "method": "POST"}]}


def _collection_doc(row: dict, base: str) -> dict:
    cid = row["id"]
    return build_collection(row, [
        {"rel": "self", "href": f"{base}/stac/collections/{cid}", "type": "application/json"},
        {"rel": "root", "href": f"{base}/stac", "type": "application/json"},
        {"rel": "parent", "href": f"{base}/stac", "type": "application/json"},
        {"rel": "items", "href": f"{base}/stac/collections/{cid}/items", "type": "application/geo+json"}])


async def collections_doc(conn: psycopg.AsyncConnection, base: str) -> dict:
    rows = await cat.collections(conn)
    return {"collections": [_collection_doc(r, base) for r in rows],
            "links": [{"rel": "self", "href": f"{base}/stac/collections", "type": "application/json"},
                      {"rel": "root", "href": f"{base}/stac", "type": "application/json"}]}


async def collection_doc(conn: psycopg.AsyncConnection, cid: str, base: str) -> dict:
    rows = await cat.collections(conn, cid) if is_name(cid) else []
    if not rows:
        raise NotFound(f"collection {cid[:100]!r} not found", parameter="collectionId")
    return _collection_doc(rows[0], base)


async def search(conn: psycopg.AsyncConnection, q: cat.ItemQuery, base: str, next_href) -> dict:
    """An ItemCollection page; ``next_href(offset)`` builds the next link (GET or POST)."""
    rows, matched = await cat.search_items(conn, q)
    links = [{"rel": "root", "href": f"{base}/stac", "type": "application/json"}]
    if q.offset + len(rows) < matched:
        links.append(next_href(q.offset + q.limit))
    return {"type": "FeatureCollection", "features": [item_document(r, base) for r in rows], "links": links,
            "numberMatched": matched, "numberReturned": len(rows)}


class _StacTranslator(Translator):
    """CQL2 over STAC item properties (:data:`geobase.catalog.imagery.STAC_QUERYABLES`) and
    ``geometry`` (the footprint, EPSG:4326)."""

    def _prop(self, node: dict):
        name = node.get("property")
        if isinstance(name, str) and name not in GEOMETRY_NAMES:
            if name not in cat.STAC_QUERYABLES:
                raise InvalidInput(f"filter: unknown property {name!r}; queryables: "
                                   f"{', '.join(sorted(cat.STAC_QUERYABLES))}", parameter="filter")
            typ, expr = cat.STAC_QUERYABLES[name]
            return expr, typ
        return super()._prop(node)


def _geometry_sql(geojson: dict) -> sql.Composable:
    return sql.SQL("ST_SetSRID(ST_GeomFromGeoJSON({}), 4326)").format(sql.Literal(json.dumps(geojson)))


def compile_filter(value, lang) -> sql.Composable | None:
    """A search ``filter`` (cql2-text, or cql2-json as text or a JSON object in a POST body) as
    SQL over the catalogue; an unknown property is a 400 naming it."""
    if value is None or value == "":
        return None
    if lang is not None and not isinstance(lang, str):
        raise InvalidInput("filter-lang: cql2-text or cql2-json", parameter="filter-lang")
    if isinstance(value, dict):
        text, lang = json.dumps(value), lang or "cql2-json"
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidInput("filter: a CQL2 text string or a cql2-json object", parameter="filter")
    return _StacTranslator({}, _geometry_sql, geom_column="footprint").translate(parse(text, lang))


def queryables(base: str) -> dict:
    """The JSON Schema of the properties ``filter`` may name (STAC API filter extension)."""
    kinds = {"text": {"type": "string"}, "number": {"type": "number"},
             "datetime": {"type": "string", "format": "date-time"}}
    props = {name: dict(kinds[typ], title=name) for name, (typ, _) in cat.STAC_QUERYABLES.items()}
    props["geometry"] = {"$ref": "https://geojson.org/schema/Geometry.json"}
    return {"$schema": "https://json-schema.org/draft/2019-09/schema", "$id": f"{base}/stac/queryables",
            "type": "object", "title": "STAC item queryables", "properties": props, "additionalProperties": False}

"""Find things on the one map: a parcel by its number, a division by code or name, a village or
owner by name, a place (river, lake) by name, or a position given as coordinates.

What may be searched is this module's table :data:`TARGETS` (layer -> fields and how they
match), checked against the registry at each call: a field the layer does not have, or that is
masked for the caller (:func:`geobase.security.hidden_attributes`, e.g. the owner names hidden
from the public), is neither searched nor shown in a label, and layers the caller may not see
(:func:`geobase.security.visible_layers`) are not touched. So a search can never tell a caller
more than the items API would.

Coordinates are read as lon/lat (either order, told apart by range) or as CGCS2000
Gauss-Krüger easting/northing: with the zone number as the easting's prefix
("39512345.6 3456789.0") or with an explicit zone ("512345.6 3456789.0 zone 39", "39带").
Numbers that look projected but name no zone are refused (400 naming ``q``): guessing a zone
would put the caller somewhere plausible and wrong.

Only current rows are searched. SQL is composed with :mod:`psycopg.sql` and bound values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import psycopg
from psycopg import sql

from geobase.features.ids import id_sql, qualified_ids
from geobase.catalog import layers as catalog_layers
from geobase.errors import InvalidInput
from geobase.security import Principal, hidden_attributes, visible_layers
from geobase.specs import LayerSpec, Registry
from geobase.storage import current_filter, table_ident

#: the longest query accepted (characters); names and codes are far shorter
Q_MAX = 100
#: results per search: default and most
LIMIT_DEFAULT, LIMIT_MAX = 10, 50

Match = Literal["exact", "prefix", "contains"]


@dataclass(frozen=True)
class Target:
    """One searchable field of a layer.

    ``match``: exact (identifiers), prefix (hierarchical codes: a township code finds its
    villages) or contains (names). ``group``: one result per distinct value (a village's
    hundreds of parcels are one hit, with their common extent), not one per feature.
    ``label``: attributes shown after the value, each only when the caller may read it."""

    field: str
    match: Match
    group: bool = False
    label: tuple[str, ...] = ()


#: layer -> searchable fields, in the order results of equal rank are listed
TARGETS: dict[str, tuple[Target, ...]] = {
    "admin_divisions": (Target("xzqdm", "prefix", label=("xzqmc",)), Target("xzqmc", "contains", label=("xzqdm",))),
    "water_areas": (Target("name", "contains", group=True), Target("water_code", "prefix", group=True)),
    "rivers": (Target("name", "contains", group=True), Target("water_code", "prefix", group=True)),
    "land_use": (
        Target("bsm", "exact", label=("tbbh", "zldwmc", "dlmc")),
        Target("tbbh", "exact", label=("zldwmc", "dlmc", "bsm")),
        Target("zldwdm", "prefix", group=True),
        Target("zldwmc", "contains", group=True),
        Target("qsdwdm", "prefix", group=True),
        Target("qsdwmc", "contains", group=True),
    ),
    "control_lines": (Target("bsm", "exact", label=("kzxmc",)), Target("kzxmc", "contains", group=True)),
    "planning_zones": (Target("bsm", "exact", label=("ghfqmc",)),),
    "forest": (Target("xbh", "exact", label=("xiao_ban", "you_shi_sz_mc")),),
}
_RANK = {"exact": 0, "prefix": 1, "contains": 2}


def check_query(q: object, limit: object) -> tuple[str, int]:
    """The stripped query and the result count, or InvalidInput naming ``q`` / ``limit``."""
    if not isinstance(q, str) or not q.strip():
        raise InvalidInput("q: give something to find (a parcel number, a division code or name, a place name "
                           "or coordinates)", parameter="q")
    q = q.strip()
    if len(q) > Q_MAX:
        raise InvalidInput(f"q: at most {Q_MAX} characters (got {len(q)})", parameter="q")
    if any(ord(c) < 32 for c in q):
        raise InvalidInput("q: control characters are not searchable", parameter="q")
    if limit is None:
        return q, LIMIT_DEFAULT
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX:
        raise InvalidInput(f"limit: an integer from 1 to {LIMIT_MAX}", parameter="limit")
    return q, limit


# ------------------------------------------------------------------------------------------
# coordinates
# ------------------------------------------------------------------------------------------
_NUM = r"[-+]?\d+(?:\.\d+)?"
_ZONE = re.compile(r"(?:\bzone\s*[=:]?\s*|带号\s*[:：=]?\s*)(\d{1,2})\b|(\d{1,2})\s*带", re.IGNORECASE)
_ONLY_NUMBERS = re.compile(rf"^\s*({_NUM})\s*[,，;；/\s]\s*({_NUM})\s*$")


@dataclass(frozen=True)
class Position:
    """A position found in a query: lon/lat on CGCS2000 and how it was read."""

    lon: float
    lat: float
    read_as: str


def gk_epsg(zone: int) -> int:
    """EPSG code of the CGCS2000 GK zone ``zone`` with the zone number prefixed to the easting:
    3° zones 25..45 -> 4513..4533, 6° zones 13..23 -> 4491..4501 (the two ranges do not meet)."""
    if 25 <= zone <= 45:
        return 4513 + zone - 25
    if 13 <= zone <= 23:
        return 4491 + zone - 13
    raise InvalidInput(f"q: zone {zone} is no CGCS2000 Gauss-Krüger zone (3° zones 25-45, 6° zones 13-23)",
                       parameter="q")


@lru_cache(maxsize=64)
def _to_lonlat(epsg: int):
    from pyproj import Transformer

    return Transformer.from_crs(epsg, 4490, always_xy=True)


def _gk(easting: float, northing: float, zone: int | None) -> Position:
    """Easting/northing (easting with or without its zone prefix) -> lon/lat."""
    prefix = int(easting // 1_000_000)
    if zone is None:
        zone = prefix
    elif prefix not in (0, zone):
        raise InvalidInput(f"q: the easting's prefix {prefix} contradicts zone {zone}", parameter="q")
    local = easting - prefix * 1_000_000
    epsg = gk_epsg(zone)
    lon, lat = _to_lonlat(epsg).transform(zone * 1_000_000 + local, northing)
    if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lat) > 90:
        raise InvalidInput(f"q: {easting} {northing} is outside zone {zone}", parameter="q")
    return Position(lon, lat, f"CGCS2000 GK zone {zone} (EPSG:{epsg}) E {local:.2f} N {northing:.2f}")


def parse_position(q: str) -> Position | None:
    """The position ``q`` names, or None when ``q`` is not a pair of numbers (then it is text)."""
    zone = None
    m = _ZONE.search(q)
    if m:
        zone = int(m.group(1) or m.group(2))
        q = (q[:m.start()] + " " + q[m.end():]).strip()
    pair = _ONLY_NUMBERS.match(q)
    if not pair:
        if zone is not None and re.search(_NUM, q):
            raise InvalidInput("q: with a zone, give two numbers: easting and northing", parameter="q")
        return None
    a, b = float(pair.group(1)), float(pair.group(2))
    if zone is None and abs(a) <= 180 and abs(b) <= 180:
        if abs(b) <= 90:
            return Position(a, b, "lon/lat")
        if abs(a) <= 90:
            return Position(b, a, "lat/lon")
    if zone is None and max(abs(a), abs(b)) < 1000:
        raise InvalidInput(f"q: {a} {b} are neither lon/lat nor easting/northing", parameter="q")
    # projected: in China the easting (< 1e6 without its zone prefix, >= 1.3e7 with it) and the
    # northing (2e6..6e6) never overlap, so their order tells itself
    easting, northing = (a, b) if _is_easting(a, zone) else (b, a)
    if not _is_easting(easting, zone) or _is_easting(northing, zone):
        raise InvalidInput(f"q: cannot tell easting from northing in {a} {b}", parameter="q")
    if zone is None and easting < 1_000_000:
        raise InvalidInput(f"q: {a} {b} look like Gauss-Krüger easting/northing without a zone: write the easting "
                           "with its zone prefix (e.g. 39512345.6) or add the zone (e.g. 'zone 39' or '39带')",
                           parameter="q")
    return _gk(easting, northing, zone)


def _is_easting(v: float, zone: int | None) -> bool:
    prefix = int(v // 1_000_000)
    return 0 <= v and (prefix == 0 or (prefix == zone if zone else 13 <= prefix <= 45))


def position_result(p: Position) -> dict:
    return {"layer": None, "kind": "position", "id": None, "label": f"{p.lon:.6f}, {p.lat:.6f} ({p.read_as})",
            "bbox": [p.lon, p.lat, p.lon, p.lat], "point": [p.lon, p.lat], "rank": 0}


# ------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------
def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _condition(t: Target, q: str) -> tuple[sql.Composable, str]:
    col = sql.Identifier(t.field)
    if t.match == "exact":
        return sql.SQL("{} = %s").format(col), q
    if t.match == "prefix":
        return sql.SQL("{} LIKE %s").format(col), _like_escape(q) + "%"
    return sql.SQL("{} ILIKE %s").format(col), "%" + _like_escape(q) + "%"


_BOX = sql.SQL("ST_XMin({e}), ST_YMin({e}), ST_XMax({e}), ST_YMax({e})")


def _query(spec: LayerSpec, t: Target, label: list[str], q: str, limit: int,
           qualified: bool = False) -> tuple[sql.Composed, tuple]:
    """The search of one target; a hit's ``id`` is the feature's id (county-qualified in a
    province layer: geobase/features/ids.py), what ``/items/{id}`` answers."""
    cond, value = _condition(t, q)
    col = sql.Identifier(t.field)
    order = sql.SQL("({c} = %s) DESC, length({c}), {c}").format(c=col)
    if t.group:
        query = sql.SQL("SELECT v, n, k, {box} FROM (SELECT {c} AS v, count(*) AS n, min({fid}) AS k, "
                        "ST_Extent(geom) AS e FROM {t} WHERE {cur} AND {cond} GROUP BY {c}) g "
                        "ORDER BY (v = %s) DESC, length(v), v LIMIT %s").format(
            box=_BOX.format(e=sql.Identifier("e")), c=col, t=table_ident(spec), cur=current_filter(), cond=cond,
            fid=id_sql(qualified))
        return query, (value, q, limit)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in [t.field] + label)
    query = sql.SQL("SELECT {cols}, {fid}, {box} FROM {t} WHERE {cur} AND {cond} ORDER BY {order} LIMIT %s").format(
        cols=cols, box=_BOX.format(e=sql.Identifier("geom")), t=table_ident(spec), cur=current_filter(),
        cond=cond, order=order, fid=id_sql(qualified))
    return query, (value, q, limit)


def _cql2_equals(field: str, value: str) -> str:
    """A CQL2 text filter selecting the features of a grouped hit (for the items API)."""
    return f"{field} = '" + value.replace("'", "''") + "'"


def _titles(spec: LayerSpec, name: str) -> dict:
    attr = next(a for a in spec.attributes if a.name == name)
    return attr.title.model_dump() if attr.title else {"zh": name, "en": name}


def _hit(spec: LayerSpec, t: Target, row: tuple, label: list[str], rank: int) -> dict:
    title = spec.title.model_dump()
    field = _titles(spec, t.field)
    if t.group:
        value, count, key, *bbox = row
        return {"layer": spec.name, "kind": "group", "id": key if count == 1 else None, "field": t.field,
                "value": value, "count": count, "filter": _cql2_equals(t.field, value),
                "label": f"{value} · {field['zh']} · {title['zh']} ({count})", "title": title,
                "bbox": [float(b) for b in bbox], "rank": rank}
    value, *rest = row
    extra, (key, *bbox) = rest[:len(label)], rest[len(label):]
    shown = " · ".join(str(v) for v in extra if v not in (None, ""))
    return {"layer": spec.name, "kind": "feature", "id": key, "field": t.field, "value": value,
            "label": f"{title['zh']} {field['zh']} {value}" + (f" · {shown}" if shown else ""), "title": title,
            "bbox": [float(b) for b in bbox], "rank": rank}


async def _search_layer(conn: psycopg.AsyncConnection, principal: Principal, spec: LayerSpec, q: str,
                        limit: int, order: int, version: int) -> list[tuple[tuple[int, int, int], dict]]:
    hidden = hidden_attributes(principal, spec)
    qualified = await qualified_ids(conn, spec, version)
    text = {a.name for a in spec.attributes if a.type == "text"}
    readable = set(spec.attribute_names) - hidden
    hits = []
    for i, t in enumerate(TARGETS.get(spec.name, ())):
        if t.field not in text or t.field not in readable:  # masked: never searched
            continue
        label = [c for c in t.label if c in readable]  # masked: never shown
        query, params = _query(spec, t, label, q, limit, qualified)
        cur = await conn.execute(query, params)
        for row in await cur.fetchall():
            exact = row[0] == q
            rank = 0 if exact else _RANK[t.match]
            hits.append(((rank, order, i), _hit(spec, t, row, label, rank)))
    return hits


async def search(conn: psycopg.AsyncConnection, principal: Principal, registry: Registry, q: object,
                 limit: object = None) -> dict:
    """Everything ``q`` names that this caller may see, best first, at most ``limit`` results.

    Each result: ``layer`` (None for a position), ``kind`` (feature, group or position), ``id``
    (the feature id of the items API, when one feature), ``label``, ``bbox`` (lon/lat), and for a
    group the CQL2 ``filter`` that selects its features."""
    q, limit = check_query(q, limit)
    results: list[dict] = []
    position = parse_position(q)
    if position is not None:
        results.append(position_result(position))
    else:
        specs = [s for s in await visible_layers(conn, principal, registry, exact_geometry=True) if s.name in TARGETS]
        loaded = await catalog_layers.current_layers(conn, [s.name for s in specs])
        order = list(TARGETS)
        hits = []
        for spec in specs:
            if loaded.get(spec.name) is not None and loaded[spec.name].version is not None:
                hits += await _search_layer(conn, principal, spec, q, limit, order.index(spec.name),
                                            loaded[spec.name].version)
        hits.sort(key=lambda h: h[0])
        seen = set()
        for _, hit in hits:
            key = (hit["layer"], hit["kind"], hit["id"], hit.get("filter"))
            if key not in seen:
                seen.add(key)
                results.append(hit)
    return {"q": q, "results": results[:limit], "numberReturned": min(len(results), limit),
            "limited": len(results) > limit}


# ------------------------------------------------------------------------------------------
# label points for the map
# ------------------------------------------------------------------------------------------
#: layer -> (name field, kind of place, optional filter column and value, how to place)
LABELS: dict[str, tuple[str, str, tuple[str, str] | None, str]] = {
    "admin_divisions": ("xzqmc", "township", ("level", "township"), "inside"),
    "land_use": ("zldwmc", "village", None, "group"),
    "water_areas": ("name", "water", None, "inside"),
}


def _label_query(spec: LayerSpec, field: str, where: tuple[str, str] | None, how: str) -> tuple[sql.Composed, tuple]:
    """One point per name: the centre of the largest inscribed circle of a feature (a township,
    a lake), or, for a name shared by many features (a village's parcels), the parcel point
    nearest the middle of them all, so the label always sits on the village itself."""
    cond, params = sql.SQL("{} IS NOT NULL").format(sql.Identifier(field)), ()
    if where:
        cond = sql.SQL("{} AND {} = %s").format(cond, sql.Identifier(where[0]))
        params = (where[1],)
    if how == "inside":
        point = sql.SQL("(ST_MaximumInscribedCircle(geom)).center")
        query = sql.SQL("SELECT {f}, ST_X(p), ST_Y(p) FROM (SELECT {f}, {point} AS p FROM {t} WHERE {cur} AND {cond}) x "
                        "ORDER BY {f}")
    else:
        point = sql.SQL("ST_ClosestPoint(ST_Collect(ST_PointOnSurface(geom)), ST_Centroid(ST_Collect(ST_PointOnSurface(geom))))")
        query = sql.SQL("SELECT {f}, ST_X(p), ST_Y(p) FROM (SELECT {f}, {point} AS p FROM {t} WHERE {cur} AND {cond} "
                        "GROUP BY {f}) x ORDER BY {f}")
    return query.format(f=sql.Identifier(field), point=point, t=table_ident(spec), cur=current_filter(),
                        cond=cond), params


async def label_points(conn: psycopg.AsyncConnection, principal: Principal, registry: Registry) -> dict:
    """Named places to write on the map (townships, villages, lakes) as a GeoJSON point
    collection, from the layers this caller may see and fields it may read: the map's own base,
    with no external basemap."""
    features = []
    specs = [s for s in await visible_layers(conn, principal, registry, exact_geometry=True) if s.name in LABELS]
    loaded = await catalog_layers.current_layers(conn, [s.name for s in specs])
    for spec in specs:
        field, kind, where, how = LABELS[spec.name]
        hidden = hidden_attributes(principal, spec)
        needed = [field] + ([where[0]] if where else [])
        if any(f in hidden or f not in spec.attribute_names for f in needed):
            continue
        if loaded.get(spec.name) is None or loaded[spec.name].version is None:
            continue
        cur = await conn.execute(*_label_query(spec, field, where, how))
        for name, x, y in await cur.fetchall():
            if x is not None:
                features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
                                 "properties": {"name": name, "kind": kind, "layer": spec.name}})
    return {"type": "FeatureCollection", "features": features}

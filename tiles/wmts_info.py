"""WMTS GetFeatureInfo: what is drawn at one pixel of a tile, for the caller.

The pixel (I column, J row, counted from the tile's top left) becomes a point in the tile's CRS
(its centre), then CGCS2000 longitude/latitude, where the layers' one spatial index is. Each
layer the caller may see in the tile (:func:`geobase.tiles.service.resolve_layers`: hidden and
unknown layers are 404, reads of non-public layers audited), drawn at that level, answers its
today's features under the point: polygons containing it, lines and points within two pixels.
Attributes are the layer's minus those masked for the caller
(:func:`geobase.security.visible_attributes`), selected in SQL, so a masked value is never read.

Answers as GeoJSON (a FeatureCollection of the features without their geometry, each naming its
layer) or an HTML table per layer (``text/html``, what desktop clients show in a popup)."""

from __future__ import annotations

import html
import math

import psycopg
from psycopg import sql

from geobase.analysis.common import interactive_snapshot
from geobase.catalog.state import layer_states
from geobase.errors import InvalidInput
from geobase.features.ids import id_sql, qualified_ids
from geobase.security import Principal, geometry_exact, visible_attributes
from geobase.specs import LayerSpec, Registry
from geobase.storage import current_filter, table_ident
from geobase.tiles.service import resolve_layers
from geobase.tiles.tms import WEB_MERCATOR_HALF, TileMatrixSet
from geobase.tiles.wmts import INFO_FORMATS
PER_LAYER = 20  # features per layer at one pixel (overlapping polygons are rare in a coverage)


def info_format(value: str | None, parameter: str = "INFOFORMAT") -> str:
    """``json`` or ``html`` for an INFOFORMAT (or a RESTful extension); 400 naming it otherwise."""
    fmt = INFO_FORMATS.get((value or "application/json").split(";")[0].strip().lower())
    if fmt is None and value in ("json", "html"):
        fmt = value
    if fmt is None:
        raise InvalidInput(f"{parameter}: {str(value)[:40]!r} is not offered (application/json, text/html)",
                           parameter=parameter)
    return fmt


def pixel(value: str, parameter: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 255:
        raise InvalidInput(f"{parameter}: {value[:20]!r} is not a pixel of a 256-pixel tile (0..255)",
                           parameter=parameter)
    return int(value)


def pixel_lonlat(tms: TileMatrixSet, z: int, row: int, col: int, i: int, j: int) -> tuple[float, float, float]:
    """(lon, lat, pixel size in degrees) of the centre of pixel (i, j) of a tile."""
    xmin, _, xmax, ymax = tms.bounds(z, row, col)
    px = (xmax - xmin) / 256
    x, y = xmin + (i + 0.5) * px, ymax - (j + 0.5) * px
    if tms.srid != 3857:
        return x, y, px
    lon = x / WEB_MERCATOR_HALF * 180.0
    lat = math.degrees(2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2)
    return lon, lat, px / WEB_MERCATOR_HALF * 180.0 * math.cos(math.radians(lat))


def _layer_sql(spec: LayerSpec, attrs: list[str], lon: float, lat: float, reach: float,
               qualified: bool) -> sql.Composed:
    """The features at the point, as JSON documents whose ``_id`` is the Features API id (the
    county-qualified one in a province: bare keys repeat across counties)."""
    pt = sql.SQL("ST_SetSRID(ST_MakePoint({}, {}), 4490)").format(sql.Literal(lon), sql.Literal(lat))
    if spec.geometry == "MultiPolygon":
        hit = sql.SQL("geom && {pt} AND ST_Intersects(geom, {pt})").format(pt=pt)
    else:
        hit = sql.SQL("geom && ST_Expand({pt}, {r}) AND ST_DWithin(geom, {pt}, {r})").format(pt=pt, r=sql.Literal(reach))
    cols = sql.SQL(", ").join([sql.SQL("{} AS _id").format(id_sql(qualified)), *map(sql.Identifier, attrs)])
    return sql.SQL("SELECT to_jsonb(t) FROM (SELECT {cols} FROM {tbl} WHERE {cur} AND {hit} ORDER BY _key "
                   "LIMIT {n}) t").format(cols=cols, tbl=table_ident(spec), cur=current_filter(), hit=hit,
                                          n=sql.Literal(PER_LAYER))


async def feature_info(conn: psycopg.AsyncConnection, registry: Registry, principal: Principal, layers: str,
                       tms: TileMatrixSet, z: int, row: int, col: int, i: int, j: int) -> dict:
    """The features under pixel (i, j) of the tile, top layer first, as a GeoJSON document."""
    tms.validate(z, row, col)
    states = await layer_states(conn)
    specs = resolve_layers(layers, states, principal, registry)
    lon, lat, px = pixel_lonlat(tms, z, row, col, i, j)
    features = []
    async with interactive_snapshot(conn):
        for spec in sorted(specs, key=lambda s: (-s.style.order, s.name)):
            if states[spec.name].current_version is None or not spec.tiles.minzoom <= z <= spec.tiles.maxzoom:
                continue
            if not geometry_exact(principal, spec):  # rounded/township/boxed for this caller: a point
                continue  # query on the stored geometry would tell where its features really are
            qualified = await qualified_ids(conn, spec, states[spec.name].current_version)
            cur = await conn.execute(_layer_sql(spec, visible_attributes(principal, spec), lon, lat, 2 * px, qualified))
            for (doc,) in await cur.fetchall():
                key = doc.pop("_id")
                features.append({"type": "Feature", "id": key, "layer": spec.name, "title": spec.title.zh,
                                 "geometry": None, "properties": doc})
    return {"type": "FeatureCollection", "features": features, "point": [lon, lat],
            "tileMatrixSet": tms.id, "tileMatrix": z, "tileRow": row, "tileCol": col, "i": i, "j": j}


def info_html(doc: dict) -> str:
    """The features as one HTML table per layer (the popup of a desktop client)."""
    out = ['<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8"><title>GetFeatureInfo</title></head><body>']
    if not doc["features"]:
        out.append("<p>此处无要素 no feature here</p>")
    by_layer: dict[str, list[dict]] = {}
    for f in doc["features"]:
        by_layer.setdefault(f["layer"], []).append(f)
    for layer, feats in by_layer.items():
        names = list(dict.fromkeys(k for f in feats for k in f["properties"]))
        out.append(f"<table><caption>{html.escape(feats[0]['title'])} ({html.escape(layer)})</caption><tr><th>id</th>")
        out += [f"<th>{html.escape(n)}</th>" for n in names]
        out.append("</tr>")
        for f in feats:
            cells = "".join(f"<td>{html.escape('' if f['properties'].get(n) is None else str(f['properties'][n]))}</td>"
                            for n in names)
            out.append(f"<tr><td>{html.escape(str(f['id']))}</td>{cells}</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "".join(out)

"""The features a sheet or a picture tile draws, read from PostGIS for one caller.

One statement per layer: today's rows whose ``geom`` meets the frame (the one spatial index,
on the stored CGCS2000 geometry, as vector tiles use it), simplified to a fraction of an output
pixel and clipped to the slightly enlarged frame in PostGIS, so Python receives only what can
be seen. Only the class field (for the colours) and an optional label field are read, and only
when the caller may read them (:func:`geobase.security.hidden_attributes`): a masked field is
never selected, so it can never be printed."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from geobase.errors import InvalidInput
from geobase.lazy_import import load
from geobase.specs import LayerSpec
from geobase.storage import current_filter, division_filter, table_ident

Box = tuple[float, float, float, float]


@dataclass
class LayerData:
    """One layer's drawable features (shapely geometries in the drawing CRS) and their classes."""

    spec: LayerSpec
    geoms: list = field(default_factory=list)
    classes: list[str | None] | None = None  # None: the class field is masked or absent (one colour)
    labels: list[str | None] | None = None
    opacity: float | None = None


def class_field_for(spec: LayerSpec, hidden: set[str]) -> str | None:
    """The field the layer's colours come from, if this caller may read it."""
    cf = spec.style.class_field or spec.class_field
    return cf if cf and cf not in hidden else None


async def fetch_layer(conn: psycopg.AsyncConnection, spec: LayerSpec, filter_box: Box, draw_box: Box, *,
                      srid: int, tolerance: float, hidden: set[str], limit: int, label: str | None = None,
                      divisions: tuple[str, ...] | None = None) -> LayerData:
    """Today's features of ``spec`` meeting ``filter_box`` (CGCS2000 lon/lat), in the drawing
    CRS ``srid`` (4490: ``geom``; 3857: ``geom_3857``) simplified by ``tolerance`` and clipped to
    ``draw_box`` (in ``srid``). More than ``limit`` features: InvalidInput naming ``extent`` (a
    part of the rows is never drawn as if it were all of them). ``divisions``: those counties'
    features only (checked codes; the other counties' partitions are pruned)."""
    shapely = load("shapely")[0]
    cf = class_field_for(spec, hidden)
    col = sql.Identifier("geom_3857" if srid == 3857 else "geom")
    geom = col if tolerance <= 0 else sql.SQL("ST_Simplify({}, {}, true)").format(col, sql.Literal(float(tolerance)))
    draw_env = sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, {})").format(*map(sql.Literal, map(float, draw_box)),
                                                                     sql.Literal(srid))
    if spec.geometry != "MultiPoint":
        geom = sql.SQL("ST_ClipByBox2D({}, {})").format(geom, draw_env)
    cols = [sql.SQL("ST_AsBinary({})").format(geom),
            sql.Identifier(cf) if cf else sql.SQL("NULL"),
            sql.SQL("{}::text").format(sql.Identifier(label)) if label else sql.SQL("NULL")]
    stmt = sql.SQL("SELECT {cols} FROM {tbl} WHERE {cur}{counties} AND geom && ST_MakeEnvelope({b}, 4490) "
                   "ORDER BY _key LIMIT {n}").format(
        cols=sql.SQL(", ").join(cols), tbl=table_ident(spec), cur=current_filter(),
        counties=sql.SQL("") if divisions is None else sql.SQL(" AND {}").format(division_filter(divisions)),
        b=sql.SQL(", ").join(map(sql.Literal, map(float, filter_box))), n=sql.Literal(int(limit) + 1))
    cur = await conn.execute(stmt)
    rows = await cur.fetchall()
    out = LayerData(spec, classes=[] if cf else None, labels=[] if label else None)
    if len(rows) > limit:
        raise InvalidInput(f"extent: more than {limit} features of {spec.name!r} meet the sheet's frame "
                           "(GEOBASE_PRINT_MAX_FEATURES); choose a smaller extent or fewer layers",
                           parameter="extent")
    wkbs = [bytes(r[0]) if r[0] is not None else None for r in rows]
    geoms = shapely.from_wkb(wkbs) if wkbs else []
    for g, r in zip(geoms, rows):
        if g is None or g.is_empty:
            continue
        out.geoms.append(g)
        if out.classes is not None:
            out.classes.append(None if r[1] is None else str(r[1]))
        if out.labels is not None:
            out.labels.append(r[2])
    return out


def layer_from_geojson(spec: LayerSpec, features: list[tuple[dict, str | None]], *,
                       tolerance: float = 0.0) -> LayerData:
    """A layer's pieces already at hand (a site check's result: GeoJSON geometry and class code),
    drawn like fetched features: simplified by ``tolerance`` (degrees; 0: as given) in one
    vectorised GEOS call, as :func:`fetch_layer` asks PostGIS to."""
    import orjson

    shapely = load("shapely")[0]
    from geobase.geojson_text import GeoJSONText

    kept = [(g, code) for g, code in features if g]
    # the pieces' GeoJSON as PostGIS wrote it, read by GEOS in one vectorised call
    texts = [g.text if isinstance(g, GeoJSONText) else orjson.dumps(g) for g, _ in kept]
    texts = [t.decode() if isinstance(t, bytes) else t for t in texts]
    out = LayerData(spec, classes=[])
    geoms = shapely.from_geojson(texts) if texts else []
    if tolerance > 0 and len(geoms) and spec.geometry != "MultiPoint":
        geoms = shapely.simplify(geoms, tolerance, preserve_topology=False)
    for g, (_, code) in zip(geoms, kept):
        if g is not None and not g.is_empty:
            out.geoms.append(g)
            out.classes.append(code)
    return out

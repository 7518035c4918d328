"""Proximity: features of a layer within a distance of water bodies (true ellipsoidal distance),
with the area inside each water body's protected band.

Conventions: see :mod:`geobase.analysis.common`."""

from __future__ import annotations

import psycopg
from psycopg import sql

from geobase.analysis.common import feature_ids, hidden, inputs_checked, layer_versions, readable_column, units
from geobase.analysis.input import InputGeometry
from geobase.analysis.rules import compile_filter
from geobase.errors import InvalidInput
from geobase.specs import LayerSpec, Registry
from geobase.storage import current_filter, table_ident


async def buffer(conn: psycopg.AsyncConnection, registry: Registry, visible: list[LayerSpec], *, layer: str,
                 distance_m: float, water_layers: list[str] | None = None, aoi: InputGeometry | None = None,
                 filter: dict | None = None, limit: int = 100_000, principal=None) -> dict:
    """Features of ``layer`` within ``distance_m`` (true ellipsoidal distance) of water bodies,
    with the minimum distance and the area inside each water body's protected band."""
    if not (0 < distance_m <= 10_000):
        raise InvalidInput("distance_m: must be > 0 and <= 10000 metres", parameter="distance_m")
    water_layers = water_layers or ["rivers", "water_areas"]
    vis = {s.name: s for s in visible}
    if layer not in vis or vis[layer].kind != "vector":
        raise InvalidInput(f"layer: unknown or hidden layer {layer!r}", parameter="layer")
    spec = vis[layer]
    flt = compile_filter(registry, layer, filter or {}, "t", "filter", hidden=hidden(principal, spec))
    for w in water_layers:  # all of them before any query (and before a job is accepted)
        if w not in vis:
            raise InvalidInput(f"water_layers: unknown or hidden layer {w!r}", parameter="water_layers")
    inputs_checked()
    # features named by the id the Features API gives them (bare keys in a county's database)
    ids = await feature_ids(conn, [spec], "t")
    wids = await feature_ids(conn, [vis[w] for w in water_layers], "w")
    # geometry prefilter in degrees, conservative up to 56°N (1° of longitude >= 62 km there),
    # so the GiST index narrows the candidates before the exact geography test
    deg = distance_m / 62_000.0
    results, totals = [], {}
    for w in water_layers:
        if w not in vis:
            raise InvalidInput(f"water_layers: unknown or hidden layer {w!r}", parameter="water_layers")
        ws = vis[w]
        name_col = readable_column(principal, ws, "name", "w")
        code_col = readable_column(principal, ws, "water_code", "w")
        cls = readable_column(principal, spec, spec.class_field, "t")
        aoi_sql = sql.SQL("AND ST_Intersects(t.geom, ST_GeomFromWKB(%(aoi)s, 4490))") if aoi else sql.SQL("")
        band_area = (sql.SQL("ST_Area(ST_Intersection(t.geom, ST_SetSRID(ST_Buffer(w.geom::geography, %(d)s)::geometry, 4490))::geography)")
                     if spec.geometry == "MultiPolygon" else sql.SQL("NULL::float8"))
        q = sql.SQL("""
            SELECT {tid}, {cls}, {wid}, {name}, {code}, ST_Distance(t.geom::geography, w.geom::geography), {band}
            FROM {tt} t JOIN {tw} w ON ST_DWithin(t.geom, w.geom, %(deg)s) AND {cur_w}
            WHERE {cur_t} AND {flt} {aoi}
              AND ST_DWithin(t.geom::geography, w.geom::geography, %(d)s)
            ORDER BY 1, 3 LIMIT %(limit)s
        """).format(tid=ids[layer], wid=wids[w], cls=cls, name=name_col, code=code_col, band=band_area, tt=table_ident(spec), tw=table_ident(ws),
                    flt=flt, aoi=aoi_sql, cur_t=current_filter("t"), cur_w=current_filter("w"))
        params = {"d": float(distance_m), "deg": deg, "limit": int(limit)}
        if aoi:
            params["aoi"] = aoi.wkb
        cur = await conn.execute(q, params)
        n, band_total = 0, 0.0
        for key, c, wkey, wname, wcode, dist, band in await cur.fetchall():
            n += 1
            band_total += float(band or 0)
            results.append({"key": key, "class": c, "water_layer": w, "water_key": wkey, "water_name": wname,
                            "water_code": wcode, "distance_m": round(float(dist), 3),
                            "area_in_band": units(float(band)) if band is not None else None})
        totals[w] = {"features": n, "area_in_band": units(band_total)}
    return {"analysis": "buffer", "layer": layer, "distance_m": distance_m, "water_layers": water_layers,
            "features": results, "totals": totals,
            "versions": await layer_versions(conn, [layer, *water_layers])}


"""Imagery x parcels: zonal statistics of an expression (NDVI by default) over every current
parcel of a layer, from a collection's scenes (latest first: a parcel takes its numbers from the
latest scene that has valid pixels in it). Run as the analysis process ``imagery-zonal``
(:mod:`geobase.analysis.processes`: endpoint, job and CLI alike); the report names the layer's
version and the scenes used, so it is reproducible. The pixel arithmetic is
:mod:`geobase.imagery.zonal`."""

from __future__ import annotations

import asyncio
from datetime import datetime

import psycopg
from psycopg import sql

from geobase.analysis.common import inputs_checked, layer_versions
from geobase.analysis.input import InputGeometry
from geobase.catalog import imagery as cat
from geobase.errors import InvalidInput, NotFound
from geobase.imagery.render import BandRequest
from geobase.imagery.search import parse_interval
from geobase.imagery.zonal import zonal_stats
from geobase.security import IMAGERY_RULE_LAYER
from geobase.settings import Settings
from geobase.specs import LayerSpec
from geobase.storage import current_filter, table_ident
from geobase.vocab import is_name

NDVI = "(b4-b3)/(b4+b3)"


async def _scenes(conn: psycopg.AsyncConnection, collection: str, when: str | None) -> list[dict]:
    if not is_name(collection) or not await cat.collections(conn, collection):
        raise NotFound(f"collection {collection[:100]!r} not found", parameter="collection")
    start, end = parse_interval(when)
    rows, _ = await cat.search_items(conn, cat.ItemQuery(collections=(collection,), start=start, end=end,
                                                         limit=10_000))
    if not rows:
        raise InvalidInput("no scene of the collection in that datetime range", parameter="datetime")
    return rows


def _stamp(value: datetime) -> str:
    return value.isoformat()


async def imagery_zonal(conn: psycopg.AsyncConnection, settings: Settings, visible: list[LayerSpec], *,
                        collection: str, expression: str | None = None, bands: str | None = None,
                        layer: str = "land_use", when: str | None = None,
                        aoi: InputGeometry | None = None) -> dict:
    """Per parcel: key, scene, pixels, count, valid_share, mean, median, std (of the expression
    or the one band)."""
    vis = {s.name: s for s in visible}
    if IMAGERY_RULE_LAYER not in vis:  # imagery follows the DEM layer's sharing rule
        raise NotFound(f"collection {collection[:100]!r} not found", parameter="collection")
    if layer not in vis or vis[layer].kind == "raster":
        raise InvalidInput(f"layer {layer!r} is unknown, not visible or not a vector layer", parameter="layer")
    req = BandRequest(bands=bands, expression=None if bands else (expression or NDVI))
    scenes = await _scenes(conn, collection, when)
    inputs_checked()
    aoi_sql = sql.SQL("AND ST_Intersects(geom, ST_GeomFromWKB(%(aoi)s, 4490))" if aoi else "")
    cur = await conn.execute(sql.SQL(
        "SELECT _key, ST_AsBinary(geom) FROM {tbl} WHERE {cur} {aoi} ORDER BY _key").format(
            tbl=table_ident(vis[layer]), cur=current_filter(), aoi=aoi_sql), {"aoi": aoi.wkb if aoi else None})
    rows = await cur.fetchall()
    results: list[dict | None] = [None] * len(rows)
    used = []
    for scene in scenes:  # latest first; parcels without valid pixels fall through to older scenes
        todo = [i for i, r in enumerate(results) if r is None or not r["count"]]
        if not todo:
            break
        path = settings.data_path / scene["file"]
        # storage is CGCS2000 (EPSG:4490) longitude/latitude
        stats = await asyncio.to_thread(zonal_stats, path, [rows[i][1] for i in todo], req, "EPSG:4490")
        hit = False
        for i, s in zip(todo, stats):
            if s["count"] or results[i] is None:
                results[i] = dict(s, scene=scene["id"] if s["count"] else None)
                hit = hit or bool(s["count"])
        if hit:
            used.append({"id": scene["id"], "datetime": _stamp(scene["datetime"])})
    parcels = [{"key": r[0], **res} for r, res in zip(rows, results)]
    return {"analysis": "imagery-zonal", "collection": collection,
            "expression": req.expression, "bands": req.bands, "layer": layer,
            "parcels_checked": len(rows), "parcels_with_pixels": sum(1 for p in parcels if p["count"]),
            "parcels": parcels, "scenes": used, "versions": await layer_versions(conn, [layer])}

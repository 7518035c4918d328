"""Imagery x parcels: zonal statistics of an expression (NDVI by default) over every current
parcel of a layer, from a collection's scenes (latest first: a parcel takes its numbers from the
latest scene that has valid pixels in it). Run as the analysis process ``imagery-zonal``
(:mod:`geobase.analysis.processes`: endpoint, job and CLI alike); the report names the layer's
version and the scenes used, so it is reproducible. With ``store`` the numbers become a new
version of the derived layer ``parcel_imagery`` (one row per parcel and index name,
:mod:`geobase.imagery.derived`); the other indices' rows are carried forward unchanged. The
pixel arithmetic is :mod:`geobase.imagery.zonal`."""

from __future__ import annotations

import asyncio
from datetime import datetime

import psycopg
from psycopg import sql

from geobase.analysis.common import inputs_checked, layer_versions, qualified_layers
from geobase.analysis.input import InputGeometry
from geobase.catalog import imagery as cat
from geobase.errors import InvalidInput, NotFound
from geobase.features.ids import FeatureRef
from geobase.imagery.render import BandRequest
from geobase.imagery.search import parse_interval
from geobase.imagery.zonal import zonal_stats
from geobase.principal import Principal
from geobase.security import IMAGERY_RULE_LAYER, layer_accesses, require_editor
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry
from geobase.storage import DIVISION, current_filter, table_ident
from geobase.vocab import is_name

NDVI = "(b4-b3)/(b4+b3)"
DERIVED_LAYER = "parcel_imagery"


async def scenes_of(conn: psycopg.AsyncConnection, collection: str, when: str | None) -> list[dict]:
    """The collection's scenes in the datetime range, latest first (NotFound / InvalidInput)."""
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


def check_parcel_layer(vis: dict[str, LayerSpec], collection: str, layer: str) -> LayerSpec:
    """The parcel layer, once imagery and the layer are visible to the caller."""
    if IMAGERY_RULE_LAYER not in vis:  # imagery follows the DEM layer's sharing rule
        raise NotFound(f"collection {collection[:100]!r} not found", parameter="collection")
    if layer not in vis or vis[layer].kind == "raster" or vis[layer].geometry != "MultiPolygon":
        raise InvalidInput(f"layer {layer!r} is unknown, not visible or not a polygon layer", parameter="layer")
    return vis[layer]


async def parcel_rows(conn: psycopg.AsyncConnection, spec: LayerSpec, aoi: InputGeometry | None = None,
                      where: sql.Composable | None = None) -> list[tuple]:
    """``(key, WKB in EPSG:4490, class, county)`` of the layer's current parcels, by key and county
    (a key is unique in its county only: in a province two counties' parcels share it)."""
    cls = sql.Identifier(spec.class_field) if spec.class_field else sql.SQL("NULL::text")
    aoi_sql = sql.SQL("AND ST_Intersects(geom, ST_GeomFromWKB(%(aoi)s, 4490))" if aoi else "")
    cur = await conn.execute(sql.SQL(
        "SELECT _key, ST_AsBinary(geom), {cls}, {div} FROM {tbl} WHERE {cur} {aoi} AND {w} ORDER BY _key, {div}").format(
            div=sql.Identifier(DIVISION),
            cls=cls, tbl=table_ident(spec), cur=current_filter(), aoi=aoi_sql, w=where or sql.SQL("TRUE")),
        {"aoi": aoi.wkb if aoi else None})
    return await cur.fetchall()


async def latest_stats(settings: Settings, scenes: list[dict], wkbs: list[bytes], req: BandRequest
                       ) -> tuple[list[dict], list[dict]]:
    """Per parcel the statistics from the latest scene with valid pixels in it (``scene`` names
    it), and the scenes used."""
    results: list[dict | None] = [None] * len(wkbs)
    used = []
    for scene in scenes:  # latest first; parcels without valid pixels fall through to older scenes
        todo = [i for i, r in enumerate(results) if r is None or not r["count"]]
        if not todo:
            break
        path = settings.data_path / scene["file"]
        # storage is CGCS2000 (EPSG:4490) longitude/latitude
        stats = await asyncio.to_thread(zonal_stats, path, [wkbs[i] for i in todo], req, "EPSG:4490")
        hit = False
        for i, s in zip(todo, stats):
            if s["count"] or results[i] is None:
                results[i] = dict(s, scene=scene["id"] if s["count"] else None,
                                  scene_date=scene["datetime"] if s["count"] else None)
                hit = hit or bool(s["count"])
        if hit:
            used.append({"id": scene["id"], "datetime": _stamp(scene["datetime"])})
    return results, used


async def imagery_zonal(conn: psycopg.AsyncConnection, settings: Settings, visible: list[LayerSpec], *,
                        collection: str, expression: str | None = None, bands: str | None = None,
                        layer: str = "land_use", when: str | None = None, aoi: InputGeometry | None = None,
                        store: bool = False, name: str | None = None, principal: Principal | None = None,
                        registry: Registry | None = None, writer: Settings | None = None) -> dict:
    """Per parcel: key, scene, pixels, count, valid_share, mean, median, std (of the expression
    or the one band); with ``store``, also the derived layer's new version (``derived``, written
    with ``writer``: settings whose database role may write layer versions)."""
    vis = {s.name: s for s in visible}
    spec = check_parcel_layer(vis, collection, layer)
    req = BandRequest(bands=bands, expression=None if bands else (expression or NDVI))
    idx = name or ("ndvi" if not bands and not expression else None)
    if store:
        await _check_store(conn, principal, registry, aoi, idx)
    scenes = await scenes_of(conn, collection, when)
    inputs_checked()
    rows = await parcel_rows(conn, spec, aoi)
    results, used = await latest_stats(settings, scenes, [r[1] for r in rows], req)
    qualified = (await qualified_layers(conn, [spec]))[spec.name]  # "key": the Features API's id of the parcel
    parcels = [{"key": FeatureRef(r[0], r[3]).id(qualified), **{k: v for k, v in res.items() if k != "scene_date"}}
               for r, res in zip(rows, results)]
    versions = await layer_versions(conn, [layer])
    out = {"analysis": "imagery-zonal", "collection": collection,
           "expression": req.expression, "bands": req.bands, "layer": layer,
           "parcels_checked": len(rows), "parcels_with_pixels": sum(1 for p in parcels if p["count"]),
           "parcels": parcels, "scenes": used, "versions": versions}
    if store:
        inputs = {"layer": layer, "layer_version": versions.get(layer, {}).get("version"), "collection": collection,
                  "expression": req.expression or req.bands, "datetime": when, "scenes": used}
        out["derived"] = await _store(writer or settings, registry, spec, rows, results, idx, inputs, principal)
    return out


async def _check_store(conn: psycopg.AsyncConnection, principal: Principal | None, registry: Registry | None,
                       aoi: InputGeometry | None, idx: str | None) -> None:
    """Storing writes a version of the derived layer: its department's editors (or stewards,
    admins) only, for every parcel (no area of interest), under an index name."""
    if principal is None or registry is None or DERIVED_LAYER not in registry.layers:
        raise InvalidInput("store: the derived layer is not available here", parameter="store")
    access = next((a for a in await layer_accesses(conn) if a.name == DERIVED_LAYER), None)
    if access is None:
        raise InvalidInput("store: the derived layer is not in the catalog", parameter="store")
    require_editor(principal, access)
    if aoi is not None:
        raise InvalidInput("store: the derived layer holds every parcel; run it without geometry",
                           parameter="geometry")
    if not idx or not is_name(idx) or len(idx) > 30:
        raise InvalidInput("name: the index name to store an expression under (e.g. ndbi; lowercase, digits, _)",
                           parameter="name")


async def _store(settings: Settings, registry: Registry, spec: LayerSpec, rows: list[tuple], results: list[dict],
                 idx: str, inputs: dict, principal: Principal) -> dict:
    from geobase.catalog.deliveries import current_origin_row
    from geobase.db import database_url
    from geobase.imagery.derived import Derived, write_derived

    derived = registry.layer(DERIVED_LAYER)

    def run() -> dict:
        with psycopg.connect(database_url(settings)) as c:  # the other indices' recorded inputs go on
            cur = current_origin_row(c, DERIVED_LAYER)
        kept = dict((((cur or {}).get("metadata") or {}).get("derived") or {}).get("inputs", {}).get("indices", {}))
        kept.pop(idx, None)
        dclass = spec.class_field == "dlbm"
        out_rows = [{"parcel": r[0], "division": r[3], "idx": idx, "source_layer": spec.name, "dlbm": r[2] if dclass else None,
                     "collection": inputs["collection"], "expression": inputs["expression"], "scene": s["scene"],
                     "scene_date": s["scene_date"], "pixels": s["pixels"], "valid_pixels": s["count"],
                     "valid_share": s["valid_share"], "mean": s["mean"], "median": s["median"], "std": s["std"],
                     "min": s["min"], "max": s["max"]} for r, s in zip(rows, results)]
        d = Derived(job="imagery-zonal", spec=derived, source=spec, rows=out_rows, key=["parcel", "idx"],
                    inputs={"indices": {**kept, idx: inputs}},
                    keep=sql.SQL("idx <> {}").format(sql.Literal(idx)))
        return write_derived(settings, d, user=principal.name or "job")

    return await asyncio.to_thread(run)

"""The analysis processes: their input models, their registry and the one function that runs
them. Why in the core: the HTTP endpoints, the jobs (:mod:`geobase.analysis.jobs`) and the CLI
(``geobase analysis``) run the same code, and an adapter must call the core, never another
adapter (the CLI imported the router before). Nothing here knows HTTP: the models are plain
pydantic, errors are the typed ones of :mod:`geobase.errors`."""

from __future__ import annotations

import psycopg
from pydantic import BaseModel, ConfigDict, Field, model_validator

from geobase.analysis.change import change
from geobase.analysis.common import Progress
from geobase.analysis.conflicts import conflicts
from geobase.analysis.input import parse_geojson
from geobase.analysis.proximity import buffer
from geobase.analysis.site_check import site_check
from geobase.analysis.slope import steep_farmland
from geobase.analysis.tabulate import tabulate
from geobase.errors import NotFound
from geobase.security import Principal, require_fields, visible_layers
from geobase.settings import Settings
from geobase.specs import Registry


class ProcessInputs(BaseModel):
    """What every process's inputs share: unknown members are refused (400), never ignored."""

    # defer_build: its schema is built by its first use, not by every server start (issue #15)
    model_config = ConfigDict(defer_build=True, extra="forbid")


class SiteCheckIn(ProcessInputs):
    """The site: ``{"geometry": <GeoJSON>, ...options}``, or a bare GeoJSON Polygon, Feature or
    FeatureCollection posted as it is (what `curl -d @site.geojson` sends)."""

    geometry: dict = Field(description="GeoJSON Polygon/MultiPolygon, Feature or FeatureCollection")
    crs: str | None = Field(default=None, description="CRS84 (default), EPSG:4490, 4326, 3857, 4491-4554")
    project_type: str = Field(default="construction", pattern=r"^[a-z_]{1,40}$")
    layers: list[str] | None = None
    repair: bool = False
    sliver_m2: float | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _bare_geojson(cls, data):
        if isinstance(data, dict) and "geometry" not in data and data.get("type") in (
                "Polygon", "MultiPolygon", "Feature", "FeatureCollection"):
            return {"geometry": data}
        if isinstance(data, dict) and data.get("type") == "Feature" and "geometry" in data:
            return {"geometry": data}
        return data


class TabulateIn(ProcessInputs):
    layer_a: str = "land_use"
    layer_b: str = "planning_zones"
    class_a: str | None = None
    class_b: str | None = None
    aoi: str | None = Field(default=None, description="division code (6/9/12 digits) of the area of interest")
    geometry: dict | None = None
    crs: str | None = None


class ConflictsIn(ProcessInputs):
    rules: list[str] | None = None
    geometry: dict | None = None
    crs: str | None = None
    sliver_m2: float | None = Field(default=None, ge=0)


class SteepIn(ProcessInputs):
    threshold_deg: float = 25.0
    min_share: float | None = Field(default=None, ge=0, le=1)
    geometry: dict | None = None
    crs: str | None = None


class ChangeIn(ProcessInputs):
    layer: str = "land_use"
    v1: int
    v2: int
    class_field: str | None = None
    sliver_m2: float | None = Field(default=None, ge=0)


class BufferIn(ProcessInputs):
    layer: str = "land_use"
    distance_m: float
    water_layers: list[str] | None = None
    filter: dict | None = None
    geometry: dict | None = None
    crs: str | None = None


class ImageryZonalIn(ProcessInputs):
    collection: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    expression: str | None = Field(default=None, description="band arithmetic (default NDVI (b4-b3)/(b4+b3))")
    bands: str | None = Field(default=None, description="one band instead of an expression, e.g. b4")
    layer: str = "land_use"
    datetime: str | None = Field(default=None, description="scenes acquired in this instant or interval a/b")
    geometry: dict | None = None
    crs: str | None = None
    store: bool = Field(default=False, description="write the numbers as a new version of the derived layer "
                        "parcel_imagery (editors of its department; every parcel, no geometry)")
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,29}$",
                             description="the index name the numbers are stored under (default ndvi for NDVI)")


class ImageryFlagsIn(ProcessInputs):
    collection: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    datetime: str | None = Field(default=None, description="scenes acquired in this interval a/b (and in the "
                                 "rules' growing season)")
    store: bool = Field(default=False, description="write the flags as a new version of the layer parcel_flags")


PROCESSES: dict[str, tuple[type[ProcessInputs], str]] = {
    "site-check": (SiteCheckIn, "Site compliance check of a project red line against every visible layer"),
    "tabulate": (TabulateIn, "Areas by class of layer A x class of layer B within an area of interest"),
    "conflicts": (ConflictsIn, "Plan conflicts (多规合一) of the declared rules, county-wide"),
    "steep-farmland": (SteepIn, "Farmland on slopes steeper than a threshold (DEM slope, zonal statistics)"),
    "change": (ChangeIn, "Transition matrix of areas between classes of two versions of a layer"),
    "buffer": (BufferIn, "Features within a distance of rivers and water areas (ellipsoidal distance)"),
    "imagery-zonal": (ImageryZonalIn, "Zonal statistics of an imagery expression (NDVI) over every parcel of a layer"),
    "imagery-flags": (ImageryFlagsIn, "Farmland flagged by the imagery rules (possibly idle, possibly converted)"),
}


async def check_inputs(process: str, body: ProcessInputs, conn: psycopg.AsyncConnection, registry: Registry,
                       principal: Principal) -> None:
    """What a job's inputs name, checked at submission (the job would fail on it later): every
    field name goes through security.require_fields, the check items use, so a masked field is
    refused (400 naming it) before a job exists."""
    vis = {s.name: s for s in await visible_layers(conn, principal, registry, exact_geometry=True)}
    named: list[tuple[str, str | None, list[str]]] = []
    if process == "tabulate":
        named = [(body.layer_a, "class_a", [body.class_a] if body.class_a else []),
                 (body.layer_b, "class_b", [body.class_b] if body.class_b else [])]
    elif process == "change":
        named = [(body.layer, "class_field", [body.class_field] if body.class_field else [])]
    elif process == "buffer":
        named = [(body.layer, "filter", list(body.filter or {}))]
    for layer, parameter, fields in named:
        if fields and layer in vis:  # an unknown or hidden layer is refused by the analysis itself
            require_fields(principal, vis[layer], fields, parameter)


async def run_process(process: str, body: ProcessInputs, conn: psycopg.AsyncConnection, settings: Settings,
                      registry: Registry, principal: Principal, progress: Progress | None = None,
                      writer: Settings | None = None) -> dict:
    """Run one analysis: the same code for the endpoints, the jobs and the CLI. ``writer``: the
    settings that may write layer versions (the server's owner settings; the CLI's own), for the
    processes that store a derived layer (``store``)."""
    visible = await visible_layers(conn, principal, registry, exact_geometry=True)
    sliver = getattr(body, "sliver_m2", None)
    sliver = settings.analysis_sliver_m2 if sliver is None else sliver
    geom = None
    if getattr(body, "geometry", None) is not None:
        geom = parse_geojson(body.geometry, settings, crs=body.crs, repair=getattr(body, "repair", False))
    if process == "site-check":
        return await site_check(conn, registry, visible, geom, sliver_m2=sliver,
                                project_type=body.project_type, layers=body.layers, principal=principal)
    if process == "tabulate":
        return await tabulate(conn, registry, visible, body.layer_a, body.layer_b, class_a=body.class_a,
                              class_b=body.class_b, aoi=geom, aoi_code=body.aoi, principal=principal)
    if process == "conflicts":
        return await conflicts(conn, registry, visible, sliver_m2=sliver, rule_ids=body.rules, aoi=geom,
                               progress=progress, principal=principal)
    if process == "steep-farmland":
        return await steep_farmland(conn, settings, visible, threshold_deg=body.threshold_deg,
                                    min_share=body.min_share, aoi=geom)
    if process == "change":
        return await change(conn, registry, visible, body.layer, body.v1, body.v2,
                            class_field=body.class_field, sliver_m2=sliver, principal=principal)
    if process == "buffer":
        return await buffer(conn, registry, visible, layer=body.layer, distance_m=body.distance_m,
                            water_layers=body.water_layers, aoi=geom, filter=body.filter, principal=principal)
    if process == "imagery-zonal":
        from geobase.imagery.parcels import imagery_zonal

        return await imagery_zonal(conn, settings, visible, collection=body.collection, expression=body.expression,
                                   bands=body.bands, layer=body.layer, when=body.datetime, aoi=geom,
                                   store=body.store, name=body.name, principal=principal, registry=registry,
                                   writer=writer or settings)
    if process == "imagery-flags":
        from geobase.imagery.flags import imagery_flags

        return await imagery_flags(conn, settings, registry, visible, collection=body.collection, when=body.datetime,
                                   store=body.store, principal=principal, writer=writer or settings)
    raise NotFound(f"process {process!r} not found", parameter="processId")

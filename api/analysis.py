"""Overlay analysis over HTTP: synchronous endpoints for small inputs (``/analysis/...``) and
OGC API - Processes style jobs for county-wide runs (``/processes``, ``/jobs``).

Access: every analysis sees only the layers the caller may see (``visible_layers``). Whether an
analysis needs a role is decided in :func:`analysis_principal` — today the public may run them
(the demo map's site check); requiring analysts is the one commented line there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Literal

import psycopg
from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from geobase import analysis_output as out
from geobase import overlay
from geobase.api.deps import base_url, get_conn, get_registry_dep, get_settings_dep
from geobase.errors import GeobaseError, InvalidInput, NotFound
from geobase.geometry_input import parse_geojson, parse_upload
from geobase.ingest import jobs
from geobase.security import Principal, get_principal, visible_layers
from geobase.settings import Settings
from geobase.specs import Registry

log = logging.getLogger("geobase.analysis")
router = APIRouter(tags=["analysis"])
Format = Literal["json", "geojson", "html", "csv"]


async def analysis_principal(request: Request, principal: Principal = Depends(get_principal)) -> Principal:
    """Who may run analyses: anyone (the web map's public site check) unless
    ``GEOBASE_ANALYSIS_ROLE`` names a role (e.g. ``analyst``)."""
    role = request.app.state.settings.analysis_role
    if role:
        from geobase.security import require_role

        require_role(principal, role)
    return principal


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteCheckIn(_Body):
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


class TabulateIn(_Body):
    layer_a: str = "land_use"
    layer_b: str = "planning_zones"
    class_a: str | None = None
    class_b: str | None = None
    aoi: str | None = Field(default=None, description="division code (6/9/12 digits) of the area of interest")
    geometry: dict | None = None
    crs: str | None = None


class ConflictsIn(_Body):
    rules: list[str] | None = None
    geometry: dict | None = None
    crs: str | None = None
    sliver_m2: float | None = Field(default=None, ge=0)


class SteepIn(_Body):
    threshold_deg: float = 25.0
    min_share: float | None = Field(default=None, ge=0, le=1)
    geometry: dict | None = None
    crs: str | None = None


class ChangeIn(_Body):
    layer: str = "land_use"
    v1: int
    v2: int
    class_field: str | None = None
    sliver_m2: float | None = Field(default=None, ge=0)


class BufferIn(_Body):
    layer: str = "land_use"
    distance_m: float
    water_layers: list[str] | None = None
    filter: dict | None = None
    geometry: dict | None = None
    crs: str | None = None


PROCESSES: dict[str, tuple[type[_Body], str]] = {
    "site-check": (SiteCheckIn, "Site compliance check of a project red line against every visible layer"),
    "tabulate": (TabulateIn, "Areas by class of layer A x class of layer B within an area of interest"),
    "conflicts": (ConflictsIn, "Plan conflicts (多规合一) of the declared rules, county-wide"),
    "steep-farmland": (SteepIn, "Farmland on slopes steeper than a threshold (DEM slope, zonal statistics)"),
    "change": (ChangeIn, "Transition matrix of areas between classes of two versions of a layer"),
    "buffer": (BufferIn, "Features within a distance of rivers and water areas (ellipsoidal distance)"),
}


async def run_process(process: str, body: _Body, conn: psycopg.AsyncConnection, settings: Settings,
                      registry: Registry, principal: Principal, progress=None) -> dict:
    """Run one analysis: the same code for the endpoints, the jobs and the CLI."""
    visible = await visible_layers(conn, principal, registry)
    sliver = getattr(body, "sliver_m2", None)
    sliver = settings.analysis_sliver_m2 if sliver is None else sliver
    geom = None
    if getattr(body, "geometry", None) is not None:
        geom = parse_geojson(body.geometry, settings, crs=body.crs, repair=getattr(body, "repair", False))
    if process == "site-check":
        return await overlay.site_check(conn, registry, visible, geom, sliver_m2=sliver,
                                        project_type=body.project_type, layers=body.layers, principal=principal)
    if process == "tabulate":
        return await overlay.tabulate(conn, registry, visible, body.layer_a, body.layer_b, class_a=body.class_a,
                                      class_b=body.class_b, aoi=geom, aoi_code=body.aoi)
    if process == "conflicts":
        return await overlay.conflicts(conn, registry, visible, sliver_m2=sliver, rule_ids=body.rules, aoi=geom,
                                       progress=progress)
    if process == "steep-farmland":
        from geobase.analysis_slope import steep_farmland

        return await steep_farmland(conn, settings, visible, threshold_deg=body.threshold_deg,
                                    min_share=body.min_share, aoi=geom)
    if process == "change":
        return await overlay.change(conn, registry, visible, body.layer, body.v1, body.v2,
                                    class_field=body.class_field, sliver_m2=sliver)
    if process == "buffer":
        return await overlay.buffer(conn, registry, visible, layer=body.layer, distance_m=body.distance_m,
                                    water_layers=body.water_layers, aoi=geom, filter=body.filter)
    raise NotFound(f"process {process!r} not found", parameter="processId")


def render(result: dict, f: str) -> Response:
    if f == "html":
        return HTMLResponse(out.to_html(result))
    if f == "geojson":
        return Response(out.to_geojson(result), media_type="application/geo+json")
    if f == "csv":
        tables = out.csv_tables(result)
        first = next(iter(tables.values()), "")
        return Response(first, media_type="text/csv; charset=utf-8")
    return Response(out.to_json(result), media_type="application/json")


def _endpoint(process: str, model: type[_Body]):
    async def handler(body: model, f: Format = Query("json", description="json, geojson, html or csv"),  # type: ignore[valid-type]
                      conn=Depends(get_conn), settings: Settings = Depends(get_settings_dep),
                      registry: Registry = Depends(get_registry_dep),
                      principal: Principal = Depends(analysis_principal)) -> Response:
        return render(await run_process(process, body, conn, settings, registry, principal), f)

    handler.__name__ = f"analysis_{process.replace('-', '_')}"
    handler.__annotations__["body"] = model  # a real class: string annotations cannot see this closure
    return handler


for _pid, (_model, _title) in PROCESSES.items():
    router.add_api_route(f"/analysis/{_pid}", _endpoint(_pid, _model), methods=["POST"], summary=_title)


@router.get("/analysis/rules", summary="The declared site-check and plan-conflict rules")
async def list_rules(registry: Registry = Depends(get_registry_dep)) -> dict:
    from geobase.analysis_rules import load_conflict_rules, load_site_rules

    return {"site_check": [r.model_dump() for r in load_site_rules(registry)],
            "conflicts": [r.model_dump() for r in load_conflict_rules(registry)]}


@router.post("/analysis/site-check/upload", summary="Site check of an uploaded file (zip shapefile, gpkg, geojson)")
async def site_check_upload(file: UploadFile = File(...), project_type: str = Form("construction"),
                            repair: bool = Form(False), f: Format = Query("json"), conn=Depends(get_conn),
                            settings: Settings = Depends(get_settings_dep),
                            registry: Registry = Depends(get_registry_dep),
                            principal: Principal = Depends(analysis_principal)) -> Response:
    data = await file.read()
    site = parse_upload(data, file.filename or "upload", settings, repair=repair)
    visible = await visible_layers(conn, principal, registry)
    result = await overlay.site_check(conn, registry, visible, site, sliver_m2=settings.analysis_sliver_m2,
                                      project_type=project_type, principal=principal)
    return render(result, f)


# ---------------------------------------------------------------------------------------------
# OGC API - Processes: /processes, /processes/{id}/execution, /jobs
# ---------------------------------------------------------------------------------------------

def _process_doc(request: Request, pid: str) -> dict:
    model, title = PROCESSES[pid]
    base = base_url(request)
    return {"id": pid, "title": title, "version": "1.0.0", "jobControlOptions": ["sync-execute", "async-execute"],
            "outputTransmission": ["value", "reference"],
            "inputs": model.model_json_schema().get("properties", {}),
            "links": [{"href": f"{base}/processes/{pid}/execution", "rel": "http://www.opengis.net/def/rel/ogc/1.0/execute",
                       "title": "Execute"}]}


# OGC API - Processes classes this router implements (core: list, describe, execute, job
# status and results; JSON encoding). Collected by /conformance.
PROCESSES_CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/json",
]


@router.get("/processes", summary="Processes offered (OGC API - Processes)")
async def list_processes(request: Request) -> dict:
    return {"processes": [_process_doc(request, p) for p in PROCESSES],
            "links": [{"href": f"{base_url(request)}/processes", "rel": "self", "type": "application/json"}]}


@router.get("/processes/{process_id}", summary="A process description")
async def get_process(process_id: str, request: Request) -> dict:
    if process_id not in PROCESSES:
        raise NotFound(f"process {process_id!r} not found", parameter="processId")
    return _process_doc(request, process_id)


def _jobs_dir(settings: Settings) -> Path:
    return settings.data_path / "jobs"


@router.post("/processes/{process_id}/execution", summary="Execute a process (Prefer: respond-async for a job)")
async def execute(process_id: str, request: Request, prefer: str | None = Header(default=None),
                  conn=Depends(get_conn), settings: Settings = Depends(get_settings_dep),
                  registry: Registry = Depends(get_registry_dep),
                  principal: Principal = Depends(analysis_principal)) -> Response:
    if process_id not in PROCESSES:
        raise NotFound(f"process {process_id!r} not found", parameter="processId")
    model, _ = PROCESSES[process_id]
    try:
        doc = await request.json()
    except ValueError:
        raise InvalidInput("body: not valid JSON", parameter="body") from None
    inputs = doc.get("inputs", doc) if isinstance(doc, dict) else None
    if not isinstance(inputs, dict):
        raise InvalidInput("inputs: expected an object", parameter="inputs")
    from pydantic import ValidationError

    try:
        body = model.model_validate(inputs)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        raise InvalidInput(f"inputs.{loc}: {e['msg']}", parameter=f"inputs.{loc}") from None
    if getattr(body, "geometry", None) is not None:  # reject bad geometries now, not in the job
        parse_geojson(body.geometry, settings, crs=body.crs, repair=getattr(body, "repair", False))
    if not (prefer and "respond-async" in prefer):
        result = await run_process(process_id, body, conn, settings, registry, principal)
        return render(result, "json")
    # every input is checked now, by the run's own checks: a bad one is a 400, never a 201 job
    await overlay.check_inputs(lambda: run_process(process_id, body, conn, settings, registry, principal))
    job_id = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO catalog.jobs (id, kind, status, params, created_by, message) VALUES (%s, %s, 'accepted', %s, %s, %s)",
        (job_id, f"analysis:{process_id}", json.dumps({**inputs, **jobs.process_tag()}), _owner(principal), "queued"))
    task = asyncio.create_task(_run_job(request.app, job_id, process_id, body, principal))
    request.app.state.__dict__.setdefault("analysis_jobs", set()).add(task)
    task.add_done_callback(request.app.state.analysis_jobs.discard)
    url = f"{base_url(request)}/jobs/{job_id}"
    return JSONResponse(await _job_doc(conn, request, job_id, principal), status_code=201,
                        headers={"Location": url, "Preference-Applied": "respond-async"})


async def _run_job(app, job_id: str, process_id: str, body: _Body, principal: Principal) -> None:
    """Run a job on its own connection (no request statement timeout); outputs are written
    atomically to ``<data_dir>/jobs/<id>/`` and only then is the job marked successful."""
    from geobase.db import database_url

    settings: Settings = app.state.settings
    registry: Registry = app.state.registry
    url = database_url(settings)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as status_conn:
        async def progress(frac: float, msg: str) -> None:
            await status_conn.execute("UPDATE catalog.jobs SET progress = %s, message = %s WHERE id = %s",
                                      (round(frac * 100, 1), msg, job_id))

        await status_conn.execute("UPDATE catalog.jobs SET status = 'running', started_at = now(), message = 'running' "
                                  "WHERE id = %s", (job_id,))
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute("SET application_name = 'geobase-job'")
                result = await run_process(process_id, body, conn, settings, registry, principal, progress)
            files = await asyncio.to_thread(out.write_outputs, result, _jobs_dir(settings) / job_id, process_id)
            await status_conn.execute(
                "UPDATE catalog.jobs SET status = 'successful', progress = 100, finished_at = now(), message = %s, "
                "result = %s WHERE id = %s",
                ("done", json.dumps({"files": [p.name for p in files], "main": f"{process_id}.json"}), job_id))
        except Exception as exc:  # the job must say why it failed, whatever the cause
            msg = exc.message if isinstance(exc, GeobaseError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, GeobaseError):
                log.exception("job %s failed", job_id)
            # a refusal of the input (4xx) is kept with its parameter: the results answer it as such
            error = ({"status": exc.status_code, "code": exc.code, "parameter": exc.parameter}
                     if isinstance(exc, GeobaseError) and 400 <= exc.status_code < 500 else None)
            await status_conn.execute(
                "UPDATE catalog.jobs SET status = 'failed', finished_at = now(), message = %s, result = %s "
                "WHERE id = %s", (msg[:2000], json.dumps({"error": error}) if error else None, job_id))


def _owner(principal: Principal) -> str:
    """Who owns a job: the key id (key names are not unique), or 'public'."""
    return principal.key_id or principal.name


async def _job_row(conn, job_id: str, principal: Principal) -> dict:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise NotFound(f"job {job_id!r} not found", parameter="jobId") from None
    cur = await conn.execute(
        "SELECT id, kind, status, progress, message, result, created_by, created_at, started_at, finished_at "
        "FROM catalog.jobs WHERE id = %s AND kind LIKE 'analysis:%%'", (job_id,))
    row = await cur.fetchone()
    if row is None or (row[6] != _owner(principal) and not principal.is_admin):
        raise NotFound(f"job {job_id!r} not found", parameter="jobId")
    keys = ("id", "kind", "status", "progress", "message", "result", "created_by", "created", "started", "finished")
    return dict(zip(keys, row))


async def _job_doc(conn, request: Request, job_id: str, principal: Principal) -> dict:
    r = await _job_row(conn, job_id, principal)
    base = base_url(request)
    doc = {"jobID": str(r["id"]), "processID": r["kind"].removeprefix("analysis:"), "type": "process",
           "status": r["status"], "progress": int(r["progress"] or 0), "message": r["message"],
           "created": r["created"].isoformat() if r["created"] else None,
           "started": r["started"].isoformat() if r["started"] else None,
           "finished": r["finished"].isoformat() if r["finished"] else None,
           "links": [{"href": f"{base}/jobs/{r['id']}", "rel": "self", "type": "application/json"}]}
    if r["status"] == "successful":
        doc["links"].append({"href": f"{base}/jobs/{r['id']}/results", "rel": "http://www.opengis.net/def/rel/ogc/1.0/results",
                             "type": "application/json"})
        for name in (r["result"] or {}).get("files", []):
            doc["links"].append({"href": f"{base}/jobs/{r['id']}/files/{name}", "rel": "enclosure", "title": name})
    return doc


@router.get("/jobs/{job_id}", summary="Status of a job")
async def get_job(job_id: str, request: Request, conn=Depends(get_conn),
                  principal: Principal = Depends(analysis_principal)) -> dict:
    return await _job_doc(conn, request, job_id, principal)


@router.get("/jobs/{job_id}/results", summary="Results of a finished job")
async def job_results(job_id: str, conn=Depends(get_conn), settings: Settings = Depends(get_settings_dep),
                      principal: Principal = Depends(analysis_principal)) -> Response:
    r = await _job_row(conn, job_id, principal)
    if r["status"] == "failed":
        error = (r["result"] or {}).get("error")
        if error:  # the job refused its input: the caller's error, answered as when run synchronously
            body = {"code": error["code"], "description": r["message"], "jobID": job_id}
            if error.get("parameter"):
                body["parameter"] = error["parameter"]
            return JSONResponse(body, status_code=int(error["status"]))
        return JSONResponse({"code": "JobFailed", "description": r["message"], "jobID": job_id}, status_code=500)
    if r["status"] != "successful":
        return JSONResponse({"code": "ResultNotReady", "description": f"job is {r['status']}", "jobID": job_id},
                            status_code=404)
    path = _jobs_dir(settings) / job_id / r["result"]["main"]
    return FileResponse(path, media_type="application/json")


@router.get("/jobs/{job_id}/files/{name}", summary="One output file of a finished job")
async def job_file(job_id: str, name: str, conn=Depends(get_conn), settings: Settings = Depends(get_settings_dep),
                   principal: Principal = Depends(analysis_principal)) -> Response:
    r = await _job_row(conn, job_id, principal)
    files = (r["result"] or {}).get("files", [])
    if name not in files:
        raise NotFound(f"job {job_id} has no file {name!r}", parameter="name")
    media = {"json": "application/json", "geojson": "application/geo+json", "csv": "text/csv; charset=utf-8",
             "html": "text/html; charset=utf-8"}[name.rsplit(".", 1)[-1]]
    return FileResponse(_jobs_dir(settings) / job_id / name, media_type=media)

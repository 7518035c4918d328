"""Overlay analysis over HTTP: synchronous endpoints for small inputs (``/analysis/...``) and
OGC API - Processes style jobs for county-wide runs (``/processes``, ``/jobs``).

Access: every analysis sees only the layers the caller may see (``visible_layers``) and names
only fields the caller may read (``security.require_field``, the check items use). Whether an
analysis needs a role is decided in :func:`analysis_principal` — today the public may run them
(the demo map's site check).

Load: synchronous analyses run in ``analysis_concurrency`` slots under
``analysis_statement_timeout_ms``. Jobs live in the core (:class:`geobase.analysis.jobs.AnalysisJobs`
on the one job manager :mod:`geobase.jobs`): admitted, queued and run with per-caller and total
bounds (429/503 with Retry-After), each on one pooled connection under ``job_statement_timeout_ms``
and ``job_max_seconds``; the owner or an admin dismisses one with ``DELETE /jobs/{jobID}``. An
anonymous caller's jobID carries its owner token (``<uuid>.<token>``). This router only speaks
HTTP: it renders the job documents and serves the result files.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Literal

import psycopg
from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from geobase.api.routing import LazyAPIRoute
from geobase.api.deps import base_url, get_conn, get_registry_dep, get_settings_dep, request_connection

from geobase.analysis import output as out
from geobase.analysis import site_check
from geobase.analysis.common import analysis_transaction
from geobase.analysis.jobs import AnalysisJob, AnalysisJobs
from geobase.analysis.processes import PROCESSES, ProcessInputs, check_inputs, run_process
from geobase.errors import InvalidInput, NotFound, PayloadTooLarge, ServiceUnavailable
from geobase.analysis.input import parse_geojson, parse_upload
from geobase.jsonbody import decode_json_body
from geobase.api.gate import get_principal
from geobase.security import Principal, visible_layers
from geobase.settings import Settings
from geobase.specs import Registry

log = logging.getLogger("geobase.analysis")
router = APIRouter(route_class=LazyAPIRoute, tags=["analysis"])
Format = Literal["json", "geojson", "html", "csv", "pdf"]
#: responses that differ per caller (rules, job documents and results) must not be shared by caches
PER_CALLER = {"Cache-Control": "private, no-store", "Vary": "Authorization, X-API-Key"}


async def analysis_principal(request: Request, principal: Principal = Depends(get_principal)) -> Principal:
    """Who may run analyses: anyone (the web map's public site check) unless
    ``GEOBASE_ANALYSIS_ROLE`` names a role (e.g. ``analyst``)."""
    role = request.app.state.settings.analysis_role
    if role:
        from geobase.security import require_role

        require_role(principal, role)
    return principal


def render(result: dict, f: str) -> Response:
    if f == "pdf":  # the site check's map sheet (geobase.printing); other analyses have no sheet
        if result.get("analysis") != "site-check":
            raise InvalidInput("f: pdf is the site check's map sheet; use json, geojson, html or csv", parameter="f")
        from geobase.printing.report import site_check_pdf
        from geobase.specs import get_registry

        return Response(site_check_pdf(result, get_registry()), media_type="application/pdf")
    if f == "html":
        return HTMLResponse(out.to_html(result))
    if f == "geojson":
        return Response(out.to_geojson(result), media_type="application/geo+json")
    if f == "csv":
        tables = out.csv_tables(result)
        first = next(iter(tables.values()), "")
        return Response(first, media_type="text/csv; charset=utf-8")
    return Response(out.to_json(result), media_type="application/json")


async def run_sync(process: str, body: ProcessInputs, conn: psycopg.AsyncConnection, settings: Settings,
                   registry: Registry, principal: Principal, writer: Settings | None = None) -> dict:
    """A synchronous analysis under ``analysis_statement_timeout_ms`` (the pooled connection's
    own timeout is the ordinary request's 30 s): one read-only snapshot whose local settings
    end with it, so nothing leaks to the connection's next user."""
    async with analysis_transaction(conn, settings.analysis_statement_timeout_ms):
        return await run_process(process, body, conn, settings, registry, principal, writer=writer)


@asynccontextmanager
async def analysis_slot(request: Request):
    """A pooled connection for a synchronous analysis, taken only when one of
    ``analysis_concurrency`` slots is free (else 503 after the pool timeout): a flood of site
    checks then cannot hold every pooled connection, and /health and reads keep answering."""
    app = request.app
    settings: Settings = app.state.settings
    sem = getattr(app.state, "analysis_slots", None)
    if sem is None:
        sem = app.state.analysis_slots = asyncio.Semaphore(max(1, settings.analysis_concurrency))
    try:
        await asyncio.wait_for(sem.acquire(), timeout=settings.pool_timeout_s)
    except asyncio.TimeoutError:
        raise ServiceUnavailable("too many analyses at once; retry shortly", retry_after=2) from None
    try:
        async with request_connection(request) as conn:
            yield conn
    finally:
        sem.release()


def _endpoint(process: str, model: type[ProcessInputs]):
    async def handler(request: Request, body: model,  # type: ignore[valid-type]
                      f: Format = Query("json", description="json, geojson, html, csv or pdf (site check: its map sheet)"),
                      settings: Settings = Depends(get_settings_dep),
                      registry: Registry = Depends(get_registry_dep),
                      principal: Principal = Depends(analysis_principal)) -> Response:
        if f == "pdf" and process != "site-check":  # refused before the analysis runs
            raise InvalidInput("f: pdf is the site check's map sheet; use json, geojson, html or csv", parameter="f")
        async with analysis_slot(request) as conn:
            result = await run_sync(process, body, conn, settings, registry, principal, request.app.state.owner_settings)
        return await asyncio.to_thread(render, result, f) if f == "pdf" else render(result, f)  # the sheet off the loop

    handler.__name__ = f"analysis_{process.replace('-', '_')}"
    handler.__annotations__["body"] = model  # a real class: string annotations cannot see this closure
    return handler


for _pid, (_model, _title) in PROCESSES.items():
    # (its JSON body, UTF-8 only, no member twice, no NUL: api/params.py, as for every model body)
    router.add_api_route(f"/analysis/{_pid}", _endpoint(_pid, _model), methods=["POST"], summary=_title)


@router.get("/analysis/rules", summary="The declared site-check and plan-conflict rules")
async def list_rules(conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                     principal: Principal = Depends(analysis_principal)) -> JSONResponse:
    """Rules over layers the caller may see in full; a rule over a hidden layer keeps only its id
    and title (site checks report it as not evaluated) so the layer's existence does not leak."""
    from geobase.analysis.rules import load_conflict_rules, load_site_rules

    may_see = {s.name for s in await visible_layers(conn, principal, registry, exact_geometry=True)}

    def shown(rule, layers: list[str]) -> dict:
        if all(n in may_see for n in layers):
            return rule.model_dump()
        return {"id": rule.id, "title": rule.title.model_dump(), "available": False,
                "reason": "needs data this caller may not see"}

    doc = {"site_check": [shown(r, [r.layer]) for r in load_site_rules(registry)],
           "conflicts": [shown(r, [r.a.layer, r.b.layer]) for r in load_conflict_rules(registry)]}
    return JSONResponse(doc, headers=PER_CALLER)


@router.post("/analysis/site-check/upload", summary="Site check of an uploaded file (zip shapefile, gpkg, geojson)")
async def site_check_upload(request: Request, file: UploadFile = File(...), project_type: str = Form("construction"),
                            repair: bool = Form(False), f: Format = Query("json"),
                            settings: Settings = Depends(get_settings_dep),
                            registry: Registry = Depends(get_registry_dep),
                            principal: Principal = Depends(analysis_principal)) -> Response:
    limit = settings.public_upload_max_bytes
    data = await file.read(limit + 1)  # the gate refused a larger body already; this is the file part
    if len(data) > limit:
        raise PayloadTooLarge(f"file: larger than the upload limit of {limit} bytes", parameter="file")
    site = await asyncio.to_thread(parse_upload, data, file.filename or "upload", settings, repair=repair)
    async with analysis_slot(request) as conn, analysis_transaction(conn, settings.analysis_statement_timeout_ms):
        visible = await visible_layers(conn, principal, registry, exact_geometry=True)
        result = await site_check(conn, registry, visible, site, sliver_m2=settings.analysis_sliver_m2,
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


def _jobs(app) -> AnalysisJobs:
    """The app's analysis jobs (made by the app's lifespan with the pool, api/app.py)."""
    return app.state.analysis_jobs


def _caller(request: Request, principal: Principal) -> str:
    """Whose share of the job slots a submission takes: the key, or the anonymous client's IP."""
    if principal.key_id:
        return f"key:{principal.key_id}"
    from geobase import audit

    ctx = audit.current()  # the gate's client address (forwarded headers only from trusted proxies)
    ip = ctx.client_ip if ctx is not None and ctx.client_ip else (request.client.host if request.client else "-")
    return f"ip:{ip}"


@router.post("/processes/{process_id}/execution", summary="Execute a process (Prefer: respond-async for a job)")
async def execute(process_id: str, request: Request, prefer: str | None = Header(default=None),
                  settings: Settings = Depends(get_settings_dep),
                  registry: Registry = Depends(get_registry_dep),
                  principal: Principal = Depends(analysis_principal)) -> Response:
    if process_id not in PROCESSES:
        raise NotFound(f"process {process_id[:100]!r} not found", parameter="processId")
    model, _ = PROCESSES[process_id]
    doc = decode_json_body(await request.body())
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
    async with analysis_slot(request) as conn:
        await check_inputs(process_id, body, conn, registry, principal)
        if not (prefer and "respond-async" in prefer):
            result = await run_sync(process_id, body, conn, settings, registry, principal,
                                    request.app.state.owner_settings)
        else:
            ext = await _jobs(request.app).submit(conn, process_id, inputs, body, principal, _caller(request, principal))
            job = await _jobs(request.app).read(conn, ext, principal)
            return JSONResponse(_job_doc(request, job), status_code=201, headers={
                "Location": f"{base_url(request)}/jobs/{ext}", "Preference-Applied": "respond-async", **PER_CALLER})
    return render(result, "json")


def _job_doc(request: Request, j: AnalysisJob) -> dict:
    """The OGC API - Processes status document of a job (statusInfo), with its result links."""
    r, base, ext = j.job, base_url(request), j.ext_id
    doc = {"jobID": ext, "processID": j.process_id, "type": "process",
           "status": r.status, "progress": r.reported_progress, "message": r.message,
           "created": r.created_at.isoformat() if r.created_at else None,
           "started": r.started_at.isoformat() if r.started_at else None,
           "finished": r.finished_at.isoformat() if r.finished_at else None,
           "links": [{"href": f"{base}/jobs/{ext}", "rel": "self", "type": "application/json"}]}
    if r.status == "successful":
        doc["links"].append({"href": f"{base}/jobs/{ext}/results",
                             "rel": "http://www.opengis.net/def/rel/ogc/1.0/results", "type": "application/json"})
        for name in (r.result or {}).get("files", []):
            doc["links"].append({"href": f"{base}/jobs/{ext}/files/{name}", "rel": "enclosure", "title": name})
    return doc


@router.get("/jobs/{job_id}", summary="Status of a job")
async def get_job(job_id: str, request: Request, conn=Depends(get_conn),
                  principal: Principal = Depends(analysis_principal)) -> JSONResponse:
    job = await _jobs(request.app).read(conn, job_id, principal)
    return JSONResponse(_job_doc(request, job), headers=PER_CALLER)


@router.delete("/jobs/{job_id}", summary="Dismiss a job: cancel it if it runs, delete its results")
async def dismiss_job(job_id: str, request: Request, conn=Depends(get_conn),
                      principal: Principal = Depends(analysis_principal)) -> JSONResponse:
    """OGC API - Processes dismiss: the owner (or an admin) stops a queued or running job (its
    SQL is cancelled) or removes a finished job's results; the job then reads ``dismissed``."""
    jobs = _jobs(request.app)
    await jobs.dismiss(conn, job_id, principal)
    return JSONResponse(_job_doc(request, await jobs.read(conn, job_id, principal)), headers=PER_CALLER)


@router.get("/jobs/{job_id}/results", summary="Results of a finished job")
async def job_results(job_id: str, request: Request, conn=Depends(get_conn),
                      principal: Principal = Depends(analysis_principal)) -> Response:
    jobs = _jobs(request.app)
    j = await jobs.read(conn, job_id, principal)
    r = j.job
    if r.status == "failed":
        error = (r.result or {}).get("error")
        if error:  # the job refused its input: the caller's error, answered as when run synchronously
            body = {"code": error["code"], "description": r.message, "jobID": j.ext_id}
            if error.get("parameter"):
                body["parameter"] = error["parameter"]
            return JSONResponse(body, status_code=int(error["status"]), headers=PER_CALLER)
        return JSONResponse({"code": "JobFailed", "description": r.message, "jobID": j.ext_id}, status_code=500)
    if r.status != "successful":
        return JSONResponse({"code": "ResultNotReady", "description": f"job is {r.status}", "jobID": j.ext_id},
                            status_code=404)
    await jobs.require_view(conn, principal, j)
    return FileResponse(jobs.folder(r.id) / r.result["main"], media_type="application/json", headers=PER_CALLER)


@router.get("/jobs/{job_id}/files/{name}", summary="One output file of a finished job")
async def job_file(job_id: str, name: str, request: Request, conn=Depends(get_conn),
                   principal: Principal = Depends(analysis_principal)) -> Response:
    jobs = _jobs(request.app)
    j = await jobs.read(conn, job_id, principal)
    files = (j.job.result or {}).get("files", []) if j.job.status == "successful" else []
    if name not in files:
        raise NotFound(f"job {job_id} has no file {name[:100]!r}", parameter="name")
    await jobs.require_view(conn, principal, j)
    media = {"json": "application/json", "geojson": "application/geo+json", "csv": "text/csv; charset=utf-8",
             "html": "text/html; charset=utf-8"}[name.rsplit(".", 1)[-1]]
    return FileResponse(jobs.folder(j.job.id) / name, media_type=media, headers=PER_CALLER)

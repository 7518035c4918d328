"""Overlay analysis over HTTP: synchronous endpoints for small inputs (``/analysis/...``) and
OGC API - Processes style jobs for county-wide runs (``/processes``, ``/jobs``).

Access: every analysis sees only the layers the caller may see (``visible_layers``) and names
only fields the caller may read (``security.require_field``, the check items use). Whether an
analysis needs a role is decided in :func:`analysis_principal` — today the public may run them
(the demo map's site check).

Load: synchronous analyses run in ``analysis_concurrency`` slots under
``analysis_statement_timeout_ms``; jobs are admitted, queued and run by
:class:`geobase.analysis.jobs.JobScheduler` (per-caller and total bounds, 429/503 with
Retry-After), each on one pooled connection under ``job_statement_timeout_ms`` and
``job_max_seconds``, and the owner or an admin dismisses one with ``DELETE /jobs/{jobID}``.
An anonymous caller's jobID carries its owner token (``<uuid>.<token>``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import psycopg
from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from geobase.api.deps import base_url, get_conn, get_registry_dep, get_settings_dep, request_connection
from geobase.ingest import jobs

from geobase import job_progress
from geobase.analysis import output as out
from geobase.analysis import site_check
from geobase.analysis.common import check_inputs as check_run_inputs
from geobase.analysis.jobs import JobScheduler, may_read, new_owner_token, owner_of, still_visible, view_of
from geobase.analysis.processes import PROCESSES, ProcessInputs, check_inputs, run_process
from geobase.errors import (Forbidden, GeobaseError, InvalidInput, NotFound, PayloadTooLarge,
                            ServiceUnavailable)
from geobase.analysis.input import decode_json_body, parse_geojson, parse_upload
from geobase.limits import set_local_timeout
from geobase.security import Principal, get_principal, layer_accesses, visible_layers
from geobase.settings import Settings
from geobase.specs import Registry

log = logging.getLogger("geobase.analysis")
router = APIRouter(tags=["analysis"])
Format = Literal["json", "geojson", "html", "csv"]
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
    if f == "html":
        return HTMLResponse(out.to_html(result))
    if f == "geojson":
        return Response(out.to_geojson(result), media_type="application/geo+json")
    if f == "csv":
        tables = out.csv_tables(result)
        first = next(iter(tables.values()), "")
        return Response(first, media_type="text/csv; charset=utf-8")
    return Response(out.to_json(result), media_type="application/json")


async def utf8_json_body(request: Request) -> None:
    """Refuse a JSON body that is not UTF-8 before FastAPI's parser guesses UTF-16/32 for it
    (geobase.analysis.input.decode_json_body names the problem)."""
    if "json" in (request.headers.get("content-type") or "json"):
        decode_json_body(await request.body())


async def run_sync(process: str, body: ProcessInputs, conn: psycopg.AsyncConnection, settings: Settings,
                   registry: Registry, principal: Principal) -> dict:
    """A synchronous analysis under ``analysis_statement_timeout_ms`` (the pooled connection's
    own timeout is the ordinary request's 30 s): one read-only snapshot whose local settings
    end with it, so nothing leaks to the connection's next user."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await set_local_timeout(conn, settings.analysis_statement_timeout_ms)
        return await run_process(process, body, conn, settings, registry, principal)


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
                      f: Format = Query("json", description="json, geojson, html or csv"),
                      settings: Settings = Depends(get_settings_dep),
                      registry: Registry = Depends(get_registry_dep),
                      principal: Principal = Depends(analysis_principal)) -> Response:
        async with analysis_slot(request) as conn:
            result = await run_sync(process, body, conn, settings, registry, principal)
        return render(result, f)

    handler.__name__ = f"analysis_{process.replace('-', '_')}"
    handler.__annotations__["body"] = model  # a real class: string annotations cannot see this closure
    return handler


for _pid, (_model, _title) in PROCESSES.items():
    router.add_api_route(f"/analysis/{_pid}", _endpoint(_pid, _model), methods=["POST"], summary=_title,
                         dependencies=[Depends(utf8_json_body)])


@router.get("/analysis/rules", summary="The declared site-check and plan-conflict rules")
async def list_rules(conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                     principal: Principal = Depends(analysis_principal)) -> JSONResponse:
    """Rules over layers the caller may see in full; a rule over a hidden layer keeps only its id
    and title (site checks report it as not evaluated) so the layer's existence does not leak."""
    from geobase.analysis.rules import load_conflict_rules, load_site_rules

    may_see = {s.name for s in await visible_layers(conn, principal, registry)}

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
    async with analysis_slot(request) as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await set_local_timeout(conn, settings.analysis_statement_timeout_ms)
        visible = await visible_layers(conn, principal, registry)
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


def _jobs_dir(settings: Settings) -> Path:
    return settings.data_path / "jobs"


def _scheduler(app) -> JobScheduler:
    sched = getattr(app.state, "job_scheduler", None)
    if sched is None:
        sched = app.state.job_scheduler = JobScheduler(app.state.settings)
    return sched


def _caller(request: Request, principal: Principal) -> str:
    """Whose share of the job slots a submission takes: the key, or the anonymous client's IP."""
    if principal.key_id:
        return f"key:{principal.key_id}"
    from geobase import audit

    ctx = audit.current()  # the gate's client address (forwarded headers only from trusted proxies)
    ip = ctx.client_ip if ctx is not None and ctx.client_ip else (request.client.host if request.client else "-")
    return f"ip:{ip}"


def split_job_id(job_id: str) -> tuple[str, str | None]:
    """(the job's uuid, the owner token or None) of a jobID as given to the caller: an anonymous
    caller's jobID carries its owner token (``<uuid>.<token>``), so every OGC API - Processes
    client, whether it follows links or builds ``/jobs/{jobID}/results`` itself, keeps it."""
    uid, _, token = job_id.partition(".")
    try:
        uuid.UUID(uid)
    except ValueError:
        raise NotFound(f"job {job_id[:100]!r} not found", parameter="jobId") from None
    return uid, token or None


def external_id(uid: str, token: str | None) -> str:
    return f"{uid}.{token}" if token else str(uid)


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
            result = await run_sync(process_id, body, conn, settings, registry, principal)
        else:
            # every input is checked now, by the run's own checks: a bad one is a 400, never a 201 job
            await check_run_inputs(lambda: run_process(process_id, body, conn, settings, registry, principal))
            return await _submit(request, process_id, inputs, body, conn, principal)
    return render(result, "json")


async def _submit(request: Request, process_id: str, inputs: dict, body: ProcessInputs, conn: psycopg.AsyncConnection,
                  principal: Principal) -> JSONResponse:
    """Admit and record a job, start it (it waits for a run slot), answer 201 with its URL."""
    sched = _scheduler(request.app)
    caller = _caller(request, principal)
    sched.admit(caller)  # 429/503 before anything is written
    try:
        token = None if principal.key_id else new_owner_token()
        job_id = str(uuid.uuid4())
        await conn.execute(
            "INSERT INTO catalog.jobs (id, kind, status, params, created_by, message) "
            "VALUES (%s, %s, 'accepted', %s, %s, %s)",
            (job_id, f"analysis:{process_id}", json.dumps({**inputs, **jobs.process_tag()}),
             owner_of(principal, token), "queued"))
    except BaseException:
        sched.waiting[caller] -= 1
        raise
    sched.start(job_id, sched.run(job_id, caller, lambda: _run_job(request.app, job_id, process_id, body, principal)))
    ext = external_id(job_id, token)
    url = f"{base_url(request)}/jobs/{ext}"
    return JSONResponse(await _job_doc(conn, request, ext, principal), status_code=201,
                        headers={"Location": url, "Preference-Applied": "respond-async", **PER_CALLER})


async def _set_status(app, job_id: str, sql_text: str, params: tuple) -> None:
    """A short status update on a pooled connection of its own (never the job's busy one)."""
    async with app.state.pool.connection(timeout=app.state.settings.pool_timeout_s) as c:
        await c.execute(sql_text, params)


async def _run_job(app, job_id: str, process_id: str, body: ProcessInputs, principal: Principal) -> None:
    """Run a job on one pooled connection (the scheduler bounds how many at once, so jobs stay
    within the pool) in a read-only transaction under the job statement timeout, tagged with
    an application_name that dismissal uses to cancel its SQL. Outputs are written atomically
    to ``<data_dir>/jobs/<id>/`` and only then is the job marked successful; the layers it
    read (and the attributes masked then) are stored, so results re-check access."""
    settings: Settings = app.state.settings
    registry: Registry = app.state.registry
    try:
        await _set_status(app, job_id, "UPDATE catalog.jobs SET status = 'running', started_at = now(), "
                          "message = 'running' WHERE id = %s AND status = 'accepted'", (job_id,))

        async def progress(done: float, total: float | None, msg: str) -> None:
            try:
                await _set_status(app, job_id, "UPDATE catalog.jobs SET progress = %s, message = %s "
                                  "WHERE id = %s AND status = 'running'", (job_progress.percent(done, total), msg, job_id))
            except Exception:  # progress is best effort; the job goes on
                log.debug("progress of job %s not recorded", job_id)

        async with asyncio.timeout(settings.job_max_seconds), \
                app.state.pool.connection(timeout=settings.pool_timeout_s) as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            await set_local_timeout(conn, settings.job_statement_timeout_ms)
            await conn.execute("SELECT set_config('application_name', %s, true)", (job_app_name(job_id),))
            result = await run_process(process_id, body, conn, settings, registry, principal, progress)
            visible = {s.name for s in await visible_layers(conn, principal, registry)}
        used = _layers_used(result, visible)
        files = await asyncio.to_thread(out.write_outputs, result, _jobs_dir(settings) / job_id, process_id)
        await _set_status(app, job_id,
                          "UPDATE catalog.jobs SET status = 'successful', progress = %s, finished_at = now(), "
                          "message = %s, result = %s WHERE id = %s AND status = 'running'",
                          (job_progress.DONE, "done", json.dumps({"files": [p.name for p in files], "main": f"{process_id}.json",
                                               "view": view_of(principal, registry, used)}), job_id))
    except asyncio.CancelledError:  # dismissed (DELETE /jobs/{id} set that status already) or the server stops
        await asyncio.shield(_finish_failed(app, job_id, "failed", "stopped: the server shut down"))
        raise
    except Exception as exc:  # the job must say why it failed, whatever the cause
        if isinstance(exc, asyncio.TimeoutError):
            msg = f"the job ran longer than its limit of {settings.job_max_seconds:.0f} s and was stopped"
        elif isinstance(exc, psycopg.errors.QueryCanceled):
            msg = (f"a query ran longer than the job statement timeout "
                   f"({settings.job_statement_timeout_ms} ms) and was cancelled")
        else:
            msg = exc.message if isinstance(exc, GeobaseError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, (GeobaseError, asyncio.TimeoutError, psycopg.errors.QueryCanceled)):
            log.exception("job %s failed", job_id)
        # a refusal of the input (4xx) is kept with its parameter: the results answer it as such
        error = ({"status": exc.status_code, "code": exc.code, "parameter": exc.parameter}
                 if isinstance(exc, GeobaseError) and 400 <= exc.status_code < 500 else None)
        await _finish_failed(app, job_id, "failed", msg[:2000], {"error": error} if error else None)


async def _finish_failed(app, job_id: str, status: str, msg: str, result: dict | None = None) -> None:
    try:
        await _set_status(app, job_id, "UPDATE catalog.jobs SET status = %s, finished_at = now(), message = %s, "
                          "result = %s WHERE id = %s AND status IN ('accepted', 'running')",
                          (status, msg, json.dumps(result) if result else None, job_id))
    except Exception:
        log.exception("could not record the end of job %s", job_id)


def _layers_used(result: dict, visible: set[str]) -> list[str]:
    """The layers a result was computed from (its report's versions, or its layer(s)); all the
    caller's layers when the report does not say (reading it then needs all of them)."""
    names = set(result.get("versions") or {})
    for k in ("layer", "layer_a", "layer_b"):
        v = result.get(k)
        names.add(v["name"] if isinstance(v, dict) else v)
    names = {n for n in names if isinstance(n, str)} & visible
    return sorted(names or visible)


def job_app_name(job_id: str) -> str:
    return f"geobase-job-{job_id}"


async def _job_row(conn, ext_id: str, principal: Principal) -> dict:
    job_id, token = split_job_id(ext_id)
    cur = await conn.execute(
        "SELECT id, kind, status, progress, message, result, created_by, created_at, started_at, finished_at "
        "FROM catalog.jobs WHERE id = %s AND kind LIKE 'analysis:%%'", (job_id,))
    row = await cur.fetchone()
    if row is None or not may_read(principal, row[6], token):
        raise NotFound(f"job {ext_id[:100]!r} not found", parameter="jobId")
    keys = ("id", "kind", "status", "progress", "message", "result", "created_by", "created", "started", "finished")
    return {**dict(zip(keys, row)), "ext_id": ext_id}


async def _require_view(conn, registry: Registry, principal: Principal, r: dict) -> None:
    """Results re-check access: the caller must still see what the job read (403 otherwise)."""
    view = (r["result"] or {}).get("view")
    if view is None:  # a job of an older server: only admins may read it
        view = {n: [] for n in registry.layers} if not principal.is_admin else {}
    if not still_visible(principal, registry, await layer_accesses(conn), view):
        raise Forbidden("the data this job read is no longer visible to you; run the analysis again")


async def _job_doc(conn, request: Request, job_id: str, principal: Principal) -> dict:
    r = await _job_row(conn, job_id, principal)
    base = base_url(request)
    ext = r["ext_id"]
    doc = {"jobID": ext, "processID": r["kind"].removeprefix("analysis:"), "type": "process",
           "status": r["status"], "progress": job_progress.reported(r["progress"]), "message": r["message"],
           "created": r["created"].isoformat() if r["created"] else None,
           "started": r["started"].isoformat() if r["started"] else None,
           "finished": r["finished"].isoformat() if r["finished"] else None,
           "links": [{"href": f"{base}/jobs/{ext}", "rel": "self", "type": "application/json"}]}
    if r["status"] == "successful":
        doc["links"].append({"href": f"{base}/jobs/{ext}/results",
                             "rel": "http://www.opengis.net/def/rel/ogc/1.0/results", "type": "application/json"})
        for name in (r["result"] or {}).get("files", []):
            doc["links"].append({"href": f"{base}/jobs/{ext}/files/{name}", "rel": "enclosure", "title": name})
    return doc


@router.get("/jobs/{job_id}", summary="Status of a job")
async def get_job(job_id: str, request: Request, conn=Depends(get_conn), principal: Principal = Depends(analysis_principal)) -> JSONResponse:
    return JSONResponse(await _job_doc(conn, request, job_id, principal), headers=PER_CALLER)


@router.delete("/jobs/{job_id}", summary="Dismiss a job: cancel it if it runs, delete its results")
async def dismiss_job(job_id: str, request: Request, conn=Depends(get_conn), settings: Settings = Depends(get_settings_dep),
                      principal: Principal = Depends(analysis_principal)) -> JSONResponse:
    """OGC API - Processes dismiss: the owner (or an admin) stops a queued or running job (its
    SQL is cancelled) or removes a finished job's results; the job then reads ``dismissed``."""
    r = await _job_row(conn, job_id, principal)
    uid = str(r["id"])
    _scheduler(request.app).cancel(uid)
    await conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                       (job_app_name(uid),))
    await conn.execute("UPDATE catalog.jobs SET status = 'dismissed', finished_at = coalesce(finished_at, now()), "
                       "message = 'dismissed' WHERE id = %s", (uid,))
    await asyncio.to_thread(shutil.rmtree, _jobs_dir(settings) / uid, True)
    return JSONResponse(await _job_doc(conn, request, job_id, principal), headers=PER_CALLER)


@router.get("/jobs/{job_id}/results", summary="Results of a finished job")
async def job_results(job_id: str, conn=Depends(get_conn),
                      settings: Settings = Depends(get_settings_dep), registry: Registry = Depends(get_registry_dep),
                      principal: Principal = Depends(analysis_principal)) -> Response:
    r = await _job_row(conn, job_id, principal)
    if r["status"] == "failed":
        error = (r["result"] or {}).get("error")
        if error:  # the job refused its input: the caller's error, answered as when run synchronously
            body = {"code": error["code"], "description": r["message"], "jobID": r["ext_id"]}
            if error.get("parameter"):
                body["parameter"] = error["parameter"]
            return JSONResponse(body, status_code=int(error["status"]), headers=PER_CALLER)
        return JSONResponse({"code": "JobFailed", "description": r["message"], "jobID": r["ext_id"]}, status_code=500)
    if r["status"] != "successful":
        return JSONResponse({"code": "ResultNotReady", "description": f"job is {r['status']}", "jobID": r["ext_id"]},
                            status_code=404)
    await _require_view(conn, registry, principal, r)
    path = _jobs_dir(settings) / str(r["id"]) / r["result"]["main"]
    return FileResponse(path, media_type="application/json", headers=PER_CALLER)


@router.get("/jobs/{job_id}/files/{name}", summary="One output file of a finished job")
async def job_file(job_id: str, name: str, conn=Depends(get_conn), settings: Settings = Depends(get_settings_dep),
                   registry: Registry = Depends(get_registry_dep),
                   principal: Principal = Depends(analysis_principal)) -> Response:
    r = await _job_row(conn, job_id, principal)
    files = (r["result"] or {}).get("files", []) if r["status"] == "successful" else []
    if name not in files:
        raise NotFound(f"job {job_id} has no file {name[:100]!r}", parameter="name")
    await _require_view(conn, registry, principal, r)
    media = {"json": "application/json", "geojson": "application/geo+json", "csv": "text/csv; charset=utf-8",
             "html": "text/html; charset=utf-8"}[name.rsplit(".", 1)[-1]]
    return FileResponse(_jobs_dir(settings) / str(r["id"]) / name, media_type=media, headers=PER_CALLER)

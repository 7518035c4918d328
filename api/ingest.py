"""Ingest over HTTP: upload a delivery, poll the job.

    POST /admin/layers/{layer}/ingest   multipart ``file`` (+ form options) -> 202 + job id
    GET  /admin/jobs/{id}               status, progress, version, quality report

Stewards may ingest the layers of their own department, admins any layer. Uploads are saved
under the data directory with a sanitised name, limited in size (settings.max_upload_bytes),
zips are checked for path traversal and bombs before the job starts, and the upload folder is
removed when the job ends.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path as FsPath
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, Path, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from geobase.api.routing import LazyAPIRoute
from geobase.api.deps import base_url, get_registry_dep, get_settings_dep
from geobase.ingest import jobs
from geobase.ingest.sources import RASTER_SUFFIXES, VECTOR_SUFFIXES, check_zip
from geobase.uploads import ZipLimits, save_upload

from geobase import jobs as job_progress
from geobase.errors import Forbidden, InvalidInput, NotFound
from geobase.api.gate import get_principal
from geobase.security import Principal, require_role
from geobase.settings import Settings
from geobase.specs import Registry
from geobase.storage import check_division
from geobase.vocab import IngestMode

router = APIRouter(route_class=LazyAPIRoute, tags=["Ingest"])

UUID_RE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ACCEPTED_SUFFIXES = set(VECTOR_SUFFIXES) | RASTER_SUFFIXES | {".zip"}


def steward_for(principal: Principal, department: str) -> None:
    """Stewards act on their own department's layers; admins on all."""
    require_role(principal, "steward")
    if not principal.is_admin and principal.department != department:
        raise Forbidden(f"stewards of {principal.department!r} may not ingest layers of department {department!r}")


def _safe_name(filename: str | None) -> str:
    name = FsPath((filename or "").replace("\\", "/")).name
    name = re.sub(r"[^\w.\-\u4e00-\u9fff]", "_", name)[:200].lstrip(".")
    if not name:
        raise InvalidInput("file: the upload has no file name", parameter="file")
    lower = name.lower()
    if not (lower.endswith(".zip") or FsPath(lower).suffix in ACCEPTED_SUFFIXES):
        raise InvalidInput(f"file: unsupported file type {FsPath(name).suffix or '(none)'}; upload a .zip "
                           "(Shapefile, FileGDB), .gpkg, .geojson, .geojsonl, .fgb, .csv or .tif", parameter="file")
    if lower.endswith(".shp"):
        raise InvalidInput("file: a Shapefile needs its .shx/.dbf/.prj: upload them together as a .zip",
                           parameter="file")
    return name


def _save(upload: UploadFile, dest: FsPath, limit: int) -> int:
    return save_upload(upload.file, dest, limit)


@router.post("/admin/layers/{layer}/ingest", status_code=202,
             summary="Upload a delivery and ingest it as a new version (background job)")
async def post_ingest(
    request: Request,
    layer: str = Path(..., max_length=63),
    file: UploadFile = File(..., description="The delivery: .zip (Shapefile/FileGDB), .gpkg, .geojson, .fgb, .csv, .tif"),
    mode: IngestMode = Form("replace"),
    on_error: Literal["reject", "skip", "keep"] = Form("reject"),
    crs: str | None = Form(None, max_length=200),
    encoding: str | None = Form(None, max_length=40),
    source_layer: str | None = Form(None, alias="layer_name", max_length=200),
    dry_run: bool = Form(False),
    division: str | None = Form(None, max_length=6, description="County code of the delivery (like --division)"),
    principal: Principal = Depends(get_principal),
    settings: Settings = Depends(get_settings_dep),
    registry: Registry = Depends(get_registry_dep),
):
    if layer not in registry.layers:
        raise NotFound(f"unknown layer {layer[:100]!r}", parameter="layer")
    spec = registry.layers[layer]
    steward_for(principal, spec.department)
    division = check_division(division) if division is not None else None  # a 400 now, not a failed job later
    name = _safe_name(file.filename)
    job_id = jobs.new_job_id()
    folder = jobs.uploads_dir(settings) / job_id
    folder.mkdir(parents=True)
    dest = folder / name
    try:
        size = await run_in_threadpool(_save, file, dest, settings.max_upload_bytes)
        if name.lower().endswith(".zip"):
            await run_in_threadpool(lambda: check_zip(dest, ZipLimits.for_ingest(settings)).close())
        options = {"mode": mode, "on_error": on_error, "crs": crs, "encoding": encoding,
                   "source_layer": source_layer, "dry_run": dry_run, "division": division}
        user = principal.name or principal.key_id or "api"
        await run_in_threadpool(jobs.create_job, settings, job_id, layer,
                                {**options, "file": name, "bytes": size, **jobs.process_tag(),
                                 "department": principal.department}, user)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # the only server path that writes layer tables: it runs as the owner, the rest as geobase_app
    jobs.start_job(request.app.state.owner_settings, job_id, layer, dest, options, user)
    url = f"{base_url(request)}/admin/jobs/{job_id}"
    return JSONResponse(status_code=202, headers={"Location": url},
                        content={"jobID": job_id, "status": "accepted", "layer": layer,
                                 "links": [{"href": url, "rel": "monitor", "type": "application/json"}]})


@router.get("/admin/jobs/{job_id}", summary="Status, progress and quality report of an ingest job")
async def get_job(
    request: Request,
    job_id: str = Path(..., pattern=UUID_RE),
    principal: Principal = Depends(get_principal),
    settings: Settings = Depends(get_settings_dep),
    registry: Registry = Depends(get_registry_dep),
):
    require_role(principal, "steward")
    job = await run_in_threadpool(jobs.get_job, settings, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}", parameter="job_id")
    spec = registry.layers.get(job["layer"] or "")
    if not principal.is_admin and (spec is None or spec.department != principal.department):
        raise NotFound(f"no job {job_id}", parameter="job_id")  # other departments' jobs are not disclosed
    result = job["result"] or {}
    return {
        "jobID": str(job["id"]), "type": job["kind"], "layer": job["layer"], "status": job["status"],
        "progress": job_progress.reported(job["progress"]), "message": job["message"],
        "created": job["created_at"], "started": job["started_at"], "finished": job["finished_at"],
        "version": result.get("version"), "result": result or None,
        "links": [{"href": f"{base_url(request)}/admin/jobs/{job_id}", "rel": "self", "type": "application/json"}],
    }

"""Background ingest jobs, recorded by the one job manager :mod:`geobase.jobs` (status,
progress in percent, report).

An upload is saved to ``<data dir>/uploads/<job id>/`` and ingested in a child process of the
server (:mod:`geobase.jobs_process`: the server's memory stays near its idle size, and the child
dies with the server); the job's row is what clients poll. The upload folder is removed when the job
ends, whatever the outcome. A job left ``running`` by a server that died is marked failed at the
next start (its upload folder is removed too).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from geobase import jobs, jobs_process
from geobase.db import connect
from geobase.errors import GeobaseError
from geobase.jobs import process_tag  # noqa: F401  (api/ingest.py tags its jobs with it)
from geobase.settings import Settings

PROGRESS_INTERVAL_S = 0.5


def uploads_dir(settings: Settings) -> Path:
    d = settings.data_path / "uploads"
    d.mkdir(parents=True, exist_ok=True)
    return d


def new_job_id() -> str:
    return jobs.new_job_id()


def create_job(settings: Settings, job_id: str, layer: str, params: dict, created_by: str) -> None:
    with connect(settings) as conn:
        jobs.create_sync(conn, job_id, "ingest", params=params, created_by=created_by, layer=layer)


def _mark(settings: Settings, job_id: str, status: str, **fields) -> None:
    with connect(settings) as conn:
        jobs.mark_sync(conn, job_id, status, **fields)


def get_job(settings: Settings, job_id: str) -> dict | None:
    """The job's row as a dict (None: no such job), read by the job manager's one reader."""
    with connect(settings) as conn:
        job = jobs.get_sync(conn, job_id)
    return asdict(job) if job is not None else None


#: What an orphaned job of each kind says (ingest: nothing committed; analysis: no output).
ORPHAN_MESSAGES = {
    "ingest": "the server stopped while the job ran; nothing was committed, submit the file again",
    "analysis": "the server stopped while the job ran; no result was written, run the analysis again",
    "indicators": "the server stopped while the recompute ran; versions done so far are kept, the next run does the rest",
}


def fail_orphaned_jobs(settings: Settings) -> int:
    """Ingest and analysis jobs 'accepted'/'running' whose server process on this host is gone:
    mark them failed (an ingest's version was never committed, an analysis wrote no result) and
    remove ingest uploads. Jobs of live processes (other workers, other hosts) are left alone."""
    with connect(settings) as conn:
        orphans = jobs.fail_orphans_sync(conn, ORPHAN_MESSAGES)
    for job in orphans:
        if job.kind == "ingest":
            shutil.rmtree(uploads_dir(settings) / job.id, ignore_errors=True)
    return len(orphans)


def run_job(settings: Settings, job_id: str, layer: str, path: Path, options: dict, user: str) -> None:
    """The thread body: ingest, record progress and the outcome, always remove the upload."""
    from geobase.ingest.pipeline import ingest

    last = [0.0]

    def progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_INTERVAL_S:
            return
        last[0] = now
        with connect(settings) as conn:
            jobs.progress_sync(conn, job_id, done, total, f"{done} features read")

    try:
        _mark(settings, job_id, "running")
        res = ingest(settings, layer, path, user=user, progress=progress, job_id=job_id.replace("-", ""), **options)
        _mark(settings, job_id, "successful", result=res.as_dict(), message=(
            f"version {res.version}" if res.version else
            f"dry run: nothing written; would be +{res.added} -{res.removed} ~{res.changed}"
            if res.dry_run else "skipped: same file as the current version"))
    except GeobaseError as exc:
        _mark(settings, job_id, "failed", message=exc.message,
              result={"error": exc.code, "message": exc.message, "parameter": exc.parameter,
                      "outcome": "refused: nothing written, the current version is unchanged",
                      "report": exc.details.get("report")})
    except Exception as exc:  # a bug or the database: record it, never leave the job 'running'
        _mark(settings, job_id, "failed", message=f"internal error: {exc}",
              result={"error": "ServerError", "message": str(exc), "trace": traceback.format_exc()[-2000:]})
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def _child_ended(settings: Settings, job_id: str, path: Path, code: int) -> None:
    """After the job's process ended: a process that died before recording an outcome (killed,
    out of memory) leaves a job that is failed here rather than ``running`` for ever; the upload
    goes either way. A job that recorded its outcome is not touched (only an active job fails)."""
    if code != 0:
        why = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit {code}"
        _mark(settings, job_id, "failed", message=f"the job's process stopped ({why}) before it recorded an "
              "outcome; nothing was committed, submit the file again")
    shutil.rmtree(path.parent, ignore_errors=True)


def start_job(settings: Settings, job_id: str, layer: str, path: Path, options: dict,
              user: str) -> subprocess.Popen:
    """Run :func:`run_job` in a child process of its own (see :mod:`geobase.jobs_process`)."""
    return jobs_process.spawn("geobase.ingest.jobs:run_job", settings, job_id, layer, path, options, user,
                              name=f"ingest-{job_id[:8]}",
                              on_exit=lambda code: _child_ended(settings, job_id, path, code))

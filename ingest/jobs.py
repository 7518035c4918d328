"""Background ingest jobs recorded in ``catalog.jobs`` (status, progress in percent, report).

An upload is saved to ``<data dir>/uploads/<job id>/`` and ingested in a worker thread of the
server process; the row in ``catalog.jobs`` is what clients poll. The upload folder is removed
when the job ends, whatever the outcome. A job left ``running`` by a server that died is marked
failed at the next start (its upload folder is removed too).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import traceback
import uuid
from pathlib import Path

from geobase import job_progress
from geobase.db import connect
from geobase.errors import GeobaseError
from geobase.settings import Settings

PROGRESS_INTERVAL_S = 0.5


def uploads_dir(settings: Settings) -> Path:
    d = settings.data_path / "uploads"
    d.mkdir(parents=True, exist_ok=True)
    return d


def new_job_id() -> str:
    return str(uuid.uuid4())


def create_job(settings: Settings, job_id: str, layer: str, params: dict, created_by: str) -> None:
    with connect(settings) as conn:
        conn.execute(
            "INSERT INTO catalog.jobs (id, kind, layer, status, params, created_by) "
            "VALUES (%s, 'ingest', %s, 'accepted', %s, %s)",
            (job_id, layer, json.dumps(params, ensure_ascii=False), created_by))


def _update(settings: Settings, job_id: str, **fields) -> None:
    sets, values = [], []
    for k, v in fields.items():
        if k in ("started_at", "finished_at"):
            sets.append(f"{k} = now()")
            continue
        sets.append(f"{k} = %s")
        values.append(json.dumps(v, ensure_ascii=False, default=str) if k == "result" else v)
    from psycopg import sql

    stmt = sql.SQL("UPDATE catalog.jobs SET {} WHERE id = %s").format(sql.SQL(", ").join(sql.SQL(s) for s in sets))
    with connect(settings) as conn:
        conn.execute(stmt, (*values, job_id))


def get_job(settings: Settings, job_id: str) -> dict | None:
    from psycopg.rows import dict_row

    with connect(settings) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM catalog.jobs WHERE id = %s", (job_id,)).fetchone()


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: What an orphaned job of each kind says (ingest: nothing committed; analysis: no output).
ORPHAN_MESSAGES = {
    "ingest": "the server stopped while the job ran; nothing was committed, submit the file again",
    "analysis": "the server stopped while the job ran; no result was written, run the analysis again",
}


def fail_orphaned_jobs(settings: Settings) -> int:
    """Ingest and analysis jobs 'accepted'/'running' whose server process on this host is gone:
    mark them failed (an ingest's version was never committed, an analysis wrote no result) and
    remove ingest uploads. Jobs of live processes (other workers, other hosts) are left alone."""
    import os
    import socket

    host = socket.gethostname()
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT id, kind, params->>'host', params->>'pid' FROM catalog.jobs "
            "WHERE (kind = 'ingest' OR kind LIKE 'analysis:%%') AND status IN ('accepted', 'running')").fetchall()
        orphans = [(str(r[0]), r[1].split(":")[0]) for r in rows
                   if r[2] == host and r[3] and r[3].isdigit() and int(r[3]) != os.getpid() and not _alive(int(r[3]))]
        for job_id, kind in orphans:
            conn.execute(
                "UPDATE catalog.jobs SET status = 'failed', finished_at = now(), message = %s "
                "WHERE id = %s AND status IN ('accepted', 'running')", (ORPHAN_MESSAGES[kind], job_id))
    for job_id, kind in orphans:
        if kind == "ingest":
            shutil.rmtree(uploads_dir(settings) / job_id, ignore_errors=True)
    return len(orphans)


def process_tag() -> dict:
    """Where a job runs: recorded in its params so orphans can be recognised later."""
    import os
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid()}


def run_job(settings: Settings, job_id: str, layer: str, path: Path, options: dict, user: str) -> None:
    """The thread body: ingest, record progress and the outcome, always remove the upload."""
    from geobase.ingest.pipeline import ingest

    last = [0.0]

    def progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_INTERVAL_S:
            return
        last[0] = now
        _update(settings, job_id, progress=job_progress.percent(done, total), message=f"{done} features read")

    try:
        _update(settings, job_id, status="running", started_at=True)
        res = ingest(settings, layer, path, user=user, progress=progress, job_id=job_id.replace("-", ""), **options)
        _update(settings, job_id, status="successful", progress=job_progress.DONE, finished_at=True,
                message=(f"version {res.version}" if res.version else
                         f"dry run: nothing written; would be +{res.added} -{res.removed} ~{res.changed}"
                         if res.dry_run else "skipped: same file as the current version"),
                result=res.as_dict())
    except GeobaseError as exc:
        _update(settings, job_id, status="failed", finished_at=True, message=exc.message,
                result={"error": exc.code, "message": exc.message, "parameter": exc.parameter,
                        "outcome": "refused: nothing written, the current version is unchanged",
                        "report": exc.details.get("report")})
    except Exception as exc:  # a bug or the database: record it, never leave the job 'running'
        _update(settings, job_id, status="failed", finished_at=True, message=f"internal error: {exc}",
                result={"error": "ServerError", "message": str(exc), "trace": traceback.format_exc()[-2000:]})
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def start_job(settings: Settings, job_id: str, layer: str, path: Path, options: dict, user: str) -> threading.Thread:
    t = threading.Thread(target=run_job, args=(settings, job_id, layer, path, options, user),
                         name=f"ingest-{job_id[:8]}", daemon=True)
    t.start()
    return t

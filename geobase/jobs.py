"""The one job manager: every read and write of ``catalog.jobs``, for ingest and analysis jobs.

A job is a row that clients poll: ``accepted`` when submitted, ``running`` once it has a run
slot, then ``successful``, ``failed`` or ``dismissed``. Who runs the work differs (an ingest
runs in a worker thread, an analysis on the event loop), so both psycopg flavours are served;
they share the SQL text, the allowed transitions and the row mapping, so the two kinds of jobs
cannot drift apart again (they did: ingest stored progress as 0-1, analyses as 0-100).

The one progress unit is percent, 0 to 100, for every kind of job. Why percent: OGC API -
Processes' ``statusInfo.progress`` is an integer 0-100 and the job documents of
``/jobs/{id}`` (analysis) and ``/admin/jobs/{id}`` (ingest) are read by the same clients;
migration ``0007_job_progress_percent`` converted the stored ingest rows and a CHECK keeps
every value within 0-100. Work reports ``(done, total)``; only this module turns that into
the stored value (:func:`percent`) and back into the reported one (:func:`reported`).

Cancellation: a job's SQL runs on a connection tagged with :func:`app_name`, so dismissing
the job can cancel that SQL (:func:`cancel_queries`) wherever it runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

#: every status a job can have (the table's CHECK lists the same)
STATUSES = ("accepted", "running", "successful", "failed", "dismissed")
#: a job in one of these has not ended
ACTIVE = ("accepted", "running")
#: status -> the statuses a job may move to it from (None: from any, a dismissal)
TRANSITIONS: dict[str, tuple[str, ...] | None] = {
    "running": ("accepted",),
    "successful": ("running",),
    "failed": ACTIVE,
    "dismissed": None,
}

#: what a finished (successful) job stores
DONE = 100.0
#: a running job never claims more than this: 100 means its outcome is recorded
RUNNING_MAX = 99.0


def percent(done: float, total: float | None) -> float:
    """The stored progress of a running job that has done ``done`` of ``total`` units (0 when
    the total is unknown), capped below :data:`DONE` until the job records its outcome."""
    if not total or total <= 0:
        return 0.0
    return round(min(max(100.0 * done / total, 0.0), RUNNING_MAX), 1)


def reported(stored: float | None) -> int:
    """The integer percentage a job document shows (statusInfo ``progress``): truncated, so a
    job never looks further along than it is."""
    return int(stored or 0)


def new_job_id() -> str:
    return str(uuid.uuid4())


def process_tag() -> dict:
    """Where a job runs: recorded in its params at submission so that :func:`fail_orphans_sync`
    recognises a job whose server process died."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def app_name(job_id: str) -> str:
    """The ``application_name`` of the connection a job's SQL runs on (see :func:`cancel_queries`)."""
    return f"geobase-job-{job_id}"


@dataclass(frozen=True)
class Job:
    """One row of ``catalog.jobs``; ``progress`` is the stored percent (see :func:`reported`)."""

    id: str
    kind: str
    layer: str | None
    status: str
    progress: float
    message: str | None
    params: dict[str, Any]
    result: dict[str, Any] | None
    created_by: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @property
    def reported_progress(self) -> int:
        return reported(self.progress)


_COLUMNS = ("id, kind, layer, status, progress, message, params, result, created_by, created_at, started_at, "
            "finished_at")
_CREATE = ("INSERT INTO catalog.jobs (id, kind, layer, status, params, created_by, message) "
           "VALUES (%s, %s, %s, 'accepted', %s, %s, %s)")
_GET = f"SELECT {_COLUMNS} FROM catalog.jobs WHERE id = %s AND starts_with(kind, %s)"
_ACTIVE = f"SELECT {_COLUMNS} FROM catalog.jobs WHERE status = ANY(%s) ORDER BY created_at"
# one statement for every transition: the status, its timestamps, the final progress of a
# success, and the message/result when given; only from the statuses the transition allows
_MARK = """
    UPDATE catalog.jobs SET status = %(status)s,
        started_at = CASE WHEN %(status)s = 'running' THEN now() ELSE started_at END,
        finished_at = CASE WHEN %(status)s = 'running' THEN finished_at ELSE coalesce(finished_at, now()) END,
        progress = CASE WHEN %(status)s = 'successful' THEN %(done)s ELSE progress END,
        message = coalesce(%(message)s, message),
        result = coalesce(%(result)s::jsonb, result)
    WHERE id = %(id)s AND (%(from)s::text[] IS NULL OR status = ANY(%(from)s::text[]))
"""
_PROGRESS = ("UPDATE catalog.jobs SET progress = %s, message = coalesce(%s, message) "
             "WHERE id = %s AND status = 'running'")
_CANCEL = "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _create_params(job_id: str, kind: str, params: dict, created_by: str | None, layer: str | None,
                   message: str | None) -> tuple:
    return (job_id, kind, layer, _json(params or {}), created_by, message)


def _mark_params(job_id: str, status: str, message: str | None, result: dict | None) -> dict:
    """The parameters of :data:`_MARK`; an unknown status (or one no job moves to, such as
    ``accepted``) is a programming error, refused before the database sees it."""
    if status not in TRANSITIONS:
        raise ValueError(f"job status {status!r} is not one a job moves to (statuses: {', '.join(STATUSES)})")
    allowed = TRANSITIONS[status]
    return {"id": job_id, "status": status, "done": DONE, "message": message, "result": _json(result),
            "from": list(allowed) if allowed is not None else None}


def _job(row) -> Job | None:
    if row is None:
        return None
    return Job(str(row[0]), row[1], row[2], row[3], float(row[4] or 0), row[5], row[6] or {}, row[7], row[8],
               row[9], row[10], row[11])


# --- async (the API's analysis jobs) --------------------------------------------------------------

async def create(conn: psycopg.AsyncConnection, job_id: str, kind: str, *, params: dict,
                 created_by: str | None, layer: str | None = None, message: str | None = None) -> None:
    """Record a new job as ``accepted``."""
    await conn.execute(_CREATE, _create_params(job_id, kind, params, created_by, layer, message))


async def mark(conn: psycopg.AsyncConnection, job_id: str, status: str, *, message: str | None = None,
               result: dict | None = None) -> bool:
    """Move a job to ``status`` (see :data:`TRANSITIONS`); False when its current status does
    not allow it (a dismissed job is not made successful by its run finishing late)."""
    cur = await conn.execute(_MARK, _mark_params(job_id, status, message, result))
    return cur.rowcount > 0


async def progress(conn: psycopg.AsyncConnection, job_id: str, done: float, total: float | None,
                   message: str | None = None) -> None:
    """Record how far a running job is: ``done`` of ``total`` units, stored as percent."""
    await conn.execute(_PROGRESS, (percent(done, total), message, job_id))


async def get(conn: psycopg.AsyncConnection, job_id: str, kind_prefix: str = "") -> Job | None:
    """A job by id (of a kind starting with ``kind_prefix``), or None."""
    cur = await conn.execute(_GET, (job_id, kind_prefix))
    return _job(await cur.fetchone())


async def cancel_queries(conn: psycopg.AsyncConnection, job_id: str) -> None:
    """Cancel the SQL a job runs right now, on whichever connection it runs (:func:`app_name`)."""
    await conn.execute(_CANCEL, (app_name(job_id),))


async def tag_connection(conn: psycopg.AsyncConnection, job_id: str) -> None:
    """Name the connection after the job for the current transaction, so it can be cancelled."""
    await conn.execute("SELECT set_config('application_name', %s, true)", (app_name(job_id),))


# --- sync (ingest jobs in worker threads, start-up, the CLI) -----------------------------------

def create_sync(conn: psycopg.Connection, job_id: str, kind: str, *, params: dict, created_by: str | None,
                layer: str | None = None, message: str | None = None) -> None:
    conn.execute(_CREATE, _create_params(job_id, kind, params, created_by, layer, message))


def mark_sync(conn: psycopg.Connection, job_id: str, status: str, *, message: str | None = None,
              result: dict | None = None) -> bool:
    return conn.execute(_MARK, _mark_params(job_id, status, message, result)).rowcount > 0


def progress_sync(conn: psycopg.Connection, job_id: str, done: float, total: float | None,
                  message: str | None = None) -> None:
    conn.execute(_PROGRESS, (percent(done, total), message, job_id))


def get_sync(conn: psycopg.Connection, job_id: str, kind_prefix: str = "") -> Job | None:
    return _job(conn.execute(_GET, (job_id, kind_prefix)).fetchone())


def active_sync(conn: psycopg.Connection) -> list[Job]:
    """Every job not ended yet (accepted or running), oldest first."""
    return [_job(r) for r in conn.execute(_ACTIVE, (list(ACTIVE),)).fetchall()]


def fail_orphans_sync(conn: psycopg.Connection, messages: dict[str, str]) -> list[Job]:
    """Jobs not ended whose server process on this host is gone (see :func:`process_tag`),
    marked failed with the message of their kind (``messages``: kind before any ``:`` -> why);
    jobs of live processes (other workers, other hosts) and of other kinds are left alone."""
    host = socket.gethostname()
    orphans = []
    for job in active_sync(conn):
        pid = str(job.params.get("pid") or "")
        if (job.kind.split(":")[0] in messages and job.params.get("host") == host and pid.isdigit()
                and int(pid) != os.getpid() and not _alive(int(pid))):
            orphans.append(job)
    for job in orphans:
        mark_sync(conn, job.id, "failed", message=messages[job.kind.split(":")[0]])
    return orphans

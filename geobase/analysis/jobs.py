"""Analysis jobs (OGC API - Processes async execution): admission, run, owners, reading and
dismissal, on the one job manager :mod:`geobase.jobs` (which holds their rows and progress).
How many run at once, how many may wait, how long one may take, who may read or dismiss it.

Why here and not in each router: an anonymous caller can submit as many jobs as the rate
limit lets through; without one bound 40 of them ran at once (89 database connections). The
scheduler admits a job only when its caller and the whole server have queue room (else 429 /
503 with Retry-After), starts it only when a run slot is free (per caller and in total, so
one caller cannot take every slot), and cancels it at its wall-clock limit or on dismissal.

Owners: a keyed caller owns its jobs by key id. Anonymous callers get an unguessable token at
submission, carried in the jobID they are given (``<uuid>.<token>``, so every OGC API -
Processes client keeps it, whether it follows links or builds ``/jobs/{jobID}/results``); the
job's owner is a hash of it, so knowing the job's uuid is not enough to read its results, and
the token itself is never stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import shutil
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

from geobase import jobs
from geobase.analysis import output
from geobase.analysis.common import check_inputs as check_run_inputs
from geobase.analysis.processes import ProcessInputs, run_process
from geobase.errors import Forbidden, GeobaseError, NotFound, ServiceUnavailable, TooManyRequests
from geobase.limits import set_local_timeout
from geobase.security import (
    LayerAccess,
    Principal,
    can_see,
    hidden_attributes,
    layer_accesses,
    visible_layers,
)
from geobase.settings import Settings
from geobase.specs import Registry

log = logging.getLogger("geobase.analysis")

ANON_PREFIX = "anon:"
#: the kind of an analysis job is this prefix and the process id
KIND_PREFIX = "analysis:"


def new_owner_token() -> str:
    """A token for an anonymous caller's job (about 192 bits)."""
    return secrets.token_urlsafe(24)


def owner_of(principal: Principal, token: str | None) -> str:
    """Who owns a job: the key id (key names are not unique), or the hash of the anonymous token."""
    if principal.key_id:
        return principal.key_id
    if not token:
        return ANON_PREFIX + "-"  # matches no stored owner: a token is needed
    return ANON_PREFIX + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:40]


def may_read(principal: Principal, owner: str, token: str | None) -> bool:
    """Owner (by key or token) or an admin."""
    if principal.is_admin:
        return True
    return secrets.compare_digest(owner.encode(), owner_of(principal, token).encode())


def view_of(principal: Principal, registry: Registry, layers: list[str]) -> dict[str, list[str]]:
    """What a job read, as stored with it: per layer, the attributes masked for its caller."""
    return {n: sorted(hidden_attributes(principal, registry.layers[n])) for n in layers if n in registry.layers}


def still_visible(principal: Principal, registry: Registry, accesses: list[LayerAccess],
                  view: dict[str, list[str]]) -> bool:
    """Whether the caller may still see everything the job read (results re-check access: a
    revoked layer, or an attribute masked since, makes the stored results unreadable)."""
    if principal.is_admin:
        return True
    by_name = {a.name: a for a in accesses}
    for name, hidden_then in view.items():
        a = by_name.get(name)
        if a is None or name not in registry.layers or not can_see(principal, a):
            return False
        if not hidden_attributes(principal, registry.layers[name]) <= set(hidden_then):
            return False
    return True


@dataclass
class JobScheduler:
    """Run slots and queue room, per caller and in total (see the module docstring)."""

    settings: Settings
    running: Counter = field(default_factory=Counter)
    waiting: Counter = field(default_factory=Counter)
    tasks: dict[str, asyncio.Task] = field(default_factory=dict)
    _cond: asyncio.Condition | None = None

    @property
    def cond(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def admit(self, who: str) -> None:
        """Reserve queue room for a job of ``who`` or refuse it (429 for the caller's own bound,
        503 when the server's queue is full)."""
        s = self.settings
        mine = self.running[who] + self.waiting[who]
        if mine >= s.jobs_max_running_per_caller + s.jobs_max_queued_per_caller:
            raise TooManyRequests(f"you have {mine} jobs running or waiting (limit "
                                  f"{s.jobs_max_running_per_caller + s.jobs_max_queued_per_caller}); wait for one "
                                  "to finish or dismiss one (DELETE /jobs/{id})", retry_after=10)
        total_waiting = sum(self.waiting.values())
        free_slot = sum(self.running.values()) < s.jobs_max_running and self.running[who] < s.jobs_max_running_per_caller
        if not free_slot and total_waiting >= s.jobs_max_queued:
            raise ServiceUnavailable(f"the job queue is full ({total_waiting} waiting); retry later", retry_after=30)
        self.waiting[who] += 1

    async def run(self, job_id: str, who: str, work: Callable[[], Awaitable[None]],
                  on_start: Callable[[], Awaitable[None]] | None = None) -> None:
        """Wait for a run slot, then run ``work`` (which applies the wall-clock limit itself, so
        that it can tell a timeout from a dismissal)."""
        s = self.settings
        started = False
        try:
            async with self.cond:
                await self.cond.wait_for(lambda: sum(self.running.values()) < s.jobs_max_running
                                         and self.running[who] < s.jobs_max_running_per_caller)
                self.waiting[who] -= 1
                self.running[who] += 1
                started = True
            if on_start is not None:
                await on_start()
            await work()
        finally:
            async with self.cond:
                if started:
                    self.running[who] -= 1
                else:
                    self.waiting[who] -= 1
                self.running += Counter()  # drop zero counts
                self.waiting += Counter()
                self.cond.notify_all()
            self.tasks.pop(job_id, None)

    def start(self, job_id: str, coro) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"job-{job_id}")
        self.tasks[job_id] = task
        return task

    def cancel(self, job_id: str) -> bool:
        """Cancel a job of this process (waiting or running); False if it is not here."""
        task = self.tasks.get(job_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True


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


def layers_used(result: dict, visible: set[str]) -> list[str]:
    """The layers a result was computed from (its report's versions, or its layer(s)); all the
    caller's layers when the report does not say (reading it then needs all of them)."""
    names = set(result.get("versions") or {})
    for k in ("layer", "layer_a", "layer_b"):
        v = result.get(k)
        names.add(v["name"] if isinstance(v, dict) else v)
    names = {n for n in names if isinstance(n, str)} & visible
    return sorted(names or visible)


def failure(exc: BaseException, settings: Settings) -> tuple[str, dict | None]:
    """What a failed job says (message, stored result): why it failed, whatever the cause; a
    refusal of the input (4xx) is kept with its parameter, so the results answer it as such."""
    if isinstance(exc, asyncio.TimeoutError):
        msg = f"the job ran longer than its limit of {settings.job_max_seconds:.0f} s and was stopped"
    elif isinstance(exc, psycopg.errors.QueryCanceled):
        msg = (f"a query ran longer than the job statement timeout "
               f"({settings.job_statement_timeout_ms} ms) and was cancelled")
    else:
        msg = exc.message if isinstance(exc, GeobaseError) else f"{type(exc).__name__}: {exc}"
    error = ({"status": exc.status_code, "code": exc.code, "parameter": exc.parameter}
             if isinstance(exc, GeobaseError) and 400 <= exc.status_code < 500 else None)
    return msg[:2000], ({"error": error} if error else None)


@dataclass(frozen=True)
class AnalysisJob:
    """A job as its owner (or an admin) reads it: the manager's row and the jobID given out."""

    job: jobs.Job
    ext_id: str

    @property
    def process_id(self) -> str:
        return self.job.kind.removeprefix(KIND_PREFIX)


class AnalysisJobs:
    """The analysis jobs of one server process: they run on pooled connections (the scheduler
    bounds how many at once, so jobs stay within the pool); their rows are the job manager's."""

    def __init__(self, settings: Settings, registry: Registry, pool: AsyncConnectionPool,
                 writer: Settings | None = None) -> None:
        self.settings, self.registry, self.pool, self.writer = settings, registry, pool, writer
        self.scheduler = JobScheduler(settings)

    def folder(self, job_id: str) -> Path:
        """Where a job's outputs are: ``<data_dir>/jobs/<id>/``."""
        return self.settings.data_path / "jobs" / job_id

    async def submit(self, conn: psycopg.AsyncConnection, process_id: str, inputs: dict, body: ProcessInputs,
                     principal: Principal, caller: str) -> str:
        """Check every input by the run's own checks (a bad one is a 400, never a 201 job), admit
        the job (429/503 before anything is written), record it and start it (it waits for a
        run slot); its jobID is returned."""
        settings, registry = self.settings, self.registry
        await check_run_inputs(lambda: run_process(process_id, body, conn, settings, registry, principal,
                                                      writer=self.writer))
        self.scheduler.admit(caller)
        try:
            token = None if principal.key_id else new_owner_token()
            job_id = jobs.new_job_id()
            await jobs.create(conn, job_id, KIND_PREFIX + process_id, params={**inputs, **jobs.process_tag()},
                              created_by=owner_of(principal, token), message="queued")
        except BaseException:
            self.scheduler.waiting[caller] -= 1
            raise
        self.scheduler.start(job_id, self.scheduler.run(
            job_id, caller, lambda: self._run(job_id, process_id, body, principal)))
        return external_id(job_id, token)

    async def _update(self, step: Callable[[psycopg.AsyncConnection], Awaitable[object]]) -> None:
        """A short update of the job's row on a pooled connection of its own (never the job's busy one)."""
        async with self.pool.connection(timeout=self.settings.pool_timeout_s) as c:
            await step(c)

    async def _run(self, job_id: str, process_id: str, body: ProcessInputs, principal: Principal) -> None:
        """Run a job in a read-only transaction under the job statement timeout, on a connection
        tagged for cancellation. Outputs are written atomically to :meth:`folder` and only then
        is the job marked successful; the layers it read (and the attributes masked then) are
        stored, so results re-check access."""
        settings, registry = self.settings, self.registry
        try:
            await self._update(lambda c: jobs.mark(c, job_id, "running", message="running"))

            async def progress(done: float, total: float | None, msg: str) -> None:
                try:
                    await self._update(lambda c: jobs.progress(c, job_id, done, total, msg))
                except Exception:  # noqa: BLE001  progress is best effort; the job goes on
                    log.debug("progress of job %s not recorded", job_id)

            async with asyncio.timeout(settings.job_max_seconds), \
                    self.pool.connection(timeout=settings.pool_timeout_s) as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                await set_local_timeout(conn, settings.job_statement_timeout_ms)
                await jobs.tag_connection(conn, job_id)
                result = await run_process(process_id, body, conn, settings, registry, principal, progress,
                                           writer=self.writer)
                visible = {s.name for s in await visible_layers(conn, principal, registry, exact_geometry=True)}
            used = layers_used(result, visible)
            files = await asyncio.to_thread(output.write_outputs, result, self.folder(job_id), process_id)
            stored = {"files": [p.name for p in files], "main": f"{process_id}.json",
                      "view": view_of(principal, registry, used)}
            await self._update(lambda c: jobs.mark(c, job_id, "successful", message="done", result=stored))
        except asyncio.CancelledError:  # dismissed (its status says so already) or the server stops
            await asyncio.shield(self._failed(job_id, "stopped: the server shut down", None))
            raise
        except Exception as exc:  # noqa: BLE001  the job must say why it failed, whatever the cause
            if not isinstance(exc, (GeobaseError, asyncio.TimeoutError, psycopg.errors.QueryCanceled)):
                log.exception("job %s failed", job_id)
            await self._failed(job_id, *failure(exc, settings))

    async def _failed(self, job_id: str, message: str, result: dict | None) -> None:
        try:
            await self._update(lambda c: jobs.mark(c, job_id, "failed", message=message, result=result))
        except Exception:  # noqa: BLE001
            log.exception("could not record the end of job %s", job_id)

    async def read(self, conn: psycopg.AsyncConnection, ext_id: str, principal: Principal) -> AnalysisJob:
        """The caller's job (404 for anyone else's, or without the owner token of an anonymous one)."""
        job_id, token = split_job_id(ext_id)
        job = await jobs.get(conn, job_id, KIND_PREFIX)
        if job is None or not may_read(principal, job.created_by or "", token):
            raise NotFound(f"job {ext_id[:100]!r} not found", parameter="jobId")
        return AnalysisJob(job, ext_id)

    async def dismiss(self, conn: psycopg.AsyncConnection, ext_id: str, principal: Principal) -> None:
        """OGC API - Processes dismiss: the owner (or an admin) stops a queued or running job (its
        SQL is cancelled) or removes a finished job's results; the job then reads ``dismissed``."""
        job_id = (await self.read(conn, ext_id, principal)).job.id
        self.scheduler.cancel(job_id)
        await jobs.cancel_queries(conn, job_id)
        await jobs.mark(conn, job_id, "dismissed", message="dismissed")
        await asyncio.to_thread(shutil.rmtree, self.folder(job_id), True)

    async def require_view(self, conn: psycopg.AsyncConnection, principal: Principal, job: AnalysisJob) -> None:
        """Results re-check access: the caller must still see what the job read (403 otherwise)."""
        view = (job.job.result or {}).get("view")
        if view is None:  # a job of an older server: only admins may read it
            view = {n: [] for n in self.registry.layers} if not principal.is_admin else {}
        if not still_visible(principal, self.registry, await layer_accesses(conn), view):
            raise Forbidden("the data this job read is no longer visible to you; run the analysis again")

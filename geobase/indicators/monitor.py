"""The indicator recompute as a job (``catalog.jobs`` kind ``indicators``, geobase/jobs.py),
started by the server's monitor when versions are queued, or by ``geobase indicators recompute``.

Why a job beside the request: the version writer only queues the version (in its transaction);
an edit commit or an ingest returns at once, and the recompute runs here on its own connection,
so no request waits for it or holds a pooled connection while it runs. The job row says when it
ran, what it did (per version: incremental or full, the divisions touched) or why it failed.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from geobase import jobs
from geobase.catalog import indicators as cat
from geobase.db import database_url
from geobase.indicators import engine
from geobase.indicators.spec import get_indicators
from geobase.settings import Settings
from geobase.specs import Registry

log = logging.getLogger("geobase.indicators")
KIND = "indicators"
#: after failures the monitor waits longer, up to this (s): a lasting failure (a missing DEM file)
#: leaves a failed job every few minutes, not every poll
MAX_BACKOFF_S = 300.0


async def run_job(settings: Settings, registry: Registry, created_by: str = "server") -> dict:
    """Process the queue as one recorded job; returns the job's id, status and result."""
    job_id = jobs.new_job_id()
    async with await psycopg.AsyncConnection.connect(database_url(settings), autocommit=True) as conn:
        await jobs.create(conn, job_id, KIND, params={**jobs.process_tag()}, created_by=created_by,
                          message="recomputing indicators")
        await jobs.mark(conn, job_id, "running")
        await jobs.tag_connection(conn, job_id)
        try:
            result = await engine.process(conn, registry, get_indicators(registry), settings.data_path)
        except Exception as exc:
            await jobs.mark(conn, job_id, "failed", message=f"{type(exc).__name__}: {exc}"[:500])
            raise
        steps = result["steps"]
        message = ("busy: another worker is recomputing" if result["busy"] else result.get("waiting")
                   or f"{len(steps)} step(s)")
        await jobs.mark(conn, job_id, "successful", message=message, result=result)
    return {"id": job_id, "status": "successful", "result": result}


class IndicatorMonitor:
    """Polls the queue every ``indicator_poll_s`` seconds (0: off) and runs the job when a
    version is queued (or nothing was ever computed). One per server process; the job's
    advisory lock keeps several processes from recomputing the same version."""

    def __init__(self, settings: Settings, registry: Registry, pool):
        self.settings, self.registry, self.pool = settings, registry, pool
        self._task: asyncio.Task | None = None
        self._failed = False
        #: why the monitor has nothing to do (no township layer yet), None when it computes
        self.waiting: str | None = None

    def start(self) -> None:
        if self.settings.indicator_poll_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="indicator-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def due(self) -> bool:
        """A version is queued or nothing was ever computed, and there are townships to compute
        for: without them (:func:`engine.waiting_for`) no job is started, and the reason is kept
        in ``waiting`` and logged once at INFO, not as a failure every poll."""
        async with self.pool.connection() as conn:
            why = await engine.waiting_for(conn, self.registry)
            if why != self.waiting and why is not None:
                log.info("indicators: %s", why)
            self.waiting = why
            if why is not None:
                return False
            return await cat.has_pending(conn) or await cat.state(conn) is None

    async def _loop(self) -> None:
        delay = self.settings.indicator_poll_s
        while True:
            await asyncio.sleep(delay)
            try:
                if await self.due():
                    await run_job(self.settings, self.registry)
                self._failed, delay = False, self.settings.indicator_poll_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be down: say so once, back off, try again
                if not self._failed:
                    log.warning("indicator recompute failed: %s", exc)
                self._failed = True
                delay = min(max(delay, self.settings.indicator_poll_s) * 2, MAX_BACKOFF_S)

"""The audit writer: audit rows from a queue, written on its own connection, in batches.

The request gate queues one row per audited request (:meth:`AuditWriter.submit`) and waits,
bounded, until it is committed (:meth:`AuditWriter.wait_written`) before a reply's last bytes go
out. What a row holds, how it is made safe and the SQL that writes it are :mod:`geobase.audit`'s;
this module only decides when rows are written and what happens when the database refuses them
or is away.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

import psycopg

from geobase.audit import AuditContext, clean_text, fallback_row, insert_row, insert_rows, make_row

log = logging.getLogger("geobase.audit")


class AuditWriter:
    """Writes audit rows from a queue on its own database connection, in batches.

    Requests never wait for the audit log and never compete with data queries for pooled
    connections; a burst of requests costs one multi-row INSERT. No single row can stop it:

    - rows are made safe when queued (:func:`geobase.audit.make_row`);
    - when a batch fails for anything but a lost connection, it is written row by row, and a
      row the database still refuses is replaced by a minimal record saying so
      (``audit.unwritable``, counted in :attr:`replaced`) — never dropped silently;
    - while the database is down (or refuses even that minimal record), rows are kept and
      retried with back-off; the queue is bounded by ``max_pending`` and every row refused
      beyond it is counted (:attr:`dropped`) and logged as an error — the alarm an admin sees in
      ``/admin/audit/stats`` and ``/health``;
    - at shutdown (the app's lifespan) the queue is flushed (:meth:`close`)."""

    def __init__(self, conninfo: str, *, batch: int = 500, max_pending: int = 20_000):
        self.conninfo = conninfo
        self.batch = batch
        self.max_pending = max_pending
        self._pending: list[tuple] = []
        self._submitted = 0  # sequence numbers: rows queued so far ...
        self._done = 0       # ... and rows off the queue (written or replaced), in order
        self._waiters: list[tuple[int, Any]] = []
        self._event = None
        self._task = None
        self._conn = None
        self._closing = False
        self.written = 0
        self.replaced = 0
        self.dropped = 0
        self.retries = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_drop_at: float | None = None

    def stats(self) -> dict:
        """Counters for admins: rows written, pending, replaced by a minimal record, dropped
        because the queue was full (anything but 0 there means audit rows were lost)."""
        return {"written": self.written, "pending": len(self._pending), "max_pending": self.max_pending,
                "replaced": self.replaced, "dropped": self.dropped, "retries": self.retries,
                "last_error": self.last_error,
                "last_error_at": _iso(self.last_error_at), "last_drop_at": _iso(self.last_drop_at),
                "status": "ok" if not self.dropped and len(self._pending) < self.max_pending // 2 else "alarm"}

    def submit(self, ctx: AuditContext, status: int | None, duration_ms: float | None) -> int | None:
        return self.submit_row(make_row(ctx, status, duration_ms))

    def submit_row(self, row: tuple) -> int | None:
        """Queue one INSERT parameter tuple (as :func:`geobase.audit.make_row` makes it); its sequence number for
        :meth:`wait_written`, None when the queue was full (the row is dropped and counted)."""
        import asyncio

        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            self.last_drop_at = time.time()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("AUDIT QUEUE FULL: %d rows pending, %d audit rows dropped so far (last: %s %s); "
                          "the database is not accepting audit rows: %s", len(self._pending), self.dropped,
                          row[5], row[6], self.last_error)
            return None
        self._pending.append(row)
        seq = self._submitted
        self._submitted += 1
        if self._task is None or self._task.done():
            self._event = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._event.set()
        return seq

    async def wait_written(self, seq: int | None, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until row ``seq`` is in the database. The gate waits so
        before it sends the last byte of an audited reply: a reply the client has received has
        its audit row committed, even if the process is killed right after — unless the
        database did not answer within the timeout (then the row stays queued; replies are never
        held hostage by an absent database)."""
        import asyncio

        if seq is None or seq < self._done:
            return seq is not None
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            if not fut.done():
                fut.cancel()

    def _advance(self, n: int) -> None:
        """``n`` more rows left the head of the queue: wake whoever waits for them."""
        self._done += n
        if self._waiters:
            keep = []
            for seq, fut in self._waiters:
                if seq < self._done:
                    if not fut.done():
                        fut.set_result(True)
                elif not fut.done():
                    keep.append((seq, fut))
            self._waiters = keep

    async def _connect(self):
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, connect_timeout=5,
                                                               application_name="geobase-audit")
        return self._conn

    async def _flush_once(self) -> None:
        rows = self._pending[: self.batch]
        conn = await self._connect()
        try:
            await insert_rows(conn, rows)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise  # the connection, not the rows: keep them and retry
        except Exception as exc:
            log.warning("audit batch of %d rows refused (%s); writing them one by one", len(rows), exc)
            await self._flush_one_by_one(conn, len(rows))
            return
        del self._pending[: len(rows)]
        self.written += len(rows)
        self._advance(len(rows))

    async def _flush_one_by_one(self, conn, n: int) -> None:
        """Write the first ``n`` pending rows one at a time; replace a refused row by its minimal
        record. If even that is refused, the fault is not the row: raise, keep the rest."""
        for _ in range(n):
            row = self._pending[0]
            try:
                await insert_row(conn, row)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except Exception as exc:
                log.error("audit row refused by the database, writing a minimal record instead (%s %s): %s",
                          row[5], row[6], exc)
                await insert_row(conn, fallback_row(row, exc))  # raises if the fault is elsewhere
                self.replaced += 1
            del self._pending[0]
            self.written += 1
            self._advance(1)

    async def _run(self) -> None:
        import asyncio

        backoff = 0.5
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._event.clear()
                try:
                    await asyncio.wait_for(self._event.wait(), timeout=30)
                except asyncio.TimeoutError:
                    if not self._pending:
                        return  # idle: the next submit starts a new task
                continue
            try:
                await self._flush_once()
                backoff = 0.5
            except Exception as exc:  # database down (or refusing every row): keep the rows, retry
                self.retries += 1
                self.last_error = clean_text(f"{type(exc).__name__}: {exc}", 300)
                self.last_error_at = time.time()
                log.warning("audit rows not yet written (%d pending): %s", len(self._pending), exc)
                if self._conn is not None:
                    try:
                        await self._conn.close()
                    except Exception:
                        pass
                    self._conn = None
                if self._closing:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def close(self, timeout: float = 15) -> None:
        """Flush what is pending (bounded by ``timeout``, retrying while the database is briefly
        away) and close the connection; rows still unwritten then are reported as an error."""
        import asyncio

        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._run())
                self._event = self._event or asyncio.Event()
            self._event.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), max(0.1, min(1.0, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                pass
            except Exception:
                pass
        self._closing = True
        if self._event is not None:
            self._event.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(self._task, 1.0)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
        if self._pending:
            log.error("AUDIT: %d rows could not be written at shutdown (last error: %s)",
                      len(self._pending), self.last_error)
        if self._conn is not None:
            await self._conn.close()

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (tests, shutdown)."""
        import asyncio

        while self._pending and self._task is not None and not self._task.done():
            await asyncio.sleep(0.02)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()

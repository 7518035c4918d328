"""The audit log: who read which non-public data and who changed anything, append-only.

One row per request, written by the request gate (:class:`geobase.limits.GateMiddleware`) after
the response has been sent, so auditing never delays a reply. During the request, the access
checks in :mod:`geobase.security` note which layers were touched and whether that was
non-public data; a router adds details with one line::

    audit.note(count=len(features), bbox=bbox)          # reads
    audit.note(action="layer.share", layer=name)        # writes: the method already triggers a row

Rows are written for every non-GET request and for every request that touched non-public
data (a layer that is not public, or attributes masked from the public). Reads of public data
by the public are not logged (they are what the web map does all day).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.rows import dict_row

from geobase.errors import InvalidInput
from geobase.security import PUBLIC, Principal

log = logging.getLogger("geobase.audit")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_PARAM_CHARS = 2000


@dataclass
class AuditContext:
    """What one request did, collected while it runs."""

    principal: Principal = PUBLIC
    method: str = "GET"
    path: str = "/"
    client_ip: str | None = None
    layers: set[str] = field(default_factory=set)
    sensitive: bool = False
    force: bool = False
    action: str | None = None
    count: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def should_write(self) -> bool:
        return self.force or self.sensitive or self.method not in READ_METHODS


_current: ContextVar[AuditContext | None] = ContextVar("geobase_audit", default=None)


def begin(ctx: AuditContext):
    """Start collecting for a request (the gate calls this); returns the token for :func:`end`."""
    return _current.set(ctx)


def end(token) -> None:
    _current.reset(token)


def current() -> AuditContext | None:
    return _current.get()


def note_layer(name: str, *, sensitive: bool) -> None:
    """Called by the access checks: this request reads ``name`` (non-public data if sensitive)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.layers.add(name)
        ctx.sensitive = ctx.sensitive or sensitive


def note(*, count: int | None = None, action: str | None = None, force: bool = False,
         layer: str | None = None, **params: Any) -> None:
    """Add details to this request's audit row (feature count, action name, query, bbox, ...)."""
    ctx = _current.get()
    if ctx is None:
        return
    if count is not None:
        ctx.count = (ctx.count or 0) + int(count)
    if action:
        ctx.action = action
    if layer:
        ctx.layers.add(layer)
    ctx.force = ctx.force or force
    for k, v in params.items():
        ctx.params[k] = v


def client_ip(peer: str | None, forwarded_for: str | None, trusted: str | list[str]) -> str | None:
    """The client's address: X-Forwarded-For is believed only when the peer is a trusted proxy,
    and then the right-most address that is not itself a trusted proxy is the client."""
    nets = _networks(trusted if isinstance(trusted, str) else ",".join(trusted))

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in nets)

    if peer and forwarded_for and is_trusted(peer):
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # garbage in the header: fall back to what we know
        return hops[0] if hops else peer
    return peer


@lru_cache(maxsize=8)
def _networks(trusted: str) -> tuple:
    nets = []
    for t in trusted.split(","):
        try:
            nets.append(ipaddress.ip_network(t.strip(), strict=False))
        except ValueError:
            continue
    return tuple(nets)


def _params_json(params: dict) -> str:
    text = json.dumps(params, ensure_ascii=False, default=str)
    if len(text) > _MAX_PARAM_CHARS:
        text = json.dumps({"truncated": text[:_MAX_PARAM_CHARS]}, ensure_ascii=False)
    return text


INSERT = """INSERT INTO catalog.audit_log (principal, key_id, department, role, action, method, path,
                layers, params, feature_count, status, client_ip, duration_ms)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)"""


def _row(ctx: AuditContext, status: int | None, duration_ms: float | None) -> tuple:
    p = ctx.principal
    action = ctx.action or ("read" if ctx.method in READ_METHODS else "write")
    return (p.name, p.key_id, p.department, p.role, action, ctx.method, ctx.path[:1000],
            sorted(ctx.layers), _params_json(ctx.params), ctx.count, status, ctx.client_ip, duration_ms)


async def write(conn: psycopg.AsyncConnection, ctx: AuditContext, status: int | None,
                duration_ms: float | None = None) -> None:
    await conn.execute(INSERT, _row(ctx, status, duration_ms))


def record(conn: psycopg.Connection, *, principal: Principal, action: str, layers: list[str] | None = None,
           params: dict | None = None, count: int | None = None, client: str | None = None) -> None:
    """Write one row synchronously (CLI actions: key creation, sharing changes, ingests)."""
    ctx = AuditContext(principal=principal, method="CLI", path=action, client_ip=client,
                       layers=set(layers or ()), action=action, count=count, params=params or {})
    conn.execute(INSERT, _row(ctx, None, None))


def query(conn: psycopg.Connection, *, layer: str | None = None, who: str | None = None,
          since: str | datetime | None = None, until: str | datetime | None = None,
          action: str | None = None, limit: int = 100) -> list[dict]:
    """Audit rows, newest first. ``who`` matches the key id, the key name or the department."""
    if not (1 <= limit <= 10_000):
        raise InvalidInput("limit must be within 1..10000", parameter="limit")
    since_dt = _parse_time(since, "since")
    until_dt = _parse_time(until, "until")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT id, at, principal, key_id, department, role, action, method, path, layers, params,
                      feature_count, status, client_ip, duration_ms
               FROM catalog.audit_log
               WHERE (%(layer)s::text IS NULL OR %(layer)s = ANY(layers))
                 AND (%(who)s::text IS NULL OR key_id = %(who)s OR principal = %(who)s OR department = %(who)s)
                 AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
                 AND (%(until)s::timestamptz IS NULL OR at < %(until)s)
                 AND (%(action)s::text IS NULL OR action = %(action)s)
               ORDER BY at DESC, id DESC LIMIT %(limit)s""",
            {"layer": layer, "who": who, "since": since_dt, "until": until_dt, "action": action, "limit": limit},
        ).fetchall()
    for r in rows:
        r["at"] = r["at"].isoformat()
    return rows


def _parse_time(value, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"{name}: not an ISO 8601 date/time: {value!r}", parameter=name) from exc
    if dt.tzinfo is None:
        from datetime import timezone

        dt = dt.replace(tzinfo=timezone.utc)
    return dt


class AuditWriter:
    """Writes audit rows from a queue on its own database connection, in batches.

    Requests never wait for the audit log and never compete with data queries for pooled
    connections; a burst of requests costs one multi-row INSERT. While the database is down,
    rows are kept (up to ``max_pending``) and written once it is back; at shutdown the queue
    is flushed (see :meth:`close`)."""

    def __init__(self, conninfo: str, *, batch: int = 500, max_pending: int = 100_000):
        self.conninfo = conninfo
        self.batch = batch
        self.max_pending = max_pending
        self._pending: list[tuple] = []
        self._event = None
        self._task = None
        self._conn = None
        self._closing = False
        self.dropped = 0

    def submit(self, ctx: AuditContext, status: int | None, duration_ms: float | None) -> None:
        import asyncio

        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            log.error("audit queue full (%d rows pending): row dropped (%s %s)", len(self._pending), ctx.method, ctx.path)
            return
        self._pending.append(_row(ctx, status, duration_ms))
        if self._task is None or self._task.done():
            self._event = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._event.set()

    async def _connect(self):
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, connect_timeout=5,
                                                               application_name="geobase-audit")
        return self._conn

    async def _flush_once(self) -> None:
        rows = self._pending[: self.batch]
        conn = await self._connect()
        async with conn.transaction():
            async with conn.cursor() as cur:
                await cur.executemany(INSERT, rows)
        del self._pending[: len(rows)]

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
            except Exception as exc:  # database down: keep the rows, retry
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

    async def close(self, timeout: float = 10) -> None:
        """Flush what is pending (bounded by ``timeout``) and close the connection."""
        import asyncio

        self._closing = True
        if self._task is not None and not self._task.done():
            self._event.set()
            try:
                await asyncio.wait_for(self._task, timeout)
            except (asyncio.TimeoutError, Exception):
                pass
        if self._pending:
            log.error("audit: %d rows could not be written at shutdown", len(self._pending))
        if self._conn is not None:
            await self._conn.close()

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (tests, shutdown)."""
        import asyncio

        while self._pending and self._task is not None and not self._task.done():
            await asyncio.sleep(0.02)

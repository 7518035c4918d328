"""The audit log: who read which non-public data and who changed anything, append-only.

One row per request, queued by the request gate (:class:`geobase.api.gate.GateMiddleware`) when
the reply is complete and committed (in batches, by :class:`geobase.audit_writer.AuditWriter`) before the reply's last
bytes are sent: a reply a client has received has its row, even if the server is killed right
after; a slow or absent database delays a reply by at most ``AUDIT_WAIT_S`` (1 s), then the row
stays queued and the reply goes out. During the request, the access
checks in :mod:`geobase.security` note which layers were touched and whether that was
non-public data; a router adds details with one line::

    audit.note(count=len(features), bbox=bbox)          # reads
    audit.note(action="layer.share", layer=name)        # writes: the method already triggers a row

Rows are written for every non-GET request and for every request that touched non-public
data (a layer that is not public, or attributes masked from the public). Reads of public data
by the public are not logged (they are what the web map does all day). A read refused because
the caller may not see the layer (the 404 of a hidden layer) is logged as ``read.denied``; one
refused for want of a key or a role (401/403) as ``access.denied``; a key that does not
authenticate as ``auth.failed`` with the key's id and holder when the key exists (expired,
revoked, wrong secret) and the reason.

Everything stored is first made safe (:func:`clean_text`, :func:`clean_params`): the request's
path, query, headers and body fields are the caller's bytes, and one value PostgreSQL refuses
(a NUL, a lone surrogate) must never cost the log its other rows. The writer
(:class:`geobase.audit_writer.AuditWriter`) additionally writes row by row when a batch fails, bounds its queue with
an alarm, and flushes at shutdown.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.rows import dict_row

from geobase.errors import InvalidInput
from geobase.principal import PUBLIC, Principal

log = logging.getLogger("geobase.audit")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_PARAM_CHARS = 4000   # the whole params document
_MAX_VALUE_CHARS = 1000   # one text value (path, query, header, body field)
_MAX_ITEMS = 100          # items kept of one list/dict in params
_MAX_DEPTH = 6

# What is escaped in stored text: C0/C1 controls (NUL is refused by PostgreSQL text and jsonb;
# CR/LF would forge lines in a printed log), DEL, lone surrogates (not encodable as UTF-8),
# bidirectional controls and marks (they reorder what an admin reads: "gpj.exe" spoofing) and
# the BOM/zero-width no-break space.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff\ufeff]")


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def clean_text(value: Any, limit: int = _MAX_VALUE_CHARS) -> str | None:
    """``value`` as text PostgreSQL accepts and an admin can read safely.

    Unsafe characters (see ``_UNSAFE``) become visible escapes (``\\x00``, ``\\u202e``); bytes
    are decoded as UTF-8 with invalid sequences escaped; text longer than ``limit`` is cut and
    marked ``…[truncated, N chars]`` so the reader knows. None stays None."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", "backslashreplace")
    elif not isinstance(value, str):
        value = str(value)
    n = len(value)
    if n > limit:
        value = value[:limit]
    value = _UNSAFE.sub(_escape, value)
    if n > limit:
        value += f"…[truncated, {n} chars]"
    return value


def clean_params(value: Any, depth: int = 0) -> Any:
    """A JSON-able copy of ``value`` that jsonb accepts: every string through :func:`clean_text`,
    non-finite floats as text (jsonb has no NaN), long lists and deep nesting cut with a marker."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return clean_text(repr(value), 200)
    if isinstance(value, dict):
        items = list(value.items())
        out = {clean_text(k, 200): clean_params(v, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out["…truncated"] = f"{len(items)} entries"
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        seq = list(value)
        out = [clean_params(v, depth + 1) for v in seq[:_MAX_ITEMS]]
        if len(seq) > _MAX_ITEMS:
            out.append(f"…[truncated, {len(seq)} items]")
        return out
    return clean_text(value)


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
    text = json.dumps(clean_params(params), ensure_ascii=False, allow_nan=False)
    if len(text) > _MAX_PARAM_CHARS:
        text = json.dumps({"truncated": clean_text(text, _MAX_PARAM_CHARS)}, ensure_ascii=False)
    return text


INSERT = """INSERT INTO catalog.audit_log (principal, key_id, department, role, action, method, path,
                layers, params, feature_count, status, client_ip, duration_ms)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)"""


def make_row(ctx: AuditContext, status: int | None, duration_ms: float | None) -> tuple:
    """The INSERT parameters of one row, every text made safe (see :func:`clean_text`)."""
    p = ctx.principal
    action = ctx.action or ("read" if ctx.method in READ_METHODS else "write")
    return (clean_text(p.name, 200) or "public", clean_text(p.key_id, 100), clean_text(p.department, 100),
            clean_text(p.role, 40), clean_text(action, 100), clean_text(ctx.method, 20), clean_text(ctx.path),
            sorted(clean_text(name, 100) for name in ctx.layers), _params_json(ctx.params), ctx.count, status,
            clean_text(ctx.client_ip, 100), duration_ms)


def fallback_row(row: tuple, exc: BaseException) -> tuple:
    """The minimal record written instead of a row the database still refused on its own:
    who, what and the error, nothing else the caller chose (so it cannot fail the same way)."""
    principal, key_id, dept, role, action, method, path = row[:7]
    status, ip, duration = row[10], row[11], row[12]
    params = {"original_action": clean_text(action, 100), "path": clean_text(path, 200),
              "error": clean_text(f"{type(exc).__name__}: {exc}", 300)}
    return (clean_text(principal, 200) or "unknown", clean_text(key_id, 100), clean_text(dept, 100),
            clean_text(role, 40), "audit.unwritable", clean_text(method, 20), None, [],
            json.dumps(params, ensure_ascii=True), None, status if isinstance(status, int) else None,
            clean_text(ip, 100), duration if isinstance(duration, (int, float)) else None)


async def write(conn: psycopg.AsyncConnection, ctx: AuditContext, status: int | None,
                duration_ms: float | None = None) -> None:
    await conn.execute(INSERT, make_row(ctx, status, duration_ms))


async def insert_rows(conn: psycopg.AsyncConnection, rows: list[tuple]) -> None:
    """Write rows made by :func:`make_row` in one transaction (the writer's batches)."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(INSERT, rows)


async def insert_row(conn: psycopg.AsyncConnection, row: tuple) -> None:
    """Write one row made by :func:`make_row` or :func:`fallback_row`."""
    await conn.execute(INSERT, row)


#: the application role (``geobase.db.ensure_app_role``) may only add and read audit rows
APP_ROLE_STATEMENTS = ("REVOKE UPDATE, DELETE, TRUNCATE ON catalog.audit_log FROM geobase_app",)


def record(conn: psycopg.Connection, *, principal: Principal, action: str, layers: list[str] | None = None,
           params: dict | None = None, count: int | None = None, client: str | None = None) -> None:
    """Write one row synchronously (CLI actions: key creation, sharing changes, ingests)."""
    ctx = AuditContext(principal=principal, method="CLI", path=action, client_ip=client,
                       layers=set(layers or ()), action=action, count=count, params=params or {})
    conn.execute(INSERT, make_row(ctx, None, None))


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

"""The request gate's policy: who is counted how, what is refused, what is audited.

Every HTTP request passes the gate (:class:`geobase.api.gate.GateMiddleware`, the ASGI adapter)
before any router sees it. The gate asks this module, in order,
1. which address is the client's (:func:`client_ip`),
2. whether the caller's token bucket has a token (:func:`rate_wait`, else 429 + Retry-After),
3. how large a body may be (:func:`body_limit`, :func:`content_length_refusal`, else 413;
   uploads have their own, larger limit),
4. which concurrency bound applies (:meth:`Limits.semaphore`: tile renders and exports wait
   briefly, then 503 + Retry-After),
5. whether the request gets an audit row (:func:`audit_decision`; refusals — 401, 403, the 404
   of a hidden layer — are always audited), and what an authentication failure records
   (:func:`note_auth_failure`).

The client's address is the peer's, unless the peer is a configured trusted proxy
(``GEOBASE_TRUSTED_PROXIES``, none by default): then the right-most address of
``X-Forwarded-For`` that is not itself a trusted proxy (and ``X-Forwarded-Proto``). This one
address is what rate limits count and what the audit log records.

No web framework here: the adapter turns these decisions into ASGI messages.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass

import psycopg

from geobase import audit, uploads
from geobase.audit import client_ip
from geobase.errors import GeobaseError, InvalidInput, PayloadTooLarge, TooManyRequests
from geobase.keys import KeyRefused
from geobase.principal import Principal
from geobase.settings import Settings
from geobase.vocab import NAME_BODY

__all__ = ["AUDIT_WAIT_S", "Limits", "TokenBuckets", "audit_decision", "body_limit", "body_too_large", "client_ip",
           "content_length_refusal", "failed_auth_wait", "note_auth_failure", "rate_refusal", "rate_wait",
           "request_class", "request_context", "set_local_timeout", "statement_timeout_ms"]

#: longest a finished reply waits for its audit row's commit (database slow or away)
AUDIT_WAIT_S = 1.0

TILE_RE = re.compile(r"/tiles/.*\d+/\d+/\d+(\.[A-Za-z0-9]+)?$")
EXPORT_RE = re.compile(r"/(download|downloads|export|exports)(/|$)")
UPLOAD_RE = re.compile(r"/(ingest|upload|uploads)(/|$)")
ANALYSIS_RE = re.compile(r"^/(analysis|analyses|processes)(/|$)")
LAYER_IN_PATH_RE = re.compile(rf"^/(?:collections|admin/layers)/({NAME_BODY})(?:/|$)")


def request_class(path: str) -> str:
    """tile | export | upload | analysis | default — selects limits and statement timeouts."""
    if TILE_RE.search(path):
        return "tile"
    if EXPORT_RE.search(path):
        return "export"
    if UPLOAD_RE.search(path):
        return "upload"
    if ANALYSIS_RE.search(path):
        return "analysis"
    return "default"


def statement_timeout_ms(settings: Settings, cls: str) -> int:
    """The statement timeout for a request class; use with :func:`set_local_timeout`."""
    return {"tile": settings.tile_statement_timeout_ms, "export": settings.analysis_statement_timeout_ms,
            "analysis": settings.analysis_statement_timeout_ms}.get(cls, settings.statement_timeout_ms)


async def set_local_timeout(conn: psycopg.AsyncConnection, ms: int) -> None:
    """``SET LOCAL statement_timeout`` — call inside ``async with conn.transaction():`` so it ends
    with the transaction and never leaks into the pooled connection's next user."""
    await conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(ms)}ms",))


class TokenBuckets:
    """In-process token buckets, one per caller (key id or client IP)."""

    def __init__(self, rate: float, burst: int, max_entries: int = 100_000):
        self.rate = rate
        self.burst = burst
        self.max_entries = max_entries
        self._b: dict[str, tuple[float, float]] = {}

    def take(self, who: str) -> float | None:
        """None if allowed; else seconds until a token is available."""
        if self.rate <= 0:
            return None
        now = time.monotonic()
        tokens, last = self._b.get(who, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            if len(self._b) >= self.max_entries:
                self._b.clear()
            self._b[who] = (tokens - 1.0, now)
            return None
        self._b[who] = (tokens, now)
        return (1.0 - tokens) / self.rate


@dataclass
class Limits:
    keyed: TokenBuckets
    public: TokenBuckets
    tile: asyncio.Semaphore
    export: asyncio.Semaphore

    @classmethod
    def from_settings(cls, s: Settings) -> "Limits":
        return cls(TokenBuckets(s.rate_limit_per_s, s.rate_limit_burst),
                   TokenBuckets(s.rate_limit_public_per_s, s.rate_limit_public_burst),
                   asyncio.Semaphore(max(1, s.tile_concurrency)), asyncio.Semaphore(max(1, s.export_concurrency)))

    def semaphore(self, cls: str) -> asyncio.Semaphore | None:
        """The concurrency bound of a request class (tiles, exports), None for the others."""
        return self.tile if cls == "tile" else self.export if cls == "export" else None


def rate_refusal(wait: float | None) -> TooManyRequests | None:
    """429 with Retry-After for a caller whose bucket is empty (``wait`` s until a token)."""
    if wait is None:
        return None
    return TooManyRequests("rate limit exceeded; slow down", retry_after=max(1, math.ceil(wait)))


def rate_wait(limits: Limits, principal: Principal, ip: str | None) -> float | None:
    """Take a token for this caller: keyed callers count per key, the public per client address."""
    if principal.is_public:
        return limits.public.take(f"ip:{ip}")
    return limits.keyed.take(f"key:{principal.key_id}")


def failed_auth_wait(limits: Limits, ip: str | None) -> float | None:
    """A failed authentication costs a token of the client's address: no key guessing at full speed."""
    return limits.public.take(f"ip:{ip}")


def body_limit(settings: Settings, path: str, cls: str) -> int:
    """The largest body of a request (bytes): uploads have their own limit, see :mod:`geobase.uploads`."""
    return uploads.body_limit(settings, path) if cls == "upload" else settings.max_body_bytes


def content_length_refusal(length: str | None, max_body: int) -> GeobaseError | None:
    """The refusal of a declared Content-Length (400 when not a number, 413 beyond ``max_body``)."""
    if length is None:
        return None
    try:
        n = int(length)
    except ValueError:
        n = -1
    if n < 0:
        return InvalidInput("Content-Length is not a non-negative integer", parameter="Content-Length")
    if n > max_body:
        return PayloadTooLarge(f"request body of {n} bytes exceeds the limit of {max_body} bytes",
                               parameter="body")
    return None


def body_too_large(max_body: int) -> PayloadTooLarge:
    """The refusal of a streamed body that grew past ``max_body`` (no Content-Length declared)."""
    return PayloadTooLarge(f"request body exceeds the limit of {max_body} bytes", parameter="body")


def request_context(method: str, path: str, ip: str | None, peer: str | None, query_string: bytes,
                    user_agent: str | None, forwarded: str | None) -> audit.AuditContext:
    """The audit facts known when a request arrives (before anyone has looked at its key)."""
    ctx = audit.AuditContext(method=method, path=path, client_ip=ip)
    if query_string:
        ctx.params["query"] = query_string.decode("latin-1")
    if user_agent is not None:
        ctx.params["user_agent"] = user_agent
    if forwarded is not None and ip == peer:
        ctx.params["forwarded_for_ignored"] = forwarded  # claimed by an untrusted peer: kept as a claim
    return ctx


def note_auth_failure(ctx: audit.AuditContext, exc: GeobaseError) -> None:
    """Record a failed authentication: audited as ``auth.failed``, with the key's id and holder
    when the key exists (an expired or revoked key) and the reason."""
    ctx.action = "auth.failed"
    ctx.force = True
    if isinstance(exc, KeyRefused):
        # key_id only for a key that exists; an unknown id is kept as a claim
        ctx.principal = exc.key or Principal(name="unknown key" if exc.key_id else "public")
        ctx.params["reason"] = exc.reason
        if exc.key is None and exc.key_id:
            ctx.params["presented_key_id"] = exc.key_id
    else:
        ctx.params["reason"] = exc.message


def audit_decision(ctx: audit.AuditContext, path: str, status: int) -> bool:
    """Complete the request's audit facts and say whether it gets a row."""
    if not ctx.layers and ctx.method not in audit.READ_METHODS:
        m = LAYER_IN_PATH_RE.match(path)  # writes name their layer in the path (ingest, sharing)
        if m:
            ctx.layers.add(m.group(1))
    if status in (401, 403):  # refused for lack of a key or role: always audited
        ctx.force = True
        ctx.action = ctx.action or "access.denied"
    return ctx.should_write()

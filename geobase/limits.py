"""The request gate: every HTTP request passes here before any router sees it.

In order, it
1. resolves the caller's key (401 for an invalid/expired/revoked key — never silently public),
2. applies the per-caller token bucket (429 + Retry-After),
3. refuses oversized bodies (413; uploads have their own, larger limit),
4. bounds concurrent tile renders and exports (wait briefly, then 503 + Retry-After),
5. collects and, after the response is sent, writes the request's audit row (:mod:`geobase.audit`;
   refusals — 401, 403, the 404 of a hidden layer — are always audited),
6. marks every response that depended on the caller (the principal was consulted, see
   :func:`geobase.security.get_principal`) as such for caches: ``Vary: Authorization, X-API-Key``
   always, and ``Cache-Control: private`` when a key was presented, so no shared proxy serves
   one department's catalog, tiles or map config to another caller or to the public.

The client's address is the peer's, unless the peer is a configured trusted proxy
(``GEOBASE_TRUSTED_PROXIES``, none by default): then the right-most address of
``X-Forwarded-For`` that is not itself a trusted proxy (and ``X-Forwarded-Proto``). This one
address is what rate limits count and what the audit log records.

It is a plain ASGI middleware (no BaseHTTPMiddleware) so streamed responses stay streamed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass

import orjson
import psycopg
from psycopg_pool import PoolTimeout

from geobase import audit, uploads
from geobase.errors import GeobaseError, PayloadTooLarge, ServiceUnavailable, TooManyRequests
from geobase.settings import Settings
from geobase.vocab import NAME_BODY

log = logging.getLogger("geobase.limits")

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


def _error_response(exc: GeobaseError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = {"code": exc.code, "description": exc.message}
    if exc.parameter:
        body["parameter"] = exc.parameter
    headers = [(b"content-type", b"application/json")]
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        headers.append((b"retry-after", str(retry).encode()))
    if exc.status_code == 401:
        headers.append((b"www-authenticate", b'Bearer realm="geobase"'))
    data = orjson.dumps(body)
    headers.append((b"content-length", str(len(data)).encode()))
    return exc.status_code, headers, data


async def _send_error(send, exc: GeobaseError) -> None:
    status, headers, data = _error_response(exc)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class GateMiddleware:
    """See the module docstring."""

    def __init__(self, app, *, settings: Settings, resolver, pool_getter, audit_writer=None):
        self.app = app
        self.settings = settings
        self.resolver = resolver
        self.pool_getter = pool_getter
        self.audit_writer = audit_writer
        self.limits = Limits.from_settings(settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers

        from geobase.keys import KeyRefused, presented_token
        from geobase.security import Principal

        t0 = time.perf_counter()
        s = self.settings
        headers = Headers(scope=scope)
        path = scope.get("path", "/")
        client = scope.get("client") or (None, 0)
        peer = client[0]
        forwarded = headers.get("x-forwarded-for")
        ip = audit.client_ip(peer, forwarded, s.trusted_proxies)
        if ip != peer:  # believed from a trusted proxy: the app sees the real client too
            scope["client"] = (ip, client[1])
            proto = headers.get("x-forwarded-proto", "").strip().lower()
            if proto in ("http", "https"):
                scope["scheme"] = proto
        ctx = audit.AuditContext(method=scope.get("method", "GET"), path=path, client_ip=ip)
        qs = scope.get("query_string", b"")
        if qs:
            ctx.params["query"] = qs.decode("latin-1")
        agent = headers.get("user-agent")
        if agent is not None:
            ctx.params["user_agent"] = agent
        if forwarded is not None and ip == peer:
            ctx.params["forwarded_for_ignored"] = forwarded  # claimed by an untrusted peer: kept as a claim

        # 1. who is calling
        try:
            principal = await self.resolver.resolve_token(presented_token(headers))
        except GeobaseError as exc:
            # failed authentication: counted against the caller's IP (no key guessing at full
            # speed) and audited as auth.failed, with the key's id and holder when it exists
            # (an expired or revoked key) and the reason
            wait = self.limits.public.take(f"ip:{ip}")
            if wait is not None:
                return await _send_error(send, TooManyRequests(
                    "rate limit exceeded; slow down", retry_after=max(1, math.ceil(wait))))
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
            await _send_error(send, exc)
            await self._write_audit(ctx, exc.status_code, (time.perf_counter() - t0) * 1000)
            return
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.warning("key lookup failed: %s", exc)
            check = getattr(getattr(scope.get("app"), "state", None), "connection_check", None)
            if check is not None and isinstance(exc, psycopg.OperationalError):
                check.failed()  # pooled connections older than this failure get checked again
            return await _send_error(send, ServiceUnavailable("the database is unavailable, retry shortly",
                                                              retry_after=5))
        scope["geobase.principal"] = principal
        ctx.principal = principal

        # 2. rate limit
        if principal.is_public:
            wait = self.limits.public.take(f"ip:{ip}")
        else:
            wait = self.limits.keyed.take(f"key:{principal.key_id}")
        if wait is not None:
            return await _send_error(send, TooManyRequests(
                "rate limit exceeded; slow down", retry_after=max(1, math.ceil(wait))))

        # 3. body size
        cls = request_class(path)
        max_body = uploads.body_limit(s, path) if cls == "upload" else s.max_body_bytes
        length = headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = -1
            if n < 0:
                return await _send_error(send, _bad_length())
            if n > max_body:
                return await _send_error(send, PayloadTooLarge(
                    f"request body of {n} bytes exceeds the limit of {max_body} bytes", parameter="body"))
        received = 0
        too_large: list[bool] = []

        async def limited_receive():
            # a body without Content-Length is counted as it streams; past the limit the app sees
            # a disconnect and the gate answers 413 itself (whatever the app tried to reply)
            nonlocal received
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    too_large.append(True)
                    return {"type": "http.disconnect"}
            return message

        # 4. concurrency of expensive classes
        sem = self.limits.tile if cls == "tile" else self.limits.export if cls == "export" else None
        if sem is not None:
            try:
                await asyncio.wait_for(sem.acquire(), timeout=s.pool_timeout_s)
            except asyncio.TimeoutError:
                return await _send_error(send, ServiceUnavailable(
                    f"too many {cls} requests at once; retry shortly", retry_after=2))

        status: list[int] = []

        keyed = not principal.is_public
        audited: list[bool] = []

        async def capture_send(message):
            if too_large and not status:
                return  # swallowed: the 413 below replaces it
            if message["type"] == "http.response.start":
                status.append(message["status"])
                if scope.get(CALLER_DEPENDENT):
                    message = {**message, "headers": caller_dependent_headers(message.get("headers") or [], keyed)}
            elif (message["type"] == "http.response.body" and not message.get("more_body") and status
                  and not audited):
                # the reply is complete but its last bytes not yet sent: commit its audit row first
                # (bounded wait, see AuditWriter.wait_written), so no reply outlives its row
                audited.append(True)
                if self._audit_decision(ctx, path, status[0]):
                    await self._write_audit(ctx, status[0], (time.perf_counter() - t0) * 1000, wait=True)
            await send(message)

        token = audit.begin(ctx)
        try:
            try:
                await self.app(scope, limited_receive, capture_send)
            except Exception:
                if not (too_large and not status):
                    raise
            if too_large and not status:
                status.append(413)
                await _send_error(send, PayloadTooLarge(
                    f"request body exceeds the limit of {max_body} bytes", parameter="body"))
        finally:
            if sem is not None:
                sem.release()
            audit.end(token)
            final = status[0] if status else 500
            if not audited and self._audit_decision(ctx, path, final):
                await self._write_audit(ctx, final, (time.perf_counter() - t0) * 1000)

    @staticmethod
    def _audit_decision(ctx: audit.AuditContext, path: str, status: int) -> bool:
        """Complete the request's audit facts and say whether it gets a row."""
        if not ctx.layers and ctx.method not in audit.READ_METHODS:
            m = LAYER_IN_PATH_RE.match(path)  # writes name their layer in the path (ingest, sharing)
            if m:
                ctx.layers.add(m.group(1))
        if status in (401, 403):  # refused for lack of a key or role: always audited
            ctx.force = True
            ctx.action = ctx.action or "access.denied"
        return ctx.should_write()

    async def _write_audit(self, ctx: audit.AuditContext, status: int, duration_ms: float,
                           wait: bool = False) -> None:
        if self.audit_writer is not None:
            seq = self.audit_writer.submit(ctx, status, duration_ms)
            if wait:
                await self.audit_writer.wait_written(seq, AUDIT_WAIT_S)
            return
        try:
            async with self.pool_getter().connection(timeout=max(1.0, self.settings.pool_timeout_s)) as conn:
                await audit.write(conn, ctx, status, duration_ms)
        except Exception as exc:  # the reply is already sent; never turn it into an error
            log.error("audit row not written (%s %s by %s): %s", ctx.method, ctx.path,
                      ctx.principal.key_id or "public", exc)


AUDIT_WAIT_S = 1.0  # longest a finished reply waits for its audit row's commit (database slow or away)
CALLER_DEPENDENT = "geobase.caller_dependent"  # scope flag set when a route consulted the principal


def caller_dependent_headers(headers: list[tuple[bytes, bytes]], keyed: bool) -> list[tuple[bytes, bytes]]:
    """Response headers of a reply that depends on who asked (see the module docstring, 6).

    ``Vary`` gains the key headers (merged with what is there, e.g. ``Accept-Encoding``). A keyed
    reply becomes ``Cache-Control: private`` — its ``public`` directive, if any, removed and other
    directives (max-age, no-store, immutable) kept — so only the caller's own cache keeps it.
    A public reply keeps its caching: it is the same for every caller without a key, and Vary
    keeps it from being served to a keyed caller."""
    out: list[tuple[bytes, bytes]] = []
    vary: list[bytes] = []
    cache: list[bytes] = []
    for k, v in headers:
        lk = k.lower()
        if lk == b"vary":
            vary += [p.strip() for p in v.split(b",") if p.strip()]
        elif lk == b"cache-control":
            cache += [p.strip() for p in v.split(b",") if p.strip()]
        else:
            out.append((k, v))
    if b"*" not in vary:
        have = {p.lower() for p in vary}
        vary += [h for h in (b"Authorization", b"X-API-Key") if h.lower() not in have]
    out.append((b"vary", b", ".join(vary)))
    if keyed:
        cache = [p for p in cache if p.lower() not in (b"public", b"private")]
        if not any(p.lower() == b"no-store" for p in cache):
            cache.insert(0, b"private")
    if cache:
        out.append((b"cache-control", b", ".join(cache)))
    return out


def _bad_length() -> GeobaseError:
    from geobase.errors import InvalidInput

    return InvalidInput("Content-Length is not a non-negative integer", parameter="Content-Length")

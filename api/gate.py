"""The request gate, as ASGI middleware: every HTTP request passes here before any router sees it.

In order, it
1. resolves the caller's key (401 for an invalid/expired/revoked key — never silently public),
2. applies the per-caller token bucket (429 + Retry-After),
3. refuses oversized bodies (413; uploads have their own, larger limit),
4. bounds concurrent tile renders and exports (wait briefly, then 503 + Retry-After),
5. collects and, before the reply's last bytes are sent, writes the request's audit row
   (:mod:`geobase.audit`, queued to :class:`geobase.audit_writer.AuditWriter`),
6. marks every response that depended on the caller (the principal was consulted, see
   :func:`get_principal`) as such for caches: ``Vary: Authorization, X-API-Key`` always, and
   ``Cache-Control: private`` when a key was presented, so no shared proxy serves one
   department's catalog, tiles or map config to another caller or to the public.

What is decided — buckets, limits, which address is the client's, what is audited — is the
core's (:mod:`geobase.limits`); this module only speaks ASGI. It is a plain ASGI middleware (no
BaseHTTPMiddleware) so streamed responses stay streamed. :func:`get_principal` is the FastAPI
dependency through which every route learns who calls.

Steps 1-2, the bound of step 4 and the audit writing are :class:`Admission`, which the tile fast path shares
(``api/tile_fast.py``: cached tiles answered before FastAPI's stack, ``api/app.py``
``GeobaseApp``): the same buckets, key resolver and audit writer for every request. A request it
admitted and then leaves to the routers is marked :data:`ADMITTED` and not admitted again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import orjson
import psycopg
from fastapi import Request
from psycopg_pool import PoolTimeout
from starlette.datastructures import Headers

from geobase import audit
from geobase import limits as policy
from geobase.errors import GeobaseError, ServiceUnavailable
from geobase.api.negotiation import HEAD_REQUEST
from geobase.keys import presented_token
from geobase.principal import Principal
from geobase.settings import Settings

log = logging.getLogger("geobase.limits")

#: statuses whose reply has no body: complete for the client once its head is written
HEAD_ONLY_STATUSES = frozenset({204, 304})

CALLER_DEPENDENT = "geobase.caller_dependent"  # scope flag set when a route consulted the principal


async def get_principal(request: Request) -> Principal:
    """FastAPI dependency: resolve ``Authorization: Bearer <key>`` or ``X-API-Key``.

    Every route whose answer depends on the caller gets the caller here, and only here; so this
    is also where the response is marked caller-dependent, and the gate then sends
    ``Vary: Authorization, X-API-Key`` and, for a keyed caller, ``Cache-Control: private`` — no
    route has to remember to."""
    request.scope[CALLER_DEPENDENT] = True
    resolver = getattr(request.app.state, "principal_resolver", None)
    if resolver is None:
        # fail closed: without key checking every caller would silently be treated as public
        raise RuntimeError("key checking is not installed (app.state.principal_resolver): "
                           "refusing to treat the caller as public")
    return await resolver(request)


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


@dataclass
class _Request:
    """What the gate knows of one HTTP request while it passes."""

    scope: dict
    headers: Headers | dict[str, str]  # anything with ``get(name)``: the first value of that header
    path: str
    ip: str | None
    ctx: audit.AuditContext
    t0: float = field(default_factory=time.perf_counter)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000


#: scope key of a request already admitted (caller resolved, rate token taken) by the tile fast
#: path before FastAPI (:mod:`geobase.api.tile_fast`): ``(_Request, Principal)``. A request it
#: then leaves to the routers is not admitted twice (no second token, no second key look-up).
ADMITTED = "geobase.admitted"


class Admission:
    """Steps 1-2 of the gate (the caller, the rate) and its audit writing, shared by
    :class:`GateMiddleware` and the tile fast path that answers cached tiles before FastAPI
    (:mod:`geobase.api.tile_fast`): one set of token buckets, one key resolver, one audit
    writer, so a cached tile is admitted by exactly the rules of every other request."""

    def __init__(self, *, settings: Settings, resolver, pool_getter, audit_writer=None):
        self.settings = settings
        self.resolver = resolver
        self.pool_getter = pool_getter
        self.audit_writer = audit_writer
        self.limits = policy.Limits.from_settings(settings)

    def arrive(self, scope, headers) -> _Request:
        """The client's address (from a trusted proxy's X-Forwarded-For, also for the app) and
        the request's audit facts. ``headers``: the request's headers (``get`` gives the first)."""
        path = scope.get("path", "/")
        client = scope.get("client") or (None, 0)
        peer = client[0]
        forwarded = headers.get("x-forwarded-for")
        ip = policy.client_ip(peer, forwarded, self.settings.trusted_proxies)
        if ip != peer:  # believed from a trusted proxy: the app sees the real client too
            scope["client"] = (ip, client[1])
            proto = headers.get("x-forwarded-proto", "").strip().lower()
            if proto in ("http", "https"):
                scope["scheme"] = proto
        ctx = policy.request_context("HEAD" if scope.get(HEAD_REQUEST) else scope.get("method", "GET"), path, ip, peer, scope.get("query_string", b""),
                                     headers.get("user-agent"), forwarded)
        return _Request(scope, headers, path, ip, ctx)

    async def authenticate(self, req: _Request, send) -> Principal | None:
        """Who is calling; None when the request was refused (and answered) instead."""
        try:
            principal = await self.resolver.resolve_token(presented_token(req.headers))
        except GeobaseError as exc:
            refusal = policy.rate_refusal(policy.failed_auth_wait(self.limits, req.ip))
            if refusal is not None:
                await _send_error(send, refusal)
                return None
            policy.note_auth_failure(req.ctx, exc)
            await _send_error(send, exc)
            await self.write_audit(req.ctx, exc.status_code, req.elapsed_ms())
            return None
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.warning("key lookup failed: %s", exc)
            check = getattr(getattr(req.scope.get("app"), "state", None), "connection_check", None)
            if check is not None and isinstance(exc, psycopg.OperationalError):
                check.failed()  # pooled connections older than this failure get checked again
            await _send_error(send, ServiceUnavailable("the database is unavailable, retry shortly", retry_after=5))
            return None
        req.scope["geobase.principal"] = principal
        req.ctx.principal = principal
        return principal

    def rate_refusal(self, req: _Request, principal: Principal) -> GeobaseError | None:
        """Take the caller's token (429 when its bucket is empty)."""
        return policy.rate_refusal(policy.rate_wait(self.limits, principal, req.ip))

    async def take_slot(self, cls: str) -> tuple[asyncio.Semaphore | None, GeobaseError | None]:
        """Step 4, the concurrency bound of the request class (tile renders, exports): (the
        semaphore taken — the caller releases it when done —, None), (None, None) for a class
        without a bound, or (None, the 503) after waiting ``GEOBASE_POOL_TIMEOUT_S`` in vain."""
        sem = self.limits.semaphore(cls)
        if sem is None:
            return None, None
        if not sem.locked():  # a slot free: taken at once (wait_for would run a task for it)
            await sem.acquire()
            return sem, None
        try:
            await asyncio.wait_for(sem.acquire(), timeout=self.settings.pool_timeout_s)
        except asyncio.TimeoutError:
            return None, ServiceUnavailable(f"too many {cls} requests at once; retry shortly", retry_after=2)
        return sem, None

    async def write_audit(self, ctx: audit.AuditContext, status: int, duration_ms: float,
                          wait: bool = False) -> None:
        if self.audit_writer is not None:
            seq = self.audit_writer.submit(ctx, status, duration_ms)
            if wait:
                await self.audit_writer.wait_written(seq, policy.AUDIT_WAIT_S)
            return
        try:
            async with self.pool_getter().connection(timeout=max(1.0, self.settings.pool_timeout_s)) as conn:
                await audit.write(conn, ctx, status, duration_ms)
        except Exception as exc:  # the reply is already sent; never turn it into an error
            log.error("audit row not written (%s %s by %s): %s", ctx.method, ctx.path,
                      ctx.principal.key_id or "public", exc)


class GateMiddleware:
    """See the module docstring."""

    def __init__(self, app, *, settings: Settings, resolver, pool_getter, audit_writer=None,
                 admission: Admission | None = None):
        self.app = app
        self.settings = settings
        self.resolver = resolver
        self.audit_writer = audit_writer
        #: shared with the tile fast path when given (api/app.py install_gate)
        self.admission = admission or Admission(settings=settings, resolver=resolver, pool_getter=pool_getter,
                                                audit_writer=audit_writer)
        if self.admission.resolver is not resolver or self.admission.audit_writer is not audit_writer:
            raise RuntimeError("the gate's admission must use the gate's key checking and audit writer")
        self.limits = self.admission.limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        admitted = scope.get(ADMITTED)
        if admitted is not None:  # admitted by the tile fast path, which left the answer to the routers
            req, principal = admitted
            refusal = None
        else:
            req = self.admission.arrive(scope, Headers(scope=scope))
            principal = await self.admission.authenticate(req, send)
            if principal is None:
                return  # refused, and answered
            refusal = self.admission.rate_refusal(req, principal)
        cls = policy.request_class(req.path)
        max_body = policy.body_limit(self.settings, req.path, cls)
        refusal = refusal or policy.content_length_refusal(req.headers.get("content-length"), max_body)
        if refusal is not None:
            return await _send_error(send, refusal)
        sem, refusal = await self.admission.take_slot(cls)
        if refusal is not None:
            return await _send_error(send, refusal)
        await self._pass(req, principal, max_body, sem, receive, send)

    async def _pass(self, req: _Request, principal: Principal, max_body: int, sem: asyncio.Semaphore | None,
                    receive, send) -> None:
        """Run the app with the body counted against ``max_body`` and the reply's headers and
        audit row seen to; answer 413 itself when a streamed body grew too large. Releases the
        concurrency slot ``sem`` (taken by the caller) when the app is done."""
        received = 0
        too_large: list[bool] = []
        status: list[int] = []
        audited: list[bool] = []
        keyed = not principal.is_public

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

        async def commit_audit() -> None:
            # the reply is complete but its last bytes not yet sent: commit its audit row first
            # (bounded wait, see AuditWriter.wait_written), so no reply outlives its row
            audited.append(True)
            if policy.audit_decision(req.ctx, req.path, status[0]):
                await self.admission.write_audit(req.ctx, status[0], req.elapsed_ms(), wait=True)

        async def capture_send(message):
            if too_large and not status:
                return  # swallowed: the 413 below replaces it
            if message["type"] == "http.response.start":
                status.append(message["status"])
                if req.scope.get(CALLER_DEPENDENT):
                    message = {**message, "headers": caller_dependent_headers(message.get("headers") or [], keyed)}
                if message["status"] in HEAD_ONLY_STATUSES or req.scope.get(HEAD_REQUEST):
                    # a reply that is whole once its head arrives (204, 304, an answer to HEAD):
                    # the server writes the head at once, so its row is committed before it
                    await commit_audit()
            elif message["type"] == "http.response.body" and not message.get("more_body") and status and not audited:
                await commit_audit()
            await send(message)

        token = audit.begin(req.ctx)
        try:
            try:
                await self.app(req.scope, limited_receive, capture_send)
            except Exception:
                if not (too_large and not status):
                    raise
            if too_large and not status:
                status.append(413)
                await _send_error(send, policy.body_too_large(max_body))
        finally:
            if sem is not None:
                sem.release()
            audit.end(token)
            final = status[0] if status else 500
            if not audited and policy.audit_decision(req.ctx, req.path, final):
                await self.admission.write_audit(req.ctx, final, req.elapsed_ms())


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
        if lk == b"vary":  # each name once (GZip adds Accept-Encoding to a streamed answer's own)
            seen = {p.lower() for p in vary}
            for p in (p.strip() for p in v.split(b",")):
                if p and p.lower() not in seen:
                    vary.append(p)
                    seen.add(p.lower())
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

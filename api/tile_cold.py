"""Cold vector tiles on the fast path (:mod:`geobase.api.tile_fast`): a tile the cache does not
hold is rendered there too, by the very functions the router path calls, without FastAPI's
middleware stack and dependency machinery.

Why: a cold tile's answer was the tile statement plus a fixed cost that was mostly not ours to
pay: routing over every route of every router, solving the dependencies (connection, registry,
principal, parameter checks, content negotiation) and passing half a dozen middlewares. At
z15-z16 and for an empty tile that fixed cost was as large as the statement (issue #15: 13 ms
for an empty tile against tipg's 5.5 ms).

One implementation of each rule, shared with the routers (``api/tiles.py`` ``_render``):
  * the tile: :func:`geobase.tiles.service.tile_for` with the app's pool, tile cache, states
    hint, pyramid database and tile statement timeout — access, hidden attributes and classes,
    desensitisation, a key's box, grades and zones, the versions read in the same snapshot as
    the rows, the cache key, the ETag, the audit notes: all decided there;
  * the bound on concurrent renders: the gate's :meth:`geobase.api.gate.Admission.take_slot`
    (same semaphore, same wait, the same 503, unaudited as there);
  * errors of the render (a statement timeout, no connection free, the database away, a value
    it refused, a layer hidden since the guess): answered by the app's own exception handler
    for that exception (``install_error_handlers``), found by the exception's class as
    Starlette finds it; an exception without one goes on to the routers, which meet it again;
  * the answer's bytes: an answer whose body is not already encoded (a tile for a client
    without gzip, an error) is sent through the app's own middlewares inside the gate, built as
    ``create_app`` configured them (:func:`inner_stack`: GZip and the others), and then gets the
    gate's caller-dependent headers (:func:`~geobase.api.gate.caller_dependent_headers`), in
    the order the stack applies them, so it leaves exactly as a route's answer does
    (tests/test_tile_fast_cold.py compares them). A gzip tile, a 204 and a 304 pass those
    middlewares unchanged, and so does a tile for a client without gzip while they are the ones
    ``create_app`` installs (:func:`_plain_for_identity`), so their head is written directly
    (``api/tile_fast.py``).

What it leaves to the routers: a server with read replicas (the replica routing and its
read-your-writes token are ``ReadRoutingMiddleware``'s), a tile outside the matrix, and
everything the fast path itself does not take (other parameters, ``division``, ``version``,
``datetime``, HEAD, a body).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request

from geobase.api.gate import Admission, GateMiddleware, caller_dependent_headers
from geobase.errors import GeobaseError, InvalidInput
from geobase.principal import Principal
from geobase.tiles.service import TileResult, tile_for
from geobase.tiles.tms import WEB_MERCATOR_QUAD

#: scope key of the answer the app's inner middlewares are asked to pass on (see :meth:`ColdTiles.send`)
_ANSWER = "geobase.tile_answer"


class SlotRefused(Exception):
    """The render bound was full past the wait: the gate's 503, sent as the gate sends it."""

    def __init__(self, refusal: GeobaseError):
        super().__init__(refusal.message)
        self.refusal = refusal


async def _answer_app(scope, receive, send) -> None:
    """The innermost app of :meth:`ColdTiles.send` (where the router is in the app): the prepared
    answer, as a route's Response sends it."""
    status, head, body = scope.pop(_ANSWER)
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _plain_for_identity() -> frozenset[type]:
    """The middlewares inside the gate that leave a tile answered to a client without gzip as
    :func:`~geobase.api.gate.caller_dependent_headers` leaves it: GZip's identity responder
    (such a client) only merges ``Accept-Encoding`` into ``Vary``, which the tile's ``Vary``
    names already (and the gate's headers merge it again); read routing does nothing without
    replicas (a server with replicas is not the fast path's, :meth:`ColdTiles.renders`); the
    documentation routes' check does nothing for another path."""
    from starlette.middleware.gzip import GZipMiddleware

    from geobase.api.deps import ReadRoutingMiddleware
    from geobase.api.params import _NoParamsOnDocs

    return frozenset({GZipMiddleware, ReadRoutingMiddleware, _NoParamsOnDocs})


def inner_stack(app, endpoint):
    """``endpoint`` wrapped in the app's own middlewares that sit inside the request gate (read
    routing, GZip, the documentation routes' parameter check ...), each built as ``create_app``
    configured it: an answer sent through it leaves it exactly as a route's answer leaves the
    same middlewares (e.g. GZip's ``Vary``, and its compression of a body that a streaming
    middleware hands it in parts)."""
    stack = list(app.user_middleware)
    gate = next(i for i, m in enumerate(stack) if m.cls is GateMiddleware)
    for m in reversed(stack[gate + 1:]):
        endpoint = m.cls(endpoint, *m.args, **m.kwargs)
    return endpoint


class ColdTiles:
    """Renders a cache miss for the fast path; see the module docstring."""

    def __init__(self, app, admission: Admission):
        self.handlers = app.exception_handlers  # the app's, as install_error_handlers filled them
        self.admission = admission
        self._stack = inner_stack(app, _answer_app)
        stack = list(app.user_middleware)
        inner = stack[next(i for i, m in enumerate(stack) if m.cls is GateMiddleware) + 1:]
        #: a tile for a client without gzip is written directly (as a gzip tile is), not sent through
        #: the app's middlewares, when each of them is one known to leave it so (_plain_for_identity)
        self.identity_direct = all(m.cls in _plain_for_identity() for m in inner)

    @staticmethod
    def renders(state, z: int, x: int, y: int) -> bool:
        """Whether this server's cold tile is the fast path's to render (else the routers')."""
        if getattr(getattr(state, "pool", None), "replicas", True):  # replicas: ReadRoutingMiddleware's
            return False
        if any(getattr(state, a, None) is None for a in ("tile_cache", "tile_states_hint", "tiles_db_url")):
            return False
        try:
            WEB_MERCATOR_QUAD.validate(z, y, x)
        except InvalidInput:
            return False  # refused by the routers, naming the parameter
        return True

    async def render(self, state, principal: Principal, layers: str, z: int, x: int, y: int,
                     if_none_match: str | None, after: list[Callable[[], None]] | None = None,
                     gzip: bool = True) -> TileResult:
        """The tile as the routers' ``xyz_tile`` answers it (``tile_for``), within the gate's render
        bound (:class:`SlotRefused` past it); ``after`` and ``gzip``: see ``tile_for`` (the
        cache write, and the compression a client without gzip does not need, wait until the
        answer is sent)."""
        slot, refusal = await self.admission.take_slot("tile")
        if refusal is not None:
            raise SlotRefused(refusal)
        try:
            settings = state.settings
            async with state.pool.connection(timeout=settings.pool_timeout_s) as conn:
                return await tile_for(conn, state.tile_cache, state.registry, principal, layers, WEB_MERCATOR_QUAD,
                                      z, y, x, hint=state.tile_states_hint, if_none_match=if_none_match,
                                      timeout_ms=settings.tile_statement_timeout_ms, pyramid_url=state.tiles_db_url,
                                      after=after, gzip=gzip)
        finally:
            if slot is not None:
                slot.release()

    async def error(self, scope, receive, exc: Exception) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """(status, headers, body) of the app's exception handler for ``exc``; None when the app
        has no (async) handler for it: the routers take the request then."""
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                break
        else:
            return None
        if not asyncio.iscoroutinefunction(handler) or isinstance(exc, SlotRefused):
            return None
        response = await handler(Request(scope, receive), exc)
        return response.status_code, list(response.raw_headers), response.body

    async def send(self, scope, receive, send, answer: tuple[int, list[tuple[bytes, bytes]], bytes], keyed: bool,
                   timing: tuple[bytes, bytes], before_last: Callable[[int], Awaitable[None]]) -> None:
        """Send ``answer`` (a route's status, headers and body) as the stack would: through the
        app's middlewares inside the gate (:func:`inner_stack`), then the gate's caller-dependent headers (``keyed``: a key was
        presented) and Server-Timing; ``before_last(status)`` is awaited before the body's last
        bytes go out (the gate commits the audit row there)."""
        status: list[int] = []

        async def outer(message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                message = {**message, "headers": [*caller_dependent_headers(message["headers"], keyed), timing]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await before_last(status[0])
            await send(message)

        scope[_ANSWER] = answer
        await self._stack(scope, receive, outer)

"""The fast path of XYZ vector tiles, in front of FastAPI: ``GeobaseApp`` (api/app.py) asks it
first, before any middleware of the stack, and it answers ``GET /tiles/{layers}/{z}/{x}/{y}.mvt[?v=…]``
for a caller who may see the layers: a cache hit or a 304 here, a miss rendered by
:mod:`geobase.api.tile_cold` (the routers' ``tile_for``); every other request goes on to FastAPI,
untouched.

Why: a map asks for dozens of tiles per view, nearly all cached. Through FastAPI a hit spent
most of its time in routing, dependency resolution, the generic middlewares and one catalog
query of its own; here it costs a regular expression, the gate's admission, the access decision
and a dictionary look-up, and one catalog query serves every tile request in flight
(:mod:`geobase.tiles.fresh`). A miss paid the same fixed cost around its statement: at z15-z16
and for an empty tile as much as the statement itself (issue #15).

What stays exactly as on the ordinary path:
  * the gate's admission, shared with it (:class:`geobase.api.gate.Admission`: one key
    resolver, one set of token buckets, one audit writer): key checking (401, audited), rate
    limits (429), a trusted proxy's client address; the audit row is committed before the
    answer's body is sent, as the gate does. A request that declares a body (Content-Length,
    Transfer-Encoding) is left to the gate (its body limit, 413). A request admitted here and
    then left to the routers is marked (:data:`geobase.api.gate.ADMITTED`), so the gate neither
    takes a second token nor resolves the key again. The tile concurrency bound is taken by a
    render only (:meth:`~geobase.api.gate.Admission.take_slot`, the gate's: its 503 when full),
    not by a cached answer, whose one catalog read is shared;
  * the caller-dependent ``Vary``/``Cache-Control`` are the gate's rule too (its
    ``caller_dependent_headers``);
  * who may see which layer and which attributes: :func:`geobase.tiles.service.cached_tile`
    (a hit) and :func:`geobase.tiles.service.tile_for` (a miss) decide with
    :mod:`geobase.security` (``can_see``, the view signature of masked attributes,
    desensitisation, a key's box, grades) from states read after the request arrived, and note
    the layers read for the audit as the ordinary path does;
  * the answer: the same status, body and headers (tests/test_tiles_fast.py compares hits,
    tests/test_tile_fast_cold.py misses). A gzip tile, a 204 and a 304 pass the stack's own
    middlewares unchanged, so their head is written here; any other answer (a tile for a client
    without gzip, an error of a render) is sent through those middlewares
    (:meth:`geobase.api.tile_cold.ColdTiles.send`).

It answers nothing it is not sure of: any other path, method (HEAD included), query parameter or
value (``division``, ``version``, ``datetime``, ``tms``), an ``Accept`` the tile is not offered
for, a layer the caller may not see (judged on the states read last, then on fresh ones), a
tile outside the matrix, a server with read replicas, an error of its own — all go on to
FastAPI, which renders, refuses (400 naming the parameter, 404, 406) and audits as always.
``GEOBASE_TILE_FAST_PATH=false`` switches it off.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Callable
from functools import lru_cache

from geobase import audit
from geobase import limits as policy
from geobase.api.gate import ADMITTED, Admission, _send_error, caller_dependent_headers
from geobase.api.negotiation import TILE, best
from geobase.api.tile_cold import ColdTiles, SlotRefused
from geobase.catalog.state import STATES_SQL, LayerState, states_from_rows
from geobase.principal import Principal
from geobase.security import reads_format
from geobase.tiles import render
from geobase.tiles.fresh import StatesFeed
from geobase.tiles.ogc import MVT_TYPE
from geobase.tiles.service import TileResult, TileView, cached_tile, note_reads, tile_view
from geobase.tiles.tms import WEB_MERCATOR_QUAD

_NUMBER = r"(0|[1-9][0-9]{0,9})"
PATH_RE = re.compile(rf"/tiles/([A-Za-z0-9_,]{{1,1000}})/{_NUMBER}/{_NUMBER}/{_NUMBER}\.mvt")
#: the one query the fast path takes: none, or the version tag TileJSON and the style write
QUERY_RE = re.compile(rb"(?:v=([A-Za-z0-9_-]{1,64}))?")

log = logging.getLogger("geobase.api")


def install_tile_fast_path(app, admission: Admission) -> None:
    """``app.state.tile_fast_path``, asked first by ``GeobaseApp`` (api/app.py), admitting with
    the gate's own ``admission``; None when ``GEOBASE_TILE_FAST_PATH`` is false."""
    app.state.tile_fast_path = (TileFastPath(app.state, admission, ColdTiles(app, admission))
                                if app.state.settings.tile_fast_path else None)


@lru_cache(maxsize=256)
def _offers_mvt(accept: str | None) -> bool:
    """Whether content negotiation picks the tile for this ``Accept`` (a handful of distinct values)."""
    return best(accept, TILE) == "mvt"


def _first_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's headers by name, the first of each (as Starlette's ``Headers.get`` reads them)."""
    out: dict[str, str] = {}
    for k, v in raw:
        name = k.decode("latin-1")
        if name not in out:
            out[name] = v.decode("latin-1")
    return out


class TileFastPath:
    """See the module docstring."""

    def __init__(self, state, admission: Admission, cold: ColdTiles):
        self.state = state  # the app's state: registry, tile cache, pool (opened by the lifespan)
        self.admission = admission
        self.cold = cold  # renders a miss (api/tile_cold.py)
        #: (etag, Cache-Control, keyed, body length, cached) -> the answer's head (prepared once)
        self._heads: dict[tuple, list[tuple[bytes, bytes]]] = {}
        self._feed: StatesFeed | None = None
        self._rows: list | None = None  # the rows of the last states read, and their states
        self._states: dict[str, LayerState] | None = None
        #: (caller, layers segment) -> TileView | None, for the states object ``self._states``
        self._views: dict[tuple[Principal, str], TileView | None] = {}

    def _states_feed(self, state) -> StatesFeed:
        if self._feed is None:
            async def read() -> dict[str, LayerState]:
                async with state.pool.connection() as conn:
                    rows = await (await conn.execute(STATES_SQL)).fetchall()
                if rows != self._rows:  # a new version or a sharing change: new states, no views
                    self._rows, self._states, self._views = rows, states_from_rows(rows), {}
                return self._states

            self._feed = StatesFeed(read, state.settings.tile_states_max_age_ms / 1000)
        return self._feed

    def _view(self, registry, principal: Principal, states: dict[str, LayerState], layers: str) -> TileView | None:
        """:func:`tile_view`, kept while the states read are the same (it depends on nothing else)."""
        if states is not self._states:  # (a read that has since been replaced)
            return tile_view(registry, principal, states, layers)
        key = (principal, layers)
        try:
            return self._views[key]
        except KeyError:
            if len(self._views) > 10_000:
                self._views.clear()
            view = self._views[key] = tile_view(registry, principal, states, layers)
            return view

    async def __call__(self, scope, receive, send) -> bool:
        """Answer the request (True): a cache hit, a 304, a rendered miss, or a refusal as the gate
        would answer it (401, 429, 503); False: not answered, FastAPI takes it."""
        if scope["method"] != "GET" or not scope["path"].startswith("/tiles/"):
            return False
        m = PATH_RE.fullmatch(scope["path"])
        q = QUERY_RE.fullmatch(scope.get("query_string", b""))
        if m is None or q is None:
            return False
        headers = _first_headers(scope["headers"])
        if "content-length" in headers or "transfer-encoding" in headers or not _offers_mvt(headers.get("accept")):
            return False  # a body is the gate's to limit; 406 is FastAPI's to answer
        admission = self.admission
        req = admission.arrive(scope, headers)
        principal = await admission.authenticate(req, send)
        if principal is None:
            return True  # refused (401, 503) and audited as by the gate
        refusal = admission.rate_refusal(req, principal)
        if refusal is not None:
            await _send_error(send, refusal)
            return True
        scope[ADMITTED] = (req, principal)  # the gate takes no second token if the routers answer
        token = audit.begin(req.ctx)
        after: list[Callable[[], None]] = []  # a rendered tile's cache write: once the answer is sent
        try:
            answer = await self._answer(scope, receive, m, q, principal, headers, after)
        except SlotRefused as exc:  # the render bound is full: the gate's 503, unaudited as there
            await _send_error(send, exc.refusal)
            return True
        except Exception:  # never an error of its own: the ordinary path answers instead
            log.exception("tile fast path failed on %s; answered by the routers", scope["path"])
            answer = None
        finally:
            audit.end(token)
        if answer is None:
            return False
        await self._send(scope, receive, send, req, principal, answer)
        for step in after:
            try:
                step()
            except Exception:  # the answer is out: a tile not stored is only a later miss
                log.exception("tile not stored in the cache after answering %s", scope["path"])
        return True

    async def _send(self, scope, receive, send, req, principal: Principal, answer: tuple) -> None:
        """Send the answer, its audit row committed first (before the head: a 204 or 304 has no
        body to hold back)."""
        status, head, body, final = answer
        timing = (b"server-timing", b"tile;dur=%.2f;desc=fast" % req.elapsed_ms())

        async def audited(status: int) -> None:
            if policy.audit_decision(req.ctx, req.path, status):
                await self.admission.write_audit(req.ctx, status, req.elapsed_ms(), wait=True)

        if not final:  # a route's headers, and a body the stack may still encode
            await self.cold.send(scope, receive, send, (status, head, body), not principal.is_public, timing, audited)
            return
        # the row before the head: a 204 or a 304 is complete for the client with its head (no
        # body follows), so committing it "before the last bytes" would let such a reply
        # outrun its row
        await audited(status)
        await send({"type": "http.response.start", "status": status, "headers": [*head, timing]})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope, receive, m: re.Match, q: re.Match, principal: Principal,
                      headers: dict[str, str], after: list[Callable[[], None]]) -> tuple | None:
        """(status, headers, body, final) of a hit, a 304 or a rendered miss (``final``: the
        headers as sent, else a route's, see :meth:`_send`); None to let FastAPI answer."""
        if not reads_format(principal, "mvt"):
            return None  # a key not granted vector tiles: FastAPI refuses it (403)
        state = self.state
        registry, cache = getattr(state, "registry", None), getattr(state, "tile_cache", None)
        if registry is None or cache is None or getattr(state, "pool", None) is None:
            return None
        inm = headers.get("if-none-match")
        tile = (m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))
        layers, z, x, y = tile
        v = q.group(1).decode() if q.group(1) else None
        encoding = headers.get("accept-encoding") or ""
        guess, probe = self._states, None
        if guess is not None:
            # with the states read last as a guess: a probable refusal goes on at once, and a
            # probable miss is rendered at once (tile_for reads the states with the tile)
            view = self._view(registry, principal, guess, layers)
            if view is None:
                # the guess may be what is stale (a layer visible again): read again in the
                # background, so that it does not stay so
                self._states_feed(state).prefetch()
                return None
            probe = cached_tile(cache, principal, guess, view, WEB_MERCATOR_QUAD, z, y, x, inm, note=False)
            if probe is None:
                return await self._cold(scope, receive, principal, tile, inm, v, encoding, after)
        try:
            states = await self._states_feed(state).states()
        except Exception:
            return None  # the ordinary path meets the same error and answers it (503)
        hint = getattr(state, "tile_states_hint", None)
        if hint is not None:
            hint.states = states  # fresher than its guess: a miss after this renders in one round trip
        if states is guess:
            # the fresh read found every row as the guess had it (the feed keeps the very object
            # then): same view, same key, and the probe's bytes are today's tile
            note_reads(principal, states, view.specs)
            result = probe
        else:
            view = self._view(registry, principal, states, layers)
            if view is None:
                return None  # not found, hidden, invalid: refused (and audited) by the ordinary path
            result = cached_tile(cache, principal, states, view, WEB_MERCATOR_QUAD, z, y, x, inm)
            if result is None:
                return await self._cold(scope, receive, principal, tile, inm, v, encoding, after)
        return self._head(result, principal, v, encoding)

    async def _cold(self, scope, receive, principal: Principal, tile: tuple[str, int, int, int], inm: str | None,
                    v: str | None, encoding: str, after: list[Callable[[], None]]) -> tuple | None:
        """A miss, rendered as the routers render it (:class:`~geobase.api.tile_cold.ColdTiles`);
        its cache write (and, for a client without gzip, its compression) is appended to ``after``."""
        state = self.state
        layers, z, x, y = tile
        if not self.cold.renders(state, z, x, y):
            self._states_feed(state).prefetch()
            return None
        try:
            result = await self.cold.render(state, principal, layers, z, x, y, inm, after, "gzip" in encoding)
        except SlotRefused:
            raise
        except Exception as exc:
            error = await self.cold.error(scope, receive, exc)
            if error is None:
                raise  # no handler of the app's for it: the routers meet it again
            self._states_feed(state).prefetch()  # e.g. a layer hidden since the guess
            return (*error, False)
        fresh = state.tile_states_hint.states  # read with the tile
        if fresh is not self._states and fresh != self._states:
            self._states_feed(state).prefetch()  # the guess is behind: read again, so it does not stay so
        return self._head(result, principal, v, encoding)

    def _head(self, result: TileResult, principal: Principal, v: str | None, encoding: str) -> tuple:
        """The answer of ``result`` (see :meth:`_answer`): a cached tile's head is built once per
        tile and kind of answer (the bytes of every header but Server-Timing depend only on the
        key below); a tile for a client without gzip gets the same caller-dependent headers, or,
        when the app has a middleware inside the gate that is not known to leave such an answer
        alone (``ColdTiles.identity_direct``), goes out as a route's answer, through the stack's
        own middlewares (:meth:`ColdTiles.send`)."""
        cc = cache_control(principal, v, result.tag)
        keyed = not principal.is_public
        body_len = -1 if result.not_modified else len(result.body if result.body is not None else result.raw)
        key = (result.etag, cc, keyed, body_len, result.cached)
        head = self._heads.get(key) if "gzip" in encoding else None
        if head is not None:
            return (304 if result.not_modified else 204 if not body_len else 200), head, result.body, True
        status, fields, body, media = tile_answer(result, principal, v, encoding)
        head = [(k.lower().encode("latin-1"), val.encode("latin-1")) for k, val in fields.items()]
        if status not in (204, 304):  # as Starlette's Response writes them
            head.append((b"content-length", str(len(body)).encode()))
        if media is not None:
            head.append((b"content-type", media.encode()))
        if status == 200 and "Content-Encoding" not in fields and not self.cold.identity_direct:
            return status, head, body, False  # (a client without gzip: "gzip" not in encoding)
        # the caller-dependent headers as the gate writes them for a route that consulted the
        # principal (CALLER_DEPENDENT), by the gate's own function
        head = caller_dependent_headers(head, keyed)
        if result.cached and "gzip" in encoding:  # (a miss's head serves once: not kept)
            if len(self._heads) > 4096:  # (a few hundred bytes each)
                self._heads.clear()
            self._heads[key] = head
        return status, head, body, True


def cache_control(principal: Principal, v: str | None, tag: str | None) -> str:
    """Tile caching: a URL whose ``v`` is the current version tag of its content names bytes
    that never change (immutable, a year); any other URL revalidates every time (``no-cache``
    with the ETag, a 304 when nothing changed), so a browser never shows pre-ingest tiles. A
    stale ``v`` (a style fetched before an ingest) is answered with the current content, but
    never as immutable. ``private`` when the response depends on the caller."""
    scope = "public" if principal.is_public else "private"
    if v is not None and tag is not None and v == tag:
        return f"{scope}, max-age=31536000, immutable"
    return f"{scope}, no-cache"


def tile_answer(result: TileResult, principal: Principal, v: str | None, accept_encoding: str
                ) -> tuple[int, dict[str, str], bytes, str | None]:
    """(status, headers, body, media type) of a vector tile result — the one way both paths
    answer: 304 with the ETag, 204 for an empty tile, the stored gzip bytes to a client that
    accepts gzip, else the same bytes decompressed."""
    headers = {"Cache-Control": cache_control(principal, v, result.tag),
               "Vary": "Accept-Encoding, Authorization, X-API-Key", "ETag": result.etag}
    if result.not_modified:
        return 304, headers, b"", None
    headers["X-Tile-Cache"] = "hit" if result.cached else "miss"
    if not (result.body if result.body is not None else result.raw):  # (body None: not compressed yet)
        return 204, headers, b"", MVT_TYPE
    if "gzip" in accept_encoding:
        headers["Content-Encoding"] = "gzip"
        body = result.body if result.body is not None else render.gzip_tile(result.raw)
        return 200, headers, body, MVT_TYPE
    return 200, headers, result.raw if result.raw is not None else gzip.decompress(result.body), MVT_TYPE

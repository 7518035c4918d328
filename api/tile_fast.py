"""The fast path of cached XYZ vector tiles: the request gate asks it first (``cached=`` of
:class:`geobase.api.gate.GateMiddleware`), and it answers ``GET /tiles/{layers}/{z}/{x}/{y}.mvt[?v=…]``
when the tile is certainly a cache hit (or a 304) for this caller; every other request goes on
to FastAPI, untouched.

Why: a map asks for dozens of tiles per view, nearly all cached. Through FastAPI a hit spent
most of its time in routing, dependency resolution, the generic middlewares and one catalog
query of its own; here it costs a regular expression, the access decision and a dictionary
look-up, and one catalog query serves every tile request in flight (:mod:`geobase.tiles.fresh`).

What stays exactly as on the ordinary path:
  * the gate runs first: key checking (401), rate limits (429), the audit row; the
    caller-dependent ``Vary``/``Cache-Control`` are the gate's rule too (its
    ``caller_dependent_headers``, applied here once per combination). Only the tile concurrency bound is not taken
    by a cached answer (it bounds renders; the fast path renders nothing and its one catalog
    read is shared); a request it does not answer takes a slot before FastAPI sees it;
  * who may see which layer and which attributes: :func:`geobase.tiles.service.cached_tile`
    decides with :mod:`geobase.security` (``can_see``, the view signature of masked
    attributes) from states read after the request arrived, and notes the layers read for the
    audit as the ordinary path does;
  * the answer: the same status, body and headers (tests/test_tiles_fast.py compares the two).

It answers nothing it is not sure of: any other path, method, query parameter or value, an
``Accept`` the tile is not offered for, a client that does not accept gzip, a missing principal, a layer the caller may not see, a
miss, a database error — all go on to FastAPI, which renders, refuses (400 naming the
parameter, 404, 406) and audits as always. ``GEOBASE_TILE_FAST_PATH=false`` switches it off.
"""

from __future__ import annotations

import gzip
import re
import time
from functools import lru_cache

from geobase.api.gate import caller_dependent_headers
from geobase.api.negotiation import TILE, best
from geobase.catalog.state import STATES_SQL, LayerState, states_from_rows
from geobase.principal import Principal
from geobase.security import reads_format
from geobase.tiles.fresh import StatesFeed
from geobase.tiles.ogc import MVT_TYPE
from geobase.tiles.service import TileResult, TileView, cached_tile, note_reads, tile_view
from geobase.tiles.tms import WEB_MERCATOR_QUAD

_NUMBER = r"(0|[1-9][0-9]{0,9})"
PATH_RE = re.compile(rf"/tiles/([A-Za-z0-9_,]{{1,1000}})/{_NUMBER}/{_NUMBER}/{_NUMBER}\.mvt")
#: the one query the fast path takes: none, or the version tag TileJSON and the style write
QUERY_RE = re.compile(rb"(?:v=([A-Za-z0-9_-]{1,64}))?")


def install_tile_fast_path(app) -> None:
    """``app.state.tile_fast_path`` for the request gate (call before installing the gate),
    unless ``GEOBASE_TILE_FAST_PATH`` is false."""
    app.state.tile_fast_path = TileFastPath() if app.state.settings.tile_fast_path else None


class TileFastPath:
    """See the module docstring."""

    def __init__(self):
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

            self._feed = StatesFeed(read)
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

    async def __call__(self, scope, send) -> bool:
        """Answer the request if it is a certain cache hit or 304 (True); False: not answered."""
        if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].startswith("/tiles/"):
            return False
        t0 = time.perf_counter()
        answer = await self._answer(scope)
        if answer is None:
            return False
        status, headers, body = answer
        headers.append((b"server-timing", f"tile;dur={(time.perf_counter() - t0) * 1000:.2f};desc=fast".encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True

    async def _answer(self, scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """(status, headers, body) of a certain hit or 304; None to let FastAPI answer."""
        m = PATH_RE.fullmatch(scope["path"])
        q = QUERY_RE.fullmatch(scope.get("query_string", b""))
        principal = scope.get("geobase.principal")
        if m is None or q is None or not isinstance(principal, Principal) or not reads_format(principal, "mvt"):
            return None  # a key not granted vector tiles: FastAPI refuses it (403)
        accept = encoding = inm = None
        for k, val in scope["headers"]:  # the first of each, as Starlette's Headers.get reads them
            if k == b"accept" and accept is None:
                accept = val.decode("latin-1")
            elif k == b"accept-encoding" and encoding is None:
                encoding = val
            elif k == b"if-none-match" and inm is None:
                inm = val.decode("latin-1")
        if best(accept, TILE) != "mvt" or encoding is None or b"gzip" not in encoding:
            # 406 is FastAPI's to answer; a client without gzip (rare: every browser has it) gets
            # the decompressed tile there, with the generic middleware's headers
            return None
        app = scope.get("app")
        state = getattr(app, "state", None)
        registry, cache = getattr(state, "registry", None), getattr(state, "tile_cache", None)
        if registry is None or cache is None or getattr(state, "pool", None) is None:
            return None
        layers, z, x, y = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        guess, probe = self._states, None
        if guess is not None:
            # with the states read last as a guess: a probable miss or refusal goes on at once,
            # without waiting for a read of its own (the ordinary path reads and renders in one)
            view = self._view(registry, principal, guess, layers)
            probe = None if view is None else cached_tile(cache, principal, guess, view, WEB_MERCATOR_QUAD,
                                                          z, y, x, inm, note=False)
            if probe is None:
                return None
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
                return None
        v = q.group(1).decode() if q.group(1) else None
        status, head, body, media = tile_answer(result, principal, v, encoding.decode("latin-1"))
        vary, cc = head.pop("Vary"), head.pop("Cache-Control")
        headers = [(k.lower().encode("latin-1"), val.encode("latin-1")) for k, val in head.items()]
        if status not in (204, 304):  # as Starlette's Response writes them
            headers.append((b"content-length", str(len(body)).encode()))
        if media is not None:
            headers.append((b"content-type", media.encode()))
        # the caller-dependent headers as the gate writes them for a route that consulted the
        # principal (CALLER_DEPENDENT), computed by the gate's own function once per combination
        headers += caller_headers(vary, cc, not principal.is_public)
        return status, headers, body


@lru_cache(maxsize=64)
def caller_headers(vary: str, cache_control: str, keyed: bool) -> tuple[tuple[bytes, bytes], ...]:
    """``Vary`` and ``Cache-Control`` of a tile answer as :func:`caller_dependent_headers` turns
    them for the gate (key headers in ``Vary``, ``private`` for a keyed caller), last in the list
    as there. The fast path writes them itself instead of marking the scope
    ``CALLER_DEPENDENT`` for the gate to rewrite every answer's header list: the same rule, the
    same bytes (tests/test_tiles_fast.py compares the paths), once per combination — there are a
    handful (public/private, revalidated/immutable)."""
    return tuple(caller_dependent_headers([(b"vary", vary.encode("latin-1")),
                                           (b"cache-control", cache_control.encode("latin-1"))], keyed))


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
    if not result.body:
        return 204, headers, b"", MVT_TYPE
    if "gzip" in accept_encoding:
        headers["Content-Encoding"] = "gzip"
        return 200, headers, result.body, MVT_TYPE
    return 200, headers, result.raw if result.raw is not None else gzip.decompress(result.body), MVT_TYPE

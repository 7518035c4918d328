"""Request dependencies shared by routers, in parameter families (the tipg model).

* the app's own services: settings, the spec registry, a pooled connection;
* the collection (:class:`Collection`): ``collectionId`` resolved to the layer's spec, its
  catalog state and the attributes masked for the caller, with the access check and the 404 in
  one place (:func:`resolve_collection`); :func:`feature_collection` adds the one check that the
  collection has features (a raster coverage has no items, queryables or feature schema: 404);
* the representation (:func:`representation`): ``f=`` validated, else the ``Accept`` choice
  made app-wide by :func:`geobase.api.negotiation.negotiate` from its ``OFFERS`` table;
* conditional responses: :func:`not_modified` and :func:`caller_cache_headers`.

The items parameters (``limit``, ``bbox``, ``filter`` ...) are a family of their own in
:mod:`geobase.api.item_params`, declared once and parsed once into :class:`ItemsParams`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import AsyncIterator

import psycopg
from fastapi import Depends, Path, Query, Request

from geobase.api import negotiation
from geobase.errors import InvalidInput, NotFound
from geobase.features.params import ItemsParams
from geobase.catalog.state import LayerState, layer_state
from geobase.division_check import checked_counties
from geobase.db.lsn import lsn_text, parse_lsn
from geobase.features.ids import qualified_ids
from geobase.pool import ROUTE, Route
from geobase.api.gate import get_principal
from geobase.opendata.desensitise import Desensitisation
from geobase.security import Principal, desensitisation, hidden_attributes, require_layer, scope_box
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry


# Dependencies are ``async def`` even when they do no I/O: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hop per dependency per request (measurable on a
# cached tile, which is otherwise a file read).
async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry_dep(request: Request) -> Registry:
    return request.app.state.registry


async def get_conn(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection for the request; the pool answers 503 when exhausted (PoolTimeout)."""
    async with request_connection(request) as conn:
        yield conn


@asynccontextmanager
async def request_connection(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection for one part of a request.

    Handlers that stream rows from a connection of their own (items, changes, downloads) use
    this for their preliminary queries instead of :func:`get_conn`, and give it back before
    the stream takes its connection: a request never holds one connection while waiting for
    another, which under load deadlocks the pool (every slot held by a request that waits for
    a second slot) until the pool timeout answers 503."""
    pool = request.app.state.pool
    async with pool.connection(timeout=request.app.state.settings.pool_timeout_s) as conn:
        yield conn


def base_url(request: Request) -> str:
    settings: Settings = request.app.state.settings
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def not_modified(request: Request, etag: str) -> bool:
    """Whether the request's If-None-Match names ``etag`` (weak or strong) or is ``*``: the
    caller already holds this representation, so the answer is a 304."""
    inm = request.headers.get("if-none-match")
    if not inm:
        return False
    tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
    return etag in tags or "*" in tags


def caller_cache_headers(principal: Principal, etag: str) -> dict[str, str]:
    """Caching of a representation that depends on the caller's view: shared caches may keep
    the public's, only the caller's own cache a key holder's; revalidated after a minute."""
    return {"ETag": etag, "Cache-Control": ("public" if principal.is_public else "private") + ", max-age=60",
            "Vary": "Accept, Authorization, X-API-Key"}


# ------------------------------------------------------------------------------------------
# the collection
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Collection:
    """A collection as this caller may see it: the layer's spec, what the catalog says about it
    now (versions, current version) and the attributes masked for the caller."""

    spec: LayerSpec
    state: LayerState
    hidden: frozenset[str]
    desensitise: Desensitisation | None = None  # the caller's (security.desensitisation)
    within: tuple[float, float, float, float] | None = None  # a request key's box (security.scope_box)
    qualified_ids: bool = False  # ids are county-qualified: a province layer (geobase/features/ids.py)


async def resolve_collection(conn: psycopg.AsyncConnection, principal: Principal, registry: Registry,
                             collection_id: str) -> Collection:
    """The collection if the caller may see it; otherwise NotFound (never Forbidden: a layer
    the caller may not see is answered like one that does not exist)."""
    spec = await require_layer(conn, principal, registry, collection_id)
    state = await layer_state(conn, spec)
    qualified = await qualified_ids(conn, spec, state.current_version, state.divisions)  # partitions: read with the state
    return Collection(spec, state, frozenset(hidden_attributes(principal, spec)), desensitisation(principal, spec),
                      scope_box(principal), qualified)


def require_features(collection: Collection) -> Collection:
    """The one check that a collection has features. A raster coverage has no items, no
    queryables and no feature schema: those resources do not exist for it, so 404 (as for an
    unknown collection), never 400 — the request is well formed, the resource is absent."""
    spec = collection.spec
    if spec.kind != "vector":
        raise NotFound(f"collection {spec.name!r} is a raster coverage, not a feature collection: it has no "
                       f"items, queryables or feature schema; read it at /collections/{spec.name}/coverage "
                       f"or /collections/{spec.name}/tiles", parameter="collectionId")
    return collection


_COLLECTION_ID = Path(description="Local identifier of a collection (a layer name)")


async def collection(collectionId: str = _COLLECTION_ID, conn: psycopg.AsyncConnection = Depends(get_conn),
                     principal: Principal = Depends(get_principal),
                     registry: Registry = Depends(get_registry_dep)) -> Collection:
    """Dependency: the path's collection, resolved on the request's connection."""
    return await resolve_collection(conn, principal, registry, collectionId)


async def feature_collection(c: Collection = Depends(collection)) -> Collection:
    """Dependency: the path's collection, which must have features (404 for a coverage)."""
    return require_features(c)


async def streamed_feature_collection(request: Request, collectionId: str = _COLLECTION_ID,
                                      principal: Principal = Depends(get_principal),
                                      registry: Registry = Depends(get_registry_dep)) -> Collection:
    """Dependency for the routes that stream rows (items, changes): the collection is resolved
    on a connection given back at once, before the stream takes its own (see
    :func:`request_connection`)."""
    async with request_connection(request) as conn:
        resolved = await resolve_collection(conn, principal, registry, collectionId)
    return require_features(resolved)


DIVISION = Query(None, description="County codes (6-digit 行政区划代码), comma-separated: only these counties' "
                 "changes (the other counties' partitions are not read); a code that is no known county is a 400, "
                 "a county the layer holds nothing of answers empty")


#: ``division=`` of tile URLs (XYZ, OGC, composite, WMTS, TileJSON), as on items: only these counties drawn
DIVISION_PARAM = Query(None, description="County codes (6-digit 行政区划代码), comma-separated: only these counties' "
                       "features are drawn (the other counties' partitions are not read); a code that is no known "
                       "county is a 400, a county a layer holds nothing of draws nothing of it")


async def divisions_param(request: Request, c: Collection = Depends(streamed_feature_collection),
                          division: str | None = DIVISION) -> list[str] | None:
    """Dependency: the counties of ``division=`` (None: every county), checked by the one check
    (:func:`geobase.division_check.checked_counties`): a mistyped code must be an error, not an
    empty change feed."""
    if division is None:
        return None
    async with request_connection(request) as conn:
        return await checked_counties(conn, c.spec.name, division)


async def check_item_divisions(request: Request, layer: str, p: ItemsParams) -> None:
    """The one check of the counties an items request names (``division=``, CQL2 ``division``);
    the filter itself is built with the query (:func:`geobase.features.build_query`)."""
    division = p.extra.get("division")
    if division is None and not (p.filter and "division" in p.filter):
        return
    async with request_connection(request) as conn:
        await checked_counties(conn, layer, division, p.filter, p.filter_lang)


# ------------------------------------------------------------------------------------------
# the representation
# ------------------------------------------------------------------------------------------
#: other names ``f`` may give a representation by (media types, long names)
F_ALIASES: dict[str, str] = {"application/geo+json": "geojson", "application/json": "json", "text/html": "html",
                             "text/csv": "csv", "flatgeobuf": "fgb", "geopackage": "gpkg",
                             "geoparquet": "parquet"}


def choose_representation(request: Request, f: str | None, allowed: frozenset[str],
                          aliases: Mapping[str, str] = F_ALIASES) -> str:
    """``f=`` when given (400 naming ``f`` if the route does not serve it); otherwise what the
    app-wide negotiation chose from ``Accept`` (``json`` when it chose nothing this route
    serves)."""
    if f:
        v = f.lower().strip()
        v = aliases.get(v, v)
        if v not in allowed:
            raise InvalidInput(f"f: {f!r} is not one of {', '.join(sorted(allowed))}", parameter="f")
        return v
    # Accept, with q-values, was weighed once for every route (api/negotiation.py)
    v = negotiation.chosen(request, "json")
    return v if v in allowed else "json"


def representation(allowed: tuple[str, ...], description: str,
                   aliases: Mapping[str, str] = F_ALIASES) -> Callable[..., object]:
    """A dependency declaring the route's ``f`` query parameter and answering the handler key
    of the representation to send (see :func:`choose_representation`)."""
    allowed_set = frozenset(allowed)

    async def dependency(request: Request, f: str | None = Query(None, description=description)) -> str:
        return choose_representation(request, f, allowed_set, aliases)

    dependency.allowed = allowed_set  # type: ignore[attr-defined]  # read by tests against OFFERS
    return dependency


# ------------------------------------------------------------------------------------------
# read/write routing (the pool decides: geobase/pool.py; this only tells it what the request is)
# ------------------------------------------------------------------------------------------
#: the read-your-writes token: the primary's WAL position after the caller's last write
LSN_HEADER = "Geobase-LSN"
LSN_COOKIE = "geobase_lsn"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def _request_token(headers: dict[bytes, bytes]) -> tuple[int | None, int | None]:
    """(token, expiry) from the ``Geobase-LSN`` header or the cookie (``<lsn>~<expiry>``)."""
    token = parse_lsn(headers.get(LSN_HEADER.lower().encode(), b"").decode("latin-1"))
    expiry = None
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
    except CookieError:
        pass
    if LSN_COOKIE in cookie:
        lsn, _, exp = cookie[LSN_COOKIE].value.partition("~")
        cookie_token = parse_lsn(lsn)
        if cookie_token is not None and exp.isdigit() and int(exp) > time.time():
            token, expiry = max(token or 0, cookie_token), int(exp)
    return token, expiry


class ReadRoutingMiddleware:
    """Marks each request read (GET/HEAD) or write for :class:`geobase.pool.RoutedPool`, and
    gives the caller its read-your-writes token. A write's response carries the primary's WAL
    position after it (header ``Geobase-LSN`` and cookie ``geobase_lsn``, for
    ``GEOBASE_READ_YOUR_WRITES_S``); a read carrying it is served by a replica only once that
    replica has replayed it (else the primary). A token holder's read that was not served wholly
    by replicas (e.g. an ingest job's status, read on the primary) refreshes the token, so that
    what it saw there (the job done) is what its next reads see. With no replica: nothing.

    A read that a replica fails before the first byte of its answer is sent (a query the
    standby cancelled in a recovery conflict, a replica killed under it: see
    :func:`geobase.pool.retry_on_primary`) is run once more, on the primary alone; the caller
    sees that answer, never the replica's 503. The retry runs inside the gate: one request,
    one rate-limit token, one audit row."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        pool = getattr(scope.get("app").state, "pool", None) if scope["type"] == "http" else None
        if not getattr(pool, "replicas", None):
            await self.app(scope, receive, send)
            return
        write = scope["method"] not in _READS
        token, expiry = _request_token(dict(scope["headers"]))
        settings: Settings = scope["app"].state.settings
        route = Route(read=not write, token=token)
        if write:
            await self._run(scope, receive, send, route, pool, settings, expiry)
            return
        received: list[dict] = []

        async def recording_receive():
            message = await receive()
            received.append(message)
            return message

        if not await self._run(scope, recording_receive, send, route, pool, settings, expiry, retryable=True):
            return
        pool.retried(route)  # nothing of the first answer was sent: the primary answers instead

        async def replaying_receive():
            return received.pop(0) if received else await receive()

        await self._run(scope, replaying_receive, send, Route(read=True, token=token, primary_only=True), pool,
                        settings, expiry)

    async def _run(self, scope, receive, send, route: Route, pool, settings: Settings, expiry: int | None,
                   retryable: bool = False) -> bool:
        """Run the app for the request under ``route``. ``retryable`` (a read's first attempt):
        an answer of 500 or more that the error handler marked as a replica's failure
        (:func:`geobase.pool.retry_on_primary`, which sets it before the response starts) is
        withheld, start and body; True then: the caller runs the read again on the primary.
        An answer whose first byte has gone out is never withheld (a body half sent cannot be
        taken back: a failure after it ends the response as it does without replicas)."""
        write = not route.read
        token = route.token
        withheld = False

        async def send_with_token(message):
            nonlocal withheld
            if message["type"] == "http.response.start":
                if retryable and route.replica_failure is not None and message["status"] >= 500:
                    withheld = True
                    return
                if write or (token and route.replica_conns == 0) or (token and route.primary_conns):
                    message = await self._with_token(message, pool, settings, token, None if write else expiry)
            elif withheld:
                return
            await send(message)

        reset = ROUTE.set(route)
        try:
            await self.app(scope, receive, send_with_token)
        finally:
            ROUTE.reset(reset)
        return withheld

    @staticmethod
    async def _with_token(message, pool, settings: Settings, token: int | None, expiry: int | None):
        try:
            position = max(await pool.primary_position(), token or 0)
        except Exception:  # the primary cannot say: the caller keeps the token it had
            return message
        expiry = expiry or int(time.time()) + settings.read_your_writes_s
        value = f"{lsn_text(position)}~{expiry}"
        headers = list(message.get("headers", []))
        headers.append((LSN_HEADER.lower().encode(), lsn_text(position).encode()))
        headers.append((b"set-cookie", f"{LSN_COOKIE}={value}; Max-Age={max(0, expiry - int(time.time()))}; "
                                       f"Path=/; HttpOnly; SameSite=Lax".encode()))
        return {**message, "headers": headers}

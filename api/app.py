"""The app factory. Routers are thin; services live in :mod:`geobase`.

Each feature area contributes a router module, imported here by name: :data:`ROUTER_MODULES`
lists them in mount order (a missing module is an import error, never a silently absent
feature). The factory itself installs the security components — key checking (the principal
resolver), the request gate (:class:`geobase.limits.GateMiddleware`: rate, body and concurrency
limits) and the audit writer — and refuses to build or start an app that lacks any of them
(:func:`require_security`): security fails closed, not open."""

from __future__ import annotations

import gc
import logging
import time
from contextlib import asynccontextmanager

import psycopg
from fastapi import Depends, FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from psycopg_pool import AsyncConnectionPool

from geobase import __version__, audit, keys
from geobase.api import admin, analysis, docs, features, ingest, landing, schema, tiles
from geobase.api import map as map_
from geobase.api import search as search_
from geobase.api.errors import install_error_handlers
from geobase.api.negotiation import HeadMiddleware, negotiate
from geobase.api.openapi import install_openapi
from geobase.api.params import check_query_parameters
from geobase.api.params import install as install_param_checks
from geobase.db import database_url, server_runs_as_owner, server_settings
from geobase.limits import GateMiddleware
from geobase.settings import Settings, get_settings
from geobase.specs import get_registry

log = logging.getLogger("geobase.api")

# every router module, in mount order; each has a module-level ``router``
ROUTER_MODULES = (landing, features, schema, tiles, analysis, ingest, admin, map_, search_, docs)
# their dotted names (tests enumerate the routes of every router from these)
ROUTERS: list[str] = [m.__name__ for m in ROUTER_MODULES]


class ConnectionCheck:
    """The pool's check on checkout, without a round trip for a connection in steady use.

    ``AsyncConnectionPool.check_connection`` sends an empty query on every checkout: a round
    trip on every request. A connection given back less than :attr:`idle_s` ago, with no
    database failure seen since, is handed out as it is; any other is checked. A database
    restart is still survived: the first request on a dead connection fails cleanly (503) and
    records the failure (:meth:`failed`), after which every older connection is checked again."""

    def __init__(self, idle_s: float = 2.0):
        import weakref

        self.idle_s = idle_s
        self._returned: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._failure_at = 0.0

    def failed(self) -> None:
        self._failure_at = time.monotonic()

    async def check(self, conn) -> None:
        last = self._returned.pop(conn, None)
        now = time.monotonic()
        if last is not None and last > self._failure_at and now - last < self.idle_s:
            return
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            self.failed()
            raise

    async def reset(self, conn) -> None:
        self._returned[conn] = time.monotonic()


WARM_UP_SQL = ("SELECT ST_Area(g::geography), ST_Transform(g, 3857) "
               "FROM (SELECT 'SRID=4490;POLYGON((118 29,118.01 29,118.01 29.01,118 29))'::geometry AS g) x")


def _pool(settings: Settings, checker: ConnectionCheck) -> AsyncConnectionPool:
    timeout = int(settings.statement_timeout_ms)

    async def configure(conn):
        await conn.execute("SET application_name = 'geobase-api'")
        # a new backend loads PostGIS, PROJ and the CGCS2000 spheroid on first use (~200 ms):
        # pay it here, when the pool opens the connection, not in a user's first request
        # (before the statement timeout applies; a failure only means no warm-up)
        try:
            await conn.execute(WARM_UP_SQL)
        except psycopg.Error as exc:
            log.debug("connection warm-up skipped: %s", exc)
        await conn.execute(f"SET statement_timeout = {timeout}")
        await conn.commit()

    return AsyncConnectionPool(
        database_url(settings),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout_s,
        configure=configure,
        check=checker.check,
        reset=checker.reset,
        open=False,
        kwargs={"autocommit": True, "connect_timeout": 5},
    )


def install_key_checking(app: FastAPI) -> None:
    """Key checking: ``app.state.principal_resolver`` resolves a presented API key to its
    principal (cached ``GEOBASE_KEY_CACHE_S``); :func:`geobase.security.get_principal` and the
    gate use it, and refuse to run without it."""
    settings: Settings = app.state.settings
    app.state.principal_resolver = keys.KeyResolver(lambda: app.state.pool, ttl=settings.key_cache_s)


def install_audit_writer(app: FastAPI) -> None:
    """The audit writer (``app.state.audit_writer``): the gate hands it one row per audited
    request; the lifespan flushes it when the server stops."""
    app.state.audit_writer = audit.AuditWriter(database_url(app.state.settings))


def install_gate(app: FastAPI) -> None:
    """The request gate (:mod:`geobase.limits`): authentication, rate, body and concurrency
    limits and auditing for every route of every router. Needs key checking and the audit
    writer installed first."""
    resolver = getattr(app.state, "principal_resolver", None)
    writer = getattr(app.state, "audit_writer", None)
    if resolver is None or writer is None:
        raise RuntimeError("the request gate needs key checking and the audit writer installed first")
    app.add_middleware(GateMiddleware, settings=app.state.settings, resolver=resolver,
                       pool_getter=lambda: app.state.pool, audit_writer=writer)


def require_security(app: FastAPI) -> None:
    """Fail closed: RuntimeError unless key checking, the request gate and the audit writer are
    all installed. Without them every caller would be public and no limit or audit row would
    apply, with no error; so the app refuses to be built or started instead."""
    missing = []
    if not isinstance(getattr(app.state, "principal_resolver", None), keys.KeyResolver):
        missing.append("key checking (app.state.principal_resolver)")
    gates = [m for m in app.user_middleware if m.cls is GateMiddleware]
    if not gates:
        missing.append("the request gate (geobase.limits.GateMiddleware)")
    writer = getattr(app.state, "audit_writer", None)
    if not isinstance(writer, audit.AuditWriter):
        missing.append("the audit writer (app.state.audit_writer)")
    elif any(m.kwargs.get("audit_writer") is not writer for m in gates):
        missing.append("the audit writer in the request gate")
    if missing:
        raise RuntimeError("refusing to start: security component(s) not installed: " + "; ".join(missing))


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app. It connects as the application role (:func:`geobase.db.server_settings`), which
    cannot alter tables or switch off the audit trigger; only ingest jobs get the owner's
    settings (``app.state.owner_settings``)."""
    owner_settings = settings or get_settings()
    settings = server_settings(owner_settings)
    if server_runs_as_owner(owner_settings):
        log.warning("GEOBASE_APP_DATABASE_URL is not set: the server connects as the owner role of "
                    "GEOBASE_DATABASE_URL; give it a login role in geobase_app (see README, 'The database role')")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        require_security(app)  # checked again: nothing may have removed a component since
        app.state.pool = _pool(settings, app.state.connection_check)
        await app.state.pool.open(wait=False)
        # everything imported and built at start-up lives as long as the process: move it out of
        # the collector's sight, so that collections triggered by a request's allocations (a
        # site check builds thousands of dicts) do not traverse the whole heap each time
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            try:
                await app.state.pool.close()
            finally:
                # flush what is queued (SIGTERM included: uvicorn runs this)
                await app.state.audit_writer.close()

    app = FastAPI(
        title="geobase",
        version=__version__,
        description="Natural resources one map: OGC API - Features and Tiles over PostGIS, overlay analysis.",
        openapi_url="/api",
        docs_url=None,  # served by geobase.api.docs from the vendored Swagger UI (no CDN)
        redoc_url=None,  # ReDoc would load from a CDN: not offered
        lifespan=lifespan,
        # Accept / f= negotiation and 406, once for every route (api/negotiation.py)
        dependencies=[Depends(negotiate)],
    )
    app.state.settings = settings
    app.state.owner_settings = owner_settings
    app.state.connection_check = ConnectionCheck()
    app.state.registry = get_registry(settings)
    install_error_handlers(app)
    install_param_checks(app)
    # level 4, not Starlette's default 9: a site check's JSON of a few MB took longer to
    # compress at 9 than to compute (tiles and item streams arrive compressed and are skipped)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=4)
    for module in ROUTER_MODULES:
        # every route refuses query parameters it does not declare (api/params.py)
        app.include_router(module.router, dependencies=[Depends(check_query_parameters)])
    # security: who is calling, the audit trail, then the gate that uses both (it sits outside
    # GZip and inside HEAD handling, so its own answers are neither compressed twice nor given
    # a body for HEAD)
    install_key_checking(app)
    install_audit_writer(app)
    install_gate(app)
    install_openapi(app)
    # outermost: HEAD is GET without the body for every route, including the gate's answers
    app.add_middleware(HeadMiddleware)
    require_security(app)
    return app

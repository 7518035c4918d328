"""The app factory. Routers are thin; services live in :mod:`geobase`.

Each feature area contributes a router module; :data:`ROUTERS` lists them in mount order."""

from __future__ import annotations

import gc
import importlib
import logging
import time
from contextlib import asynccontextmanager

import psycopg
from fastapi import Depends, FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from psycopg_pool import AsyncConnectionPool

from geobase import __version__
from geobase.api.errors import install_error_handlers
from geobase.api.negotiation import HeadMiddleware, negotiate
from geobase.api.openapi import install_openapi
from geobase.api.params import check_query_parameters
from geobase.api.params import install as install_param_checks
from geobase.db import database_url, server_runs_as_owner, server_settings
from geobase.settings import Settings, get_settings
from geobase.specs import get_registry

log = logging.getLogger("geobase.api")

# (module, attribute) of every router; a module that does not exist yet is skipped so that
# feature areas can land independently.
ROUTERS: list[str] = [
    "geobase.api.landing",
    "geobase.api.features",
    "geobase.api.schema",
    "geobase.api.tiles",
    "geobase.api.analysis",
    "geobase.api.ingest",
    "geobase.api.admin",
    "geobase.api.map",
    "geobase.api.docs",
]


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
            await app.state.pool.close()

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
    for modname in ROUTERS:
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue
            raise
        # every route refuses query parameters it does not declare (api/params.py)
        app.include_router(module.router, dependencies=[Depends(check_query_parameters)])
        setup = getattr(module, "setup", None)
        if setup:
            setup(app)
    install_openapi(app)
    # outermost: HEAD is GET without the body for every route, including the gate's answers
    app.add_middleware(HeadMiddleware)
    return app

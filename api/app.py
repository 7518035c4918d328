"""The app factory. Routers are thin; services live in :mod:`geobase`.

Each feature area contributes a router module, imported here by name: :data:`ROUTER_MODULES`
lists them in mount order (a missing module is an import error, never a silently absent
feature). The factory itself installs the security components — key checking (the principal
resolver), the request gate (:class:`geobase.api.gate.GateMiddleware`: rate, body and concurrency
limits) and the audit writer — and refuses to build or start an app that lacks any of them
(:func:`require_security`): security fails closed, not open."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.gzip import GZipMiddleware

from geobase import __version__, keys
from geobase.api import (admin, analysis, catalog, docs, editing, features, indicators, ingest, items, landing, printing,
                         requests, schema, tiles, webhooks, wmts)
from geobase.api import map as map_
from geobase.api import search as search_
from geobase.api.deps import ReadRoutingMiddleware
from geobase.api import imagery, imagery_ogc, stac
from geobase.api.errors import install_error_handlers
from geobase.api.gate import Admission, GateMiddleware
from geobase.api.negotiation import HeadMiddleware, negotiate
from geobase.api.openapi import install_openapi
from geobase.api.params import check_query_parameters
from geobase.api.params import install as install_param_checks
from geobase.api.tile_fast import TileFastPath, install_tile_fast_path
from geobase.analysis.jobs import AnalysisJobs
from geobase.db import database_url, server_runs_as_owner, server_settings
from geobase.indicators.monitor import IndicatorMonitor
from geobase.indicators.spec import get_indicators
from geobase.ingest.jobs import fail_orphaned_jobs
from geobase.pool import ConnectionCheck, server_pool
from geobase.audit_writer import AuditWriter
from geobase.security import set_network_zone
from geobase.settings import Settings, check_settings, get_settings
from geobase.specs import get_registry
from geobase.tiles.cache import TileCache
from geobase.tiles.service import StatesHint
from geobase.webhooks import DeliveryWorker

log = logging.getLogger("geobase.api")

# every router module, in mount order; each has a module-level ``router``
ROUTER_MODULES = (landing, catalog, requests, features, items, editing, webhooks, schema, tiles, wmts, analysis, printing,
                  ingest, admin, map_, search_, stac, imagery, imagery_ogc, docs,
                  indicators)
# their dotted names (tests enumerate the routes of every router from these)
ROUTERS: list[str] = [m.__name__ for m in ROUTER_MODULES]


def install_key_checking(app: FastAPI) -> None:
    """Key checking: ``app.state.principal_resolver`` resolves a presented API key to its
    principal (cached ``GEOBASE_KEY_CACHE_S``); :func:`geobase.security.get_principal` and the
    gate use it, and refuse to run without it."""
    settings: Settings = app.state.settings
    app.state.principal_resolver = keys.KeyResolver(lambda: app.state.pool, ttl=settings.key_cache_s)


def install_audit_writer(app: FastAPI) -> None:
    """The audit writer (``app.state.audit_writer``): the gate hands it one row per audited
    request; the lifespan flushes it when the server stops."""
    app.state.audit_writer = AuditWriter(database_url(app.state.settings))


def install_gate(app: FastAPI) -> None:
    """The request gate (:mod:`geobase.api.gate`): authentication, rate, body and concurrency
    limits and auditing for every route of every router, and the tile fast path in front of it
    admitting with the same :class:`~geobase.api.gate.Admission` (one set of buckets). Needs
    key checking and the audit writer installed first."""
    resolver = getattr(app.state, "principal_resolver", None)
    writer = getattr(app.state, "audit_writer", None)
    if resolver is None or writer is None:
        raise RuntimeError("the request gate needs key checking and the audit writer installed first")
    admission = Admission(settings=app.state.settings, resolver=resolver, pool_getter=lambda: app.state.pool,
                          audit_writer=writer)
    app.add_middleware(GateMiddleware, settings=app.state.settings, resolver=resolver,
                       pool_getter=lambda: app.state.pool, audit_writer=writer, admission=admission)
    install_tile_fast_path(app, admission)  # tiles answered before FastAPI (api/tile_fast.py)


def require_security(app: FastAPI) -> None:
    """Fail closed: RuntimeError unless key checking, the request gate and the audit writer are
    all installed. Without them every caller would be public and no limit or audit row would
    apply, with no error; so the app refuses to be built or started instead."""
    missing = []
    if not isinstance(getattr(app.state, "principal_resolver", None), keys.KeyResolver):
        missing.append("key checking (app.state.principal_resolver)")
    gates = [m for m in app.user_middleware if m.cls is GateMiddleware]
    if not gates:
        missing.append("the request gate (geobase.api.gate.GateMiddleware)")
    writer = getattr(app.state, "audit_writer", None)
    if not isinstance(writer, AuditWriter):
        missing.append("the audit writer (app.state.audit_writer)")
    elif any(m.kwargs.get("audit_writer") is not writer for m in gates):
        missing.append("the audit writer in the request gate")
    fast = getattr(app.state, "tile_fast_path", None)
    if fast is not None and not any(m.kwargs.get("admission") is fast.admission for m in gates):
        # the fast path answers before the gate: it must admit with the gate's own buckets and keys
        missing.append("the request gate's admission in the tile fast path")
    if missing:
        raise RuntimeError("refusing to start: security component(s) not installed: " + "; ".join(missing))


def build_state(app: FastAPI, settings: Settings, owner_settings: Settings) -> None:
    """The state the app is built with (the security check and the routers' OpenAPI need it
    before any request): settings and the spec registry. The security components are added by
    the ``install_*`` functions below; everything with a lifetime by :func:`lifespan`."""
    app.state.settings = settings
    app.state.owner_settings = owner_settings
    app.state.registry = get_registry(settings)
    app.state.indicators = get_indicators(app.state.registry)  # layers/indicators/*.yaml: a bad one stops the start


def open_services(app: FastAPI) -> None:
    """Every per-process service, created in this one place when the server starts (routers
    read ``app.state``, they never create it): the connection pool and its checker, the
    bounds on whole downloads and site checks, the analysis jobs and their scheduler, the tile cache, and the sweep
    of jobs left behind by a dead server."""
    settings: Settings = app.state.settings
    app.state.connection_check = ConnectionCheck()
    app.state.pool = server_pool(settings, app.state.connection_check)
    # whole downloads (csv/gpkg/fgb) and site checks at once: bounded, 503 past the pool timeout
    app.state.export_semaphore = asyncio.Semaphore(settings.export_concurrency)
    app.state.analysis_slots = asyncio.Semaphore(max(1, settings.analysis_concurrency))
    app.state.analysis_jobs = AnalysisJobs(settings, app.state.registry, app.state.pool,
                                           writer=app.state.owner_settings)
    app.state.tile_cache = TileCache(settings.data_path / "tiles", settings.tile_cache_max_bytes)
    app.state.tile_states_hint = StatesHint()
    app.state.tiles_db_url = database_url(settings)
    app.state.orphan_sweep = _sweep_orphaned_jobs(settings)
    app.state.webhook_worker = DeliveryWorker(settings).start()  # the outbox of signed webhooks
    app.state.indicator_monitor = IndicatorMonitor(settings, app.state.registry, app.state.pool)


def _sweep_orphaned_jobs(settings: Settings) -> threading.Thread:
    """Mark the ingest and analysis jobs of a dead server process failed, once per start, in the
    background (the start does not wait for the database)."""

    def sweep() -> None:
        try:
            fail_orphaned_jobs(settings)
        except Exception as exc:  # the database may not be up yet; the next start retries
            log.warning("orphaned jobs not checked: %s", exc)

    thread = threading.Thread(target=sweep, name="orphaned-jobs", daemon=True)
    thread.start()
    return thread


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Start: check security again, create the services and open the pool; stop: close the
    pool, flush the audit writer."""
    require_security(app)  # checked again: nothing may have removed a component since
    open_services(app)
    await app.state.pool.open(wait=False)
    app.state.indicator_monitor.start()  # recomputes the indicators of new versions, as jobs
    # everything imported and built at start-up lives as long as the process: move it out of
    # the collector's sight, so that collections triggered by a request's allocations (a
    # site check builds thousands of dicts) do not traverse the whole heap each time. No
    # collection first: it found ~1,400 unreachable objects among ~95,000 (a few hundred KB
    # kept for good) and cost ~85 ms of CPU before the first answer (issue #15)
    gc.freeze()
    gc.enable()  # `geobase serve` starts with the collector off (geobase/cli/serve.py)
    try:
        yield
    finally:
        app.state.webhook_worker.stop()
        try:
            await app.state.indicator_monitor.stop()
            await app.state.pool.close()
        finally:
            # flush what is queued (SIGTERM included: uvicorn runs this)
            await app.state.audit_writer.close()


class GeobaseApp(FastAPI):
    """FastAPI, with XYZ vector tiles (cached or rendered) answered before its middleware stack:
    the tile fast path (``app.state.tile_fast_path``, :mod:`geobase.api.tile_fast`) is asked
    first and admits with the request gate's own :class:`~geobase.api.gate.Admission`; whatever
    it does not answer goes through the stack unchanged. In front of HEAD handling, ServerError
    and FastAPI's own layers, a tile costs what the checks (and its statement) cost, not what
    the stack does (bench/bench_tiles.py, issue #15)."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            fast: TileFastPath | None = getattr(self.state, "tile_fast_path", None)
            if fast is not None:
                scope["app"] = self  # (as Starlette sets it; the gate's checks read the app's state)
                if await fast(scope, receive, send):
                    return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app. It connects as the application role (:func:`geobase.db.server_settings`), which
    cannot alter tables or switch off the audit trigger; only ingest jobs get the owner's
    settings (``app.state.owner_settings``)."""
    owner_settings = check_settings(settings or get_settings())  # a bad value stops the start
    settings = server_settings(owner_settings)
    set_network_zone(owner_settings.network_zone)  # every visibility decision reads it (geobase.security)
    if server_runs_as_owner(owner_settings):
        log.warning("GEOBASE_APP_DATABASE_URL is not set: the server connects as the owner role of "
                    "GEOBASE_DATABASE_URL; give it a login role in geobase_app (see README, 'The database role')")
    app = GeobaseApp(
        title="geobase",
        version=__version__,
        description="Natural resources one map: OGC API - Features and Tiles over PostGIS, overlay analysis.",
        openapi_url="/api",
        docs_url=None,  # served by geobase.api.docs from the vendored Swagger UI (no CDN)
        redoc_url=None,  # ReDoc would load from a CDN: not offered
        lifespan=lifespan,
        # Accept / f= negotiation and 406, once for every route (api/negotiation.py)
        dependencies=[Depends(negotiate)],
        # FastAPI's native OpenTelemetry bridge looked up the global providers (environment
        # reads) on every request to find none configured: ~14 % of a cached tile's CPU
        # (interleaved A/B, issue #15). geobase configures no OpenTelemetry
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    build_state(app, settings, owner_settings)
    install_error_handlers(app)
    install_param_checks(app)
    # level 4, not Starlette's default 9: a site check's JSON of a few MB took longer to
    # compress at 9 than to compute (tiles and item streams arrive compressed and are skipped)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=4)
    app.add_middleware(ReadRoutingMiddleware)  # GET to replicas, the rest to the primary (geobase/pool.py)
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

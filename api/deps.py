"""Request dependencies shared by routers: settings, the spec registry, the connection pool."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import psycopg
from fastapi import Request

from geobase.security import Principal
from geobase.settings import Settings
from geobase.specs import Registry


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

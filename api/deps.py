"""Request dependencies shared by routers: settings, the spec registry, the connection pool."""

from __future__ import annotations

from typing import AsyncIterator

import psycopg
from fastapi import Request

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
    pool = request.app.state.pool
    async with pool.connection(timeout=request.app.state.settings.pool_timeout_s) as conn:
        yield conn


def base_url(request: Request) -> str:
    settings: Settings = request.app.state.settings
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")

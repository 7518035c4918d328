"""Where the database is and how to connect to it: the owner's URL, the HTTP server's
least-privilege URL, and short-lived connections.

With ``GEOBASE_DATABASE_URL`` unset the database is the project's private cluster
(:mod:`geobase.db.cluster`). Its own module so that the migrations (:mod:`geobase.db.migrate`)
and the setup in :mod:`geobase.db` both read it without importing each other.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg

from geobase.settings import Settings, get_settings


def database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    from geobase.db.cluster import LocalCluster  # only for the private cluster

    return LocalCluster(settings).url


#: the login role the HTTP server uses (member of geobase_app); made by :func:`geobase.db.ensure_app_role`
APP_LOGIN = "geobase_web"


def app_database_url(settings: Settings | None = None) -> str:
    """The URL the HTTP server connects with: least privilege, not the owner.

    ``GEOBASE_APP_DATABASE_URL`` when set; else the local cluster's :data:`APP_LOGIN` role
    (loopback, no password). With an external ``GEOBASE_DATABASE_URL`` and no app URL the
    server can only connect as that role: :func:`server_runs_as_owner` says so at start."""
    settings = settings or get_settings()
    if settings.app_database_url:
        return settings.app_database_url
    if settings.uses_local_cluster:
        s = settings
        return f"postgresql://{APP_LOGIN}@127.0.0.1:{s.pg_port}/{s.pg_database}"
    return database_url(settings)


def server_runs_as_owner(settings: Settings) -> bool:
    return not settings.app_database_url and not settings.uses_local_cluster


def server_settings(settings: Settings) -> Settings:
    """The settings of the HTTP server's own connections (pool, audit writer, exports, tiles):
    ``database_url`` is the application role's. Ingest started through the API uses the owner's
    settings instead (it creates and alters layer tables)."""
    return settings.model_copy(update={"database_url": app_database_url(settings)})


def sqlalchemy_url(url: str) -> str:
    """The same URL for SQLAlchemy/Alembic, pinned to the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@contextmanager
def connect(settings: Settings | None = None, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A short-lived synchronous connection (CLI, ingest, migrations)."""
    with psycopg.connect(database_url(settings), autocommit=autocommit, connect_timeout=10) as conn:
        yield conn

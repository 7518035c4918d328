"""Database access: where the database is, connections, and bringing the schema up to date.

Everything that needs a database asks :func:`database_url`; with ``GEOBASE_DATABASE_URL`` unset
that is the project's private cluster (:mod:`geobase.db.cluster`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg

from geobase.errors import SetupError
from geobase.settings import Settings, get_settings


def database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    from geobase.db.cluster import LocalCluster

    return LocalCluster(settings).url


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


def ensure_postgis(conn: psycopg.Connection) -> str:
    """Create the PostGIS extension when allowed; return its version or explain what is missing."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'postgis'").fetchone()
    if row:
        return row[0]
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.commit()
    except psycopg.errors.InsufficientPrivilege as exc:
        conn.rollback()
        raise SetupError(
            "PostGIS is not enabled in this database and our role may not create it: "
            "ask the DBA to run 'CREATE EXTENSION postgis;' in it"
        ) from exc
    except psycopg.errors.FeatureNotSupported as exc:  # pragma: no cover - depends on the server
        conn.rollback()
        raise SetupError(f"PostGIS is not installed on the database server: {exc}") from exc
    except psycopg.errors.UndefinedFile as exc:
        conn.rollback()
        raise SetupError(
            "PostGIS is not installed on the database server (install postgresql-NN-postgis-3 there)"
        ) from exc
    return conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'postgis'").fetchone()[0]


def prepare_database(settings: Settings | None = None, *, start_local: bool = True) -> dict:
    """Start the local cluster if needed, enable PostGIS, migrate, and sync the layer catalog.

    Idempotent; this is what ``geobase db start``, ``geobase serve`` and the test session call.
    """
    settings = settings or get_settings()
    info: dict = {"local": settings.uses_local_cluster}
    if settings.uses_local_cluster and start_local:
        from geobase.db.cluster import LocalCluster

        info["started"] = LocalCluster(settings).start()
    from geobase.catalog import sync_catalog
    from geobase.db.migrate import upgrade

    with connect(settings) as conn:
        info["postgis"] = ensure_postgis(conn)
    info["revision"] = upgrade(settings)
    with connect(settings) as conn:
        info["layers"] = sync_catalog(conn, settings)
        conn.commit()
    return info

"""Database access: where the database is, connections, and bringing the schema up to date.

Everything that needs a database asks :func:`database_url` or :func:`connect`
(:mod:`geobase.db.connection`); with ``GEOBASE_DATABASE_URL`` unset that is the project's
private cluster (:mod:`geobase.db.cluster`). :func:`prepare_database` starts it if needed,
enables PostGIS, migrates (:mod:`geobase.db.migrate`) and gives the app role its privileges.
"""

from __future__ import annotations

import psycopg

from geobase import audit
from geobase.db.connection import (APP_LOGIN, app_database_url, connect, database_url, server_runs_as_owner,
                                   server_settings, sqlalchemy_url)
from geobase.errors import SetupError
from geobase.settings import Settings, get_settings

__all__ = ["APP_LOGIN", "app_database_url", "connect", "database_url", "ensure_app_role", "ensure_postgis",
           "prepare_database", "server_runs_as_owner", "server_settings", "sqlalchemy_url"]


def ensure_app_role(conn: psycopg.Connection) -> bool:
    """Give ``geobase_app`` exactly what the HTTP server needs, and make the login role
    :data:`APP_LOGIN` in it (without a password: it logs in only where the server trusts
    loopback, like the private cluster; elsewhere a DBA sets one).

    The app role reads layer data (SELECT only: ingest runs as the owner), reads and writes the
    catalog's run-time tables, may only INSERT/SELECT the audit log and owns nothing, so it can
    neither ALTER, DROP nor disable a trigger. Idempotent; returns False when this role may not
    create roles (then a DBA does it, see the README)."""
    can = conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'geobase_app'").fetchone()
    if not exists and not can:
        return False
    schemas = [r[0] for r in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname IN ('catalog', 'data', 'staging', 'tiles', 'analysis')").fetchall()]
    stmts = []
    # caches the server fills itself: tiles, and the analyses' kept zone pieces and halos (a role
    # made after the migrations that granted them, by a DBA, gets them here too)
    for schema in ("tiles", "analysis"):
        if schema in schemas:
            stmts += [f"GRANT USAGE ON SCHEMA {schema} TO geobase_app",
                      f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO geobase_app",
                      f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO geobase_app",
                      f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO geobase_app"]
    for schema in ("data", "staging"):  # layer rows: read only, ingest writes them as the owner
        if schema in schemas:
            stmts += [f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {schema} FROM geobase_app",
                      f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE INSERT, UPDATE, DELETE, TRUNCATE "
                      "ON TABLES FROM geobase_app"]
    stmts += list(audit.APP_ROLE_STATEMENTS)  # the audit log is append-only for the app
    for stmt in stmts:
        conn.execute(stmt)
    if can and not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_LOGIN,)).fetchone():
        conn.execute(f"CREATE ROLE {APP_LOGIN} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE IN ROLE geobase_app")
    return True


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
        info["app_role"] = ensure_app_role(conn)
        conn.commit()
    return info

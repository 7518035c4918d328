"""Alembic, driven from code: the migration scripts ship inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from geobase.db.connection import database_url, sqlalchemy_url
from geobase.settings import Settings, get_settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url(settings or get_settings())))
    return cfg


def upgrade(settings: Settings | None = None, revision: str = "heads") -> list[str]:
    """Bring the catalog schema to ``revision`` (every branch head: each feature area adds its own
    migration branch off the foundation revision); returns the revisions now current."""
    cfg = alembic_config(settings)
    command.upgrade(cfg, revision)
    return current(settings)


def current(settings: Settings | None = None) -> list[str]:
    engine = create_engine(alembic_config(settings).get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            return sorted(MigrationContext.configure(conn, opts={"version_table_schema": "catalog"}).get_current_heads())
    finally:
        engine.dispose()

"""Alembic environment: online migrations only, version table in the catalog schema."""

from alembic import context
from sqlalchemy import create_engine, text

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    connection.execute(text("CREATE SCHEMA IF NOT EXISTS catalog"))
    connection.commit()
    context.configure(connection=connection, version_table_schema="catalog", transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()

"""Catalog schema: departments, layers, layer versions, jobs; schemas for data and staging.

Revision ID: 0001_catalog
Revises:
"""

from alembic import op

revision = "0001_catalog"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.execute("CREATE SCHEMA IF NOT EXISTS catalog")
    op.execute("CREATE SCHEMA IF NOT EXISTS data")
    op.execute("CREATE SCHEMA IF NOT EXISTS staging")
    op.execute(
        """
        CREATE TABLE catalog.departments (
            code        text PRIMARY KEY,
            name_zh     text NOT NULL,
            name_en     text NOT NULL,
            contact     text,
            created_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE catalog.layers (
            name            text PRIMARY KEY,
            title_zh        text NOT NULL,
            title_en        text NOT NULL,
            description     text,
            department      text NOT NULL REFERENCES catalog.departments(code),
            sharing         text NOT NULL CHECK (sharing IN ('public','internal','restricted','private')),
            shared_with     text[] NOT NULL DEFAULT '{}',
            kind            text NOT NULL CHECK (kind IN ('vector','raster')),
            geometry_type   text,
            spec            jsonb NOT NULL,
            spec_hash       text NOT NULL,
            current_version integer,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now()
        );

        -- One row per committed version. A version row is written in the same transaction that
        -- moves the layer's rows, so a killed ingest never leaves a half-registered version.
        CREATE TABLE catalog.layer_versions (
            layer           text NOT NULL REFERENCES catalog.layers(name) ON DELETE CASCADE,
            version         integer NOT NULL,
            mode            text NOT NULL,
            source_name     text,
            source_checksum text,
            source_format   text,
            created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
            created_by      text NOT NULL DEFAULT 'cli',
            rows_total      bigint NOT NULL DEFAULT 0,
            rows_added      bigint NOT NULL DEFAULT 0,
            rows_removed    bigint NOT NULL DEFAULT 0,
            rows_changed    bigint NOT NULL DEFAULT 0,
            extent          double precision[],
            restored_from   integer,
            report          jsonb NOT NULL DEFAULT '{}'::jsonb,
            metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
            PRIMARY KEY (layer, version)
        );
        CREATE INDEX layer_versions_checksum ON catalog.layer_versions (layer, source_checksum);
        CREATE INDEX layer_versions_time ON catalog.layer_versions (layer, created_at);

        CREATE TABLE catalog.jobs (
            id          uuid PRIMARY KEY,
            kind        text NOT NULL,
            layer       text,
            status      text NOT NULL CHECK (status IN ('accepted','running','successful','failed','dismissed')),
            progress    real NOT NULL DEFAULT 0,
            message     text,
            params      jsonb NOT NULL DEFAULT '{}'::jsonb,
            result      jsonb,
            created_by  text,
            created_at  timestamptz NOT NULL DEFAULT now(),
            started_at  timestamptz,
            finished_at timestamptz
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS catalog.jobs, catalog.layer_versions, catalog.layers, catalog.departments")

"""Security: API keys (hashed), the append-only audit log, and the application's database role.

Revision ID: 0006_security
Revises: 0001_catalog

The audit log is protected twice:
* the role ``geobase_app`` (the role the service should run as in production) has only
  SELECT/INSERT on it, so the application cannot rewrite history even if compromised;
* a trigger refuses UPDATE/DELETE/TRUNCATE for *every* role, superusers included, unless the
  session deliberately sets ``geobase.audit_maintenance = 'on'`` (retention jobs run by a DBA).
"""

from alembic import op

revision = "0006_security"
down_revision = "0001_catalog"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE catalog.api_keys (
            id          text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{12}$'),
            name        text NOT NULL,
            department  text REFERENCES catalog.departments(code),
            role        text NOT NULL CHECK (role IN ('viewer','analyst','steward','admin')),
            secret_hash text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            created_by  text NOT NULL DEFAULT 'cli',
            expires_at  timestamptz,
            revoked_at  timestamptz,
            CHECK (role = 'admin' OR department IS NOT NULL)
        );

        CREATE TABLE catalog.audit_log (
            id            bigserial PRIMARY KEY,
            at            timestamptz NOT NULL DEFAULT clock_timestamp(),
            principal     text NOT NULL,
            key_id        text,
            department    text,
            role          text,
            action        text NOT NULL,
            method        text,
            path          text,
            layers        text[] NOT NULL DEFAULT '{}',
            params        jsonb NOT NULL DEFAULT '{}'::jsonb,
            feature_count bigint,
            status        integer,
            client_ip     text,
            duration_ms   real
        );
        CREATE INDEX audit_log_at ON catalog.audit_log (at);
        CREATE INDEX audit_log_layers ON catalog.audit_log USING gin (layers);
        CREATE INDEX audit_log_who ON catalog.audit_log (key_id, at);

        CREATE FUNCTION catalog.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF coalesce(current_setting('geobase.audit_maintenance', true), '') = 'on' THEN
                RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
            END IF;
            RAISE EXCEPTION 'catalog.audit_log is append-only (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON catalog.audit_log
            FOR EACH ROW EXECUTE FUNCTION catalog.audit_log_append_only();
        CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON catalog.audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION catalog.audit_log_append_only();

        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'geobase_app') THEN
                CREATE ROLE geobase_app NOLOGIN;
            END IF;
        END $$;
        GRANT USAGE ON SCHEMA catalog, data, staging TO geobase_app;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA catalog, data, staging TO geobase_app;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA catalog, data, staging TO geobase_app;
        ALTER DEFAULT PRIVILEGES IN SCHEMA catalog, data, staging
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO geobase_app;
        ALTER DEFAULT PRIVILEGES IN SCHEMA catalog, data, staging
            GRANT USAGE, SELECT ON SEQUENCES TO geobase_app;
        REVOKE UPDATE, DELETE, TRUNCATE ON catalog.audit_log FROM geobase_app;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE IF EXISTS catalog.audit_log, catalog.api_keys;
        DROP FUNCTION IF EXISTS catalog.audit_log_append_only();
        """
    )

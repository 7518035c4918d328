"""Indicator monitoring: values per division and layer versions, targets, warnings and their events.

Revision ID: 0010_s8ind
Revises: 0010_s8edit

``indicator_pending`` is the outbox the one version writer fills in the version's own
transaction (geobase/catalog/versions.py ``insert_version_row``): a committed version is always
queued for the indicators, a rolled-back one never. ``indicator_state`` holds the layer versions
the stored values reflect (and the definitions' fingerprint); ``indicator_values`` one row per
indicator, division and recompute that changed it (the time series); ``indicator_targets`` the
planning targets an admin imports; ``indicator_warnings`` threshold crossings, open until a later
version brings the value back; ``indicator_events`` what subscribers are pushed (raised, cleared,
acknowledged), in order.
"""

from alembic import op

revision = "0010_s8ind"
down_revision = "0010_s8edit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE catalog.indicator_pending (
            id          bigserial PRIMARY KEY,
            layer       text NOT NULL,
            version     integer NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            done_at     timestamptz
        );
        CREATE INDEX indicator_pending_todo ON catalog.indicator_pending (id) WHERE done_at IS NULL;

        CREATE TABLE catalog.indicator_state (
            id          integer PRIMARY KEY CHECK (id = 1),
            versions    jsonb NOT NULL,
            fingerprint text NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE catalog.indicator_values (
            id            bigserial PRIMARY KEY,
            indicator     text NOT NULL,
            division      text NOT NULL,
            value         double precision,
            parts         jsonb NOT NULL,
            versions      jsonb NOT NULL,
            cause_layer   text,
            cause_version integer,
            computed_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX indicator_values_series ON catalog.indicator_values (indicator, division, id);

        CREATE TABLE catalog.indicator_targets (
            indicator   text NOT NULL,
            division    text NOT NULL,
            target      double precision NOT NULL,
            source      text,
            updated_by  text,
            updated_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (indicator, division)
        );

        CREATE TABLE catalog.indicator_warnings (
            id              bigserial PRIMARY KEY,
            indicator       text NOT NULL,
            division        text NOT NULL,
            level           text NOT NULL CHECK (level IN ('red', 'yellow')),
            status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'cleared')),
            value           double precision,
            target          double precision NOT NULL,
            cause_layer     text,
            cause_version   integer,
            versions        jsonb NOT NULL,
            parcels         jsonb NOT NULL DEFAULT '[]'::jsonb,
            raised_at       timestamptz NOT NULL DEFAULT now(),
            cleared_at      timestamptz,
            cleared_value   double precision,
            cleared_layer   text,
            cleared_version integer,
            acknowledged_by text,
            acknowledged_at timestamptz,
            note            text
        );
        CREATE UNIQUE INDEX indicator_warnings_one_open ON catalog.indicator_warnings (indicator, division)
            WHERE status = 'open';

        CREATE TABLE catalog.indicator_events (
            id          bigserial PRIMARY KEY,
            warning_id  bigint NOT NULL REFERENCES catalog.indicator_warnings (id) ON DELETE CASCADE,
            event       text NOT NULL CHECK (event IN ('raised', 'cleared', 'acknowledged')),
            at          timestamptz NOT NULL DEFAULT now(),
            data        jsonb NOT NULL
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE catalog.indicator_events;
        DROP TABLE catalog.indicator_warnings;
        DROP TABLE catalog.indicator_targets;
        DROP TABLE catalog.indicator_values;
        DROP TABLE catalog.indicator_state;
        DROP TABLE catalog.indicator_pending;
        """
    )

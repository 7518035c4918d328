"""Signed webhooks: subscriptions per layer and a durable outbox of deliveries.

Revision ID: 0010_s8edit
Revises: 0009_editing

``catalog.webhooks``: who wants to hear of a layer's events (a URL and the HMAC secret that signs
each delivery; the secret is shown once when created and never returned again).
``catalog.webhook_deliveries``: the outbox. A delivery row is written in the SAME transaction
as the event it announces, so an event is announced if and only if it happened, and a restart
loses nothing: the trigger below inserts one ``version`` delivery per subscribed webhook for
every new row of ``catalog.layer_versions`` (ingest, committed edit session, rollback: every
path that makes a version). Other event types are inserted by
:func:`geobase.catalog.webhooks.enqueue` in the caller's transaction.
Status: ``pending`` (due at ``next_attempt_at``), ``delivered``, ``dead`` (the dead-letter
list: ``attempts`` failures), ``cancelled`` (its webhook was removed).
"""

from alembic import op

revision = "0010_s8edit"
down_revision = "0009_editing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE catalog.webhooks (
            id          uuid PRIMARY KEY,
            layer       text NOT NULL,
            url         text NOT NULL CHECK (length(url) <= 2000),
            secret      text NOT NULL,
            events      text[] NOT NULL DEFAULT ARRAY['version'],
            description text,
            department  text,
            created_by  text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            removed_at  timestamptz
        );
        CREATE INDEX webhooks_layer ON catalog.webhooks (layer) WHERE removed_at IS NULL;

        CREATE TABLE catalog.webhook_deliveries (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            webhook_id      uuid NOT NULL REFERENCES catalog.webhooks (id) ON DELETE CASCADE,
            event           text NOT NULL,
            layer           text NOT NULL,
            payload         jsonb NOT NULL,
            body            text,
            status          text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'delivered', 'dead', 'cancelled')),
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_status     integer,
            last_error      text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            delivered_at    timestamptz
        );
        CREATE INDEX webhook_deliveries_due ON catalog.webhook_deliveries (next_attempt_at)
            WHERE status = 'pending';
        CREATE INDEX webhook_deliveries_status ON catalog.webhook_deliveries (status, id);

        CREATE FUNCTION catalog.webhook_version_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO catalog.webhook_deliveries (webhook_id, event, layer, payload)
            SELECT w.id, 'version', NEW.layer, jsonb_build_object(
                'event', 'version', 'layer', NEW.layer, 'version', NEW.version,
                'previous_version', (SELECT max(p.version) FROM catalog.layer_versions p
                                     WHERE p.layer = NEW.layer AND p.version < NEW.version),
                'mode', NEW.mode, 'created_at', NEW.created_at, 'created_by', NEW.created_by,
                'message', coalesce(NEW.metadata->>'message', NEW.source_name),
                'restored_from', NEW.restored_from,
                'counts', jsonb_build_object('added', NEW.rows_added, 'removed', NEW.rows_removed,
                                             'changed', NEW.rows_changed, 'total', NEW.rows_total))
            FROM catalog.webhooks w
            WHERE w.layer = NEW.layer AND w.removed_at IS NULL AND 'version' = ANY (w.events);
            RETURN NULL;
        END $$;
        CREATE TRIGGER layer_versions_webhooks AFTER INSERT ON catalog.layer_versions
            FOR EACH ROW EXECUTE FUNCTION catalog.webhook_version_outbox();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER IF EXISTS layer_versions_webhooks ON catalog.layer_versions;
        DROP FUNCTION IF EXISTS catalog.webhook_version_outbox();
        DROP TABLE IF EXISTS catalog.webhook_deliveries;
        DROP TABLE IF EXISTS catalog.webhooks;
        """
    )

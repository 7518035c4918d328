"""Editing (OGC API - Features Part 4): edit sessions, their staged changes, and the editor role.

Revision ID: 0009_editing
Revises: 0008_divisions

An edit session collects changes to one layer (``catalog.edit_changes``: the staged state of
each feature it touched, and the content hash the feature had when the session first touched
it) until it is committed as ONE new layer version or discarded (see :mod:`geobase.editing`).
The role ``editor`` (between analyst and steward, :mod:`geobase.vocab`) lets a department's key
edit the layers its department owns.
"""

from alembic import op

revision = "0009_editing"
down_revision = "0008_divisions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE catalog.api_keys DROP CONSTRAINT IF EXISTS api_keys_role_check;
        ALTER TABLE catalog.api_keys ADD CONSTRAINT api_keys_role_check
            CHECK (role IN ('viewer','analyst','editor','steward','admin'));

        CREATE TABLE catalog.edit_sessions (
            id          uuid PRIMARY KEY,
            layer       text NOT NULL,
            status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'committed', 'discarded')),
            created_by  text NOT NULL,
            key_id      text,
            department  text,
            created_at  timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            message     text,
            version     integer
        );
        CREATE INDEX edit_sessions_layer ON catalog.edit_sessions (layer, status);

        CREATE TABLE catalog.edit_changes (
            session_id  uuid NOT NULL REFERENCES catalog.edit_sessions (id) ON DELETE CASCADE,
            key         text NOT NULL,
            seq         integer NOT NULL,
            op          text NOT NULL CHECK (op IN ('upsert', 'delete')),
            base_hash   text,
            hash        text,
            attributes  jsonb,
            geom        geometry(Geometry, 4490),
            PRIMARY KEY (session_id, key)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE catalog.edit_changes;
        DROP TABLE catalog.edit_sessions;
        ALTER TABLE catalog.api_keys DROP CONSTRAINT api_keys_role_check;
        ALTER TABLE catalog.api_keys ADD CONSTRAINT api_keys_role_check
            CHECK (role IN ('viewer','analyst','steward','admin'));
        """
    )

"""The county of a staged edit: ``catalog.edit_changes.division``.

Revision ID: 0015_s12ids
Revises: 0014_s12prov

A feature key is unique per county only (each county's delivery numbers its own features); a
staged change names its feature by key AND county (geobase/features/ids.py), so that a commit
retires and checks that county's row, never another county's feature of the same key. NULL: a
change staged before (or a new feature of a layer without a division field), matched by key
alone, as before, once the commit has refused a key current in several counties.
"""

from alembic import op

revision = "0015_s12ids"
down_revision = "0014_s12prov"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE catalog.edit_changes ADD COLUMN division text")


def downgrade() -> None:
    op.execute("ALTER TABLE catalog.edit_changes DROP COLUMN division")

"""Versions per county: which counties a layer version changed, and each county's rows and extent.

Revision ID: 0008_divisions
Revises: 0007_job_progress_percent

A layer's versions are numbered for the whole layer (the province); a county's delivery makes a
new layer version that changes that county's partition only. ``touched`` names the counties a
version changed (NULL: a version made before partitions, of the one county there was);
``divisions`` holds, for every county current in the version, its row count and extent
(``{"339901": {"rows": 8000, "extent": [...]}}``), carried forward from version to version so
that a county's ingest never counts or scans another county's rows. The layer tables themselves
are partitioned by geobase/partitions.py when the catalog is synced (they are made from the specs).
"""

from alembic import op

revision = "0008_divisions"
down_revision = "0007_job_progress_percent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE catalog.layer_versions ADD COLUMN IF NOT EXISTS touched text[];
        ALTER TABLE catalog.layer_versions ADD COLUMN IF NOT EXISTS divisions jsonb;
        CREATE INDEX IF NOT EXISTS layer_versions_touched ON catalog.layer_versions USING gin (touched);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX IF EXISTS catalog.layer_versions_touched;
        ALTER TABLE catalog.layer_versions DROP COLUMN IF EXISTS divisions, DROP COLUMN IF EXISTS touched;
        """
    )

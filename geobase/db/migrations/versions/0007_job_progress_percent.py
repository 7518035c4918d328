"""Jobs: ``catalog.jobs.progress`` is a percentage (0-100) for every kind of job.

Revision ID: 0007_job_progress_percent
Revises: 0006_security

Ingest jobs stored a fraction (0-1) while analysis jobs stored a percentage; see
:mod:`geobase.jobs`. The stored ingest rows are converted, and a CHECK refuses a
value outside 0-100 so a writer in the wrong unit above 1 fails loudly.
"""

from alembic import op

revision = "0007_job_progress_percent"
down_revision = "0006_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE catalog.jobs SET progress = progress * 100 WHERE kind = 'ingest' AND progress <= 1;
        ALTER TABLE catalog.jobs ADD CONSTRAINT jobs_progress_percent CHECK (progress >= 0 AND progress <= 100);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE catalog.jobs DROP CONSTRAINT jobs_progress_percent;
        UPDATE catalog.jobs SET progress = progress / 100 WHERE kind = 'ingest';
        """
    )

"""The catalog metadata stamp: one counter that every change of the admin-edited catalog
metadata (``catalog.record_meta``, ``catalog.departments``) moves, in the changing transaction.

Revision ID: 0012_s10cat
Revises: 0011_s8img

Why: the open catalog keeps its records (and each caller's view of them) in memory per catalog
state and reads that state's stamp on every request (:data:`geobase.catalog.records.STAMP_SQL`).
The stamp read ``max(updated_at)`` and ``count(*)`` of ``record_meta``: a scan of every record
(7-10 ms at 10,000 records, most of a search's own time), and not exact either: ``updated_at``
is the writing transaction's start time, so a save that started earlier but committed later
left the maximum where it was and the kept records stale — metadata-only records take their
grade, openness and department (access facts) from that document. A counter moved by a
statement trigger is read by primary key and changes with every committed write: concurrent
writers queue on its row (admins' saves: rare and short), each commit gives a new value.
"""

from alembic import op

revision = "0012_s10cat"
down_revision = "0011_s8img"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE catalog.catalog_stamp (
            one  boolean PRIMARY KEY DEFAULT true CHECK (one),
            n    bigint NOT NULL DEFAULT 0
        );
        INSERT INTO catalog.catalog_stamp DEFAULT VALUES;
        CREATE FUNCTION catalog.bump_catalog_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE catalog.catalog_stamp SET n = n + 1;
            RETURN NULL;
        END $$;
        CREATE TRIGGER record_meta_stamp AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON catalog.record_meta
            FOR EACH STATEMENT EXECUTE FUNCTION catalog.bump_catalog_stamp();
        CREATE TRIGGER departments_stamp AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON catalog.departments
            FOR EACH STATEMENT EXECUTE FUNCTION catalog.bump_catalog_stamp();
        GRANT SELECT, UPDATE ON catalog.catalog_stamp TO geobase_app;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER departments_stamp ON catalog.departments;
        DROP TRIGGER record_meta_stamp ON catalog.record_meta;
        DROP FUNCTION catalog.bump_catalog_stamp();
        DROP TABLE catalog.catalog_stamp;
        """
    )

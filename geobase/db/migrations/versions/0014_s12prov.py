"""Layer partitions keep their freed tail pages: ``vacuum_truncate = off``.

Revision ID: 0014_s12prov
Revises: 0013_s11tab

A vacuum that finds empty pages at the end of a table truncates them, under an ACCESS EXCLUSIVE
lock. On the primary the lock is brief and only taken when no one waits; but it is written to
the WAL, and every read replica replays it: replay then waits for every query that reads the
table (the county's partition, which a province-wide read scans) and every new read queues
behind it, for up to ``max_standby_streaming_delay``; the queries still holding it then are
cancelled ("canceling statement due to conflict with recovery"). The pages a county's version
frees (a rolled-back version's rows, an edit's) are the space its next version fills: keeping
them costs nothing a later ingest does not take back. Partitions made from now on are created
so (:func:`geobase.partitions.create_beside`); this sets it on the ones that exist (ALTER
TABLE ... SET takes SHARE UPDATE EXCLUSIVE on the partition: readers do not wait for it).
"""

from alembic import op

revision = "0014_s12prov"
down_revision = "0013_s11tab"
branch_labels = None
depends_on = None

_EACH_PARTITION = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'data' AND c.relkind = 'r' AND c.relispartition
    LOOP
        EXECUTE format('ALTER TABLE %s {}', r.rel);
    END LOOP;
END $$;
"""


def upgrade() -> None:
    op.execute(_EACH_PARTITION.format("SET (vacuum_truncate = off)"))


def downgrade() -> None:
    op.execute(_EACH_PARTITION.format("RESET (vacuum_truncate)"))

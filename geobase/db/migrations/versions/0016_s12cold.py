"""A layer's spec grade and openness stored beside the spec, for reads of the layer states.

Revision ID: 0016_s12cold
Revises: 0015_s12ids

Every layer-state read (each cold vector tile reads them in its own statement, the tile fast
path and the catalog read them per request) takes a layer's effective grade and openness as
``coalesce(grade, spec->>'grade')``: the admin's override, else the spec's. Taking the spec's
value out of the ``spec`` jsonb decompressed that document (about 2 KB per layer, stored
compressed) twice per layer on every read: 0.3 ms of a 0.5 ms states read, on the path of every
cold tile (issue #15). ``spec_grade`` and ``spec_openness`` are those two values, generated
from ``spec`` by PostgreSQL itself whenever the spec is written (``GENERATED ALWAYS ... STORED``:
they cannot disagree with it), and read instead (geobase.catalog.layers ``GRADE_SQL``).
"""

from alembic import op

revision = "0016_s12cold"
down_revision = "0015_s12ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE catalog.layers
            ADD COLUMN spec_grade text GENERATED ALWAYS AS (spec->>'grade') STORED,
            ADD COLUMN spec_openness text GENERATED ALWAYS AS (spec->>'openness') STORED;
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE catalog.layers DROP COLUMN spec_grade, DROP COLUMN spec_openness")

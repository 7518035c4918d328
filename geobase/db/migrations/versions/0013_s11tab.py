"""The kept subdivision of a zone layer's version for the county-wide tabulation.

Revision ID: 0013_s11tab
Revises: 0012_s10cat

``analysis.subdivisions`` names one complete subdivision per (layer, version, the version's
commit time, the highest row id, largest piece in vertices); ``analysis.pieces`` holds its
pieces as :func:`geobase.analysis.pieces.load_pieces` passes them to the tabulation (the
zone's row id, the piece as WKB, whether the piece is its own box, and the box). Built by
:mod:`geobase.analysis.subdivision` on the first county-wide tabulation of a zone version, in
one transaction (a killed build leaves nothing), read by every later one, also after a
restart: work done once per version, like an index. Dropped with its version (the foreign key)
and replaced when a newer version of the layer builds its own.
"""

from alembic import op

revision = "0013_s11tab"
down_revision = "0012_s10cat"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE SCHEMA IF NOT EXISTS analysis;
        CREATE TABLE analysis.subdivisions (
            id          bigserial PRIMARY KEY,
            layer       text NOT NULL,
            version     integer NOT NULL,
            created_at  timestamptz NOT NULL,
            max_rid     bigint NOT NULL,
            vertices    integer NOT NULL,
            pieces      integer NOT NULL,
            seconds     double precision NOT NULL,
            built_at    timestamptz NOT NULL DEFAULT now(),
            UNIQUE (layer, version, created_at, max_rid, vertices),
            FOREIGN KEY (layer, version) REFERENCES catalog.layer_versions (layer, version) ON DELETE CASCADE
        );
        CREATE TABLE analysis.pieces (
            subdivision bigint NOT NULL REFERENCES analysis.subdivisions (id) ON DELETE CASCADE,
            ord         integer NOT NULL,
            rid         bigint NOT NULL,
            wkb         bytea NOT NULL,
            rect        boolean NOT NULL,
            x0          double precision NOT NULL,
            y0          double precision NOT NULL,
            x1          double precision NOT NULL,
            y1          double precision NOT NULL,
            PRIMARY KEY (subdivision, ord)
        );
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'geobase_app') THEN
                GRANT USAGE ON SCHEMA analysis TO geobase_app;
                GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analysis TO geobase_app;
                GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA analysis TO geobase_app;
            END IF;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA IF EXISTS analysis CASCADE")

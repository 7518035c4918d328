"""The kept halos of a zone layer's subdivision for the county-wide tabulation.

Revision ID: 0017_s12tab
Revises: 0016_s12cold

``analysis.halo_grids`` names one complete set of halos per (kept subdivision, side of the halo
grid); ``analysis.halos`` holds, for every cell of that grid whose fit box (the cell grown by an
eighth) meets a zone, the zone clipped to the cell grown by a quarter, or only ``covered`` when
the zone covers the fit box (see :mod:`geobase.analysis.pieces`). Built by
:mod:`geobase.analysis.subdivision` on the first county-wide tabulation of a zone version at that
grid, in one transaction (a killed build leaves nothing), read by every later one: clipping the
zones was a fifth of a cold tabulation's time and depends on the zone version and the grid only.
Dropped with its subdivision (the foreign key), so with its version.

The halo column is stored uncompressed and in line up to a page (``toast_tuple_target``): a
tabulation reads thousands of halos of a few kB, and decompressing or fetching them out of line
cost more than reading them.
"""

from alembic import op

revision = "0017_s12tab"
down_revision = "0016_s12cold"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE analysis.halo_grids (
            id          bigserial PRIMARY KEY,
            subdivision bigint NOT NULL REFERENCES analysis.subdivisions (id) ON DELETE CASCADE,
            cell        double precision NOT NULL,
            halos       integer NOT NULL,
            seconds     double precision NOT NULL,
            built_at    timestamptz NOT NULL DEFAULT now(),
            UNIQUE (subdivision, cell)
        );
        CREATE TABLE analysis.halos (
            grid        bigint NOT NULL REFERENCES analysis.halo_grids (id) ON DELETE CASCADE,
            rid         bigint NOT NULL,
            i           bigint NOT NULL,
            j           bigint NOT NULL,
            covered     boolean NOT NULL,
            halo        geometry(Geometry, 4490),
            PRIMARY KEY (grid, rid, i, j)
        ) WITH (toast_tuple_target = 8160);
        ALTER TABLE analysis.halos ALTER COLUMN halo SET STORAGE EXTERNAL;
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'geobase_app') THEN
                GRANT SELECT, INSERT, UPDATE, DELETE ON analysis.halo_grids, analysis.halos TO geobase_app;
                GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA analysis TO geobase_app;
            END IF;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS analysis.halos; DROP TABLE IF EXISTS analysis.halo_grids")

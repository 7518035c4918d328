"""Tiles: the per-version generalisation pyramid of coverage layers (land use) for low zooms.

Revision ID: 0004_tiles
Revises: 0001_catalog

``tiles.cells`` holds, per layer version and zoom below the layer's detail zoom, the summed
area of each class in every 2-pixel cell of the Web Mercator grid (parcels too small to draw at
that zoom); ``tiles.big`` the parcels large enough to be drawn as themselves, with the zoom
from which they are. ``tiles.pyramids`` records which (layer, version) is complete. Built
lazily per version by :mod:`geobase.tiles.pyramid`; rows of older versions are replaced.
"""

from alembic import op

revision = "0004_tiles"
down_revision = "0001_catalog"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE SCHEMA IF NOT EXISTS tiles;
        CREATE TABLE tiles.pyramids (
            layer      text NOT NULL,
            version    integer NOT NULL,
            zmin       integer NOT NULL,
            zmax       integer NOT NULL,
            built_at   timestamptz NOT NULL DEFAULT now(),
            seconds    double precision,
            PRIMARY KEY (layer, version)
        );
        CREATE TABLE tiles.cells (
            layer   text NOT NULL,
            version integer NOT NULL,
            z       smallint NOT NULL,
            cy      integer NOT NULL,
            cx      integer NOT NULL,
            cls     text,
            w       double precision NOT NULL
        );
        CREATE INDEX cells_lookup ON tiles.cells (layer, version, z, cy, cx);
        CREATE TABLE tiles.big (
            layer    text NOT NULL,
            version  integer NOT NULL,
            big_from smallint NOT NULL,
            cls      text,
            geom     geometry(MultiPolygon, 3857) NOT NULL
        );
        CREATE INDEX big_geom ON tiles.big USING gist (geom);
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'geobase_app') THEN
                GRANT USAGE ON SCHEMA tiles TO geobase_app;
                GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tiles TO geobase_app;
            END IF;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA IF EXISTS tiles CASCADE")

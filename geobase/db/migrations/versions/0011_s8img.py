"""Imagery catalogue: STAC Collections and Items of ingested multiband scenes.

Revision ID: 0011_s8img
Revises: 0010_s8cat

A scene ingested by ``geobase imagery add`` is a Cloud-Optimized GeoTIFF under the data
directory (``imagery/<collection>/<item>.tif``) and one row of ``catalog.imagery_items`` holding
its STAC Item (pystac, eo/raster/projection extensions). The searchable parts of the Item
(datetime, bbox in EPSG:4326, cloud cover) are columns so that STAC item search runs in SQL;
the Item itself is kept whole as ``item`` (jsonb). A collection's extent is derived from its
items when it is read, never stored twice.
"""

from alembic import op

revision = "0011_s8img"
down_revision = "0010_s8cat"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE catalog.imagery_collections (
            id          text PRIMARY KEY,
            title       text,
            description text,
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE catalog.imagery_items (
            collection  text NOT NULL REFERENCES catalog.imagery_collections (id),
            id          text NOT NULL,
            datetime    timestamptz NOT NULL,
            footprint   geometry(Polygon, 4326) NOT NULL,
            cloud_cover double precision,
            file        text NOT NULL,
            item        jsonb NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (collection, id)
        );
        CREATE INDEX imagery_items_datetime ON catalog.imagery_items (collection, datetime);
        CREATE INDEX imagery_items_footprint ON catalog.imagery_items USING gist (footprint);
        GRANT SELECT, INSERT, UPDATE, DELETE ON catalog.imagery_collections, catalog.imagery_items TO geobase_app;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE catalog.imagery_items; DROP TABLE catalog.imagery_collections;")

"""Vector tiles: decoded and checked against the database, per layer and composite, in both
tile matrix sets; cache/ETag behaviour across a new version; client errors."""

from __future__ import annotations

import gzip

import mapbox_vector_tile
import psycopg
import pytest

from geobase.db import database_url
from geobase.tiles.tms import CGCS2000_QUAD, WEB_MERCATOR_QUAD, lonlat_to_mercator
from test_tiles_data import LAND_CODES, LAT0, LON0, commit_version, load_test_county, water_rows


def tile_xy(tms, z, lon, lat):
    x, y = (lonlat_to_mercator(lon, lat) if tms.srid == 3857 else (lon, lat))
    span = tms.tile_span(z)
    return int((tms.origin[1] - y) // span), int((x - tms.origin[0]) // span)


@pytest.fixture(scope="module")
def county(pg_server, template_db, tmp_path_factory):
    from conftest import create_database, drop_database, settings_for

    name = "gb_tiles_county"
    url = create_database(pg_server, name, template_db)
    s = settings_for(url, tmp_path_factory.mktemp("tilescounty"))
    load_test_county(s)
    yield s
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def server(county):
    from conftest import LiveServer

    srv = LiveServer(county)
    yield srv
    srv.stop()


def decode(resp):
    assert resp.status_code == 200, resp.text
    return mapbox_vector_tile.decode(resp.content)


def test_smoke(server):
    with server.client() as c:
        z = 14
        row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.03, LAT0 + 0.03)
        r = c.get(f"/tiles/land_use/{z}/{col}/{row}.mvt")
        print(r.status_code, r.headers, len(r.content))
        print(decode(r).keys())

"""WMTS 1.0.0 (issue 18 item 6): capabilities for WebMercatorQuad and the Tianditu-style CGCS2000
grid ``c``, PNG tiles drawn in the layers' class colours, the vector tiles' access rules and
version-keyed cache.

OWSLib's WebMapTileService reads the capabilities and fetches tiles of both grids; a ``c`` tile's
bounds as a client computes them from our capabilities (scale denominator x 0.28 mm / metres per
degree) equal Tianditu's vec_c tile of the same matrix/row/col, computed independently (level 1
= 2 x 1 tiles of 180 degrees from -180/90); a tile's pixel at a known parcel shows its class."""

from __future__ import annotations

import io
import math

import psycopg
import pytest
from owslib.wmts import WebMapTileService
from PIL import Image
from print_common import LAND_COLOURS, admin_token, class_of_column, close, county_small, parcel_centre, rgb
from test_tiles_data import commit_version, land_use_rows

from geobase.db import database_url
from geobase.specs import get_registry

__all__ = ["admin_token", "county_small"]  # fixtures
DEG_M = 6378137.0 * 2 * math.pi / 360  # metres per degree, the WMTS rule for geographic CRSs


@pytest.fixture(scope="module")
def server(county_small):
    from conftest import LiveServer

    srv = LiveServer(county_small)
    yield srv
    srv.stop()


def tianditu_c_bounds(z: int, row: int, col: int) -> tuple[float, float, float, float]:
    """Tianditu vec_c: level z has 2^z x 2^(z-1) tiles of 180 / 2^(z-1) degrees from (-180, 90)."""
    span = 180.0 / 2 ** (z - 1)
    return -180 + col * span, 90 - (row + 1) * span, -180 + (col + 1) * span, 90 - row * span


def c_tile_of(z: int, lon: float, lat: float) -> tuple[int, int, float, float]:
    """(row, col, pixel x, pixel y) of a lon/lat in the Tianditu vec_c grid."""
    span = 180.0 / 2 ** (z - 1)
    fx, fy = (lon + 180) / span, (90 - lat) / span
    return int(fy), int(fx), (fx - int(fx)) * 256, (fy - int(fy)) * 256


def mercator_tile_of(z: int, lon: float, lat: float) -> tuple[int, int, float, float]:
    n = 2**z
    fx = (lon + 180) / 360 * n
    fy = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return int(fy), int(fx), (fx - int(fx)) * 256, (fy - int(fy)) * 256


def test_owslib_reads_both_grids_and_the_c_tiles_are_tianditus(server):
    wmts = WebMapTileService(f"{server.url}/wmts/1.0.0/WMTSCapabilities.xml")
    assert {"onemap", "land_use", "water_areas"} <= set(wmts.contents)
    assert "control_lines" not in wmts.contents  # internal: not offered to the public
    assert {"WebMercatorQuad", "c"} <= set(wmts.tilematrixsets)
    c = wmts.tilematrixsets["c"]
    assert c.crs == "urn:ogc:def:crs:EPSG::4490"
    for z in (1, 2, 7, 12, 18):
        tm = c.tilematrix[str(z)]
        assert (tm.matrixwidth, tm.matrixheight) == (2**z, 2 ** (z - 1))
        lat_top, lon_left = tm.topleftcorner  # EPSG:4490 axis order: latitude first
        span = tm.scaledenominator * 0.00028 / DEG_M * tm.tilewidth
        for row, col in [(0, 0), (tm.matrixheight - 1, tm.matrixwidth - 1), (tm.matrixheight // 3, tm.matrixwidth // 5)]:
            ours = (lon_left + col * span, lat_top - (row + 1) * span, lon_left + (col + 1) * span, lat_top - row * span)
            assert all(abs(a - b) < 1e-9 for a, b in zip(ours, tianditu_c_bounds(z, row, col))), (z, row, col)
    w = wmts.tilematrixsets["WebMercatorQuad"].tilematrix["0"]
    assert abs(w.scaledenominator / 559082264.0287178 - 1) < 1e-12  # OGC 17-083r2 WebMercatorQuad level 0
    lon, lat = parcel_centre(2, 3)
    for tms, finder, z in (("c", c_tile_of, 14), ("WebMercatorQuad", mercator_tile_of, 14)):
        row, col, _, _ = finder(z, lon, lat)
        tile = wmts.gettile(layer="land_use", tilematrixset=tms, tilematrix=str(z), row=row, column=col,
                            format="image/png")
        img = Image.open(io.BytesIO(tile.read()))
        assert img.size == (256, 256) and img.getextrema()[3][1] > 0, tms  # not empty


@pytest.mark.parametrize("tms, finder", [("c", c_tile_of), ("WebMercatorQuad", mercator_tile_of)])
def test_tile_pixels_show_the_class_colour_of_known_parcels(server, tms, finder):
    alpha = get_registry().layers["land_use"].style.opacity
    z = 15
    with server.client() as client:
        for i, j in [(0, 0), (1, 7), (2, 3), (3, 12), (9, 1)]:
            lon, lat = parcel_centre(i, j)
            row, col, px, py = finder(z, lon, lat)
            r = client.get(f"/wmts/1.0.0/land_use/default/{tms}/{z}/{row}/{col}.png")
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
            pixel = Image.open(io.BytesIO(r.content)).convert("RGBA").getpixel((int(px), int(py)))
            assert close(pixel[:3], rgb(LAND_COLOURS[class_of_column(i)])), (i, j, pixel)
            assert abs(pixel[3] - alpha * 255) <= 3, pixel


def test_kvp_gettile_equals_rest_and_caches_by_version(server, county_small):
    lon, lat = parcel_centre(5, 5)
    row, col, px, py = c_tile_of(15, lon, lat)
    kvp = (f"/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=land_use&STYLE=default&TILEMATRIXSET=c"
           f"&TILEMATRIX=15&TILEROW={row}&TILECOL={col}&FORMAT=image/png")
    rest = f"/wmts/1.0.0/land_use/default/c/15/{row}/{col}.png"
    with server.client() as client:
        first = client.get(rest)
        again = client.get(kvp.lower())  # KVP names in any case
        assert first.status_code == again.status_code == 200
        assert again.headers["x-tile-cache"] == "hit" and again.content == first.content
        assert client.get(rest, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
        # a new version of the layer: every parcel becomes orchard (0201), the tile is drawn again
        with psycopg.connect(database_url(county_small)) as conn:
            commit_version(conn, "land_use", [{**r, "dlbm": "0201"} for r in land_use_rows()])
            conn.commit()
        fresh = client.get(rest)
        assert fresh.headers["x-tile-cache"] == "miss" and fresh.headers["etag"] != first.headers["etag"]
        orchard = get_registry().codes_for(get_registry().layers["land_use"], "dlbm")["0201"].color
        pixel = Image.open(io.BytesIO(fresh.content)).convert("RGBA").getpixel((int(px), int(py)))
        assert close(pixel[:3], rgb(orchard)), pixel


def test_access_refusals_and_unknown_parameters(server, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    lon, lat = 113.02, 30.05  # inside the STBHHX control line square
    row, col, _, _ = c_tile_of(14, lon, lat)
    path = f"/wmts/1.0.0/control_lines/default/c/14/{row}/{col}.png"
    with server.client() as client:
        r = client.get(path)
        assert r.status_code == 404 and r.json()["parameter"] == "layers"  # as if it did not exist
        r = client.get(f"/wmts?service=WMTS&request=GetTile&layer=control_lines&tilematrixset=c&tilematrix=14"
                       f"&tilerow={row}&tilecol={col}")
        assert r.status_code == 404
        assert client.get(path, headers=auth).status_code == 200
        assert "control_lines" in client.get("/wmts?REQUEST=GetCapabilities", headers=auth).text
        assert "control_lines" not in client.get("/wmts?REQUEST=GetCapabilities").text
        for query, name in [("SERVICE=WMTS&REQUEST=GetCapabilities&FOO=1", "FOO"),
                            ("service=WMTS&request=GetTile&layer=land_use&tilematrixset=c&tilematrix=14&tilerow=0&"
                             + "tilecol=0&bbox=1", "bbox"),
                            ("SERVICE=WMTS&REQUEST=GetTile&LAYER=land_use&TILEMATRIXSET=c&TILEMATRIX=14", "TILEROW"),
                            ("SERVICE=WMTS&REQUEST=GetTile&LAYER=land_use&TILEMATRIXSET=c&TILEMATRIX=0&TILEROW=0&"
                             + "TILECOL=0", "TILEMATRIX"),
                            ("SERVICE=WMTS&REQUEST=GetMap", "REQUEST")]:
            r = client.get(f"/wmts?{query}")
            assert r.status_code == 400 and r.json()["parameter"] == name, (query, r.text)
        r = client.get("/wmts/1.0.0/land_use/default/c/14/0/0.png?foo=1")
        assert r.status_code == 400 and r.json()["parameter"] == "foo"
        r = client.get("/wmts/1.0.0/land_use/default/c/14/99999/0.png")
        assert r.status_code == 400 and r.json()["parameter"] == "tileRow"
        assert client.get("/wmts/1.0.0/land_use/default/nope/14/0/0.png").status_code == 404


def test_a_tile_with_more_features_than_the_limit_is_refused_not_cut(server):
    from conftest import LiveServer

    small = LiveServer(server.settings, env={"GEOBASE_PRINT_MAX_FEATURES": "50"})
    try:
        lon, lat = parcel_centre(10, 10)
        with small.client() as client:
            row, col, _, _ = c_tile_of(12, lon, lat)  # the whole county (400 parcels) in one tile
            r = client.get(f"/wmts/1.0.0/land_use/default/c/12/{row}/{col}.png")
            assert r.status_code == 400 and r.json()["parameter"] == "tileMatrix", r.text
            row, col, _, _ = c_tile_of(17, lon, lat)  # a few parcels
            assert client.get(f"/wmts/1.0.0/land_use/default/c/17/{row}/{col}.png").status_code == 200
    finally:
        small.stop()

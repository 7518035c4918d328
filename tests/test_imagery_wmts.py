"""Imagery served as a mosaic of two overlapping synthetic scenes of different dates and cloud
covers, through a live server: the mosaic order (latest on top by default, least cloudy with
``order=cloud``, a date range picks scenes), OGC API - Tiles tilesets in both grids, WMTS read by
OWSLib (layers with presets as styles, PNG and WebP, KVP and RESTful) whose tile equals rasterio
reading the same window, and the tile cache keyed by the collection's content."""

from __future__ import annotations

import io
import math

import numpy as np
import psycopg
import pytest
import rasterio
from conftest import LiveServer, create_database, drop_database, settings_for
from imagery_common import BANDS4, write_scene
from PIL import Image
from rasterio.io import MemoryFile

from geobase.imagery.ingest import add_image

OLDER = ((118.00, 29.00, 118.20, 29.20), [10, 20, 100, 200])  # 2024-05-01, cloud 5 %
NEWER = ((118.10, 29.00, 118.30, 29.20), [30, 40, 50, 60])  # 2024-06-01, cloud 60 %
BOTH, ONLY_OLDER = (118.15, 29.10), (118.05, 29.10)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    d = tmp_path_factory.mktemp("scenes")
    return write_scene(d / "older.tif", *OLDER), write_scene(d / "newer.tif", *NEWER), d


@pytest.fixture(scope="module")
def srv(pg_server, template_db, tmp_path_factory, scenes):
    name = f"gb_imgw_{id(tmp_path_factory) % 10**8}"
    url = create_database(pg_server, name, template_db)
    settings = settings_for(url, tmp_path_factory.mktemp("imgw"))
    older, newer, _ = scenes
    add_image(settings, older, "fields", when="2024-05-01", cloud_cover=5, bands=BANDS4, item_id="older")
    add_image(settings, newer, "fields", when="2024-06-01", cloud_cover=60, bands=BANDS4, item_id="newer")
    server = LiveServer(settings)
    yield server, settings
    server.stop()
    drop_database(pg_server, name)


def c_tile(z: int, lon: float, lat: float) -> tuple[int, int]:
    """(row, col) in the CGCS2000 grid (Tianditu _c)."""
    span = 180.0 / 2 ** (z - 1)
    return int((90 - lat) / span), int((lon + 180) / span)


def mercator_tile(z: int, lon: float, lat: float) -> tuple[int, int]:
    """(row, col) in WebMercatorQuad."""
    n = 2**z
    return int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n), int((lon + 180) / 360 * n)


def _point(c, lon, lat, **params) -> list:
    r = c.get(f"/imagery/fields/point/{lon},{lat}", params=params)
    assert r.status_code == 200, r.text
    return r.json()["values"]


def _tile_values(c, z, lon, lat, **params) -> np.ndarray:
    """The raw (.tif) CGCS2000 tile around lon/lat: its bands, the value at lon/lat's pixel."""
    row, col = c_tile(z, lon, lat)
    r = c.get(f"/imagery/fields/tiles/CGCS2000Quad/{z}/{col}/{row}.tif", params={"bands": "b1,b2,b3,b4", **params})
    assert r.status_code == 200, r.text
    span = 180.0 / 2 ** (z - 1)
    px = int(((lon + 180) / span - col) * 256)
    py = int(((90 - lat) / span - row) * 256)
    with MemoryFile(r.content) as mf, mf.open() as ds:
        return ds.read()[:, py, px]


def test_latest_on_top_least_cloudy_on_top_and_date_range(srv):
    server, _ = srv
    with server.client() as c:
        assert _point(c, *BOTH) == NEWER[1]  # default: latest on top
        assert _point(c, *BOTH, order="latest") == NEWER[1]
        assert _point(c, *BOTH, order="cloud") == OLDER[1]  # 5 % cloud beats 60 %
        assert _point(c, *BOTH, datetime="../2024-05-15") == OLDER[1]
        assert _point(c, *ONLY_OLDER) == OLDER[1]
        assert list(_tile_values(c, 12, *BOTH)) == NEWER[1] + [255]
        assert list(_tile_values(c, 12, *BOTH, order="cloud")) == OLDER[1] + [255]
        assert list(_tile_values(c, 12, *BOTH, datetime="2024-06-01")) == NEWER[1] + [255]
        assert list(_tile_values(c, 12, *ONLY_OLDER, order="cloud")) == OLDER[1] + [255]
        for url in ("/imagery/fields/point/118.15,29.1", "/imagery/fields/tiles/WebMercatorQuad/10/847/418.png",
                    "/imagery/fields/wmts/default/c/12/692/3392.png"):
            r = c.get(url, params={"order": "prettiest"})
            assert r.status_code == 400 and r.json()["parameter"] == "order", (url, r.text)
        r = c.post("/imagery/fields/statistics", params={"bands": "b1", "order": "cloud"},
                   json={"type": "Polygon", "coordinates": [[[118.12, 29.05], [118.18, 29.05], [118.18, 29.15],
                                                             [118.12, 29.05]]]})
        assert r.status_code == 200, r.text


def test_ogc_api_tiles_tilesets_in_both_grids(srv):
    server, _ = srv
    with server.client() as c:
        sets = c.get("/imagery/fields/tiles").json()["tilesets"]
        assert {s["crs"] for s in sets} == {"http://www.opengis.net/def/crs/EPSG/0/3857",
                                           "http://www.opengis.net/def/crs/EPSG/0/4490"}
        for tms, (row, col) in (("CGCS2000Quad", c_tile(12, *BOTH)), ("WebMercatorQuad", mercator_tile(12, *BOTH))):
            doc = c.get(f"/imagery/fields/tiles/{tms}").json()
            assert doc["dataType"] == "map" and doc["boundingBox"]["lowerLeft"] == [118.0, 29.0]
            tpl = {l["type"]: l["href"] for l in doc["links"] if l["rel"] == "item"}
            assert set(tpl) == {"image/png", "image/webp"}
            url = tpl["image/png"].format(tileMatrix=12, tileRow=row, tileCol=col).removeprefix(server.url)
            r = c.get(url)
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", (url, r.text)
        assert c.get("/imagery/nope/tiles").status_code == 404
        assert c.get("/imagery/fields/tiles/NoGrid").json()["parameter"] == "tileMatrixSetId"


def _expected_c_tile(z: int, row: int, col: int, scenes_top_first, bands: list[int]):
    """rasterio's own reading of a CGCS2000 tile of the mosaic: each scene reprojected to the tile
    (nearest), the topmost covering scene's value per pixel; and the coverage mask."""
    from rasterio.transform import from_bounds
    from rasterio.warp import Resampling, reproject

    span = 180.0 / 2 ** (z - 1)
    bounds = (-180 + col * span, 90 - (row + 1) * span, -180 + (col + 1) * span, 90 - row * span)
    dst = from_bounds(*bounds, 256, 256)
    out = np.zeros((len(bands), 256, 256), "uint8")
    cover = np.zeros((256, 256), "uint8")
    for path in reversed(scenes_top_first):  # bottom first, the top one drawn last
        with rasterio.open(path) as src:
            got = np.zeros((len(bands), 256, 256), "uint8")
            mask = np.zeros((256, 256), "uint8")
            for k, b in enumerate(bands):
                reproject(rasterio.band(src, b), got[k], dst_transform=dst, dst_crs="EPSG:4490",
                          resampling=Resampling.nearest)
            reproject(np.full((src.height, src.width), 255, "uint8"), mask, src_transform=src.transform,
                      src_crs=src.crs, dst_transform=dst, dst_crs="EPSG:4490", resampling=Resampling.nearest)
        out[:, mask == 255] = got[:, mask == 255]
        cover |= mask
    return out, cover


def test_owslib_reads_the_imagery_layers_and_a_tile_equals_rasterio(srv, scenes):
    from owslib.wmts import WebMapTileService

    server, _ = srv
    older, newer, _ = scenes
    wmts = WebMapTileService(f"{server.url}/wmts/1.0.0/WMTSCapabilities.xml")
    layer = wmts.contents["imagery.fields"]
    assert {"default", "truecolor", "ndvi"} <= set(layer.styles)
    assert {"image/png", "image/webp"} <= set(layer.formats)
    assert {"WebMercatorQuad", "c"} <= set(layer.tilematrixsetlinks)
    z = 12
    row, col = c_tile(z, 118.09, 29.10)  # a tile across the newer scene's west edge
    tile = wmts.gettile(layer="imagery.fields", tilematrixset="c", tilematrix=str(z), row=row, column=col,
                        format="image/png", style="default")
    with MemoryFile(tile.read()) as mf, mf.open() as ds:
        rgba = ds.read()
    want, cover = _expected_c_tile(z, row, col, [newer, older], [3, 2, 1])
    assert len(np.unique(want[0][cover == 255])) == 2  # both scenes show in this tile
    assert np.array_equal(rgba[:3], want) and np.array_equal(rgba[3], cover)
    with server.client() as c:
        rest = c.get(f"/imagery/fields/wmts/default/c/{z}/{row}/{col}.png")
        assert rest.status_code == 200
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(rest.content)).convert("RGBA")), np.moveaxis(rgba, 0, -1))
        webp = c.get("/imagery/fields/wmts/ndvi/WebMercatorQuad/{}/{}/{}.webp".format(z, *mercator_tile(z, *BOTH)))
        assert webp.status_code == 200 and webp.headers["content-type"] == "image/webp"
        kvp = c.get("/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetTile", "LAYER": "imagery.fields",
                                     "STYLE": "ndvi", "TILEMATRIXSET": "c", "TILEMATRIX": z, "TILEROW": row,
                                     "TILECOL": col, "FORMAT": "image/webp"})
        assert kvp.status_code == 200 and kvp.headers["content-type"] == "image/webp"
        bad = c.get("/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetTile", "LAYER": "imagery.fields",
                                     "STYLE": "sepia", "TILEMATRIXSET": "c", "TILEMATRIX": z, "TILEROW": row,
                                     "TILECOL": col})
        assert bad.status_code == 400 and bad.json()["parameter"] == "STYLE"


def test_ndvi_style_colours_the_scene_ndvi(srv):
    """The ndvi preset draws (nir-red)/(nir+red) on -1..1 with rdylgn: the older scene's 0.33
    is a green, the newer scene's 0.09 a yellowish colour."""
    from rio_tiler.colormap import cmap

    server, _ = srv
    rdylgn = cmap.get("rdylgn")
    with server.client() as c:
        for (lon, lat), (nir_red) in ((ONLY_OLDER, (200, 100)), (BOTH, (60, 50))):
            row, col = c_tile(14, lon, lat)
            r = c.get(f"/imagery/fields/wmts/ndvi/c/14/{row}/{col}.png")
            px = Image.open(io.BytesIO(r.content)).convert("RGBA").getpixel((128, 128))
            ndvi = (nir_red[0] - nir_red[1]) / (nir_red[0] + nir_red[1])
            want = rdylgn[int((ndvi + 1) / 2 * 255)]
            assert max(abs(a - b) for a, b in zip(px[:3], want[:3])) <= 1, (px, want)


def test_tile_cache_is_keyed_by_the_collections_content(srv, scenes):
    server, settings = srv
    older, _, d = scenes
    add_image(settings, older, "cached", when="2024-05-01", cloud_cover=5, bands=BANDS4, item_id="first")
    row, col = c_tile(12, *BOTH)
    url = f"/imagery/cached/tiles/CGCS2000Quad/12/{col}/{row}.tif?bands=b1,b2,b3,b4"
    with server.client() as c:
        first = c.get(url)
        again = c.get(url)
        assert first.headers["x-tile-cache"] == "miss" and again.headers["x-tile-cache"] == "hit"
        assert again.content == first.content
        assert c.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
        later = write_scene(d / "later.tif", (118.0, 29.0, 118.3, 29.2), [1, 2, 3, 4])
        add_image(settings, later, "cached", when="2024-07-01", cloud_cover=50, bands=BANDS4, item_id="later")
        fresh = c.get(url)  # a new scene: a new key, the new scene on top
        assert fresh.headers["x-tile-cache"] == "miss" and fresh.headers["etag"] != first.headers["etag"]
        with MemoryFile(fresh.content) as mf, mf.open() as ds:
            assert list(ds.read()[:, 128, 128]) == [1, 2, 3, 4, 255]
        assert c.get(url + "&order=cloud").headers["x-tile-cache"] == "miss"  # another mosaic


def test_imagery_layers_follow_the_dem_sharing_rule(srv):
    from owslib.wmts import WebMapTileService

    server, settings = srv
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("UPDATE catalog.layers SET sharing = 'internal' WHERE name = 'dem'")
    try:
        caps = WebMapTileService(f"{server.url}/wmts/1.0.0/WMTSCapabilities.xml")
        assert not [n for n in caps.contents if n.startswith("imagery.")]
        with server.client() as c:
            row, col = c_tile(12, *BOTH)
            for url in ("/imagery/fields/tiles", "/imagery/fields/tiles/CGCS2000Quad",
                        f"/imagery/fields/wmts/default/c/12/{row}/{col}.png",
                        f"/imagery/fields/tiles/CGCS2000Quad/12/{col}/{row}.png",
                        f"/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=imagery.fields&TILEMATRIXSET=c&TILEMATRIX=12"
                        f"&TILEROW={row}&TILECOL={col}"):
                assert c.get(url).status_code == 404, url
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("UPDATE catalog.layers SET sharing = 'public' WHERE name = 'dem'")

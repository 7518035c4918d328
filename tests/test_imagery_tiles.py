"""Imagery tiles, points and polygon statistics of the real Landsat 7 scene through a live
server: a tile's raw values (``.tif``) equal rasterio reprojecting the same window of the
source with the same (nearest) resampling, the PNG carries the same bytes, NDVI statistics of
a polygon equal numpy on the same pixels, and bad requests are refused naming the parameter."""

from __future__ import annotations


import numpy as np
import pytest
import rasterio
from conftest import LiveServer, create_database, drop_database, settings_for, tile_xy
from rasterio.io import MemoryFile
from test_imagery import LANDSAT_BANDS, SCENE

from geobase.imagery.ingest import add_image

LON, LAT = -34.87, -7.96  # inside the scene (Olinda)


@pytest.fixture(scope="module")
def img_server(pg_server, template_db, tmp_path_factory):
    name = f"gb_imgt_{id(tmp_path_factory) % 10**8}"
    url = create_database(pg_server, name, template_db)
    settings = settings_for(url, tmp_path_factory.mktemp("imgt"))
    add_image(settings, SCENE, "landsat", when="2000-02-27", sensor="etm+", bands=LANDSAT_BANDS)
    srv = LiveServer(settings)
    yield srv
    srv.stop()
    drop_database(pg_server, name)


def _expected(z: int, x: int, y: int, bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """rasterio's own reading of the tile: the source reprojected to the tile grid, nearest;
    and which of the tile's pixels the source covers."""
    from geobase.tiles.tms import get_tms
    from rasterio.transform import from_bounds
    from rasterio.warp import Resampling, reproject

    tms = get_tms("WebMercatorQuad")
    bounds = tms.bounds(z, y, x)
    out = np.zeros((len(bands), 256, 256), "uint8")
    with rasterio.open(SCENE) as src:
        for k, b in enumerate(bands):
            reproject(rasterio.band(src, b), out[k], dst_transform=from_bounds(*bounds, 256, 256),
                      dst_crs="EPSG:3857", resampling=Resampling.nearest)
        covered = np.zeros((256, 256), "uint8")
        reproject(np.full((src.height, src.width), 255, "uint8"), covered, src_transform=src.transform,
                  src_crs=src.crs, dst_transform=from_bounds(*bounds, 256, 256), dst_crs="EPSG:3857",
                  resampling=Resampling.nearest)
    return out, covered


def test_a_tile_equals_rasterio_reading_the_same_window(img_server):
    z = 13
    x, y = tile_xy(LON, LAT, z)
    with img_server.client() as c:
        raw = c.get(f"/imagery/landsat/tiles/WebMercatorQuad/{z}/{x}/{y}.tif", params={"bands": "b3,b2,b1"})
        png = c.get(f"/imagery/landsat/tiles/WebMercatorQuad/{z}/{x}/{y}.png", params={"bands": "b3,b2,b1"})
        webp = c.get(f"/imagery/landsat/tiles/WebMercatorQuad/{z}/{x}/{y}.webp", params={"bands": "b3,b2,b1"})
    assert raw.status_code == png.status_code == webp.status_code == 200
    assert png.headers["content-type"] == "image/png" and webp.headers["content-type"] == "image/webp"
    with MemoryFile(raw.content) as mf, mf.open() as ds:
        got = ds.read()
    want, covered = _expected(z, x, y, [3, 2, 1])
    assert got.shape == (4, 256, 256)  # the bands, then the validity mask (255: valid)
    assert np.array_equal(got[:3], want) and np.array_equal(got[3], covered)
    assert 0 < (covered == 255).sum() < 256 * 256  # this tile crosses the scene's edge
    with MemoryFile(png.content) as mf, mf.open() as ds:  # GDAL's PNG driver decodes it
        rgba = ds.read()
    assert rgba.shape == (4, 256, 256)
    assert np.array_equal(rgba[:3], want)  # PNG: the same values, lossless
    assert np.array_equal(rgba[3], covered)


def test_outside_the_mosaic_is_an_empty_tile_and_cgcs2000_grid_works(img_server):
    with img_server.client() as c:
        assert c.get("/imagery/landsat/tiles/WebMercatorQuad/13/0/0.png").status_code == 204
        r = c.get("/imagery/landsat/tiles/CGCS2000Quad/12/{0}/{1}.png".format(*_cgcs_tile(12)))
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
        r = c.get("/imagery/landsat/tiles/WebMercatorQuad/13/{}/{}.png".format(*tile_xy(LON, LAT, 13)),
                  params={"expression": "(b4-b3)/(b4+b3)", "rescale": "-1,1", "colormap_name": "rdylgn"})
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
        later = c.get("/imagery/landsat/tiles/WebMercatorQuad/13/{}/{}.png".format(*tile_xy(LON, LAT, 13)),
                      params={"datetime": "2010-01-01/.."})
        assert later.status_code == 204  # no scene in that range


def _cgcs_tile(z: int) -> tuple[int, int]:
    from geobase.tiles.tms import get_tms

    tms = get_tms("CGCS2000Quad")
    span = tms.tile_span(z)
    return int((LON - tms.origin[0]) / span), int((tms.origin[1] - LAT) / span)


def test_point_query(img_server):
    with rasterio.open(SCENE) as src:
        px = [int(v) for v in next(src.sample([_utm(LON, LAT)]))]
    with img_server.client() as c:
        r = c.get(f"/imagery/landsat/point/{LON},{LAT}").json()
        assert r["values"] == px
        ndvi = c.get(f"/imagery/landsat/point/{LON},{LAT}", params={"expression": "(b4-b3)/(b4+b3)"}).json()
        assert ndvi["values"][0] == pytest.approx((px[3] - px[2]) / (px[3] + px[2]))
        assert c.get("/imagery/landsat/point/120,30").status_code == 404


def _utm(lon: float, lat: float) -> tuple[float, float]:
    from pyproj import Transformer

    return Transformer.from_crs(4326, 31985, always_xy=True).transform(lon, lat)


def test_ndvi_statistics_of_a_polygon_equal_numpy_on_the_same_pixels(img_server):
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom

    poly = {"type": "Polygon", "coordinates": [[[-34.90, -7.98], [-34.86, -7.985], [-34.85, -7.95],
                                                [-34.89, -7.94], [-34.90, -7.98]]]}
    with rasterio.open(SCENE) as src:
        data = src.read().astype("float64")
        inside = ~geometry_mask([transform_geom("EPSG:4326", src.crs, poly)], out_shape=(src.height, src.width),
                                transform=src.transform)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (data[3] - data[2]) / (data[3] + data[2])
    v = ndvi[inside & np.isfinite(ndvi)]
    with img_server.client() as c:
        r = c.post("/imagery/landsat/statistics", params={"expression": "(b4-b3)/(b4+b3)"}, json=poly)
    assert r.status_code == 200, r.text
    s = r.json()["statistics"]["(b4-b3)/(b4+b3)"]
    assert r.json()["pixels_inside"] == int(inside.sum()) > 1000
    assert s["count"] == v.size
    for key, want in (("mean", v.mean()), ("median", np.median(v)), ("std", v.std()), ("min", v.min()),
                      ("max", v.max())):
        assert s[key] == pytest.approx(float(want), rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize("url, params, parameter", [
    ("/imagery/landsat/tiles/WebMercatorQuad/13/{x}/{y}.png", {"expression": "__import__('os')"}, "expression"),
    ("/imagery/landsat/tiles/WebMercatorQuad/13/{x}/{y}.png", {"expression": "b4**2"}, "expression"),
    ("/imagery/landsat/tiles/WebMercatorQuad/13/{x}/{y}.png", {"expression": "(b9-b3)/(b9+b3)"}, "expression"),
    ("/imagery/landsat/tiles/WebMercatorQuad/13/{x}/{y}.png", {"bands": "b3,b7"}, "bands"),
    ("/imagery/landsat/tiles/WebMercatorQuad/13/{x}/{y}.png", {"colour": "red"}, "colour"),
    ("/imagery/landsat/tiles/WebMercatorQuad/13/{x}/{y}.png", {"expression": "(b4-b3)/(b4+b3)"}, "rescale"),
    ("/imagery/landsat/tiles/WebMercatorQuad/13/{x}/{y}.png", {"rescale": "5,1"}, "rescale"),
    ("/imagery/landsat/tiles/WebMercatorQuad/13/{x}/{y}.png", {"bands": "b1", "colormap_name": "nope"},
     "colormap_name"),
    ("/imagery/landsat/tiles/WebMercatorQuad/13/{x}/{y}.tif", {"rescale": "0,255"}, "rescale"),
    ("/imagery/landsat/tiles/WebMercatorQuad/13/{x}/{y}.gif", {}, "format"),
    ("/imagery/landsat/tiles/WebMercatorQuad/33/{x}/{y}.png", {}, None),
    ("/imagery/landsat/point/-34.87,-7.96", {"expression": "b1;import"}, "expression"),
])
def test_refusals_name_the_parameter(img_server, url, params, parameter):
    x, y = tile_xy(LON, LAT, 13)
    with img_server.client() as c:
        r = c.get(url.format(x=x, y=y), params=params)
    assert r.status_code == 400, (url, params, r.status_code, r.text[:300])
    if parameter:
        assert r.json()["parameter"] == parameter, r.json()


def test_unknown_collection_grid_and_bad_polygon(img_server):
    with img_server.client() as c:
        r = c.get("/imagery/landsat/tiles/NoSuchGrid/13/0/0.png")  # as /collections/{id}/tiles/{tms}: 404
        assert r.status_code == 404 and r.json()["parameter"] == "tileMatrixSetId"
        assert c.get("/imagery/nope/tiles/WebMercatorQuad/13/0/0.png").status_code == 404
        r = c.post("/imagery/landsat/statistics", json={"type": "Point", "coordinates": [0, 0]})
        assert r.status_code == 400 and r.json()["parameter"] == "geometry"
        r = c.post("/imagery/landsat/statistics", params={"expression": "b1+"}, json={"type": "Polygon", "coordinates": [
            [[-34.9, -7.98], [-34.86, -7.98], [-34.86, -7.95], [-34.9, -7.98]]]})
        assert r.status_code == 400 and r.json()["parameter"] == "expression"

"""A 4-band 8-bit scene written the way rasterio and GDAL write one by default (no PHOTOMETRIC
asked for: the file says RGB and ExtraSamples=2, GDAL reads band 4 as alpha) keeps band 4 as
data through ``geobase imagery add``: a live server's tile and point query give band 4's
values, equal to rasterio reading the source with band 4 as data, also where band 4 is 0 (an
alpha would make those pixels transparent). A file that declares associated alpha keeps it as
the COG's mask, and both decisions are said in the ingest report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import LiveServer, create_database, drop_database, settings_for, tile_xy
from imagery_common import BANDS4
from rasterio.io import MemoryFile

from geobase.imagery.ingest import add_image

GEOBASE = Path(sys.executable).with_name("geobase")
BOUNDS = (118.0, 29.0, 118.2, 29.2)
SIZE = 256


def _write(path: Path, **options) -> Path:
    """4 bands, uint8, band 4 a gradient from 0 (left) to 255 with a block of zeros; no
    PHOTOMETRIC unless ``options`` give one."""
    from rasterio.transform import from_bounds

    data = np.zeros((4, SIZE, SIZE), "uint8")
    data[0], data[1], data[2] = 30, 60, 90
    data[3] = np.tile(np.arange(SIZE, dtype="uint8"), (SIZE, 1))
    data[3, 100:140, 100:140] = 0
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=4, dtype="uint8", crs="EPSG:4326",
                       transform=from_bounds(*BOUNDS, SIZE, SIZE), **options) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def scenes(pg_server, template_db, tmp_path_factory):
    name = f"gb_imga_{id(tmp_path_factory) % 10**8}"
    url = create_database(pg_server, name, template_db)
    folder = tmp_path_factory.mktemp("imga")
    settings = settings_for(url, folder)
    plain = _write(folder / "no_photometric.tif")
    with rasterio.open(plain) as src:  # the defect's premise: GDAL reads this file's band 4 as alpha
        assert src.colorinterp[3].name == "alpha"
    env = {**os.environ, "GEOBASE_DATABASE_URL": url, "GEOBASE_DATA_DIR": str(settings.data_path)}
    out = subprocess.run([str(GEOBASE), "imagery", "add", str(plain), "--collection", "plain", "--datetime",
                          "2024-05-01", "--bands", BANDS4], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    premult = _write(folder / "premultiplied.tif", photometric="rgb", alpha="premultiplied")
    notes: list[str] = []
    item = add_image(settings, premult, "premult", when="2024-05-01", notes=notes)
    srv = LiveServer(settings)
    yield {"server": srv, "plain": plain, "report": report, "premult": premult, "premult_notes": notes,
           "premult_item": item, "data": settings.data_path}
    srv.stop()
    drop_database(pg_server, name)


def test_band_4_without_photometric_is_data_in_tiles_and_points(scenes):
    from geobase.tiles.tms import get_tms
    from rasterio.transform import from_bounds
    from rasterio.warp import Resampling, reproject

    assert any("band 4" in n and "kept as data" in n for n in scenes["report"]["notes"]), scenes["report"]
    z = 11
    x, y = tile_xy(118.1, 29.1, z)
    bounds = get_tms("WebMercatorQuad").bounds(z, y, x)
    want = np.zeros((256, 256), "uint8")
    covered = np.zeros((256, 256), "uint8")
    with rasterio.open(scenes["plain"]) as src:
        reproject(src.read(4), want, src_transform=src.transform, src_crs=src.crs,  # band 4 read as data
                  dst_transform=from_bounds(*bounds, 256, 256), dst_crs="EPSG:3857", resampling=Resampling.nearest)
        reproject(np.full((SIZE, SIZE), 255, "uint8"), covered, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=from_bounds(*bounds, 256, 256), dst_crs="EPSG:3857", resampling=Resampling.nearest)
        row, col = 120, 121  # inside the block where band 4 is 0
        lon, lat = src.xy(row, col)
        at_zero = [int(v) for v in src.read(window=((row, row + 1), (col, col + 1))).ravel()]
        row2, col2 = 20, 200
        lon2, lat2 = src.xy(row2, col2)
        elsewhere = [int(v) for v in src.read(window=((row2, row2 + 1), (col2, col2 + 1))).ravel()]
    with scenes["server"].client() as c:
        raw = c.get(f"/imagery/plain/tiles/WebMercatorQuad/{z}/{x}/{y}.tif", params={"bands": "b4"})
        p0 = c.get(f"/imagery/plain/point/{lon},{lat}")
        p1 = c.get(f"/imagery/plain/point/{lon2},{lat2}", params={"bands": "b4"})
    assert raw.status_code == 200, raw.text
    with MemoryFile(raw.content) as mf, mf.open() as ds:
        got = ds.read()
    assert got.shape == (2, 256, 256)  # band 4, then the validity mask
    assert np.array_equal(got[1], covered)  # band 4's zeros are not transparent
    assert np.array_equal(got[0][covered == 255], want[covered == 255])
    assert (want[covered == 255] == 0).sum() > 100 and np.unique(want[covered == 255]).size > 50
    assert at_zero[3] == 0 and p0.status_code == 200 and p0.json()["values"] == at_zero
    assert p1.status_code == 200 and p1.json()["values"] == [elsewhere[3]] and elsewhere[3] == 200


def test_the_cog_is_minisblack_with_four_data_bands(scenes):
    cog = next((scenes["data"] / "imagery" / "plain").glob("*.tif"))
    with rasterio.open(cog) as ds:
        assert ds.count == 4 and [c.name for c in ds.colorinterp] == ["gray", "undefined", "undefined", "undefined"]
        assert ds.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
        assert all(m == [rasterio.enums.MaskFlags.all_valid] for m in ds.mask_flag_enums)


def test_declared_associated_alpha_is_the_mask_and_said(scenes):
    notes = scenes["premult_notes"]
    assert len(notes) == 1 and "band 4" in notes[0] and "associated" in notes[0] and "mask" in notes[0], notes
    cog = next((scenes["data"] / "imagery" / "premult").glob("*.tif"))
    with rasterio.open(cog) as ds:
        assert ds.count == 3
        mask = ds.dataset_mask()
    with rasterio.open(scenes["premult"]) as src:
        alpha = src.read(4)
    assert np.array_equal(mask > 0, alpha > 0)  # the declared alpha became the mask
    bands = scenes["premult_item"]["assets"]["data"]["eo:bands"]
    assert [b["name"] for b in bands] == ["b1", "b2", "b3"]
    with scenes["server"].client() as c:
        with rasterio.open(scenes["premult"]) as src:
            lon, lat = src.xy(120, 110)  # inside the zero block: alpha 0, masked
            lon2, lat2 = src.xy(20, 200)  # alpha 200: the three bands' values
            want = [int(v) for v in src.read(window=((20, 21), (200, 201))).ravel()[:3]]
        masked, seen = c.get(f"/imagery/premult/point/{lon},{lat}"), c.get(f"/imagery/premult/point/{lon2},{lat2}")
    assert masked.status_code == 200 and masked.json()["values"] == [None, None, None], masked.text
    assert seen.status_code == 200 and seen.json()["values"] == want, (seen.text, want)

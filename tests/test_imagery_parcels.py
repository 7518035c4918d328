"""Imagery x parcels (``imagery-zonal``): a synthetic two-date series over the test county's
parcels (EPSG:4490, NIR/red consistent with green farmland) with two parcels planted idle in
the later scene: NDVI zonal statistics find exactly them, from the latest scene of the range,
and the report names the layer version and the scene used."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
import rasterio
from rasterio.transform import from_origin
from test_tiles_data import LAT0, LON0, STEP, N, load_test_county

from geobase.imagery.ingest import add_image

IDLE = {"LU0305", "LU1107"}
PX = STEP / 10  # ten pixels per parcel side


def _scene(path, idle: set[str]) -> None:
    """4 bands (blue, green, red, nir), uint8, nodata 0: NDVI 0.6 everywhere, ~0.06 on ``idle``;
    a strip of nodata over parcel LU0000's western half."""
    size = N * 10 + 20
    west, north = LON0 - 10 * PX, LAT0 + N * STEP + 10 * PX
    bands = np.zeros((4, size, size), "uint8")
    bands[0], bands[1], bands[2], bands[3] = 30, 60, 40, 160
    for key in idle:
        i, j = int(key[2:4]), int(key[4:6])
        col = 10 + i * 10
        row = size - 10 - (j + 1) * 10
        bands[3, row + 1:row + 9, col + 1:col + 9] = 45
    bands[:, size - 20:size - 10, 10:15] = 0  # parcel LU0000: half of it nodata
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4, dtype="uint8", nodata=0,
                       crs="EPSG:4490", transform=from_origin(west, north, PX, PX), photometric="minisblack") as ds:
        ds.write(bands)


@pytest.fixture
def series(db_settings, tmp_path):
    load_test_county(db_settings, dem=True)
    for when, idle in (("2020-05-01", set()), ("2020-08-01", IDLE)):
        f = tmp_path / f"s2_{when.replace('-', '')}.tif"
        _scene(f, idle)
        add_image(db_settings, f, "county", when=when, sensor="synthetic", bands="b1=blue,b2=green,b3=red,b4=nir")
    return db_settings


def test_ndvi_per_parcel_finds_the_planted_idle_farmland(series, live_server):
    srv = live_server(series)
    with srv.client() as c:
        r = c.post("/analysis/imagery-zonal", json={"collection": "county", "datetime": "2020-01-01/2020-12-31"})
        assert r.status_code == 200, r.text
        rep = r.json()
        early = c.post("/analysis/imagery-zonal", json={"collection": "county", "datetime": "../2020-06-30"}).json()
        bad = c.post("/analysis/imagery-zonal", json={"collection": "county", "expression": "b4**2"})
        missing = c.post("/analysis/imagery-zonal", json={"collection": "nope"})
    assert rep["parcels_checked"] == N * N == rep["parcels_with_pixels"]
    assert rep["scenes"] == [{"id": "s2_20200801", "datetime": "2020-08-01T00:00:00+00:00"}]
    assert rep["versions"]["land_use"]["version"] == 1
    low = {p["key"] for p in rep["parcels"] if p["mean"] < 0.3}
    assert low == IDLE
    by_key = {p["key"]: p for p in rep["parcels"]}
    assert by_key["LU0105"]["mean"] == pytest.approx(0.6) and by_key["LU0105"]["std"] == pytest.approx(0)
    assert by_key["LU0000"]["valid_share"] == pytest.approx(0.5)
    assert {p["key"] for p in early["parcels"] if p["mean"] < 0.3} == set()
    assert bad.status_code == 400 and bad.json()["parameter"] == "expression"
    assert missing.status_code == 404


def test_imagery_zonal_needs_the_imagery_rule(series, live_server):
    with psycopg.connect(series.database_url) as conn:
        conn.execute("UPDATE catalog.layers SET sharing = 'internal' WHERE name = 'dem'")
    srv = live_server(series)
    with srv.client() as c:
        r = c.post("/analysis/imagery-zonal", json={"collection": "county"})
    assert r.status_code == 404

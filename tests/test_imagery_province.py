"""Imagery x parcels in a province: a parcel key (BSM) is unique in its county only, so two
counties both hold ``00000001``..``00000016``. The zonal statistics stored in ``parcel_imagery``
must be each county's own parcel's: the job's numbers are joined to the parcels by key AND county.

Before: the join was on the key alone, so every value row joined the parcel of that key in every
county (each county's feature got both counties' statistics, and the derived version's write
broke on the duplicate keys).

Real PostGIS, real files through GDAL (the shapefiles, the GeoTIFF), a real uvicorn server."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_bounds
from test_divisions import A, B, load
from test_ingest import query
from test_shared_keys import _admin

from geobase.imagery.ingest import add_image

#: per county: (red, nir) of its pixels; NDVI (nir-red)/(nir+red)
BANDS = {A: (40, 160), B: (60, 100)}
NDVI = {d: (nir - red) / (nir + red) for d, (red, nir) in BANDS.items()}


def _scene(settings, path) -> None:
    """One 4-band EPSG:4490 scene over both counties (A west of B, 2 km apart): A's half carries
    A's NDVI, B's half B's."""
    (w, s, e, n), = query(settings, "SELECT ST_XMin(x), ST_YMin(x), ST_XMax(x), ST_YMax(x) FROM "
                                    "(SELECT ST_Extent(geom) x FROM data.land_use WHERE _vto IS NULL) t")
    (a_east,), = query(settings, "SELECT ST_XMax(ST_Extent(geom)) FROM data.land_use WHERE division = %s", (A,))
    pad, size = 0.001, 400
    w, s, e, n = w - pad, s - pad, e + pad, n + pad
    bands = np.zeros((4, size, size), "uint8")
    bands[0], bands[1] = 30, 60
    split = int((a_east + (e - a_east) * 0.05 - w) / (e - w) * size)  # between the counties
    for d, cols in ((A, slice(0, split)), (B, slice(split, size))):
        bands[2, :, cols], bands[3, :, cols] = BANDS[d]
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4, dtype="uint8", nodata=0,
                       crs="EPSG:4490", transform=from_bounds(w, s, e, n, size, size),
                       photometric="minisblack") as ds:
        ds.write(bands)


def test_each_countys_parcel_gets_its_own_statistics(db_settings, tmp_path, live_server):
    s = db_settings
    load(s, tmp_path, A)
    load(s, tmp_path, B)  # the same 16 keys in another county
    assert query(s, "SELECT count(DISTINCT _key), count(*) FROM data.land_use WHERE _vto IS NULL") == [(16, 32)]
    _scene(s, tmp_path / "scene.tif")
    add_image(s, tmp_path / "scene.tif", "province", when="2020-07-01", sensor="synthetic",
              bands="b1=blue,b2=green,b3=red,b4=nir")
    srv = live_server(s)
    with srv.client() as c:
        r = c.post("/analysis/imagery-zonal", json={"collection": "province", "store": True}, headers=_admin(s))
    assert r.status_code == 200, r.text
    rep = r.json()
    # the report names each parcel by its Features API id, with its own county's numbers
    assert sorted(p["key"] for p in rep["parcels"]) == sorted(f"{d}-{i:08d}" for d in (A, B) for i in range(1, 17))
    assert all(p["mean"] == pytest.approx(NDVI[p["key"][:6]]) for p in rep["parcels"])
    assert rep["parcels_checked"] == 32 and rep["derived"]["written"] and rep["derived"]["rows_total"] == 32
    stored = query(s, "SELECT division, parcel, mean, valid_pixels FROM data.parcel_imagery "
                      "WHERE _vto IS NULL AND idx = 'ndvi' ORDER BY 1, 2")
    assert len(stored) == 32 and {(d, k) for d, k, *_ in stored} == {(d, f"{i:08d}") for d in (A, B)
                                                                     for i in range(1, 17)}
    for d, key, mean, valid in stored:  # each county's parcel: its own county's pixels only
        assert valid > 0 and mean == pytest.approx(NDVI[d]), (d, key)
    # the derived feature lies on its own county's parcel
    assert query(s, "SELECT count(*) FROM data.parcel_imagery p JOIN data.land_use l ON l._key = p.parcel "
                    "AND l.division = p.division AND l._vto IS NULL WHERE p._vto IS NULL "
                    "AND ST_Equals(l.geom, p.geom)") == [(32,)]

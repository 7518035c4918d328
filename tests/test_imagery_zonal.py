"""Zonal statistics of NDVI over many polygons of the real Landsat scene equal numpy on the same
pixels (cell-centre rule), polygon by polygon."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geobase.imagery.render import BandRequest
from geobase.imagery.zonal import zonal_stats

SCENE = Path("/work/shared/realdata/br_olinda_landsat7/L7_ETMs.tif")
NDVI = "(b4-b3)/(b4+b3)"


def _grid_polygons(n: int = 6):
    """n x n lon/lat squares over the scene, one of them partly outside it, and one far away."""
    import shapely

    w, s, step = -34.93, -8.02, 0.02
    polys = [shapely.box(w + i * step, s + j * step, w + (i + 1) * step - 0.003, s + (j + 1) * step - 0.003)
             for i in range(n) for j in range(n)]
    polys.append(shapely.box(120, 30, 120.01, 30.01))
    return polys


def test_ndvi_zonal_statistics_equal_numpy_per_polygon():
    import shapely
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom

    polys = _grid_polygons()
    got = zonal_stats(SCENE, [shapely.to_wkb(p) for p in polys], BandRequest(expression=NDVI))
    assert len(got) == len(polys)
    with rasterio.open(SCENE) as src:
        data = src.read().astype("float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            ndvi = (data[3] - data[2]) / (data[3] + data[2])
        checked = 0
        for p, g in zip(polys, got):
            inside = ~geometry_mask([transform_geom("EPSG:4326", src.crs, shapely.geometry.mapping(p))],
                                    out_shape=ndvi.shape, transform=src.transform)
            v = ndvi[inside & np.isfinite(ndvi)]
            assert g["pixels"] == int(inside.sum()) and g["count"] == v.size
            if v.size:
                checked += 1
                assert g["valid_share"] == pytest.approx(v.size / inside.sum())
                for key, want in (("mean", v.mean()), ("median", np.median(v)), ("std", v.std())):
                    assert g[key] == pytest.approx(float(want), rel=1e-12, abs=1e-12), key
            else:
                assert g["mean"] is None
    assert checked >= 20 and got[-1]["pixels"] == 0  # the far polygon: no pixel


def test_zonal_refuses_several_outputs():
    import shapely

    from geobase.errors import InvalidInput

    with pytest.raises(InvalidInput, match="one expression"):
        zonal_stats(SCENE, [shapely.to_wkb(_grid_polygons()[0])], BandRequest(expression="b1;b2"))

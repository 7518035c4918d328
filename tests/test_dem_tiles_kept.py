"""DEM tiles (hillshade, elevation, slope) drawn through the DEM file kept open per thread and
rio-tiler's remembered default transform (:mod:`geobase.imagery.readers`, as imagery tiles are)
are the very bytes of a tile drawn with nothing remembered (a new rio-tiler ``Reader`` per tile,
rasterio's own ``calculate_default_transform``), in both tile matrix sets; a DEM file rewritten
under the same path is read anew."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from geobase.tiles import raster
from geobase.tiles.tms import get_tms

from geobase.imagery import readers

DEM = Path(__file__).resolve().parents[1] / "sample_data" / "county" / "dem.tif"


def _bounds(path: Path) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        return transform_bounds(src.crs, "EPSG:4490", *src.bounds)


def _fresh(path: Path, style: str, tms, z: int, row: int, col: int, monkeypatch) -> bytes | None:
    """The tile with nothing kept: a new Reader, rasterio's own default transform."""
    import rasterio.warp
    import rio_tiler.utils
    from rio_tiler.io import Reader

    with monkeypatch.context() as m:
        m.setattr(rio_tiler.utils, "calculate_default_transform", rasterio.warp.calculate_default_transform)
        m.setattr(readers, "memoize_default_transform", lambda: None)
        m.setattr(readers, "open_scene", lambda p: readers.OpenScene(Reader(str(p))))
        return raster.render_dem_tile(path, style, tms, z, col, row)


@pytest.mark.parametrize("tms_id", ["WebMercatorQuad", "CGCS2000Quad"])
def test_kept_dem_handles_draw_the_bytes_of_a_fresh_reader(tms_id, monkeypatch):
    tms = get_tms(tms_id)
    w, s, e, n = _bounds(DEM)
    box = (w - 0.01, s + (n - s) * 0.4, w + (e - w) * 0.3, s + (n - s) * 0.6)  # crosses the DEM's west edge
    drawn = 0
    for z in (10, 12, 14):
        for row, col in list(tms.tiles_covering(z, box))[:4]:
            for style in raster.STYLES:
                kept = raster.render_dem_tile(DEM, style, tms, z, col, row)
                again = raster.render_dem_tile(DEM, style, tms, z, col, row)  # the handle and the memo reused
                assert kept == again == _fresh(DEM, style, tms, z, row, col, monkeypatch), (tms_id, z, row, col, style)
                drawn += kept is not None
    assert drawn >= 12


def test_a_dem_rewritten_under_the_same_path_is_read_anew(tmp_path):
    path = tmp_path / "dem.tif"
    shutil.copy(DEM, path)
    tms = get_tms("WebMercatorQuad")
    w, s, e, n = _bounds(path)
    row, col = next(iter(tms.tiles_covering(12, ((w + e) / 2, (s + n) / 2, (w + e) / 2 + 1e-4, (s + n) / 2 + 1e-4))))
    before = raster.render_dem_tile(path, "elevation", tms, 12, col, row)
    with rasterio.open(path, "r+") as dst:  # the same file, other elevations
        dst.write(np.full((dst.height, dst.width), 3000, dtype=dst.dtypes[0]), 1)
    after = raster.render_dem_tile(path, "elevation", tms, 12, col, row)
    assert before is not None and after is not None and after != before
    with rasterio.open(path) as src:
        assert float(src.read(1).max()) == 3000

"""Imagery tiles drawn through scene handles kept open per thread and rio-tiler's memoized
``calculate_default_transform`` (:mod:`geobase.imagery.readers`) are the very bytes titiler's
way of drawing them gives (a fresh ``Reader`` per tile, nothing remembered), on the real
Landsat scene (SIRGAS 2000 / UTM 25S drawn in WebMercatorQuad and CGCS2000Quad, so every tile
is reprojected); a scene file replaced or rewritten under the same path is read anew, never
through the old handle; handles are per thread and bounded."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import rasterio
from conftest import tile_xy
from geobase.tiles.tms import get_tms
from imagery_common import write_scene
from rasterio.io import MemoryFile
from test_imagery import SCENE

from geobase.imagery import readers, render

NDVI = render.BandRequest(expression="(b4-b3)/(b4+b3)", rescale="-1,1", colormap_name="rdylgn")
LON, LAT = -34.87, -7.96  # inside the scene; the z12 tile crosses its edge


def _reference(tms_id: str, z: int, row: int, col: int, monkeypatch) -> bytes:
    """The tile drawn with nothing remembered: a new Reader and rasterio's own
    ``calculate_default_transform``; in WebMercatorQuad as titiler draws it (``Reader.tile``),
    in CGCS2000Quad (not a morecantile grid) by ``Reader.part`` over the tile's bounds, which is
    what ``Reader.tile`` does inside."""
    import rasterio.warp
    import rio_tiler.utils
    from rasterio.crs import CRS
    from rio_tiler.colormap import cmap
    from rio_tiler.io import Reader

    tms = get_tms(tms_id)
    with monkeypatch.context() as m:
        m.setattr(rio_tiler.utils, "calculate_default_transform", rasterio.warp.calculate_default_transform)
        with Reader(str(SCENE)) as src:
            if tms_id == "WebMercatorQuad":
                img = src.tile(col, row, z, tilesize=256, expression=NDVI.expression)
            else:
                crs = CRS.from_epsg(tms.srid)
                img = src.part(tms.bounds(z, row, col), dst_crs=crs, bounds_crs=crs, width=256, height=256,
                               max_size=None, expression=NDVI.expression)
    img.rescale(in_range=[(-1, 1)])
    return img.render(img_format="PNG", colormap=cmap.get("rdylgn"))


@pytest.mark.parametrize("tms_id", ["WebMercatorQuad", "CGCS2000Quad"])
def test_kept_handles_draw_titilers_bytes(tms_id, monkeypatch):
    tms = get_tms(tms_id)
    box = (LON - 0.03, LAT - 0.02, LON + 0.03, LAT + 0.02)  # crosses the scene's east edge at z12
    tiles = [(z, row, col) for z in (12, 13, 14) for row, col in tms.tiles_covering(z, box)]
    drawn = 0
    for z, row, col in tiles:
        first = render.render_tile([SCENE], tms.bounds(z, row, col), tms.srid, NDVI, "png")
        if first is None:
            continue  # outside the scene (the sea): nothing to compare
        again = render.render_tile([SCENE], tms.bounds(z, row, col), tms.srid, NDVI, "png")  # kept handle, memo
        assert first == again == _reference(tms_id, z, row, col, monkeypatch), (tms_id, z, row, col)
        drawn += 1
    assert drawn >= 6


def _pixel(path, bounds=(118.0, 29.0, 118.2, 29.2)) -> int:
    tms = get_tms("WebMercatorQuad")
    x, y = tile_xy(118.1, 29.1, 12)
    png = render.render_tile([path], tms.bounds(12, y, x), tms.srid, render.BandRequest(bands="b1"), "png")
    with MemoryFile(png) as mf, mf.open() as ds:
        band, alpha = ds.read(1), ds.read(2)
    return int(np.unique(band[alpha == 255])[0])


def test_a_scene_replaced_or_rewritten_is_read_anew(tmp_path):
    path = write_scene(tmp_path / "scene.tif", (118.0, 29.0, 118.2, 29.2), [10])
    assert _pixel(path) == 10  # the handle is kept now
    write_scene(tmp_path / "new.tif", (118.0, 29.0, 118.2, 29.2), [200])
    os.replace(tmp_path / "new.tif", path)  # a new file under the old name (a new inode)
    assert _pixel(path) == 200
    time.sleep(0.01)  # (a different modification time even on a coarse clock)
    with rasterio.open(path, "r+") as ds:  # rewritten in place: same inode, same size
        ds.write(np.full((1, 200, 200), 77, "uint8"))
    assert _pixel(path) == 77
    readers.close_all()


def test_handles_are_per_thread_and_bounded(tmp_path):
    paths = [write_scene(tmp_path / f"s{i}.tif", (118.0, 29.0, 118.2, 29.2), [i]) for i in range(readers.MAX_OPEN + 1)]
    mine = readers.open_scene(paths[0])
    assert readers.open_scene(paths[0]) is mine
    other: list = []
    t = threading.Thread(target=lambda: other.append(readers.open_scene(paths[0])))
    t.start()
    t.join()
    assert other[0] is not mine  # a GDAL handle is never shared between threads
    for p in paths[1:]:
        readers.open_scene(p)
    assert mine.reader.dataset.closed  # the least recently used beyond MAX_OPEN is closed
    assert readers.open_scene(paths[0]) is not mine
    readers.close_all()

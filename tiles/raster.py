"""DEM tiles: hillshade, coloured elevation and slope PNGs from the current version's COG.

The tile is read with a one-pixel buffer, reprojected to the tile's grid by rio-tiler (Web
Mercator for WebMercatorQuad, CGCS2000 longitude/latitude for CGCS2000Quad); slope and
hillshade then use *ground* pixel sizes (the Mercator pixel times the cosine of the latitude;
degrees times the CGCS2000 ellipsoid's radii of curvature), so degrees of slope are true
whatever the grid, zoom or latitude."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from geobase.tiles.tms import TileMatrixSet

from geobase.errors import InvalidInput, NotFound
from geobase.lazy_import import load

if TYPE_CHECKING:  # numpy is imported by the first DEM tile (with rio-tiler), not at server start
    import numpy as np

STYLES = ("hillshade", "elevation", "slope")

# elevation ramp (metres -> RGB), hypsometric tints
ELEVATION_RAMP = [(0, (44, 123, 182)), (50, (171, 217, 233)), (200, (166, 217, 106)), (500, (255, 255, 191)),
                  (1000, (253, 174, 97)), (2000, (215, 25, 28)), (4000, (255, 255, 255))]
SLOPE_RAMP = [(0, (255, 255, 255)), (2, (255, 255, 178)), (6, (254, 204, 92)), (15, (253, 141, 60)),
              (25, (240, 59, 32)), (45, (189, 0, 38))]


def _rio_tiler() -> SimpleNamespace:
    """rio-tiler (and with it numpy, rasterio and GDAL), imported on the first DEM tile rather
    than at server start: ~0.3 s and tens of MiB that a server without a DEM never needs
    (:mod:`geobase.lazy_import`: one thread imports, the others wait)."""
    errors, io, utils = load("numpy", "rio_tiler.errors", "rio_tiler.io", "rio_tiler.utils")[1:]
    return SimpleNamespace(Reader=io.Reader, render=utils.render, TileOutsideBounds=errors.TileOutsideBounds)


def _ramp(values: np.ndarray, ramp) -> np.ndarray:
    import numpy as np

    stops = np.array([s for s, _ in ramp], dtype="float64")
    out = np.zeros(values.shape + (3,), dtype="uint8")
    for i in range(3):
        out[..., i] = np.interp(values, stops, [c[i] for _, c in ramp]).astype("uint8")
    return out


def transparent_png() -> bytes:
    """An empty 256x256 tile: browsers draw it without the error a 204 image would raise."""
    _rio_tiler()  # numpy and rio-tiler imported once, one thread at a time
    import numpy as np

    return _png(np.zeros((256, 256, 4), dtype="uint8"))


def _png(rgba: np.ndarray) -> bytes:
    import numpy as np

    return _rio_tiler().render(np.moveaxis(rgba[..., :3], -1, 0), mask=rgba[..., 3], img_format="PNG")


def _read_buffered(path: Path, tms: TileMatrixSet, z: int, x: int, y: int):
    """The tile's elevations with a one-pixel ring (258 x 258, in the tile's own grid), their
    validity mask and the *ground* size in metres of the pixels of each row (east-west,
    north-south), so that gradients are metres per metre in either tile matrix set."""
    import numpy as np

    from geobase.imagery import readers

    TileOutsideBounds = _rio_tiler().TileOutsideBounds
    # the file kept open per thread and rio-tiler's default transform remembered, as for imagery
    # tiles (geobase/imagery/readers.py): opening the COG and two PROJ look-ups per tile were
    # ~80 % of a DEM tile (~60 ms of an empty tile's 70 ms), and they are facts of the file
    readers.memoize_default_transform()
    scene = readers.open_scene(path)
    src = scene.reader
    if tms.srid == 3857:
        img = src.tile(x, y, z, tilesize=256, buffer=1, resampling_method="bilinear", reproject_method="bilinear")
        # ground pixel size: mercator pixel x cos(latitude), row by row
        span = tms.tile_span(z)
        ymax = tms.origin[1] - y * span
        px_merc = span / 256
        rows = np.arange(-1, 257) + 0.5
        lat = np.degrees(2 * np.arctan(np.exp((ymax - rows * px_merc) / 6378137.0)) - math.pi / 2)
        ground = px_merc * np.cos(np.radians(lat))
        dx = dy = ground
    else:  # CGCS2000Quad: the tile's lon/lat box on the EPSG:4490 grid
        from affine import Affine
        from rasterio.crs import CRS

        from geobase.analysis.slope import pixel_size_m

        xmin, ymin, xmax, ymax = tms.bounds(z, y, x)
        px = (xmax - xmin) / 256
        crs = CRS.from_epsg(tms.srid)
        w, s_, e, n = scene.bounds_in(crs)
        if xmax < w or xmin > e or ymax < s_ or ymin > n:
            raise TileOutsideBounds(f"tile {z}/{y}/{x} of {tms.id} is outside the DEM")
        img = src.part((xmin - px, ymin - px, xmax + px, ymax + px), dst_crs=crs, bounds_crs=crs,
                       width=258, height=258, max_size=None, resampling_method="bilinear",
                       reproject_method="bilinear")
        dx, dy = pixel_size_m(Affine(px, 0, xmin - px, 0, -px, ymax + px), 258, geographic=True)
    elev = img.data[0].astype("float64")
    valid = ~np.ma.getmaskarray(img.array[0]) if np.ma.isMaskedArray(img.array) else img.mask.astype(bool)
    return elev, valid, np.asarray(dx)[:, None], np.asarray(dy)[:, None]


def render_dem_tile(path: Path, style: str, tms: TileMatrixSet, z: int, x: int, y: int,
                    nodata: float | None = None) -> bytes | None:
    """PNG bytes of one DEM tile (WebMercatorQuad or CGCS2000Quad), or None when the tile lies
    outside the raster."""
    outside = _rio_tiler().TileOutsideBounds  # numpy and rio-tiler imported once, one thread at a time
    import numpy as np

    if style not in STYLES:
        raise InvalidInput(f"style {style!r} is not one of {', '.join(STYLES)}", parameter="style")
    tms.validate(z, y, x)
    if not path.exists():
        raise NotFound(f"the DEM file of the current version is missing ({path.name})", parameter="layer")
    try:
        elev, valid, dx, dy = _read_buffered(path, tms, z, x, y)
    except outside:
        return None
    if nodata is not None:
        valid &= elev != nodata
    if not valid.any():
        return None
    filled = np.where(valid, elev, np.nanmean(np.where(valid, elev, np.nan)))
    dzdy, dzdx = np.gradient(filled)
    dzdx = dzdx / dx
    dzdy = -dzdy / dy  # rows grow southwards
    core = (slice(1, -1), slice(1, -1))
    alpha = np.where(valid[core], 255, 0).astype("uint8")
    if style == "elevation":
        rgb = _ramp(filled[core], ELEVATION_RAMP)
    elif style == "slope":
        slope = np.degrees(np.arctan(np.hypot(dzdx, dzdy)))[core]
        rgb = _ramp(slope, SLOPE_RAMP)
    else:
        az, alt = math.radians(315.0), math.radians(45.0)
        slope = np.arctan(np.hypot(dzdx, dzdy))
        aspect = np.arctan2(-dzdx, dzdy)
        shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
        grey = np.clip(shade * 255, 0, 255).astype("uint8")[core]
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    return _png(rgba)


def slope_degrees(path: Path, z: int, x: int, y: int, tms: TileMatrixSet) -> np.ndarray:
    """Slope in degrees on the tile grid (exposed for tests and analyses)."""
    _rio_tiler()  # numpy and rio-tiler imported once, one thread at a time
    import numpy as np

    elev, _, dx, dy = _read_buffered(path, tms, z, x, y)
    dzdy, dzdx = np.gradient(elev)
    return np.degrees(np.arctan(np.hypot(dzdx / dx, dzdy / dy)))[1:-1, 1:-1]

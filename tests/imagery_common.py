"""Synthetic scenes for the imagery serving tests: small EPSG:4326 GeoTIFFs of constant band
values, so a tile's pixels say which scene is on top."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: blue, green, red, nir (NDVI from b3/b4)
BANDS4 = "b1=blue,b2=green,b3=red,b4=nir"


def write_scene(path: Path, bounds: tuple[float, float, float, float], values: list[int], size: int = 200,
                dtype: str = "uint8") -> Path:
    """A GeoTIFF over ``bounds`` (lon/lat) whose band i is the constant ``values[i]``."""
    import rasterio
    from rasterio.transform import from_bounds

    data = np.stack([np.full((size, size), v, dtype) for v in values])
    profile = {"driver": "GTiff", "width": size, "height": size, "count": len(values), "dtype": dtype,
               "crs": "EPSG:4326", "transform": from_bounds(*bounds, size, size), "photometric": "minisblack"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path

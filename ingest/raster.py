"""Raster layers (DEM): convert a GeoTIFF to a Cloud-Optimized GeoTIFF in the data directory and
register it, with its metadata, as a new version of the raster layer.

The COG keeps the source CRS and values (no resampling of heights at ingest); tiles reproject
on read. The metadata row holds what the tile and slope services need without opening the file:
path, bounds (source CRS and lon/lat), CRS, resolution, nodata, dtype and value statistics.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.crs
import rasterio.shutil
from geobase.ingest.options import IngestResult
from geobase.ingest.sources import sha256_files
from rasterio.errors import RasterioIOError
from rasterio.warp import transform_bounds

from geobase.catalog.deliveries import recorded_cog_checksums
from geobase.catalog.versions import add_version
from geobase.db import connect
from geobase.errors import InvalidInput
from geobase.settings import Settings
from geobase.specs import LayerSpec


def raster_dir(settings: Settings) -> Path:
    d = settings.data_path / "rasters"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _known_cog(settings: Settings, layer: str, path: Path) -> bool:
    """True when a version of ``layer`` names ``path`` with the checksum the file has now."""
    with connect(settings) as conn:
        expected = recorded_cog_checksums(conn, layer, str(path))
    return bool(expected) and sha256_files([path]) in expected


def _stats(path: Path, nodata) -> dict:
    """Min/max/mean over valid pixels, read block by block (bounded memory)."""
    vmin, vmax, total, count = np.inf, -np.inf, 0.0, 0
    with rasterio.open(path) as ds:
        for _, window in ds.block_windows(1):
            a = ds.read(1, window=window, masked=True)
            if nodata is not None:
                a = np.ma.masked_equal(a, nodata)
            if a.count():
                vmin = min(vmin, float(a.min()))
                vmax = max(vmax, float(a.max()))
                total += float(a.sum(dtype="float64"))
                count += int(a.count())
    if not count:
        return {"valid_pixels": 0}
    return {"min": vmin, "max": vmax, "mean": total / count, "valid_pixels": count}


def ingest_raster(settings: Settings, spec: LayerSpec, path: Path, *, crs: str | None = None,
                  dry_run: bool = False, user: str = "cli", provenance: dict | None = None):
    t0 = time.monotonic()
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path}: no such file", parameter="path")
    checksum = sha256_files([path])
    try:
        src = rasterio.open(path)
    except RasterioIOError as exc:
        raise InvalidInput(f"{path.name}: cannot be read as a raster: {exc}", parameter="path") from None
    with src:
        src_crs = src.crs
        if crs:
            src_crs = rasterio.crs.CRS.from_user_input(crs)
        if src_crs is None:
            raise InvalidInput(f"{path.name}: the raster states no CRS; pass --crs (e.g. --crs EPSG:4490)",
                               parameter="crs")
        nodata = src.nodata if src.nodata is not None else (spec.raster.nodata if spec.raster else None)
        meta = {
            "width": src.width, "height": src.height, "count": src.count, "dtype": src.dtypes[0],
            "crs": src_crs.to_string(), "bounds": list(src.bounds), "resolution": list(src.res),
            "nodata": nodata, "unit": spec.raster.unit if spec.raster else None,
            "bounds_lonlat": list(transform_bounds(src_crs, "EPSG:4490", *src.bounds, densify_pts=21)),
            "source_driver": src.driver,
        }
    report = {"source": path.name, "driver": meta["source_driver"], "crs": meta["crs"], "errors": {}, "warnings": {},
              "notes": []}
    if dry_run:
        return IngestResult(spec.name, None, "replace", path.name, checksum, rows_total=1, dry_run=True,
                            seconds=round(time.monotonic() - t0, 3), report=report, metadata=meta)
    out_dir = raster_dir(settings)
    final = out_dir / f"{spec.name}_{checksum[:16]}.tif"
    # an existing file of the same source is reused only when it is still the COG we wrote
    # (its checksum in the catalog); one altered on disk is written again
    if not final.exists() or not _known_cog(settings, spec.name, final):
        tmp = out_dir / f".{final.name}.{os.getpid()}.tmp"
        try:
            opts = {"driver": "COG", "compress": "DEFLATE", "blocksize": 512, "overview_resampling": "average",
                    "bigtiff": "IF_SAFER"}
            if crs:
                opts["a_srs"] = meta["crs"]
            with rasterio.Env(GDAL_NUM_THREADS="2"):
                rasterio.shutil.copy(str(path), str(tmp), **opts)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
    meta["path"] = str(final)
    # what the catalog expects on disk: the demo checks it at start (a COG deleted or replaced
    # behind the catalog's back, e.g. by `make clean`, is loaded again instead of answering 404)
    meta["cog_sha256"] = sha256_files([final])
    if provenance:
        meta["sample"] = provenance
    meta["stats"] = _stats(final, nodata)
    with connect(settings) as conn, conn.transaction():
        v = add_version(conn, spec.name, mode="replace", rows_total=1, added=1, removed=0, changed=0,
                        extent=meta["bounds_lonlat"], source_name=path.name, source_checksum=checksum,
                        source_format="GTiff", created_by=user, report=report, metadata=meta)
    return IngestResult(spec.name, v, "replace", path.name, checksum, rows_total=1, added=1,
                        extent=meta["bounds_lonlat"], seconds=round(time.monotonic() - t0, 3), report=report,
                        metadata=meta)

"""Vector x raster: slope from the DEM and per-parcel zonal statistics, for the headline query
"farmland (DLBM 0101-0103) on slopes steeper than 25°" (domain.md §6.2).

Slope needs equal horizontal and vertical units. The DEM is stored in EPSG:4490 (degrees), so
the horizontal pixel size is converted to metres per row with the GRS80 radii of curvature at
that row's latitude (east-west: N·cosφ·Δλ, north-south: M·Δφ) — geodesic pixel sizes, not
"degrees of longitude". A projected DEM (GK zone) uses its pixel size directly.

Zonal statistics: all parcels are burned into one label raster over the window that covers
them (rasterio.features.rasterize, cell-centre rule), then ``numpy.bincount`` gives every
parcel's cell count, mean slope and count of cells above the threshold in one pass. A parcel
too small to own a cell centre takes the slope of the cell under its representative point.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from geobase.analysis.common import inputs_checked, layer_versions, qualified_layers, units
from geobase.analysis.input import InputGeometry
from geobase.catalog import layers as layer_reads
from geobase.errors import InvalidInput, NotFound
from geobase.features.ids import id_sql
from geobase.lazy_import import load
from geobase.settings import Settings
from geobase.specs import LayerSpec
from geobase.storage import current_filter, table_ident

if TYPE_CHECKING:  # numpy and rasterio are imported by the first slope analysis or DEM tile, not at start
    import numpy as np

A = 6_378_137.0
E2 = 0.006694380022900787  # GRS80 first eccentricity squared
FARMLAND_CODES = ("0101", "0102", "0103")


def pixel_size_m(transform, rows: int, geographic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-row pixel width (east-west) and height (north-south) in metres."""
    import numpy as np

    if not geographic:
        return np.full(rows, abs(transform.a)), np.full(rows, abs(transform.e))
    lat = np.radians(transform.f + (np.arange(rows) + 0.5) * transform.e)
    w = 1 - E2 * np.sin(lat) ** 2
    n = A / np.sqrt(w)
    m = A * (1 - E2) / w ** 1.5
    return n * np.cos(lat) * math.radians(abs(transform.a)), m * math.radians(abs(transform.e))


def slope_degrees(dem: np.ndarray, transform, geographic: bool) -> np.ndarray:
    """Slope in degrees (central differences; NaN where the DEM is NaN)."""
    import numpy as np

    dx, dy = pixel_size_m(transform, dem.shape[0], geographic)
    gy, gx = np.gradient(dem.astype("float64"))
    return np.degrees(np.arctan(np.hypot(gx / dx[:, None], gy / dy[:, None])))


async def dem_path(conn: psycopg.AsyncConnection, settings: Settings, layer: str = "dem") -> tuple[Path, int]:
    """The COG of the DEM's current version (the catalog's one reader of raster metadata,
    :func:`geobase.catalog.layers.raster_file`), and that version."""
    current = (await layer_reads.current_layers(conn, [layer])).get(layer)
    if current is None or current.version is None:
        raise NotFound(f"raster layer {layer!r} has no loaded version", parameter="dem")
    path = layer_reads.raster_file(current, settings.data_path, parameter="dem")
    if not path.exists():
        raise NotFound(f"the COG of raster layer {layer!r} version {current.version} is missing "
                       f"(metadata {current.metadata})", parameter="dem")
    return path, current.version


async def steep_farmland(conn: psycopg.AsyncConnection, settings: Settings, visible: list[LayerSpec], *,
                         threshold_deg: float = 25.0, min_share: float | None = None,
                         aoi: InputGeometry | None = None, codes: tuple[str, ...] = FARMLAND_CODES,
                         layer: str = "land_use", dem_layer: str = "dem") -> dict:
    """Farmland parcels steeper than ``threshold_deg``: by mean slope, or (``min_share``) by the
    share of their cells above the threshold; areas per parcel and in total (m², ha, mu)."""
    import asyncio

    vis = {s.name: s for s in visible}
    for n in (layer, dem_layer):
        if n not in vis:
            raise InvalidInput(f"layer {n!r} is unknown or not visible", parameter="layer")
    if not (0 < threshold_deg < 90):
        raise InvalidInput("threshold_deg: must be between 0 and 90", parameter="threshold_deg")
    path, dem_version = await dem_path(conn, settings, dem_layer)
    inputs_checked()
    aoi_sql = sql.SQL("AND ST_Intersects(geom, ST_GeomFromWKB(%(aoi)s, 4490))" if aoi else "")
    # each parcel by the id the Features API gives it (the bare key in a county's database, the
    # county-qualified id in a province, where a bare key names a parcel of every county holding
    # it); in byte order, as the Sedona engine orders the export's ids: the label raster burns the
    # parcels in this order, so both engines must feed it alike
    fid = id_sql((await qualified_layers(conn, [vis[layer]]))[layer])
    cur = await conn.execute(sql.SQL(
        """SELECT {fid}, dlbm, gdpdjb, zldwdm, coalesce(_area_m2, ST_Area(geom::geography)), ST_AsBinary(geom)
           FROM {tbl} WHERE {cur} AND dlbm = ANY(%(codes)s) {aoi}
           ORDER BY {fid} COLLATE "C" """).format(
            fid=fid, tbl=table_ident(vis[layer]), cur=current_filter(), aoi=aoi_sql),
        {"codes": list(codes), "aoi": aoi.wkb if aoi else None})
    rows = await cur.fetchall()
    stats = await asyncio.to_thread(_zonal, path, [r[5] for r in rows], threshold_deg)
    versions = await layer_versions(conn, [layer])
    versions[dem_layer] = {"version": dem_version, "path": str(path.name)}
    return steep_report(rows, stats, threshold_deg, min_share) | {"versions": versions}


def steep_report(rows: list[tuple], stats: list[tuple[int, float, float]], threshold_deg: float,
                 min_share: float | None) -> dict:
    """The steep-farmland report from the parcels' rows (id, dlbm, gdpdjb, zldwdm, area, geometry)
    and their slope statistics (cells, mean slope, share above the threshold), in the same order.
    A parcel's ``key`` (and a disagreement's) is the id the Features API gives it, which
    ``/collections/{layer}/items/{key}`` answers, as in every other analysis's report: in a
    province a bare key is a parcel of each county holding it.

    One builder for both engines (PostGIS here, Sedona in ``engines/sedona_steep.py``): the
    engines must agree on which parcels are steep and on every total, so the rule is written once."""
    parcels, total_steep, total_area = [], 0.0, 0.0
    disagreements = []
    for (fid, dlbm, grade, zl, area, _), (n, mean, share) in zip(rows, stats):
        steep = (share >= min_share) if min_share is not None else (mean > threshold_deg)
        if grade is not None and (grade == "5") != steep and not math.isnan(mean):
            disagreements.append({"key": fid, "gdpdjb": grade, "mean_slope_deg": round(mean, 2)})
        if not steep:
            continue
        area = float(area)
        total_area += area
        total_steep += area * share
        parcels.append({"key": fid, "dlbm": dlbm, "gdpdjb": grade, "zldwdm": zl, "cells": n,
                        "mean_slope_deg": round(mean, 3), "share_steep": round(share, 4),
                        "area": units(area), "steep_area": units(area * share)})
    by_unit: dict[str, float] = {}
    for p in parcels:
        code = (p["zldwdm"] or "")[:9] or "unknown"
        by_unit[code] = by_unit.get(code, 0.0) + p["area"]["m2"]
    return {"analysis": "steep-farmland", "threshold_deg": threshold_deg,
            "criterion": f"share of cells > {threshold_deg}° >= {min_share}" if min_share is not None
            else f"mean slope > {threshold_deg}°",
            "parcels_checked": len(rows), "parcels": parcels, "total": units(total_area),
            "total_steep_cells_area": units(total_steep),
            "by_township": [{"code": k, **units(v)} for k, v in sorted(by_unit.items())],
            "gdpdjb_disagreements": disagreements}


def _zonal(path: Path, wkbs: list[bytes], threshold: float) -> list[tuple[int, float, float]]:
    """(cells, mean slope, share of cells > threshold) per geometry, in input order."""
    load("numpy", "rasterio", "rasterio.features", "rasterio.windows", "shapely", "affine")  # once, one thread
    import numpy as np
    import rasterio
    import shapely
    from affine import Affine
    from rasterio.features import rasterize
    from rasterio.windows import Window

    if not wkbs:
        return []
    geoms = shapely.from_wkb(wkbs)
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    with rasterio.open(path) as src:
        geographic = src.crs is None or src.crs.is_geographic
        if src.crs is not None and src.crs.to_epsg() not in (4490, 4326):
            raise InvalidInput(f"the DEM is in {src.crs}; slope analysis expects EPSG:4490 storage", parameter="dem")
        # the window and its transform computed here with affine's `@`: rasterio's from_bounds and
        # window_transform still use `*`, which affine 3 deprecates (a warning per call)
        inv = ~src.transform
        cols, rows = zip(*(inv @ (x, y) for x, y in ((minx, miny), (minx, maxy), (maxx, miny), (maxx, maxy))))
        c0, r0 = math.floor(min(cols)), math.floor(min(rows))
        win = Window(c0 - 2, r0 - 2, math.ceil(max(cols)) - c0 + 4, math.ceil(max(rows)) - r0 + 4)
        # boundless=True would also go through rasterio's `*` (see above): read the part inside
        # the raster and pad with NaN here
        dem = np.full((int(win.height), int(win.width)), np.nan)
        rc0, cc0 = max(int(win.row_off), 0), max(int(win.col_off), 0)
        rc1 = min(int(win.row_off + win.height), src.height)
        cc1 = min(int(win.col_off + win.width), src.width)
        if rc1 > rc0 and cc1 > cc0:
            inner = src.read(1, window=Window(cc0, rc0, cc1 - cc0, rc1 - rc0), out_dtype="float64")
            dem[rc0 - int(win.row_off):rc1 - int(win.row_off), cc0 - int(win.col_off):cc1 - int(win.col_off)] = inner
        if src.nodata is not None:
            dem[dem == src.nodata] = np.nan
        transform = src.transform @ Affine.translation(win.col_off, win.row_off)
    slope = slope_degrees(dem, transform, geographic)
    labels = rasterize(((g, i + 1) for i, g in enumerate(geoms)), out_shape=slope.shape, transform=transform,
                       fill=0, dtype="int32")
    ok = ~np.isnan(slope)
    lab = labels[ok]
    sl = slope[ok]
    size = len(geoms) + 1
    count = np.bincount(lab, minlength=size)
    ssum = np.bincount(lab, weights=sl, minlength=size)
    steep = np.bincount(lab, weights=(sl > threshold).astype("float64"), minlength=size)
    out = []
    inv = ~transform
    for i, g in enumerate(geoms):
        n = int(count[i + 1])
        if n:
            out.append((n, float(ssum[i + 1] / n), float(steep[i + 1] / n)))
            continue
        p = g.representative_point()
        col, row = inv @ (p.x, p.y)
        r, c = int(row), int(col)
        if 0 <= r < slope.shape[0] and 0 <= c < slope.shape[1] and not np.isnan(slope[r, c]):
            v = float(slope[r, c])
            out.append((0, v, 1.0 if v > threshold else 0.0))
        else:
            out.append((0, float("nan"), 0.0))
    return out

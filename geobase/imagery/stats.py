"""Statistics of bands or an expression over a polygon, on a scene's own pixels.

The pixels counted are those whose centres lie inside the polygon (GDAL's rasterisation rule,
``all_touched=False``) and that are not nodata; an expression's non-finite results (a division
by zero) are invalid too. ``valid_percent`` is the valid share of the pixels inside. Nothing is
resampled, so a numpy computation on the same pixels gives the same numbers. With several
scenes the topmost (latest) one that intersects the polygon is used: a polygon is not mosaicked
across scenes."""

from __future__ import annotations

import math
from pathlib import Path

from geobase.errors import InvalidInput, NotFound
from geobase.imagery.render import BandRequest

MAX_PIXELS = 25_000_000


def _geometry(geojson: dict):
    import shapely.errors
    import shapely.geometry

    if not isinstance(geojson, dict):
        raise InvalidInput("body: a GeoJSON Polygon, MultiPolygon or a Feature with one", parameter="geometry")
    g = geojson.get("geometry") if geojson.get("type") == "Feature" else geojson
    if not isinstance(g, dict) or g.get("type") not in ("Polygon", "MultiPolygon"):
        raise InvalidInput("body: a GeoJSON Polygon, MultiPolygon or a Feature with one", parameter="geometry")
    try:
        shape = shapely.geometry.shape(g)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, shapely.errors.GEOSException):
        raise InvalidInput("geometry: not a readable GeoJSON polygon", parameter="geometry") from None
    if shape.is_empty or not shape.is_valid:
        raise InvalidInput("geometry: empty or invalid (self-intersecting) polygon", parameter="geometry")
    w, s, e, n = shape.bounds
    if not (-180 <= w <= e <= 180 and -90 <= s <= n <= 90):
        raise InvalidInput("geometry: coordinates must be longitude/latitude (EPSG:4326)", parameter="geometry")
    return g


def _read(path: Path, geom: dict):
    """(bands as a masked array, inside mask) over the polygon's window of the scene, or None."""
    import rasterio
    import shapely.geometry
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom
    from rasterio.windows import Window, from_bounds

    with rasterio.open(path) as src:
        g = transform_geom("EPSG:4326", src.crs, geom)
        bounds = shapely.geometry.shape(g).bounds
        f = from_bounds(*bounds, transform=src.transform)  # whole pixels around the polygon
        c0, r0 = math.floor(f.col_off), math.floor(f.row_off)
        win = Window(c0, r0, math.ceil(f.col_off + f.width) - c0, math.ceil(f.row_off + f.height) - r0)
        try:
            win = win.intersection(Window(0, 0, src.width, src.height))
        except rasterio.errors.WindowError:
            return None
        if win.width * win.height > MAX_PIXELS:
            raise InvalidInput(f"geometry: covers more than {MAX_PIXELS} pixels", parameter="geometry")
        if win.width < 1 or win.height < 1:
            return None
        data = src.read(window=win, masked=True)
        inside = ~geometry_mask([g], out_shape=(int(win.height), int(win.width)),
                                transform=src.window_transform(win))
    return (data, inside) if inside.any() else None


def polygon_stats(files: list[Path], geojson: dict, req: BandRequest) -> dict:
    """Per output band: count, valid_percent, min, max, mean, median, std."""
    import numpy as np
    from rio_tiler.expression import apply_expression, get_expression_blocks

    geom = _geometry(geojson)
    for path in files:
        got = _read(path, geom)
        if got is None:
            continue
        data, inside = got
        args = req.read_args(data.shape[0])
        invalid = np.ma.getmaskarray(data)
        if "expression" in args:
            blocks = get_expression_blocks(args["expression"])
            names = [f"b{i}" for i in range(1, data.shape[0] + 1)]
            with np.errstate(divide="ignore", invalid="ignore"):
                out = np.asarray(apply_expression(blocks, names, data.filled(0).astype("float64")), "float64")
            labels = blocks
            bad = np.broadcast_to(invalid.any(axis=0), out.shape)
        else:
            out = data.filled(0)[[i - 1 for i in args["indexes"]]].astype("float64")
            labels = [f"b{i}" for i in args["indexes"]]
            bad = invalid[[i - 1 for i in args["indexes"]]]
        stats = {}
        for label, arr, b in zip(labels, out, bad):
            ok = inside & ~b & np.isfinite(arr)
            v = arr[ok]
            stats[label] = {"count": int(v.size), "valid_percent": round(100 * v.size / int(inside.sum()), 4),
                            **({"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()),
                                "median": float(np.median(v)), "std": float(v.std())} if v.size else {})}
        return {"file": path.name, "pixels_inside": int(inside.sum()), "statistics": stats}
    raise NotFound("no scene of this collection intersects the polygon", parameter="geometry")

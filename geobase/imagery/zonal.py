"""Zonal statistics of a band or an expression over many polygons (parcels) of one scene.

Every polygon is transformed to the scene's CRS and burnt into the scene's own grid in one
pass (``rasterio.features.rasterize``, the cell-centre rule: a pixel belongs to the polygon
holding its centre; where polygons overlap the later one wins, as parcels of one layer do not
overlap); then one sort of the labelled pixels gives per polygon the count, mean, median, std
and the valid share (valid pixels over pixels inside: nodata and non-finite expression results
are invalid). Nothing is resampled, so numpy on the same pixels gives the same numbers
(``tests/test_imagery_zonal.py``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from geobase.errors import InvalidInput
from geobase.imagery.render import BandRequest
from geobase.lazy_import import load

MAX_PIXELS = 100_000_000


def _values(data, req: BandRequest):
    """(values of the one requested band or expression as float64, invalid mask)."""
    import numpy as np
    from rio_tiler.expression import apply_expression, get_expression_blocks

    args = req.read_args(data.shape[0])
    invalid = np.ma.getmaskarray(data)
    if "expression" in args:
        blocks = get_expression_blocks(args["expression"])
        if len(blocks) != 1:
            raise InvalidInput("expression: one expression (no ;) for zonal statistics", parameter="expression")
        names = [f"b{i}" for i in range(1, data.shape[0] + 1)]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.asarray(apply_expression(blocks, names, data.filled(0).astype("float64")), "float64")[0]
        return out, invalid.any(axis=0) | ~np.isfinite(out)
    if len(args["indexes"]) != 1:
        raise InvalidInput("bands: one band for zonal statistics", parameter="bands")
    i = args["indexes"][0] - 1
    return data.filled(0)[i].astype("float64"), invalid[i]


def zonal_stats(path: Path, wkbs: list[bytes], req: BandRequest, src_crs: str = "EPSG:4326") -> list[dict]:
    """Per polygon (in input order): ``pixels`` inside, ``count`` valid, ``valid_share``, and
    ``mean, median, std, min, max`` of the valid values (None when there are none)."""
    load("numpy", "rasterio", "rasterio.features", "shapely", "pyproj")
    import numpy as np
    import rasterio
    import shapely
    from pyproj import Transformer
    from rasterio.features import rasterize
    from rasterio.windows import Window

    if not wkbs:
        return []
    with rasterio.open(path) as src:
        tr = Transformer.from_crs(src_crs, src.crs, always_xy=True)
        geoms = shapely.transform(shapely.from_wkb(wkbs), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        minx, miny, maxx, maxy = shapely.total_bounds(geoms)
        inv = ~src.transform
        cols, rows = zip(*(inv @ (x, y) for x, y in ((minx, miny), (minx, maxy), (maxx, miny), (maxx, maxy))))
        c0, r0 = max(math.floor(min(cols)), 0), max(math.floor(min(rows)), 0)
        c1, r1 = min(math.ceil(max(cols)), src.width), min(math.ceil(max(rows)), src.height)
        empty = {"pixels": 0, "count": 0, "valid_share": None, "mean": None, "median": None, "std": None,
                 "min": None, "max": None}
        if c1 <= c0 or r1 <= r0:
            return [dict(empty) for _ in wkbs]
        if (c1 - c0) * (r1 - r0) > MAX_PIXELS:
            raise InvalidInput(f"the parcels span more than {MAX_PIXELS} pixels of the scene", parameter="aoi")
        win = Window(c0, r0, c1 - c0, r1 - r0)
        data = src.read(window=win, masked=True)
        from affine import Affine

        transform = src.transform @ Affine.translation(c0, r0)
    values, invalid = _values(data, req)
    shapes = zip(_geojson(geoms), range(1, len(geoms) + 1))
    labels = rasterize(shapes, out_shape=values.shape, transform=transform, fill=0, dtype="int32")
    return _per_label(labels, values, invalid, len(geoms), empty)


def _geojson(geoms) -> list[dict]:
    """GeoJSON-like dicts for the rasterizer, built from shapely's ragged arrays (one
    ``tolist`` of all coordinates, then list slices: a few µs a parcel, where
    ``__geo_interface__`` or ``to_geojson`` cost tens); polygons and multipolygons (a mix is
    read as multipolygons), anything else or an empty geometry through ``to_geojson``."""
    import shapely

    kinds = set(shapely.get_type_id(geoms).tolist())
    if not kinds <= {3, 6} or shapely.is_empty(geoms).any():
        return [json.loads(g) for g in shapely.to_geojson(geoms)]
    kind, coords, offsets = shapely.to_ragged_array(geoms)
    xy = coords.tolist()
    rings = [xy[a:b] for a, b in zip(offsets[0][:-1].tolist(), offsets[0][1:].tolist())]
    polys = [rings[a:b] for a, b in zip(offsets[1][:-1].tolist(), offsets[1][1:].tolist())]
    if kind == shapely.GeometryType.POLYGON:
        return [{"type": "Polygon", "coordinates": r} for r in polys]
    parts = offsets[2]
    return [{"type": "MultiPolygon", "coordinates": polys[a:b]} for a, b in zip(parts[:-1].tolist(), parts[1:].tolist())]


def _per_label(labels, values, invalid, n: int, empty: dict) -> list[dict]:
    """The statistics of labels 1..n, vectorised over all labels at once (a Python loop per
    parcel, ``np.median`` each, cost more than the rasterising at 1M parcels): one sort by
    (label, value), medians/min/max read off the sorted runs, the std two-pass (deviations from
    each label's own mean) as ``np.std`` computes it."""
    import numpy as np

    size = n + 1
    inside = np.bincount(labels.ravel(), minlength=size)[1:]
    ok = (labels > 0) & ~invalid
    lab, val = labels[ok], values[ok]
    order = np.lexsort((val, lab))  # by label, then by value: medians read off the sorted runs
    lab, val = lab[order], val[order]
    count = np.bincount(lab, minlength=size)[1:]
    starts = np.searchsorted(lab, np.arange(1, size))
    has = count > 0
    safe = np.maximum(count, 1)
    mean = np.bincount(lab, weights=val, minlength=size)[1:] / safe
    dev = val - mean[lab - 1]
    std = np.sqrt(np.bincount(lab, weights=dev * dev, minlength=size)[1:] / safe)
    last = len(val) - 1
    lo = np.minimum(starts + (safe - 1) // 2, max(last, 0))
    hi = np.minimum(starts + safe // 2, max(last, 0))
    vmin = val[np.minimum(starts, max(last, 0))] if len(val) else np.zeros(n)
    vmax = val[np.minimum(starts + safe - 1, max(last, 0))] if len(val) else np.zeros(n)
    median = (val[lo] + val[hi]) / 2 if len(val) else np.zeros(n)
    out = []
    for n_in, c, h, m, md, sd, a, b in zip(inside.tolist(), count.tolist(), has.tolist(), mean.tolist(),
                                           median.tolist(), std.tolist(), vmin.tolist(), vmax.tolist()):
        if not h:
            out.append(dict(empty, pixels=n_in, valid_share=0.0 if n_in else None))
        else:
            out.append({"pixels": n_in, "count": c, "valid_share": c / n_in, "mean": m, "median": md, "std": sd,
                        "min": a, "max": b})
    return out

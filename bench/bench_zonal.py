"""Zonal statistics per parcel: ours (:func:`geobase.imagery.zonal.zonal_stats`, one rasterize
pass over every parcel and one sort) against ``rasterstats`` (PyPI, 0.21) on the same scene and
the same parcels, NDVI ``(b4-b3)/(b4+b3)``: count, mean, median, std per parcel, results
compared parcel by parcel (equal to 1e-9; the number of parcels that differ is printed and must
be 0).

Pixel rule, both sides: the cell-centre rule (a pixel belongs to a parcel when its centre is
inside; GDAL's rasterizer, ``all_touched=False``), pixels invalid when any band is nodata.

Data (built once per parcel count under ``bench/.cache/zonal-<n>/``): ``n`` parcels as
jittered quadrilaterals tiling a grid in EPSG:4527 (the sample county's CRS, ~25 pixels each, no
gaps, no overlaps, vertex coordinates off the pixel lattice so no centre falls on an edge) and a
6-band uint16 GeoTIFF (deflate, 512 x 512 tiles, nodata 0 in scattered blocks) of 30 m pixels.

The baseline as a competent user runs it: the band maths once with numpy over the whole scene
(NDVI, invalid pixels set to a nodata value), then ``rasterstats.zonal_stats(geoms, ndvi,
affine=transform, nodata=-9999, stats="count mean median std", all_touched=False)`` with the
geometries already in the raster's CRS (shapely objects, no reprojection, no GeoJSON
round trip); reading the bands and the band maths are timed on both sides. Ours receives WKB in
the raster's CRS (``src_crs`` = the raster's, so no reprojection either).

Rounds: ours, then rasterstats, ``ctx.rounds`` times (>= 3), per-round ratio ours/baseline with
its spread. ``make bench BENCH_ARGS="--parcels 1000000 --only zonal"`` runs it at full scale
(rasterstats loops in Python per parcel, ~7-15 ms each on the loaded 2-core machine: hours for
1M x 3 rounds); ``python bench/bench_zonal.py --parcels N --rounds R`` runs it alone.

Measured (session 9, the shared 2-core machine under load average ~17, so absolute times are
inflated; only the interleaved ratio means anything): 20,000 parcels, 3 rounds, ours 11.8 /
12.2 / 14.4 s, rasterstats 315 / 240 / 143 s, ratio 0.051 (0.037-0.101), 0 parcels differing.
Not measured at 200k or 1M (time).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NDVI = "(b4-b3)/(b4+b3)"
PIXEL = 30.0
PIX_PER_SIDE = 5  # ~25 pixels per parcel


def build(n: int, seed: int = 20261122) -> tuple[Path, list]:
    """The scene and the parcels (shapely, EPSG:4527) for ``n`` parcels, cached on disk."""
    import numpy as np
    import rasterio
    import shapely
    from rasterio.transform import from_origin

    side = math.ceil(math.sqrt(n))
    folder = HERE / ".cache" / f"zonal-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x0, y1 = 39_600_000.0, 3_240_000.0
    step = PIXEL * PIX_PER_SIDE
    # grid vertices jittered (shared by neighbours: an exact tiling)
    jx = rng.uniform(-0.3, 0.3, (side + 1, side + 1)) * step + 0.123
    jy = rng.uniform(-0.3, 0.3, (side + 1, side + 1)) * step + 0.377
    jx[:, 0] = jx[:, -1] = 0.123
    jy[0, :] = jy[-1, :] = 0.377
    gx = x0 + np.arange(side + 1)[None, :] * step + jx
    gy = y1 - np.arange(side + 1)[:, None] * step - jy
    geoms = []
    for k in range(n):
        i, j = divmod(k, side)
        ring = [(gx[i, j], gy[i, j]), (gx[i, j + 1], gy[i, j + 1]), (gx[i + 1, j + 1], gy[i + 1, j + 1]),
                (gx[i + 1, j], gy[i + 1, j]), (gx[i, j], gy[i, j])]
        geoms.append(shapely.Polygon(ring))
    scene = folder / "scene.tif"
    if not scene.exists():
        size = side * PIX_PER_SIDE + 2
        data = rng.integers(200, 5000, (6, size, size), dtype="uint16")
        data[3] = data[2] + rng.integers(0, 4000, (size, size), dtype="uint16")  # nir above red, mostly
        for _ in range(max(1, size // 40)):  # nodata blocks (clouds)
            r, c = rng.integers(0, size - 8, 2)
            data[:, r:r + 7, c:c + 7] = 0
        tmp = folder / "scene.tmp.tif"
        with rasterio.open(tmp, "w", driver="GTiff", width=size, height=size, count=6, dtype="uint16", nodata=0,
                           crs="EPSG:4527", transform=from_origin(x0 - PIXEL, y1 + PIXEL, PIXEL, PIXEL),
                           compress="deflate", tiled=True, blockxsize=512, blockysize=512) as ds:
            ds.write(data)
        tmp.replace(scene)
    return scene, geoms


def ours(scene: Path, wkbs: list[bytes]) -> list[dict]:
    from geobase.imagery.render import BandRequest
    from geobase.imagery.zonal import zonal_stats

    return zonal_stats(scene, wkbs, BandRequest(expression=NDVI), src_crs="EPSG:4527")


def baseline(scene: Path, geoms: list) -> list[dict]:
    import numpy as np
    import rasterio
    from rasterstats import zonal_stats as rs_zonal

    with rasterio.open(scene) as src:
        data = src.read().astype("float64")
        valid = (src.read_masks() > 0).all(axis=0)
        transform = src.transform
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (data[3] - data[2]) / (data[3] + data[2])
    ndvi[~valid | ~np.isfinite(ndvi)] = -9999.0
    return rs_zonal(geoms, ndvi, affine=transform, nodata=-9999.0, stats="count mean median std", all_touched=False)


def differences(a: list[dict], b: list[dict]) -> int:
    bad = 0
    for x, y in zip(a, b):
        if x["count"] != y["count"]:
            bad += 1
            continue
        if x["count"] and any(abs(x[k] - y[k]) > 1e-9 for k in ("mean", "median", "std")):
            bad += 1
    return bad + abs(len(a) - len(b))


def measure(n: int, rounds: int) -> dict:
    import shapely

    scene, geoms = build(n)
    wkbs = [shapely.to_wkb(g) for g in geoms]
    t_ours, t_base, diff = [], [], None
    for _ in range(rounds):
        t = time.perf_counter()
        a = ours(scene, wkbs)
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = baseline(scene, geoms)
        t_base.append(time.perf_counter() - t)
        diff = differences(a, b)
        del a, b
    return {"parcels": n, "ours_s": t_ours, "rasterstats_s": t_base, "differing_parcels": diff}


def run(ctx) -> None:
    from common import Result

    n = 20_000 if ctx.quick else ctx.parcels
    m = measure(n, max(3, ctx.rounds))
    ctx.report(Result.rounds(f"zonal NDVI statistics, {n:,} parcels (count, mean, median, std)", m["ours_s"],
                             m["rasterstats_s"], "rasterstats 0.21 (all_touched=False)", "s",
                             extra={"differing_parcels": m["differing_parcels"]}))


def main(argv: list[str]) -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parcels", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    m = measure(a.parcels, a.rounds)
    ratios = sorted(o / b for o, b in zip(m["ours_s"], m["rasterstats_s"]))
    m["ratio_min_median_max"] = [ratios[0], ratios[len(ratios) // 2], ratios[-1]]
    print(json.dumps(m, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main(sys.argv[1:])

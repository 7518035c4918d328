"""A synthetic multi-date imagery series over the sample county: three scenes of one growing
season, six Landsat-like bands (blue, green, red, nir, swir16, swir22) as 16-bit reflectance x
10,000, nodata 0, 60 m pixels (Landsat MSS-like; small enough to commit) in the county's own CRS (EPSG:4527, CGCS2000 3-degree GK zone 39).

Every pixel takes the spectral signature of the land-use class of the parcel holding its centre
(the same cell-centre rule the zonal statistics use, so a parcel's pixels are exactly its own):
farmland is green through the season (NDVI ~0.5 in April, ~0.8 in July), built-up land bright
in SWIR (NDBI > 0), water dark in NIR, and so on, with a per-parcel vigour and per-pixel noise.
The April scene does not reach the county's eastern edge and the September scene has a cloud
(both nodata), as real acquisitions do.

Planted facts: a few farmland parcels look idle all season (bare/weedy soil: low NDVI) and a few
look converted (the built-up signature). Their BSM are written to the manifest (``imagery``),
where a test reads them; nothing in the images or the land-use layer marks them otherwise.
Everything is a pure function of ``seed`` and the written DLTB (byte-identical on re-runs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from geobase.sample_data.codes import EPSG_GK

PIXEL_M = 60.0
BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
DATES = ["2026-04-18", "2026-07-16", "2026-09-18"]
PLANTED_IDLE, PLANTED_CONVERTED = 3, 3
MIN_PIXELS = 20  # planted parcels are large enough to be seen (>= 20 pixel centres)

# signature class of each pixel: 0 outside, then by GB/T 21010 first-level group
_GROUP_CLASS = {"01": 1, "02": 2, "03": 3, "04": 4, "05": 5, "06": 5, "07": 5, "08": 5, "09": 5, "10": 5,
                "11": 6, "12": 7}
IDLE, CONVERTED = 8, 9
# reflectance per class (rows) and date (axis 0): blue, green, red, nir, swir16, swir22
_SIG = np.array([
    # April, July, September
    [[0, 0, 0, 0, 0, 0]] * 3,                                                        # 0 outside
    [[.05, .08, .07, .26, .21, .13], [.03, .07, .04, .42, .19, .09], [.04, .08, .06, .33, .20, .11]],  # farmland
    [[.04, .07, .05, .30, .18, .10]] * 3,                                            # 2 garden
    [[.02, .05, .03, .32, .14, .06]] * 3,                                            # 3 forest
    [[.04, .08, .06, .28, .20, .11]] * 3,                                            # 4 grassland
    [[.12, .13, .14, .18, .28, .25]] * 3,                                            # 5 built-up, transport
    [[.06, .07, .05, .03, .02, .01]] * 3,                                            # 6 water
    [[.10, .12, .15, .22, .27, .22]] * 3,                                            # 7 other land (bare)
    [[.08, .10, .12, .20, .24, .19]] * 3,                                            # 8 idle farmland
    [[.13, .14, .15, .19, .29, .26]] * 3,                                            # 9 converted farmland
], dtype="float64").transpose(1, 0, 2)  # -> (date, class, band)


def _parcels(dltb: Path):
    import pyogrio

    df = pyogrio.read_dataframe(dltb, columns=["BSM", "DLBM"])
    return df.sort_values("BSM", kind="stable").reset_index(drop=True)


def _grid(bounds) -> tuple[object, int, int]:
    from rasterio.transform import Affine

    minx, miny, maxx, maxy = bounds
    x0 = np.floor(minx / PIXEL_M) * PIXEL_M - PIXEL_M
    y1 = np.ceil(maxy / PIXEL_M) * PIXEL_M + PIXEL_M
    w = int(np.ceil((maxx - x0) / PIXEL_M)) + 1
    h = int(np.ceil((y1 - miny) / PIXEL_M)) + 1
    return Affine(PIXEL_M, 0.0, float(x0), 0.0, -PIXEL_M, float(y1)), w, h


def _plant(df, labels: np.ndarray, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Farmland parcels with at least MIN_PIXELS pixels, none of the demo's change delivery
    (the 12 smallest dry-land parcels, the largest paddy parcel): some idle, some converted."""
    counts = np.bincount(labels.ravel(), minlength=len(df) + 1)[1:]
    farm = df["DLBM"].astype(str).str.startswith("01").to_numpy()
    paddy = df.index[df["DLBM"] == "0101"]
    largest = set(df.loc[paddy].geometry.area.sort_values(ascending=False).index[:1])
    need = PLANTED_IDLE + PLANTED_CONVERTED
    ok = [i for i in np.flatnonzero(farm & (counts >= MIN_PIXELS)) if i not in largest]
    if len(ok) >= need:
        pick = rng.choice(np.array(ok), size=need, replace=False)
    else:  # a scaled county (parcels smaller than the pixels): the farmland parcels with most pixels
        seen = [i for i in np.flatnonzero(farm & (counts > 0)) if i not in largest]
        pick = np.array(sorted(seen, key=lambda i: (-counts[i], i))[:need], dtype="int64")
    half = (len(pick) + 1) // 2
    idle = sorted(str(df.loc[i, "BSM"]) for i in pick[:half])
    conv = sorted(str(df.loc[i, "BSM"]) for i in pick[half:])
    return idle, conv


def write_imagery(out_dir: Path, dltb: Path, seed: int) -> tuple[dict, dict]:
    """Write ``imagery_<date>.tif`` for each date; returns (files entries, manifest section)."""
    import rasterio
    from rasterio.features import rasterize

    df = _parcels(dltb)
    transform, w, h = _grid(df.total_bounds)
    labels = rasterize(((g, i + 1) for i, g in enumerate(df.geometry)), out_shape=(h, w), transform=transform,
                       fill=0, dtype="int32")
    rng = np.random.default_rng(seed + 2026)
    idle, conv = _plant(df, labels, rng)
    cls = np.zeros(len(df) + 1, "int16")
    groups = df["DLBM"].astype(str).str[:2]
    cls[1:] = [_GROUP_CLASS.get(g, 7) for g in groups]
    bsm = df["BSM"].astype(str).to_numpy()
    cls[1:][np.isin(bsm, idle)] = IDLE
    cls[1:][np.isin(bsm, conv)] = CONVERTED
    vigour = np.ones(len(df) + 1)
    vigour[1:] = rng.uniform(0.85, 1.1, len(df))
    pix_cls, pix_vig = cls[labels], vigour[labels]
    files, scenes = {}, []
    cy, cx = h * 0.3, w * 0.35
    yy, xx = np.mgrid[0:h, 0:w]
    for d, date in enumerate(DATES):
        sig = _SIG[d][pix_cls]  # (h, w, band)
        green = pix_cls == 1
        sig[green, 3] *= pix_vig[green]  # vigour: more NIR, less red
        sig[green, 2] /= pix_vig[green]
        noise = rng.normal(0.0, 0.006, sig.shape)
        dn = np.clip(np.rint((sig + noise) * 10000), 1, 65535).astype("uint16")
        dn[pix_cls == 0] = 0
        if d == 0:
            dn[:, int(w * 0.88):] = 0  # the April pass ends short of the eastern edge
        if d == 2:
            dn[((yy - cy) / (h * 0.06)) ** 2 + ((xx - cx) / (w * 0.08)) ** 2 < 1] = 0  # a cloud, masked
        name = f"imagery_{date.replace('-', '')}.tif"
        prof = {"driver": "GTiff", "width": w, "height": h, "count": len(BANDS), "dtype": "uint16", "nodata": 0,
                "crs": f"EPSG:{EPSG_GK}", "transform": transform, "compress": "deflate", "predictor": 2,
                "tiled": True, "blockxsize": 256, "blockysize": 256, "interleave": "pixel"}
        with rasterio.open(out_dir / name, "w", **prof) as dst:
            dst.write(np.moveaxis(dn, 2, 0))
            for i, b in enumerate(BANDS, start=1):
                dst.set_band_description(i, b)
        files[name] = {"crs": f"EPSG:{EPSG_GK}", "format": "GeoTIFF uint16 x10000 reflectance, DEFLATE",
                       "size": [w, h], "pixel_m": PIXEL_M, "nodata": 0}
        scenes.append({"file": name, "datetime": date, "bands": BANDS})
    section = {"collection": "county_imagery", "sensor": "synthetic Landsat-like", "scenes": scenes,
               "bands": {f"b{i}": b for i, b in enumerate(BANDS, start=1)},
               "planted_idle": idle, "planted_converted": conv,
               "note": "farmland parcels painted idle (bare soil all season) or converted (built-up signature); "
                       "every other pixel has its parcel's class signature"}
    return files, section

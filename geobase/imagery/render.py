"""Reading a collection's scenes through rio-tiler: mosaicked tiles (latest scene on top), a
point query and statistics over a polygon.

A tile is the part of the mosaic inside the tile's bounds (in the tile grid's CRS, given by the
caller, so any tile matrix set works), read with nearest-neighbour resampling: ``png``/``webp``
after band selection or an expression, rescaling and an optional colour map; ``tif`` the raw
values (no rescale, no colour map) for clients that compute, followed by one more band, the
validity mask (255 valid, 0 nodata or outside every scene). Polygon statistics are computed on
the scene's own pixels (no resampling): the pixels whose centres fall inside the polygon, so
that they equal a numpy computation on the same pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geobase.errors import InvalidInput, NotFound
from geobase.imagery import readers
from geobase.imagery.bands import check_bands, check_expression
from geobase.lazy_import import load

FORMATS = {"png": "PNG", "webp": "WEBP", "tif": "GTiff"}


@dataclass(frozen=True)
class BandRequest:
    """What to read: ``bands`` (b3,b2,b1) or an ``expression``, and how to draw it."""

    bands: str | None = None
    expression: str | None = None
    rescale: str | None = None
    colormap_name: str | None = None

    def read_args(self, count: int) -> dict:
        """rio-tiler's ``indexes``/``expression`` arguments, validated against the band count."""
        if self.bands and self.expression:
            raise InvalidInput("bands and expression: give one of them", parameter="expression")
        if self.expression:
            check_expression(self.expression, count)
            return {"expression": self.expression}
        if self.bands:
            names = self.bands.split(",")
            if len(names) > 4:
                raise InvalidInput("bands: at most 4 bands", parameter="bands")
            return {"indexes": check_bands(names, count)}
        return {"indexes": [1, 2, 3] if count >= 3 else [1]}

    def ranges(self, n: int) -> list[tuple[float, float]] | None:
        if not self.rescale:
            return None
        try:
            pairs = [tuple(float(v) for v in part.split(",")) for part in self.rescale.split(";")]
        except ValueError:
            pairs = [()]
        if any(len(p) != 2 or p[0] >= p[1] for p in pairs) or len(pairs) not in (1, n):
            raise InvalidInput("rescale: min,max (one pair, or one per band separated by ;) with min < max",
                               parameter="rescale")
        return pairs * n if len(pairs) == 1 else pairs  # type: ignore[return-value]


def _rio():
    load("numpy", "rio_tiler.io", "rio_tiler.mosaic", "rio_tiler.colormap")
    readers.memoize_default_transform()


def band_count(path: Path) -> int:
    import rasterio

    with rasterio.open(path) as src:
        return src.count


def _colormap(name: str | None):
    if name is None:
        return None
    from rio_tiler.colormap import cmap

    if name not in cmap.list():
        raise InvalidInput(f"colormap_name: {name[:60]!r} is not a known colour map (e.g. viridis, rdylgn)",
                           parameter="colormap_name")
    return cmap.get(name)


def _encode(img, req: BandRequest, fmt: str) -> bytes:
    import numpy as np

    if fmt == "tif":
        if req.rescale or req.colormap_name:
            raise InvalidInput("rescale and colormap_name draw a picture: not with .tif (raw values)",
                               parameter="rescale" if req.rescale else "colormap_name")
        return img.render(img_format="GTiff")
    cmap = _colormap(req.colormap_name)
    if cmap is not None and img.count != 1:
        raise InvalidInput("colormap_name: needs a single band or expression", parameter="colormap_name")
    ranges = req.ranges(img.count)
    if ranges:
        img.rescale(in_range=ranges)
    elif img.data.dtype != np.uint8:
        raise InvalidInput(f"rescale: the values are {img.data.dtype}, give rescale=min,max to draw them",
                           parameter="rescale")
    return img.render(img_format=FORMATS[fmt], colormap=cmap)


def render_tile(files: list[Path], bounds: tuple[float, float, float, float], epsg: int, req: BandRequest,
                fmt: str, size: int = 256) -> bytes | None:
    """The mosaic's tile (first file on top), or None when no scene covers it."""
    _rio()
    from rasterio.crs import CRS
    from rio_tiler.errors import EmptyMosaicError, TileOutsideBounds
    from rio_tiler.mosaic import mosaic_reader

    if fmt not in FORMATS:
        raise InvalidInput(f"format {fmt!r} is not one of {', '.join(FORMATS)}", parameter="format")
    if not files:
        return None
    crs = CRS.from_epsg(epsg)

    def reader(path: Path, *a, **kw):
        scene = readers.open_scene(path)  # kept open per thread, with its bounds per grid (readers.py)
        src = scene.reader
        args = req.read_args(src.dataset.count)  # checked against each scene's own band count
        w, s, e, n = scene.bounds_in(crs)
        if bounds[2] < w or bounds[0] > e or bounds[3] < s or bounds[1] > n:
            raise TileOutsideBounds("outside")
        return src.part(bounds, dst_crs=crs, bounds_crs=crs, width=size, height=size, max_size=None,
                        resampling_method="nearest", reproject_method="nearest", **args)

    try:
        img, _ = mosaic_reader(files, reader, threads=0)
    except EmptyMosaicError:
        return None
    return _encode(img, req, fmt)


def point_values(files: list[Path], lon: float, lat: float, req: BandRequest) -> dict:
    """The values at a point of the topmost scene that covers it."""
    _rio()
    from rio_tiler.errors import PointOutsideBounds
    from rio_tiler.io import Reader

    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput("lon,lat: a longitude and latitude in degrees", parameter="lon")
    for path in files:
        count = band_count(path)  # a point gives every band unless told otherwise
        args = req.read_args(count) if req.bands or req.expression else {"indexes": list(range(1, count + 1))}
        with Reader(str(path)) as src:
            try:
                pt = src.point(lon, lat, **args)
            except PointOutsideBounds:
                continue
        import numpy as np

        masked = np.ma.getmaskarray(pt.array).reshape(-1)  # True where nodata
        values = [None if bad else float(v) for v, bad in zip(pt.array.data.reshape(-1).tolist(), masked)]
        return {"coordinates": [lon, lat], "file": path.name, "band_names": pt.band_names, "values": values}
    raise NotFound("no scene of this collection covers that point", parameter="lon")

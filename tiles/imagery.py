"""Imagery tiles for every front (``/imagery/{c}/tiles``, OGC API - Tiles tilesets, WMTS, the
map): which scenes make the mosaic (collection, ``datetime=``, ``order=``), the cache key of
their content, the presets (true colour, NDVI) and one cached rendering through
:func:`geobase.imagery.render.render_tile`.

The cache is the vector tiles' own :class:`geobase.tiles.cache.TileCache`, with the same rule:
the key names everything the bytes depend on, so nothing is ever purged. Here that is the
mosaic's content — each scene file of the mosaic, in drawing order, with its size and
modification time — plus the grid, the tile, the format and the drawing request. A new scene
(or a scene removed, or the date range or order changed) gives a different file list and so a
new key; the old tiles age out under the cache's size bound. Imagery tiles do not depend on the
caller beyond the yes/no of :func:`geobase.security.require_imagery`, so the key has no view
signature."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import psycopg
from geobase.tiles.cache import TileCache, etag_for
from geobase.tiles.tms import TileMatrixSet

from geobase.catalog import imagery as cat
from geobase.errors import InvalidInput, NotFound
from geobase.imagery import render
from geobase.imagery.search import parse_interval
from geobase.settings import Settings
from geobase.vocab import is_name

ORDERS = tuple(cat.MOSAIC_ORDERS)
ORDER_HELP = "which scene is on top where scenes overlap: latest (default) or cloud (least cloud cover on top)"
#: drawing presets offered as WMTS styles and map layers; ``default`` is true colour
PRESETS = ("truecolor", "ndvi")


def check_order(order: str | None, parameter: str = "order") -> str:
    """The mosaic order (default ``latest``); anything else a 400 naming the parameter."""
    if order is None or order == "":
        return "latest"
    if order not in cat.MOSAIC_ORDERS:
        raise InvalidInput(f"{parameter}: {order[:40]!r} is not a mosaic order ({', '.join(ORDERS)})",
                           parameter=parameter)
    return order


@dataclass(frozen=True)
class Mosaic:
    """The scenes of one mosaic, topmost first, and a signature of their content."""

    collection: str
    files: tuple[Path, ...]
    signature: str


def _signature(files: list[Path]) -> str:
    parts = []
    for f in files:
        try:
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:  # registered but gone: rendering will say so; never cached as content
            parts.append(f"{f.name}:missing")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


async def mosaic(conn: psycopg.AsyncConnection, settings: Settings, collection: str, datetime: str | None = None,
                 order: str | None = None) -> Mosaic:
    """The collection's mosaic; 404 for an unknown collection, 400 for a bad datetime/order."""
    if not is_name(collection):
        raise NotFound(f"collection {collection[:100]!r} not found", parameter="collectionId")
    start, end = parse_interval(datetime)
    rows = await cat.mosaic_files(conn, collection, start, end, check_order(order))
    if not rows and not await cat.collection_exists(conn, collection):
        raise NotFound(f"collection {collection[:100]!r} not found", parameter="collectionId")
    files = [settings.data_path / f for f in rows]
    return Mosaic(collection, tuple(files), _signature(files))


def tile_key(m: Mosaic, tms: TileMatrixSet, z: int, row: int, col: int, fmt: str, req: render.BandRequest) -> str:
    raw = (f"imagery|{m.collection}|{m.signature}|{tms.id}|{z}|{row}|{col}|{fmt}|{req.bands}|{req.expression}|"
           f"{req.rescale}|{req.colormap_name}")
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class ImageryTile:
    body: bytes | None  # None: no scene covers the tile (204)
    etag: str
    cached: bool


async def imagery_tile(cache: TileCache | None, m: Mosaic, tms: TileMatrixSet, z: int, row: int, col: int, fmt: str,
                       req: render.BandRequest) -> ImageryTile:
    """The tile from the cache, else rendered (in a thread) and cached; an empty tile is cached
    as zero bytes, so the 204 of a tile outside the mosaic is as cheap as a hit."""
    tms.validate(z, row, col)
    if fmt not in render.FORMATS:
        raise InvalidInput(f"format {fmt[:20]!r} is not one of {', '.join(render.FORMATS)}", parameter="format")
    key = tile_key(m, tms, z, row, col, fmt, req)
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        return ImageryTile(hit or None, etag_for(key), True)
    body = await asyncio.to_thread(render.render_tile, list(m.files), tms.bounds(z, row, col), tms.srid, req, fmt)
    if cache is not None:
        cache.put(key, body or b"")
    return ImageryTile(body, etag_for(key), False)


# ---- presets ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bands:
    """What the presets need of a collection: its band names by EO common name, the data type
    and the (latest) scene whose statistics stretch a true-colour picture that is not 8-bit."""

    common: dict[str, str]  # common name -> b<n>
    count: int
    dtype: str
    sample: Path | None


async def collection_bands(conn: psycopg.AsyncConnection, settings: Settings, collection: str) -> Bands:
    item = await cat.latest_item(conn, collection)
    if item is None:
        return Bands({}, 0, "uint8", None)
    asset = item["item"]["assets"]["data"]
    eo = asset.get("eo:bands") or []
    raster = asset.get("raster:bands") or [{}]
    common = {b["common_name"]: b["name"] for b in eo if b.get("common_name")}
    return Bands(common, len(eo), raster[0].get("data_type", "uint8"), settings.data_path / item["file"])


@lru_cache(maxsize=256)
def _stretch(path: str, mtime_ns: int, indexes: tuple[int, ...]) -> str:
    """Per-band 2nd..98th percentiles of a scene (from its overview), as a rescale string."""
    from rio_tiler.io import Reader

    with Reader(path) as src:
        st = src.statistics(indexes=list(indexes), max_size=512)
    return ";".join(f"{v.percentile_2!r},{max(v.percentile_98, v.percentile_2 + 1)!r}" for v in st.values())


def has_preset(b: Bands, name: str) -> bool:
    return name == "truecolor" or (name == "ndvi" and {"red", "nir"} <= set(b.common))


def preset(b: Bands, name: str, parameter: str = "style") -> render.BandRequest:
    """The drawing of a preset: ``truecolor`` (red, green, blue by common name, else b1..b3;
    stretched 2-98 % unless 8-bit) or ``ndvi`` ((nir-red)/(nir+red), -1..1, red-yellow-green)."""
    if name in ("default", "truecolor"):
        names = [b.common[c] for c in ("red", "green", "blue") if c in b.common]
        if len(names) != 3:
            names = ["b1", "b2", "b3"] if b.count >= 3 else ["b1"]
        rescale = None
        if b.dtype != "uint8" and b.sample is not None and b.sample.exists():
            rescale = _stretch(str(b.sample), b.sample.stat().st_mtime_ns, tuple(int(n[1:]) for n in names))
        return render.BandRequest(bands=",".join(names), rescale=rescale)
    if name == "ndvi" and has_preset(b, "ndvi"):
        nir, red = b.common["nir"], b.common["red"]
        return render.BandRequest(expression=f"({nir}-{red})/({nir}+{red})", rescale="-1,1", colormap_name="rdylgn")
    raise InvalidInput(f"{parameter}: {name[:40]!r} is not a style of this imagery layer "
                       f"(default, {', '.join(p for p in PRESETS if has_preset(b, p))})", parameter=parameter)

"""Scene files kept open between tiles, and the grid arithmetic that depends only on a file.

Why (profile of a cold NDVI tile of the real Landsat scene, SIRGAS 2000 / UTM 25S, drawn in
WebMercatorQuad, session 11): of ~78 ms per tile, opening the COG took ~5 ms, the scene's
bounds in the tile grid's CRS ~7 ms and rio-tiler's ``calculate_default_transform`` (the
scene's resolution in that CRS, inside every ``part`` read) ~11 ms — the last two are PROJ
looking up a datum transformation (SIRGAS 2000 to WGS 84) afresh on every call. None of the
three depends on the tile: they are facts of the file and the grid. So:

* :func:`open_scene` keeps each file's rio-tiler ``Reader`` open per worker thread (a GDAL
  dataset handle must not be shared between threads), keyed by the file's *version* — path,
  inode, size and modification time — so a scene rewritten or replaced in place is opened
  again, never read through a stale handle; the least recently used handles beyond
  :data:`MAX_OPEN` per thread are closed;
* :meth:`OpenScene.bounds_in` keeps the scene's bounds per grid CRS with the handle;
* :func:`memoize_default_transform` replaces rio-tiler's reference to rasterio's
  ``calculate_default_transform`` by a memoized one. The function is pure (its result depends
  only on its arguments: two CRSs, a size, a box), so a remembered answer is the answer; the
  pixels are unchanged (tests/test_imagery_speed.py compares them with uncached reads).

titiler pays all three per tile; the tile's own read, band maths and encoding are unchanged."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

#: open scene handles kept per worker thread (the default executor has a handful of threads)
MAX_OPEN = 16

_local = threading.local()
_patch_lock = threading.Lock()


@dataclass
class OpenScene:
    """An open scene (``reader``: a rio-tiler ``Reader``) and its bounds per grid CRS."""

    reader: Any
    _bounds: dict[Any, tuple[float, float, float, float]] = field(default_factory=dict)

    def bounds_in(self, crs) -> tuple[float, float, float, float]:
        """The scene's bounds in ``crs`` (rio-tiler's ``get_geographic_bounds``), computed once."""
        key = crs.to_wkt()
        try:
            return self._bounds[key]
        except KeyError:
            b = self._bounds[key] = tuple(self.reader.get_geographic_bounds(crs))
            return b


def _version(path: Path) -> tuple | None:
    """What identifies the file's content: path, inode, size and modification time (None when
    it cannot be read: the caller then opens it as before and meets the error there)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def _opened() -> OrderedDict:
    cache = getattr(_local, "scenes", None)
    if cache is None:
        cache = _local.scenes = OrderedDict()
    return cache


def open_scene(path: Path) -> OpenScene:
    """This thread's open handle of the file's current version (opened now if need be)."""
    from rio_tiler.io import Reader

    version = _version(path)
    if version is None:
        return OpenScene(Reader(str(path)))  # raises as an uncached open would
    cache = _opened()
    scene = cache.get(version)
    if scene is not None:
        cache.move_to_end(version)
        return scene
    for old in [k for k in cache if k[0] == version[0]]:  # an older version of this file
        cache.pop(old).reader.close()
    scene = cache[version] = OpenScene(Reader(str(path)))
    while len(cache) > MAX_OPEN:
        cache.popitem(last=False)[1].reader.close()
    return scene


def close_all() -> None:
    """Close this thread's handles (tests; a thread that ends leaves its handles to the collector)."""
    cache = _opened()
    while cache:
        cache.popitem()[1].reader.close()


def memoize_default_transform() -> None:
    """Install the memoized ``calculate_default_transform`` into rio-tiler's readers (once)."""
    from rio_tiler import utils

    with _patch_lock:
        if getattr(utils.calculate_default_transform, "_geobase_memo", False):
            return
        utils.calculate_default_transform = _memoized(utils.calculate_default_transform)


def _memoized(original):
    @lru_cache(maxsize=256)
    def remembered(src_crs, dst_crs, width, height, left, bottom, right, top):
        return original(src_crs, dst_crs, width, height, left, bottom, right, top)

    def calculate_default_transform(*args, **kwargs):
        """rasterio's function; the positional form rio-tiler's ``get_vrt_transform`` uses is
        remembered per (CRS, CRS, size, box), any other form passed through."""
        if kwargs or len(args) != 8:
            return original(*args, **kwargs)
        return remembered(*args)

    calculate_default_transform._geobase_memo = True  # type: ignore[attr-defined]
    return calculate_default_transform

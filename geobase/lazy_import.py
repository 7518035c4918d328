"""Heavy third-party libraries (numpy, shapely, rasterio, rio-tiler, pyogrio with geopandas and
pyarrow) imported on first use, under one lock.

Why: the server answers its first request in well under a second and idles at ~100 MiB because
it does not import what only some requests need (DEM tiles, slope, uploads, ingest, downloads);
``tests/test_lazy_imports.py`` pins that. The first request of each kind pays the import once.
Why a lock: the first DEM tiles and analyses run in worker threads, and two threads importing
the same package tree for the first time at once can see half-initialised modules (seen in
rio_tiler). Call :func:`load` before the ``import`` statements of such a function: those then
find the modules already in ``sys.modules``."""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

_LOCK = threading.RLock()


def load(*names: str) -> list[ModuleType]:
    """The modules ``names`` (dotted), each imported once, one thread at a time."""
    with _LOCK:
        return [importlib.import_module(name) for name in names]

"""The tile cache: files under ``settings.data_path/"tiles"`` keyed by everything a tile's bytes
depend on, bounded in total size with least-recently-used eviction.

Key = (layers and their current versions, tile matrix set, z, row, col, format/style, the
caller's ``security.view_signature``). An ingest bumps one layer's version, so exactly the
tiles containing that layer get new keys; nothing is purged, nothing is stale, no restart.
Old entries simply stop being asked for and age out under the size bound.

Vector tiles are stored gzip-compressed (served as-is to clients that accept gzip). The
ETag is derived from the key, so a 304 needs neither the file nor the database rows.

The most recently used tiles are also kept in memory (:data:`MEMORY_BYTES`, a subset of the
entries the file index knows, evicted with them): a hit of the tiles a map shows right now
costs a dictionary look-up instead of an open/read/close. The key names the tile's content
(versions, view), so a tile in memory is never stale, only possibly evicted on disk by another
process — which is harmless for a cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

#: bound of the in-memory tier (bytes; never more than the cache's own bound): the hot tiles
#: of the maps being looked at, a few MB, with room to spare
MEMORY_BYTES = 32 * 1024**2


def cache_key(layers: dict[str, int | None], tms: str, z: int, row: int, col: int, fmt: str,
              view_signature: str) -> str:
    """A stable hex key; the layer list is sorted so 'a,b' and 'b,a' share a tile."""
    parts = ",".join(f"{n}@{layers[n]}" for n in sorted(layers))
    raw = f"{parts}|{tms}|{z}|{row}|{col}|{fmt}|{view_signature}"
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def etag_for(key: str) -> str:
    return f'"{key[:32]}"'


class TileCache:
    """Size-bounded LRU of tile files. Thread-safe within a process; several processes may
    share the directory (each evicts by file access order it knows, which is good enough for
    a cache: a missing file is just a miss)."""

    def __init__(self, root: Path, max_bytes: int, memory_bytes: int = MEMORY_BYTES):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.memory_bytes = min(memory_bytes, max_bytes)
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] | None = None
        self._total = 0
        self._mem: OrderedDict[str, bytes] = OrderedDict()
        self._mem_total = 0

    @property
    def enabled(self) -> bool:
        """Whether it keeps anything (``GEOBASE_TILE_CACHE_MAX_BYTES=0`` switches it off)."""
        return self.max_bytes > 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def _load_index(self) -> None:
        if self._index is not None:
            return
        entries = []
        if self.root.exists():
            for p in self.root.glob("*/*"):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                if p.suffix == "":
                    entries.append((st.st_atime, p.name, st.st_size))
        entries.sort()
        self._index = OrderedDict((k, s) for _, k, s in entries)
        self._total = sum(s for _, _, s in entries)

    def get(self, key: str) -> bytes | None:
        if self.max_bytes <= 0:  # disabled (GEOBASE_TILE_CACHE_MAX_BYTES=0): files left from before are not served
            return None
        with self._lock:
            data = self._mem.get(key)
            if data is not None:
                self._mem.move_to_end(key)
                if self._index is not None and key in self._index:
                    self._index.move_to_end(key)
                return data
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        with self._lock:
            self._load_index()
            if key in self._index:
                self._index.move_to_end(key)
                self._remember(key, data)
        return data

    def _remember(self, key: str, data: bytes) -> None:
        """Keep ``data`` in the memory tier (lock held; ``key`` is in the file index)."""
        if len(data) > self.memory_bytes:
            return
        old = self._mem.pop(key, None)
        if old is not None:
            self._mem_total -= len(old)
        self._mem[key] = data
        self._mem_total += len(data)
        while self._mem_total > self.memory_bytes:
            _, dropped = self._mem.popitem(last=False)
            self._mem_total -= len(dropped)

    def _forget(self, key: str) -> None:
        old = self._mem.pop(key, None)
        if old is not None:
            self._mem_total -= len(old)

    def put(self, key: str, data: bytes) -> None:
        if self.max_bytes <= 0:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: readers see the old file, no file, or the whole new one
        with self._lock:
            self._load_index()
            old = self._index.pop(key, None)
            if old is not None:
                self._total -= old
            self._index[key] = len(data)
            self._total += len(data)
            self._remember(key, data)
            self._evict()

    def _evict(self) -> None:
        while self._total > self.max_bytes and self._index:
            key, size = self._index.popitem(last=False)
            self._total -= size
            self._forget(key)
            try:
                self._path(key).unlink()
            except FileNotFoundError:
                pass

    @property
    def total_bytes(self) -> int:
        with self._lock:
            self._load_index()
            return self._total

    def clear(self) -> int:
        """Remove every entry; returns how many were removed."""
        with self._lock:
            self._load_index()
            n = len(self._index)
            for key in list(self._index):
                try:
                    self._path(key).unlink()
                except FileNotFoundError:
                    pass
            self._index.clear()
            self._total = 0
            self._mem.clear()
            self._mem_total = 0
            return n

"""What an analysis may keep between runs because the versioned storage makes its inputs
immutable: results and subdivided geometries, each filed under the exact state of the layer
versions it was computed from.

Why: a version's rows never change once committed (ingest and edits write new versions, see
geobase/storage.py), so a county-wide tabulation of the same versions gives the same answer
every time. A planning office asks for the same table many times a day; the second answer
costs a dictionary look-up instead of a county-wide overlay. And when only one layer got a new
version, the rows it added and retired are known from ``_vfrom``/``_vto`` (indexed), so the
new table is the old one corrected by the change alone (see :mod:`geobase.analysis.tabulate`).

A layer's state (:class:`VersionState`) is its database, name, current version, the time that
version was committed and the highest row id of its table. The version and its commit time
name the content; the row id guards against anything that writes rows without a version (a
table truncated and reloaded by hand keeps its identity counter, so its new rows have new ids).
A layer with no version has no state and nothing of it is kept.

Memory: a bounded number of entries per process (least recently used dropped first); each
worker process keeps its own, and a restart forgets them. The zones' subdivision is also kept
in the database per zone version (:mod:`geobase.analysis.subdivision`), so a cold tabulation
after a restart reads it instead of cutting the zones again."""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from geobase.catalog import layers as layer_reads
from geobase.specs import LayerSpec
from geobase.storage import table_ident

#: results kept (a tabulation's rows are a few hundred cells: kilobytes each)
RESULT_ENTRIES = 64
#: subdivided layers kept (the zones of a county: a few MB each)
PIECES_ENTRIES = 8


@dataclass(frozen=True)
class VersionState:
    """What identifies the rows of a layer's current version (see the module docstring)."""

    database: tuple[str, str, str]
    layer: str
    version: int
    created_at: dt.datetime
    max_rid: int

    def same_history(self, other: VersionState) -> bool:
        """Whether ``other`` is an earlier version of the same layer in the same database."""
        return (self.database, self.layer) == (other.database, other.layer) and other.version < self.version \
            and other.max_rid <= self.max_rid


class LruCache:
    """A small least-recently-used map, safe to use from jobs' threads."""

    def __init__(self, entries: int):
        self.entries = entries
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def find(self, match: Callable[[Any], bool]) -> list[tuple[Any, Any]]:
        """Entries whose key satisfies ``match`` (newest first)."""
        with self._lock:
            return [(k, v) for k, v in reversed(self._items.items()) if match(k)]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


RESULTS = LruCache(RESULT_ENTRIES)
PIECES = LruCache(PIECES_ENTRIES)


async def layer_states(conn: psycopg.AsyncConnection, specs: Iterable[LayerSpec]) -> dict[str, VersionState | None]:
    """The state of each layer's current version, read in the caller's snapshot (None: the
    layer has no version, or its table no rows)."""
    specs = list(specs)
    current = await layer_reads.current_layers(conn, [s.name for s in specs])
    info = conn.info
    database = (info.host, str(info.port), info.dbname)
    out: dict[str, VersionState | None] = {}
    for spec in specs:
        c = current.get(spec.name)
        if c is None or c.version is None or c.created_at is None:
            out[spec.name] = None
            continue
        cur = await conn.execute(sql.SQL("SELECT max(_rid) FROM {}").format(table_ident(spec)))
        max_rid = (await cur.fetchone())[0]
        out[spec.name] = None if max_rid is None else VersionState(database, spec.name, c.version, c.created_at,
                                                                 int(max_rid))
    return out


async def version_still_there(conn: psycopg.AsyncConnection, state: VersionState) -> bool:
    """Whether ``state``'s version is still in the layer's history with the same commit time
    (a database reloaded from scratch reuses version numbers with other content)."""
    versions = await layer_reads.layer_versions(conn, state.layer)
    v = versions.get(state.version)
    return v is not None and v.created_at == state.created_at

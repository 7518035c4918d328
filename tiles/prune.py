"""Which counties' partitions a vector tile reads (issue 16).

A layer's table is LIST-partitioned by county (geobase/storage.py); a tile's statement finds its
rows by ``geom && <the tile's box>``, which the planner cannot prune by, so without more a tile
inside one county probed every county partition's geometry index. A tile therefore reads only
the counties whose extent meets it: the per-county extents of the layer's current version
(``catalog.layer_versions.divisions``, :func:`geobase.catalog.divisions.county_states`) are kept
per process and layer, and each tile's plan gets ``division IN (<those counties>)``
(:attr:`geobase.tiles.mvt.LayerPlan.counties`), which PostgreSQL prunes by.

Never a feature missing because the extents were stale. The extents kept for a layer are read
with the layer's current version v in one snapshot (a REPEATABLE READ transaction), and kept
under v. The tile's statement returns the versions it read its rows under (in the same
snapshot as the rows, geobase/tiles/render.py); the tile is kept only when those equal v — then
the extents are exactly those of the rows' version (a version's per-county map never changes).
Otherwise (a county loaded, an edit, since the extents were read; a replica behind) the tile is
drawn again from every county's partition, and the extents are read again on the next tile
whose request names another version than v. The per-county map counts every county
with current rows, each with the extent of all its current geometries (carried forward version
to version, recounted for the counties a version changed: ingests, edits, rollbacks alike).

Not pruned by extents: a layer whose version predates the per-county map (no counties known),
a tile meeting more than :data:`~geobase.tiles.mvt.COUNTY_SLOTS` counties, an old version's
tile (``as_of``), the class cells read from the pyramid. A ``division=`` request names its
counties itself: that is a filter (only those counties drawn), needing no check.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import psycopg
from geobase.tiles.mvt import BUFFER, COUNTY_SLOTS, EXTENT, LayerPlan, filter_box
from geobase.tiles.render import render
from geobase.tiles.tms import TileMatrixSet

from geobase.catalog.divisions import county_states
from geobase.catalog.state import LayerState, layer_states

#: degrees added around a county's extent before it is compared with a tile: ``geom && box``
#: compares single-precision boxes rounded outward (a few 1e-6 degrees), the extents are doubles
MARGIN = 1e-4
#: metres per degree of latitude (a desensitised layer is found by its rounded geometry)
_METRES_PER_DEGREE = 110_574.0


@dataclass(frozen=True)
class _Extents:
    version: int | None  # the layer's version these are the extents of (read in one snapshot)
    boxes: dict[str, tuple[float, float, float, float] | None]


class CountyExtents:
    """Per database and layer: its counties' extents, read once per layer version (see the module
    docstring)."""

    def __init__(self) -> None:
        self._layers: dict[tuple, _Extents] = {}

    async def extents(self, conn: psycopg.AsyncConnection, layer: str, version: int) -> _Extents | None:
        """The extents kept of ``layer`` when they are of ``version`` (the request's), else read
        anew; None when the connection cannot read them in one snapshot with their version."""
        key = (database(conn), layer)
        kept = self._layers.get(key)
        if kept is None or kept.version != version:
            kept = await _read(conn, layer)
            if kept is None:
                return None
            if len(self._layers) > 10_000:
                self._layers.clear()
            self._layers[key] = kept
        return kept


async def _read(conn: psycopg.AsyncConnection, layer: str) -> _Extents | None:
    """The layer's current version and its counties' extents, in one snapshot (REPEATABLE READ):
    never a version's number on another version's extents (a replica behind the primary, an
    ingest committing in between)."""
    if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return None  # not a pooled server connection: no transaction of ours can start here
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        st = (await layer_states(conn)).get(layer)
        counties = await county_states(conn, layer)
    finally:
        await conn.execute("COMMIT" if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
                           else "ROLLBACK")
    boxes = {d: (tuple(float(x) for x in e) if e else None) for d, (_, e) in counties.items()}
    return _Extents(st.current_version if st is not None else None, boxes)


#: the one per server process
EXTENTS = CountyExtents()


#: connection -> :func:`database` (asked of libpq once per connection, not per tile)
_databases: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def database(conn: psycopg.AsyncConnection) -> tuple:
    """Which database a connection reads (a process may serve one database from its primary and
    replicas, or, in tests, many databases whose layers have the same version numbers)."""
    try:
        return _databases[conn]
    except KeyError:
        db = _databases[conn] = (conn.info.host, conn.info.port, conn.info.dbname)
        return db


def row_box(plan: LayerPlan, tms: TileMatrixSet, z: int, row: int, col: int) -> tuple[float, float, float, float]:
    """The CGCS2000 box a tile finds the plan's rows with (geobase/tiles/mvt.py): the tile grown
    by its buffer, grown again for a desensitised layer's rounded geometry."""
    xmin, ymin, xmax, ymax = tms.bounds(z, row, col)
    margin = (xmax - xmin) * BUFFER / EXTENT
    box, _ = filter_box(tms, xmin - margin, ymin - margin, xmax + margin, ymax + margin)
    d = plan.desensitise
    grow = MARGIN
    if d is not None and not d.exact_geometry:
        grow += 3 * float(d.geometry.metres or 0) / _METRES_PER_DEGREE
    return box[0] - grow, box[1] - grow, box[2] + grow, box[3] + grow


def meeting(boxes: dict[str, tuple[float, float, float, float] | None],
            box: tuple[float, float, float, float]) -> tuple[str, ...] | None:
    """The counties whose extent meets ``box`` (a county without one has no geometry to draw);
    None (every county) when no county is known or more meet it than a statement has slots."""
    if not boxes:
        return None
    out = tuple(sorted(d for d, e in boxes.items()
                       if e is not None and e[0] <= box[2] and e[2] >= box[0] and e[1] <= box[3] and e[3] >= box[1]))
    return out if len(out) <= COUNTY_SLOTS else None


async def pruned(conn: psycopg.AsyncConnection, plans: list[LayerPlan], states: dict[str, LayerState],
                 tms: TileMatrixSet, z: int, row: int, col: int) -> tuple[list[LayerPlan], dict[str, int]]:
    """The plans, each of today's rows reading only the counties whose extent meets the tile, and
    ``{layer: version}`` of the extents used: the tile stands only if it was read under exactly
    those versions (:func:`stands`)."""
    out: list[LayerPlan] = []
    used: dict[str, int] = {}
    for p in plans:
        st = states.get(p.name)
        version = st.current_version if st is not None else None
        if p.counties is not None or p.as_of is not None or p.pyramid_version is not None or version is None:
            out.append(p)
            continue
        kept = await EXTENTS.extents(conn, p.name, version)
        counties = None if kept is None or kept.version is None else meeting(kept.boxes, row_box(p, tms, z, row, col))
        if counties is None:
            out.append(p)
            continue
        out.append(replace(p, counties=counties))
        used[p.name] = kept.version
    return out, used


def stands(used: dict[str, int], versions: dict[str, int | None]) -> bool:
    """Whether a tile drawn with extents of the versions ``used`` read its rows under those very
    versions (``versions``: what its statement returned, in the rows' snapshot)."""
    return all(versions.get(n) == v for n, v in used.items())


async def render_pruned(conn: psycopg.AsyncConnection, plans: list[LayerPlan], names: list[str],
                        states: dict[str, LayerState], tms: TileMatrixSet, z: int, row: int, col: int,
                        timeout_ms: int | None, *, with_states: bool = False, compress: bool = True):
    """:func:`geobase.tiles.render.render` of the plans pruned to the counties meeting the tile;
    drawn again from every county when the rows were read under another version than the
    extents were (the same bytes either way: a county left out has no row in the tile)."""
    narrowed, used = await pruned(conn, plans, states, tms, z, row, col)
    out = await render(conn, narrowed, names, tms, z, row, col, timeout_ms, with_states=with_states, compress=compress)
    if used and not stands(used, out[1]):
        out = await render(conn, plans, names, tms, z, row, col, timeout_ms, with_states=with_states,
                           compress=compress)
    return out

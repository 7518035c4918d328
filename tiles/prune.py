"""Which counties' partitions a vector tile reads (issue 16).

A layer's table is LIST-partitioned by county (geobase/storage.py); a tile's statement finds its
rows by ``geom && <the tile's box>``, which the planner cannot prune by, so without more a tile
inside one county probed every county partition's geometry index. A tile therefore reads only
the counties whose extent meets it: the per-county extents of the layer's current version
(``catalog.layer_versions.divisions``, :func:`geobase.catalog.divisions.county_states`) are kept
per process and layer, and each tile's plan gets ``division IN (<those counties>)``
(:attr:`geobase.tiles.mvt.LayerPlan.counties`), which PostgreSQL prunes by.

Never a feature missing because the extents were stale. The extents kept for a layer are of the
version the request's layer states named *before* they were read, say v; the catalog's version
when they were read was then v or later. The tile's statement returns the versions it read its
rows under (in the same snapshot as the rows, geobase/tiles/render.py); the tile is kept only
when those equal v — then the extents are exactly the version the rows are (versions only grow,
and a version's per-county map never changes). Otherwise (a county loaded, an edit, since the
extents were read) the tile is drawn again from every county's partition, and the extents are
read again on the next tile that names the new version. The per-county map counts every county
with current rows, each with the extent of all its current geometries (carried forward version
to version, recounted for the counties a version changed: ingests, edits, rollbacks alike).

Not pruned by extents: a layer whose version predates the per-county map (no counties known),
a tile meeting more than :data:`~geobase.tiles.mvt.COUNTY_SLOTS` counties, an old version's
tile (``as_of``), the class cells read from the pyramid. A ``division=`` request names its
counties itself: that is a filter (only those counties drawn), needing no check.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import psycopg
from geobase.tiles.mvt import BUFFER, COUNTY_SLOTS, EXTENT, LayerPlan, filter_box
from geobase.tiles.render import render
from geobase.tiles.tms import TileMatrixSet

from geobase.catalog.divisions import county_states
from geobase.catalog.state import LayerState

#: degrees added around a county's extent before it is compared with a tile: ``geom && box``
#: compares single-precision boxes rounded outward (a few 1e-6 degrees), the extents are doubles
MARGIN = 1e-4
#: metres per degree of latitude (a desensitised layer is found by its rounded geometry)
_METRES_PER_DEGREE = 110_574.0


@dataclass(frozen=True)
class _Extents:
    version: int  # the layer's version the request's states named before these were read
    boxes: dict[str, tuple[float, float, float, float] | None]


class CountyExtents:
    """Per layer: its counties' extents, read once per layer version (see the module docstring)."""

    def __init__(self) -> None:
        self._layers: dict[tuple, _Extents] = {}

    async def boxes(self, conn: psycopg.AsyncConnection, layer: str, version: int
                    ) -> dict[str, tuple[float, float, float, float] | None]:
        """``{county: extent or None}`` of ``layer`` as of ``version`` or later (empty: no map)."""
        key = (database(conn), layer)
        kept = self._layers.get(key)
        if kept is None or kept.version != version:
            states = await county_states(conn, layer)
            kept = _Extents(version, {d: (tuple(float(x) for x in e) if e else None) for d, (_, e) in states.items()})
            if len(self._layers) > 10_000:
                self._layers.clear()
            self._layers[key] = kept
        return kept.boxes


#: the one per server process
EXTENTS = CountyExtents()


def database(conn: psycopg.AsyncConnection) -> tuple:
    """Which database a connection reads (a process may serve one database from its primary and
    replicas, or, in tests, many databases whose layers have the same version numbers)."""
    return conn.info.host, conn.info.port, conn.info.dbname


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
        counties = meeting(await EXTENTS.boxes(conn, p.name, version), row_box(p, tms, z, row, col))
        if counties is None:
            out.append(p)
            continue
        out.append(replace(p, counties=counties))
        used[p.name] = version
    return out, used


def stands(used: dict[str, int], versions: dict[str, int | None]) -> bool:
    """Whether a tile drawn with extents of the versions ``used`` read its rows under those very
    versions (``versions``: what its statement returned, in the rows' snapshot)."""
    return all(versions.get(n) == v for n, v in used.items())


async def render_pruned(conn: psycopg.AsyncConnection, plans: list[LayerPlan], names: list[str],
                        states: dict[str, LayerState], tms: TileMatrixSet, z: int, row: int, col: int,
                        timeout_ms: int | None, *, with_states: bool = False):
    """:func:`geobase.tiles.render.render` of the plans pruned to the counties meeting the tile;
    drawn again from every county when the rows were read under another version than the
    extents were (the same bytes either way: a county left out has no row in the tile)."""
    narrowed, used = await pruned(conn, plans, states, tms, z, row, col)
    out = await render(conn, narrowed, names, tms, z, row, col, timeout_ms, with_states=with_states)
    if used and not stands(used, out[1]):
        out = await render(conn, plans, names, tms, z, row, col, timeout_ms, with_states=with_states)
    return out

"""The one ``LayerState``: what the catalog says about a layer for the request at hand.

The serving side reads it per request, never caches it across requests, so an ingest or a
sharing change is visible on the very next request with no restart and no notification. Tiles
read every layer's state in one query (:func:`layer_states`, also embeddable in the tile's own
round trip as :data:`STATES_SQL`); the features service reads one layer's state together with
the versions it has had (:func:`layer_state`), to map ``datetime`` to a version and to keep a
cursor on the version it started on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from geobase.catalog.layers import GRADE_SQL, layer_versions
from geobase.crs import supported_uris
from geobase.errors import NotFound
from geobase.security import LayerAccess
from geobase.specs import LayerSpec
from geobase.storage import COUNTY_PARTITIONS_SQL, table_regclass_text

_STATE = "SELECT name, department, sharing, shared_with, current_version, " + GRADE_SQL + " FROM catalog.layers"
#: every layer's state in name order (tiles embed it in the statement that renders a tile)
STATES_SQL = sql.SQL(_STATE + " ORDER BY name")
#: one layer's state, and its county partitions (the 6-digit code of each; geobase/features/ids.py
#: decides its id rule from them) read in the same statement: an items request's id rule costs no
#: round trip of its own
_ONE = "SELECT s.*, ARRAY(" + COUNTY_PARTITIONS_SQL + " ORDER BY 1) FROM (" + _STATE + " WHERE name = %s) s"


@dataclass(frozen=True)
class LayerState:
    """A layer's access facts (owner, sharing: what :mod:`geobase.security` decides visibility
    from), its current version (None until the first load) and, when read by
    :func:`layer_state`, its spec and every version it has had (number -> created_at,
    rows_total, extent)."""

    access: LayerAccess
    current_version: int | None
    spec: LayerSpec | None = None
    versions: dict[int, dict] = field(default_factory=dict)
    #: its county partitions when read by :func:`layer_state` (None: not read)
    divisions: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return self.access.name

    @property
    def extent(self) -> list[float] | None:
        """The current version's extent (CRS84 lon/lat box), None before the first load."""
        v = self.versions.get(self.current_version or -1)
        return list(v["extent"]) if v and v.get("extent") else None

    def crs_uris(self) -> list[str]:
        """The output CRSs offered for this layer (those covering its extent)."""
        return supported_uris(self.extent)


#: the rows read last and their states: ``(rows, states)``
_last: tuple[list, dict[str, LayerState]] | None = None


def states_from_rows(rows) -> dict[str, LayerState]:
    """Rows of :data:`STATES_SQL` -> {name: LayerState}, in name order.

    Rows equal to the last rows given return the very states object built from them (states
    are never modified): every cold tile reads the states with its rows, and the tile path
    compares them with the states it guessed (``fresh == guess``, geobase.tiles.service); the
    same object makes that comparison, and building them, nearly free while nothing changed."""
    global _last
    last = _last
    if last is not None and last[0] == rows:
        return last[1]
    states = {n: LayerState(LayerAccess(n, d, s, tuple(w or ()), g, o), v) for n, d, s, w, v, g, o in rows}
    _last = (rows, states)
    return states


async def layer_states(conn: psycopg.AsyncConnection) -> dict[str, LayerState]:
    """Every layer's access facts and current version, in one query (no versions, no spec)."""
    cur = await conn.execute(STATES_SQL)
    return states_from_rows(await cur.fetchall())


async def layer_state(conn: psycopg.AsyncConnection, spec: LayerSpec) -> LayerState:
    """One layer's state with its spec and its versions (NotFound: not in the catalog)."""
    cur = await conn.execute(_ONE, (table_regclass_text(spec), spec.name))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"collection {spec.name!r} not found", parameter="collectionId")
    versions = {v: {"created_at": i.created_at, "rows_total": i.rows_total, "extent": i.extent}
                for v, i in (await layer_versions(conn, spec.name)).items()}
    (state,) = states_from_rows([row[:-1]]).values()
    return LayerState(state.access, state.current_version, spec, versions, tuple(row[-1]))

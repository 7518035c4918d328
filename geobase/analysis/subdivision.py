"""The zones' subdivision kept per zone version in ``analysis.subdivisions``/``analysis.pieces``
(migration 0013_s11tab), and its halos per side of the halo grid in ``analysis.halo_grids``/
``analysis.halos`` (migration 0017_s12tab), so a cold county-wide tabulation starts from them.

Why: cutting the zones into pieces (ST_Subdivide, and deciding which pieces are their own box)
took 1.4-2.3 s of a cold tabulation at 200,000 parcels, as much as a third of it, and depends on
the zone version only. The pieces were kept in memory per layer state
(:data:`geobase.analysis.reuse.PIECES`), so every server start cut them again; kept in a table
they are cut once per zone version, like an index, and read back in milliseconds.

How: the first tabulation of a zone version builds the subdivision on a new connection (the
analysis's own snapshot is read only) in one transaction, under an advisory lock per layer, after
checking that connection sees the same layer state; a killed build leaves nothing and the next
tabulation builds it again. A newer version's build removes the layer's subdivisions of other
versions (a tabulation still reading one does so in its own snapshot); a version dropped from
the catalog takes its subdivision with it (foreign key). The pieces go back to the caller as the
arrays the tabulation binds, whether built or read, with the subdivision's id.

Halos (:func:`build_halos`): the zones clipped to the cells of a grid whose side depends on the
other layer's feature size (:mod:`geobase.analysis.pieces`), so they are kept per (subdivision,
side), built the same way (new connection, the layer's lock, the state checked, one transaction)
by the tabulation that first needs them: its own snapshot cannot see them, so it clips its halos
itself; every later one reads them (:func:`halo_grid`). Clipping them was 0.5 s of CPU of a cold
tabulation at 200,000 parcels, a fifth of it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql

from geobase.analysis.reuse import VersionState, layer_states
from geobase.specs import LayerSpec

#: the per-piece arrays of a subdivision, in the order of ``analysis.pieces``' columns
ARRAYS = ("rids", "wkbs", "rects", "x0", "y0", "x1", "y1")

#: every cell of the grid of side %(cell)s whose fit box (the cell grown by an eighth) meets a
#: current zone: ``covered`` when the zone covers the fit box (a feature within the fit box lies
#: in the zone), else the zone clipped to the cell grown by a quarter (the halo
#: :func:`geobase.analysis.pieces.pieces_sql` measures against). The side is a power of two, so
#: every box corner is exact in double precision
HALOS_SQL = """
    INSERT INTO analysis.halos (grid, rid, i, j, covered, halo)
    SELECT %(grid)s, z._rid, i, j, c.covered,
           CASE WHEN NOT c.covered THEN ST_Intersection(z.geom, ST_MakeEnvelope(
               (i - 0.25) * %(cell)s, (j - 0.25) * %(cell)s, (i + 1.25) * %(cell)s, (j + 1.25) * %(cell)s, 4490)) END
    FROM {t} z,
         LATERAL generate_series(floor(ST_XMin(z.geom) / %(cell)s - 1.125)::bigint,
                                 floor(ST_XMax(z.geom) / %(cell)s + 0.125)::bigint) i,
         LATERAL generate_series(floor(ST_YMin(z.geom) / %(cell)s - 1.125)::bigint,
                                 floor(ST_YMax(z.geom) / %(cell)s + 0.125)::bigint) j,
         LATERAL (SELECT ST_MakeEnvelope((i - 0.125) * %(cell)s, (j - 0.125) * %(cell)s,
                                         (i + 1.125) * %(cell)s, (j + 1.125) * %(cell)s, 4490) AS fit) b,
         LATERAL (SELECT ST_Covers(z.geom, b.fit) AS covered OFFSET 0) c
    WHERE {cur} AND ST_Intersects(z.geom, b.fit)
"""

FIND_SQL = """SELECT id FROM analysis.subdivisions WHERE layer = %s AND version = %s AND created_at = %s
              AND max_rid = %s AND vertices = %s"""
READ_SQL = "SELECT rid, wkb, rect, x0, y0, x1, y1 FROM analysis.pieces WHERE subdivision = %s ORDER BY ord"


def _key(state: VersionState, vertices: int) -> tuple:
    return (state.layer, state.version, state.created_at, state.max_rid, vertices)


def as_arrays(rows: list[tuple]) -> dict[str, list]:
    """Rows (rid, wkb, rect, x0, y0, x1, y1) as the arrays the tabulation binds."""
    return {name: [bytes(r[i]) if isinstance(r[i], (bytes, memoryview)) else r[i] for r in rows]
            for i, name in enumerate(ARRAYS)}


async def kept(conn: psycopg.AsyncConnection, state: VersionState, vertices: int) -> dict[str, list] | None:
    """The kept subdivision of ``state`` that ``conn``'s snapshot sees, or None."""
    try:
        async with conn.transaction():  # a savepoint: a failed look-up leaves the caller's snapshot usable
            row = await (await conn.execute(FIND_SQL, _key(state, vertices))).fetchone()
            if row is None:
                return None
            cur = await conn.execute(READ_SQL, (row[0],))
            return as_arrays(await cur.fetchall()) | {"subdivision": row[0]}
    except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege):
        return None  # a database not migrated to 0013 yet, or a role not granted its tables: cut here


@contextlib.asynccontextmanager
async def _beside_under_lock(conn: psycopg.AsyncConnection, spec: LayerSpec,
                             state: VersionState) -> AsyncIterator[psycopg.AsyncConnection | None]:
    """A new connection (``conn``'s database, role and statement timeout) in one transaction
    holding the layer's build lock: yielded when it sees ``state`` of the layer, else None (an
    ingest committed in between). What the caller writes commits when the block ends, or
    nothing does. The one way both kept things (pieces, halos) are built."""
    extra = {"password": conn.info.password} if conn.info.password else {}
    timeout = (await (await conn.execute("SELECT current_setting('statement_timeout')")).fetchone())[0]
    c2 = await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True, **extra)
    async with c2, c2.transaction():
        await c2.execute("SELECT set_config('statement_timeout', %s, true)", (timeout,))
        await c2.execute("SELECT pg_advisory_xact_lock(hashtextextended('geobase subdivision ' || %s, 0))",
                         (spec.name,))
        yield c2 if await layer_states(c2, [spec]) == {spec.name: state} else None


async def build(conn: psycopg.AsyncConnection, spec: LayerSpec, state: VersionState, vertices: int,
                pieces_sql: sql.Composable) -> dict[str, list] | None:
    """Cut the zones of ``state`` with ``pieces_sql`` and keep the pieces, committed on a new
    connection (one build of a layer at a time; a build that finds the pieces kept meanwhile
    reads them). None when that connection sees another state of the layer (an ingest committed
    in between), may not write the tables, or the build was stopped (its server process killed,
    a timeout: nothing of it is committed): the caller cuts the zones on its own connection."""
    try:
        async with _beside_under_lock(conn, spec, state) as c2:
            if c2 is None:
                return None
            if (got := await kept(c2, state, vertices)) is not None:
                return got
            return await _fill(c2, state, vertices, pieces_sql)
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable,
            psycopg.errors.ReadOnlySqlTransaction, psycopg.OperationalError):
        return None


async def _fill(c2: psycopg.AsyncConnection, state: VersionState, vertices: int,
                pieces_sql: sql.Composable) -> dict[str, list]:
    """Cut, insert the header and the pieces in ``c2``'s open transaction, and remove the
    layer's subdivisions of other versions."""
    t0 = time.perf_counter()
    rows = await (await c2.execute(pieces_sql)).fetchall()
    cur = await c2.execute("""INSERT INTO analysis.subdivisions (layer, version, created_at, max_rid, vertices, pieces, seconds)
                              VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                           (*_key(state, vertices), len(rows), time.perf_counter() - t0))
    sid = (await cur.fetchone())[0]
    async with c2.cursor() as cur, cur.copy(
            "COPY analysis.pieces (subdivision, ord, rid, wkb, rect, x0, y0, x1, y1) FROM STDIN") as copy:
        for k, r in enumerate(rows):
            await copy.write_row((sid, k, *r))
    await c2.execute("DELETE FROM analysis.subdivisions WHERE layer = %s AND version <> %s",
                     (state.layer, state.version))
    return as_arrays(rows) | {"subdivision": sid}


async def halo_grid(conn: psycopg.AsyncConnection, subdivision: int, cell: float) -> int | None:
    """The id of the kept halos of ``subdivision`` at grid side ``cell`` that ``conn``'s snapshot
    sees, or None."""
    try:
        async with conn.transaction():  # a savepoint: a failed look-up leaves the caller's snapshot usable
            cur = await conn.execute("SELECT id FROM analysis.halo_grids WHERE subdivision = %s AND cell = %s",
                                     (subdivision, cell))
            row = await cur.fetchone()
            return row[0] if row else None
    except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege):
        return None  # a database not migrated to 0017 yet, or a role not granted its tables


async def build_halos(conn: psycopg.AsyncConnection, spec: LayerSpec, state: VersionState, subdivision: int,
                      cell: float, table: sql.Composable, current: sql.Composable) -> bool:
    """Clip and keep the halos of ``subdivision`` (of ``state``: the rows ``current`` selects
    from ``table``) at grid side ``cell``, committed on a new connection under the layer's lock.
    False when that connection sees another state of the layer or no such subdivision, may not
    write the tables, or the build was stopped (nothing of it is committed)."""
    try:
        async with _beside_under_lock(conn, spec, state) as c2:
            if c2 is None:
                return False
            if not await (await c2.execute("SELECT 1 FROM analysis.subdivisions WHERE id = %s AND layer = %s "
                                           "AND version = %s", (subdivision, spec.name, state.version))).fetchone():
                return False
            if await halo_grid(c2, subdivision, cell) is None:
                await _fill_halos(c2, subdivision, cell, table, current)
            return True
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable,
            psycopg.errors.ReadOnlySqlTransaction, psycopg.OperationalError):
        return False


async def _fill_halos(c2: psycopg.AsyncConnection, subdivision: int, cell: float, table: sql.Composable,
                      current: sql.Composable) -> None:
    """Insert the grid's header and its halos in ``c2``'s open transaction."""
    t0 = time.perf_counter()
    cur = await c2.execute("INSERT INTO analysis.halo_grids (subdivision, cell, halos, seconds) "
                           "VALUES (%s, %s, 0, 0) RETURNING id", (subdivision, cell))
    grid = (await cur.fetchone())[0]
    cur = await c2.execute(sql.SQL(HALOS_SQL).format(t=table, cur=current), {"grid": grid, "cell": cell})
    await c2.execute("UPDATE analysis.halo_grids SET halos = %s, seconds = %s WHERE id = %s",
                     (cur.rowcount, time.perf_counter() - t0, grid))

"""The zones' subdivision kept per zone version in ``analysis.subdivisions``/``analysis.pieces``
(migration 0013_s11tab), so a cold county-wide tabulation starts from it.

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
arrays the tabulation binds, whether built or read."""

from __future__ import annotations

import time

import psycopg
from psycopg import sql

from geobase.analysis.reuse import VersionState, layer_states
from geobase.specs import LayerSpec

#: the per-piece arrays of a subdivision, in the order of ``analysis.pieces``' columns
ARRAYS = ("rids", "wkbs", "rects", "x0", "y0", "x1", "y1")

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
            return as_arrays(await cur.fetchall())
    except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege):
        return None  # a database not migrated to 0013 yet, or a role not granted its tables: cut here


async def build(conn: psycopg.AsyncConnection, spec: LayerSpec, state: VersionState, vertices: int,
                pieces_sql: sql.Composable) -> dict[str, list] | None:
    """Cut the zones of ``state`` with ``pieces_sql`` and keep the pieces, committed on a new
    connection (one build of a layer at a time; a build that finds the pieces kept meanwhile
    reads them). None when that connection sees another state of the layer (an ingest committed
    in between), may not write the tables, or the build was stopped (its server process killed,
    a timeout: nothing of it is committed): the caller cuts the zones on its own connection."""
    extra = {"password": conn.info.password} if conn.info.password else {}
    timeout = (await (await conn.execute("SELECT current_setting('statement_timeout')")).fetchone())[0]
    try:
        c2 = await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True, **extra)
        async with c2, c2.transaction():
            await c2.execute("SELECT set_config('statement_timeout', %s, true)", (timeout,))
            await c2.execute("SELECT pg_advisory_xact_lock(hashtextextended('geobase subdivision ' || %s, 0))",
                             (spec.name,))
            if await layer_states(c2, [spec]) != {spec.name: state}:
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
    return as_arrays(rows)

"""A vector tile rendered in one network round trip, by a statement each connection prepares once.

A tile's statement (:mod:`geobase.tiles.mvt`) depends on the tile only through twelve numbers
(:func:`~geobase.tiles.mvt.tile_numbers`: its bounds, buffered, and the box that finds its rows)
once the layers, the caller's view and the zoom are fixed. Composing it anew for every tile cost
more Python than anything else in a cold tile's handler (~0.3-0.6 ms), and the server parsed it
every time. So the statement of a (plans, zoom) is composed once per process
with ``$1`` .. ``$12`` (:func:`~geobase.tiles.mvt.tile_template`), prepared once per connection
(``PREPARE``, in the same round trip as the connection's first such tile) and each tile sends
``EXECUTE name(<its twelve numbers>)``, planned for those numbers (``plan_cache_mode =
force_custom_plan``: the plan the literal statement gets). The statement is the same SQL with the
same values and the same plan, so the tile's bytes are the same; it reads today's rows when it runs (``_vto IS NULL``), so a new
version is drawn on the very next tile with no invalidation of ours (PostgreSQL re-plans a prepared
statement itself when a table it reads changes shape). The class cells of coverage layers at small
zooms and tiles of an old version are composed per tile as before (:func:`~geobase.tiles.mvt.preparable`).
The layer states read in the same round trip (every layer's access facts and version) are a
statement of their own, prepared beside the tile's (:data:`STATES_NAME`).

Which statements a connection holds is remembered per connection object; after any error with a
statement in flight (or a session that lost them: ``DISCARD ALL``), the connection's list is read
back from ``pg_prepared_statements`` before it is used again, so a tile never names a statement
the session does not have, nor prepares one twice.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import dataclass

import psycopg
from geobase.tiles.mvt import LayerPlan, preparable_together, statement_arity, statement_numbers, tile_sql, tile_template
from geobase.tiles.tms import TileMatrixSet
from psycopg import sql
from psycopg.pq import ExecStatus

from geobase.catalog.state import STATES_SQL, LayerState, states_from_rows

TUPLES_OK = ExecStatus.TUPLES_OK
PREFIX = "geobase_tile_"
#: statements kept per process and prepared per connection; past it, tiles are composed per tile
MAX_STATEMENTS = 256


def gzip_tile(raw: bytes) -> bytes:
    """gzip with ISA-L (python-isal) at level 1: on the benchmark's MVT tiles an eighth of
    zlib level 5's time (0.3 ms instead of 2.7 per tile; 1 ms instead of 12 for a 370 KB
    tile), for files about a quarter larger (the largest land-use tile 51 KB instead of 39).
    Compression is the part of a cold tile that Python adds; any gzip reader decodes it."""
    from isal import igzip

    return igzip.compress(raw, compresslevel=1, mtime=0)


@dataclass(frozen=True)
class _Statement:
    name: str
    prepare: sql.SQL  # PREPARE name (float8, ...) AS <the tile template>
    specs: tuple  # the plans' specs, held so that their ids in the key are never reused
    execute: bytes  # b'EXECUTE "name"(': the tile's numbers and b')' follow (:func:`_numbers`)


#: a generic plan (one for every tile) finds rows with a plain index scan (it cannot estimate a
#: box it does not know): the features would come in index order, not the order the statement
#: with the tile's own numbers returns them in, so the tile's bytes would differ (same features)
_CUSTOM_PLAN = sql.SQL("SET LOCAL plan_cache_mode = force_custom_plan")

_statements: dict[tuple, _Statement] = {}
#: connection -> names of the tile statements its session holds
_prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: connections whose list is unknown (an error with a statement in flight): read back before use
_unsure: weakref.WeakSet = weakref.WeakSet()


def _key(plans: list[LayerPlan], names: list[str], tms: TileMatrixSet, z: int) -> tuple | None:
    """What fixes a tile's statement apart from its numbers; None when it is composed per tile."""
    if not plans or not preparable_together(plans):
        return None
    key = (tuple((id(p.spec), p.attributes, p.hidden_classes, p.desensitise, p.within, p.counties is None)
                 for p in plans),
           tuple(names), tms.id, z)
    try:
        hash(key)
    except TypeError:  # a view holding something unhashable: composed per tile
        return None
    return key


def _statement(conn: psycopg.AsyncConnection, plans: list[LayerPlan], names: list[str], tms: TileMatrixSet,
               z: int) -> _Statement | None:
    key = _key(plans, names, tms, z)
    if key is None:
        return None
    st = _statements.get(key)
    if st is not None:
        return st
    if len(_statements) >= MAX_STATEMENTS:
        return None
    template = tile_template(plans, names, tms, z).as_string(conn)
    name = PREFIX + hashlib.sha256(template.encode()).hexdigest()[:24]
    types = ", ".join(["float8"] * statement_arity(plans))
    prepare = sql.SQL("PREPARE {} ({}) AS {}").format(sql.Identifier(name), sql.SQL(types), sql.SQL(template))
    execute = sql.SQL("EXECUTE {}(").format(sql.Identifier(name)).as_bytes(conn)
    st = _statements[key] = _Statement(name, sql.SQL(prepare.as_string(conn)), tuple(p.spec for p in plans), execute)
    return st


def _numbers(values) -> bytes:
    """The tile's numbers as the literals of an ``EXECUTE``: the text ``sql.Literal`` writes for
    each float (its shortest round-trip ``repr``; a negative one after a space, so that no ``--``
    can form), written directly — composing ~20 literals through psycopg's ``sql`` objects was a
    tenth of a small tile's time in Python. A value that is not finite goes through
    ``sql.Literal`` itself (``'Infinity'::float8``)."""
    out = []
    for v in values:
        v = float(v)
        if v != v or v in (_INF, -_INF):
            out.append(sql.Literal(v).as_bytes(None))
        elif v < 0 or (v == 0 and math.copysign(1.0, v) < 0):
            out.append(b" " + repr(v).encode())
        else:
            out.append(repr(v).encode())
    return b", ".join(out)


_INF = float("inf")
#: every layer's state (:data:`~geobase.catalog.state.STATES_SQL`), read with each cold tile, as a
#: statement each connection prepares once beside its tile statements: planned once per session
#: instead of with every tile (measured: ~70 µs of the server's time per tile, where a z16
#: tile's whole statement takes ~0.9 ms); the same query, the same rows
STATES_NAME = PREFIX + "states"
_PREPARE_STATES = sql.SQL("PREPARE {} AS {}").format(sql.Identifier(STATES_NAME), STATES_SQL)
#: ``(timeout_ms, with_states)`` -> the bytes a prepared tile's query starts with (see :func:`_render_once`)
_heads: dict[tuple[int | None, bool], bytes] = {}


def _head(timeout_ms: int | None, with_states: bool) -> bytes:
    """``BEGIN; [SET LOCAL statement_timeout = ..;] [EXECUTE <the states>;] SET LOCAL
    plan_cache_mode = ..; ``, composed once per timeout (plain ASCII: the same bytes in any
    client encoding); the states statement (:data:`STATES_NAME`) is prepared with the tile's."""
    key = (int(timeout_ms) if timeout_ms else None, with_states)
    head = _heads.get(key)
    if head is None:
        parts: list[sql.Composable] = [sql.SQL("BEGIN")]
        if key[0]:
            parts.append(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{key[0]}ms")))
        if with_states:
            parts.append(sql.SQL("EXECUTE {}").format(sql.Identifier(STATES_NAME)))
        parts.append(_CUSTOM_PLAN)
        head = (sql.SQL("; ").join(parts).as_string(None) + "; ").encode("ascii")
        if len(_heads) < 64:
            _heads[key] = head
    return head


async def _held(conn: psycopg.AsyncConnection) -> set[str]:
    """The tile statements the connection's session holds (read back when unsure)."""
    if conn in _unsure or conn not in _prepared:
        held = set()
        if conn in _unsure:
            cur = await conn.execute("SELECT name FROM pg_prepared_statements WHERE starts_with(name, %s)",
                                     (PREFIX,))
            held = {r[0] for r in await cur.fetchall()}
            _unsure.discard(conn)
        _prepared[conn] = held
    return _prepared[conn]


def forget(conn: psycopg.AsyncConnection) -> None:
    """The connection's session may have lost or gained tile statements (an error with one in
    flight, ``DISCARD ALL``): read its list back before the next tile."""
    _unsure.add(conn)


async def render(conn: psycopg.AsyncConnection, plans: list[LayerPlan], names: list[str], tms: TileMatrixSet,
                 z: int, row: int, col: int, timeout_ms: int | None, *, with_states: bool = False,
                 compress: bool = True) -> tuple[bytes | None, dict[str, int | None], dict[str, LayerState] | None, bytes]:
    """The gzip-compressed tile (None unless ``compress``: the caller compresses it later, if at
    all), the versions its rows came from, (``with_states``) every layer's state and the
    uncompressed tile, all in one network round trip.

    One simple-protocol query string ``[PREPARE;] BEGIN; SET LOCAL statement_timeout; [states;]
    tile; COMMIT`` (every value in it a composed literal, no parameters): the server parses it in
    one go, a millisecond less per tile than the same statements pipelined one by one. A session
    that lost its statements is told by PostgreSQL (the statement does not exist): the list is
    read back and the tile asked once more."""
    try:
        return await _render_once(conn, plans, names, tms, z, row, col, timeout_ms, with_states, compress)
    except (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement):
        return await _render_once(conn, plans, names, tms, z, row, col, timeout_ms, with_states, compress)


async def _render_once(conn: psycopg.AsyncConnection, plans: list[LayerPlan], names: list[str],
                       tms: TileMatrixSet, z: int, row: int, col: int, timeout_ms: int | None,
                       with_states: bool, compress: bool = True
                       ) -> tuple[bytes | None, dict[str, int | None], dict[str, LayerState] | None, bytes]:
    st = _statement(conn, plans, names, tms, z)
    prepare: list[sql.Composable] = []
    if st is not None:
        held = await _held(conn)
        if st.name not in held:
            if len(held) >= MAX_STATEMENTS:
                st = None  # the session holds enough: composed per tile
            else:
                prepare.append(st.prepare)
        if st is not None and with_states and STATES_NAME not in held:
            prepare.append(_PREPARE_STATES)
    if st is None:
        parts: list[sql.Composable] = [sql.SQL("BEGIN")]
        if timeout_ms:  # SET LOCAL: ends with this transaction, never leaks into the pool
            parts.append(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{int(timeout_ms)}ms")))
        if with_states:
            parts.append(STATES_SQL)
        parts += [tile_sql(plans, names, tms, z, row, col), sql.SQL("COMMIT")]
        query: sql.Composable | bytes = sql.SQL("; ").join(parts)
    else:  # the same statements, the prepared one planned for this tile's numbers (_CUSTOM_PLAN)
        query = b"".join((b"".join(p.as_bytes(conn) + b"; " for p in prepare), _head(timeout_ms, with_states),
                          st.execute, _numbers(statement_numbers(plans, tms, z, row, col)), b"); COMMIT"))
    try:
        cur = await conn.execute(query)
    except psycopg.Error:
        if st is not None:
            forget(conn)
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            await conn.rollback()  # the failed statement left the transaction open: end it here
        raise
    if st is not None:
        _prepared[conn].update((st.name, STATES_NAME) if with_states else (st.name,))
    results = []
    while True:
        res = cur.pgresult  # (not cur.description: it builds a Column object for each column)
        if res is not None and res.status == TUPLES_OK:
            results.append(await cur.fetchall())
        if not cur.nextset():
            break
    states = states_from_rows(results[0]) if with_states else None
    raw, versions = results[-1][0]
    raw = bytes(raw or b"")
    body = (gzip_tile(raw) if raw else b"") if compress else None
    versions = {n: (versions or {}).get(n) for n in names}
    # A layer drawn from its pyramid was drawn from the version the plan fixed (read in an
    # earlier statement), whatever the catalog says now: an ingest that committed in between
    # must not get this content cached under its new version's key, for good.
    for p in plans:
        if p.pyramid_version is not None:
            versions[p.name] = p.pyramid_version
    return body, versions, states, raw

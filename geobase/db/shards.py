"""Shards: counties' partitions on other PostgreSQL/PostGIS servers, as foreign partitions.

A shard is a ``postgres_fdw`` foreign server named ``geobase_shard_<name>`` (``async_capable``,
``extensions 'postgis'``, ``fetch_size``, ``connect_timeout`` and the shard's own
``statement_timeout``) with a user mapping FOR PUBLIC; the server and the mapping are the whole
registry (``pg_dump`` of the coordinator carries it).
Placing county D of a layer on a shard makes ``data."<layer>__D"`` on the shard (same columns,
a CHECK that every row is of D, the layer's indexes, the spatial one included, built after the
rows), copies the rows there, and then, in ONE coordinator transaction, DETACHes the local
partition and ATTACHes a foreign table ``FOR VALUES IN ('D')`` under the same name.

Why this way: the routing is PostgreSQL's. The layer table stays the one table every query
names; ``division IN ('D')`` (geobase/storage.py ``division_filter``) prunes every other
partition at plan time, so a county-scoped query makes exactly one Foreign Scan on D's shard,
the filters (ST_ functions included: ``extensions 'postgis'``) run there on its GiST index;
a province scan (a count, a tile, a tabulation) appends the local partitions and one ``Async
Foreign Scan`` per shard, run concurrently (a page in key order is a Merge Append, which
PostgreSQL runs in turn). No Python scatter-gather, no second SQL dialect.

Writes: every writer (ingest's version writer, rollback, editing) writes through the layer
table, so a sharded county's new version is written through its foreign partition, in a remote
transaction that postgres_fdw opens inside the coordinator's and commits just before it (a
killed writer leaves both as they were). PostgreSQL 15's postgres_fdw has no two-phase commit:
a coordinator dying between the two commits leaves on the shard the rows of a version the
catalog does not list; :func:`in_doubt` finds them and :func:`repair` undoes them
(``geobase db shard check [--repair]``). The first placement of a layer moves its unique
indexes to the partitions (geobase/partitions.py ``split_unique_indexes``).

A shard that is down answers the coordinator's connection attempt with an error (08001, "could
not connect to server geobase_shard_<name>") within ``connect_timeout``; :func:`shard_unavailable`
turns it into a :class:`~geobase.errors.ShardUnavailable` (HTTP 503 naming the shard); queries
that prune the shard's partitions never connect to it and keep working.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from geobase.catalog.divisions import undo_versions_beyond, versions_beyond
from geobase.catalog.versions import lock_layer, next_version
from geobase.errors import Conflict, InvalidInput, NotFound, ShardUnavailable
from geobase.partitions import (
    attach,
    build_indexes,
    create_beside,
    ensure_partition,
    foreign_partitions,
    has_unique_indexes,
    split_unique_indexes,
)
from geobase.specs import LayerSpec
from geobase.storage import (
    DATA_SCHEMA,
    DIVISION,
    check_division,
    partition_ident,
    partition_name,
    table_ident,
)

log = logging.getLogger(__name__)

SERVER_PREFIX = "geobase_shard_"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_LOCAL_NOTE = "geobase local shard: "
#: the connection options the foreign server takes from a shard's URL (the rest are geobase's)
_URL_KEYS = ("host", "hostaddr", "port", "dbname", "sslmode", "sslrootcert", "sslcert", "sslkey")


@dataclass
class Shard:
    name: str
    server: str
    options: dict[str, str]
    local_pgdata: str | None = None
    partitions: list[tuple[str, str]] = field(default_factory=list)  # (layer, division)

    def as_dict(self) -> dict:
        return {"name": self.name, "server": self.server, "options": self.options, "local_pgdata": self.local_pgdata,
                "partitions": [{"layer": lay, "division": d} for lay, d in self.partitions]}


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise InvalidInput(f"shard name {name!r}: lower-case letters, digits and _, starting with a letter",
                           parameter="name")
    return name


def server_name(name: str) -> str:
    return SERVER_PREFIX + check_name(name)


def _options(d: dict[str, str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(str(v))) for k, v in d.items())


def _check_shard(conn: psycopg.Connection, url: str) -> None:
    """The shard answers, has PostGIS (created when allowed) and a ``data`` schema, and is not
    the coordinator's own database (placing a county there would drop its partition)."""
    here = conn.execute("SELECT system_identifier, current_database() FROM pg_control_system()").fetchone()
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as remote:
            there = remote.execute("SELECT system_identifier, current_database() FROM pg_control_system()").fetchone()
            if tuple(there) == tuple(here):
                raise InvalidInput("the shard's URL names the coordinator's own database", parameter="url")
            remote.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            remote.execute("CREATE SCHEMA IF NOT EXISTS data")
    except psycopg.OperationalError as exc:
        raise ShardUnavailable(f"shard at {_safe(url)} does not answer: {str(exc).strip().splitlines()[0]}",
                               shard=None) from None


def _safe(url: str) -> str:
    return make_conninfo(**{k: v for k, v in conninfo_to_dict(url).items() if k != "password"})


def add_shard(conn: psycopg.Connection, name: str, url: str, *, fetch_size: int = 10000, connect_timeout_s: int = 3,
              statement_timeout_ms: int = 120000, local_pgdata: str | None = None) -> Shard:
    """Register the server at ``url`` as shard ``name`` (foreign server + user mapping), in
    the caller's transaction (committed here)."""
    server = server_name(name)
    if conn.execute("SELECT 1 FROM pg_foreign_server WHERE srvname = %s", (server,)).fetchone():
        raise Conflict(f"shard {name} exists already (geobase db shard list)")
    _check_shard(conn, url)
    info = conninfo_to_dict(url)
    opts = {k: info[k] for k in _URL_KEYS if k in info}
    opts.update({"async_capable": "true", "extensions": "postgis", "fetch_size": str(int(fetch_size)),
                 "batch_size": "1000", "connect_timeout": str(int(connect_timeout_s)), "keepalives_idle": "10",
                 "keepalives_interval": "3", "keepalives_count": "3",
                 # a shard never acknowledges a commit it could lose in a crash (the local cluster's
                 # synchronous_commit = off would let a killed shard forget a version the catalog lists)
                 "options": f"-c statement_timeout={int(statement_timeout_ms)} -c synchronous_commit=on"})
    conn.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
    conn.execute(sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({})").format(
        sql.Identifier(server), _options(opts)))
    mapping = {"user": info.get("user") or conn.info.user}
    if info.get("password"):
        mapping["password"] = info["password"]
    if conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        # the server's own role (geobase_web) reads sharded counties too; without a password the
        # shard must trust loopback, which only a superuser may allow a mapping to rely on
        mapping["password_required"] = "false"
    conn.execute(sql.SQL("CREATE USER MAPPING FOR PUBLIC SERVER {} OPTIONS ({})").format(
        sql.Identifier(server), _options(mapping)))
    if local_pgdata:
        conn.execute(sql.SQL("COMMENT ON SERVER {} IS {}").format(sql.Identifier(server),
                                                                 sql.Literal(_LOCAL_NOTE + local_pgdata)))
    conn.commit()
    return get_shard(conn, name)


def list_shards(conn: psycopg.Connection) -> list[Shard]:
    rows = conn.execute(
        "SELECT s.srvname, s.srvoptions, obj_description(s.oid, 'pg_foreign_server') FROM pg_foreign_server s "
        "WHERE s.srvname LIKE %s ORDER BY 1", (SERVER_PREFIX + "%",)).fetchall()
    placed = conn.execute(
        "SELECT s.srvname, p.relname FROM pg_foreign_table f JOIN pg_foreign_server s ON s.oid = f.ftserver "
        "JOIN pg_class c ON c.oid = f.ftrelid JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = %s "
        "JOIN pg_inherits i ON i.inhrelid = c.oid JOIN pg_class p ON p.oid = i.inhparent ORDER BY p.relname, c.relname",
        (DATA_SCHEMA,)).fetchall()
    out = []
    for server, options, note in rows:
        opts = dict(o.split("=", 1) for o in options or [])
        local = note[len(_LOCAL_NOTE):] if note and note.startswith(_LOCAL_NOTE) else None
        parts = []
        for srv, layer in placed:
            if srv == server:
                parts += [(layer, d) for d, s in foreign_partitions(conn, layer).items() if s == server]
        out.append(Shard(server[len(SERVER_PREFIX):], server, opts, local, sorted(set(parts))))
    return out


def get_shard(conn: psycopg.Connection, name: str) -> Shard:
    for shard in list_shards(conn):
        if shard.name == name:
            return shard
    raise NotFound(f"no shard {name!r} (geobase db shard list)")


def shard_url(conn: psycopg.Connection, name: str) -> str:
    """The connection string of shard ``name`` (server options + the PUBLIC user mapping)."""
    server = server_name(name)
    shard = get_shard(conn, name)
    row = conn.execute("SELECT umoptions FROM pg_user_mappings WHERE srvname = %s AND usename = 'public'",
                       (server,)).fetchone()
    mapping = dict(o.split("=", 1) for o in (row[0] or [])) if row else {}
    keys = {k: v for k, v in shard.options.items() if k in _URL_KEYS}
    keys.update({k: mapping[k] for k in ("user", "password") if k in mapping})
    return make_conninfo(connect_timeout=shard.options.get("connect_timeout", "10"), **keys)


def _columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str, bool]]:
    """(name, type with collation, not null) of ``data.<table>``'s columns, in order."""
    return conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attcollation <> t.typcollation "
        "THEN ' COLLATE ' || quote_ident(c.collname) ELSE '' END, a.attnotnull FROM pg_attribute a "
        "JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_collation c ON c.oid = a.attcollation "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (f'{DATA_SCHEMA}."{table}"',)).fetchall()


def _column_defs(cols: list[tuple[str, str, bool]]) -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL("{} {}{}").format(sql.Identifier(n), sql.SQL(t), sql.SQL(" NOT NULL" if nn else ""))
                              for n, t, nn in cols)


def _copy(src: psycopg.Connection, src_table: sql.Composable, dst: psycopg.Connection, dst_table: sql.Composable,
          names: list[str]) -> None:
    """Stream the rows of ``src_table`` into ``dst_table`` (binary COPY out of one server and
    into the other, a block at a time: no row is decoded in Python)."""
    cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    with src.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT BINARY)").format(cols, src_table)) as out, \
            dst.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(dst_table, cols)) as inp:
        for block in out:
            inp.write(block)


def _count(conn: psycopg.Connection, table: sql.Composable) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]


def _make_remote(remote: psycopg.Connection, spec: LayerSpec, division: str, cols) -> sql.Composed:
    """County ``division``'s table on the shard, empty (made again when a placement that
    failed left one behind)."""
    ident = partition_ident(spec, division)
    remote.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
    remote.execute(sql.SQL("CREATE TABLE {} ({}, CHECK ({} = {}))").format(
        ident, _column_defs(cols), sql.Identifier(DIVISION), sql.Literal(division)))
    return ident


def _index_remote(remote: psycopg.Connection, spec: LayerSpec, division: str) -> None:
    """The layer's indexes on the shard's table, after its rows, the unique ones included (the
    shard enforces them for its county): the spatial one (GiST on the current rows' ``geom``)
    is what a pushed-down ``ST_Intersects``/``&&`` uses there."""
    ident = partition_ident(spec, division)
    build_indexes(remote, spec, ident, division, split=True)
    remote.execute(sql.SQL("ANALYZE {}").format(ident))


def place(conn: psycopg.Connection, spec: LayerSpec, shard: str, division: str) -> int:
    """Move county ``division``'s partition of the layer onto ``shard``; the rows moved (0 when
    it is there already). The rows are copied while the layer's writers wait (its writer lock,
    and a SHARE lock on the county's partition: readers go on), then the coordinator swaps the
    local partition for the foreign table in one transaction and drops the local one."""
    division = check_division(division)
    server = server_name(shard)
    url = shard_url(conn, shard)
    where = foreign_partitions(conn, spec).get(division)
    if where == server:
        return 0
    if where:
        raise Conflict(f"county {division} of layer {spec.name} is on shard {where[len(SERVER_PREFIX):]}; "
                       f"move it back first (geobase db shard unplace {division} --layer {spec.name})")
    conn.commit()
    name = partition_name(spec, division)
    local = partition_ident(spec, division)
    with conn.transaction():  # once per layer, its first placement: unique indexes move to the partitions
        lock_layer(conn, spec.name)
        ensure_partition(conn, spec, division)
        split_unique_indexes(conn, spec)
    with conn.transaction():  # readers of every county go on while the rows are copied
        lock_layer(conn, spec.name)
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(local))
        cols = _columns(conn, name)
        names = [c[0] for c in cols]
        with psycopg.connect(url) as remote:
            remote.execute("SET synchronous_commit = on")
            remote_ident = _make_remote(remote, spec, division, cols)
            _copy(conn, local, remote, remote_ident, names)
            _index_remote(remote, spec, division)
            remote.commit()
            moved = _count(remote, remote_ident)
        if moved != _count(conn, local):
            raise Conflict(f"county {division} of {spec.name}: the shard holds {moved} rows after the copy, "
                           "not as many as the coordinator; nothing was switched")
        staged = sql.Identifier(DATA_SCHEMA, f"{name[:50]}__fdw")
        conn.execute(sql.SQL("CREATE FOREIGN TABLE {} ({}) SERVER {} OPTIONS (schema_name {}, table_name {})").format(
            staged, _column_defs(cols), sql.Identifier(server), sql.Literal(DATA_SCHEMA), sql.Literal(name)))
        # the swap: DETACH takes the layer table's ACCESS EXCLUSIVE lock, held until the commit
        # (statements, no row is read or written): readers wait for milliseconds, not for the copy
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(table_ident(spec), local))
        conn.execute(sql.SQL("DROP TABLE {}").format(local))
        conn.execute(sql.SQL("ALTER FOREIGN TABLE {} RENAME TO {}").format(staged, sql.Identifier(name)))
        conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
            table_ident(spec), local, sql.Literal(division)))
    conn.execute(sql.SQL("ANALYZE {}").format(local))  # the planner's row estimates of the foreign partition
    conn.commit()
    log.info("layer %s: county %s placed on shard %s (%d rows)", spec.name, division, shard, moved)
    return moved


def unplace(conn: psycopg.Connection, spec: LayerSpec, division: str) -> int | None:
    """Move county ``division``'s partition of the layer back from its shard into a local
    partition (copied beside, indexed and attached in the transaction that drops the foreign
    table); the shard's table is dropped after the commit. The rows moved (history included);
    None when the county's partition is not on a shard."""
    division = check_division(division)
    server = foreign_partitions(conn, spec).get(division)
    if server is None:
        return None
    url = shard_url(conn, server[len(SERVER_PREFIX):])
    conn.commit()
    name = partition_name(spec, division)
    foreign = partition_ident(spec, division)
    back = f"{name[:50]}__back"
    with conn.transaction():
        lock_layer(conn, spec.name)
        names = [c[0] for c in _columns(conn, name)]
        local = create_beside(conn, spec, back)
        try:
            with psycopg.connect(url) as remote:
                _copy(remote, foreign, conn, local, names)
                expected = _count(remote, foreign)
        except psycopg.OperationalError as exc:
            raise ShardUnavailable(f"shard {server[len(SERVER_PREFIX):]} does not answer: "
                                   f"{str(exc).strip().splitlines()[0]}", shard=server[len(SERVER_PREFIX):]) from None
        if _count(conn, local) != expected:
            raise Conflict(f"county {division} of {spec.name}: the copy back holds another row count than the shard")
        # indexes and a CHECK of the county before the swap: the ATTACH then neither builds nor scans
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} = {})").format(
            local, sql.Identifier(f"{back}_division"), sql.Identifier(DIVISION), sql.Literal(division)))
        build_indexes(conn, spec, local, division, split=not has_unique_indexes(conn, spec))
        conn.execute(sql.SQL("ANALYZE {}").format(local))
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(table_ident(spec), foreign))
        conn.execute(sql.SQL("DROP FOREIGN TABLE {}").format(foreign))
        attach(conn, spec, back, division)
    conn.commit()
    try:
        with psycopg.connect(url, autocommit=True) as remote:
            remote.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(foreign))
    except psycopg.Error as exc:  # the rows are home; a table left on the shard costs space only
        log.warning("shard %s: could not drop %s after moving it back: %s", server, name, exc)
    log.info("layer %s: county %s moved back from %s (%d rows)", spec.name, division, server, expected)
    return expected


def remove_shard(conn: psycopg.Connection, name: str, specs: dict[str, LayerSpec]) -> list[tuple[str, str, int]]:
    """Move every county on shard ``name`` back, then drop its server and user mapping.
    ``specs``: layer name -> spec. Returns (layer, division, rows) of each county moved."""
    shard = get_shard(conn, name)
    moved = [(layer, d, unplace(conn, specs[layer], d)) for layer, d in shard.partitions]
    conn.execute(sql.SQL("DROP SERVER {} CASCADE").format(sql.Identifier(shard.server)))
    conn.commit()
    return moved


def in_doubt(conn: psycopg.Connection, spec: LayerSpec, division: str) -> int | None:
    """The highest layer version that county ``division``'s rows on its shard name beyond the
    catalog's last version (None: nothing in doubt): a version the shard committed and the
    coordinator did not (it died between the two commits, see the module's docstring)."""
    top = versions_beyond(conn, spec, division, next_version(conn, spec.name) - 1)
    conn.commit()
    return top


def repair(conn: psycopg.Connection, spec: LayerSpec, division: str) -> tuple[int, int]:
    """Undo on the shard a version the coordinator never committed, in one transaction under
    the layer's writer lock: (rows deleted, rows made current again)."""
    conn.commit()
    with conn.transaction():
        lock_layer(conn, spec.name)
        return undo_versions_beyond(conn, spec, division, next_version(conn, spec.name) - 1)


_SERVER_RE = re.compile(r'server "' + SERVER_PREFIX + r'([a-z0-9_]+)"')


def shard_unavailable(exc: BaseException) -> ShardUnavailable | None:
    """The typed error for a query that needed a shard that is down, or None when ``exc`` is not
    that. The coordinator answered (the error has a SQLSTATE: it came from the server) with a
    connection-class error (08xxx): that is postgres_fdw failing to reach or losing a shard,
    whose server name its message carries when it could not connect."""
    if not isinstance(exc, psycopg.Error) or exc.diag is None:
        return None
    state = exc.diag.sqlstate or ""
    if not state.startswith("08"):
        return None
    text = " ".join(filter(None, [exc.diag.message_primary, exc.diag.context]))
    m = _SERVER_RE.search(text)
    name = m.group(1) if m else None
    detail = (exc.diag.message_detail or "").strip().splitlines()
    return ShardUnavailable(
        f"shard {name or '(unknown)'} is unavailable: {exc.diag.message_primary}"
        + (f" ({detail[0]})" if detail else "") + "; the counties on it cannot be read now, the others can",
        shard=name)

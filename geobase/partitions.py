"""County partitions of the layer tables: making the partitioned table, a county's partition
built beside it and attached, and the migration of a table made before partitioning.

Why ATTACH, and never DETACH: ``ALTER TABLE ... ATTACH PARTITION`` takes a SHARE UPDATE
EXCLUSIVE lock on the layer table, which no reader (ACCESS SHARE) and no writer of another
county (ROW EXCLUSIVE) waits for; DETACH (and CREATE TABLE ... PARTITION OF) take ACCESS
EXCLUSIVE on it, which every reader of every county would queue behind, and DETACH CONCURRENTLY
cannot run inside the transaction that has to switch a version atomically. So a county's first
rows are written into a table of their own beside the layer table, indexed by the ATTACH, and
attached in the version's transaction; a later version of the county is written into its
partition in one transaction (MVCC: readers of the county see the old version or the new one,
readers of other counties touch nothing that version locks). See geobase/catalog/versions.py.

The layout itself (columns, indexes, the division of a row, the county filter) is
:mod:`geobase.storage`'s.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from geobase.errors import SetupError
from geobase.specs import LayerSpec
from geobase.storage import (
    DATA_SCHEMA,
    DIVISION,
    UNASSIGNED,
    check_division,
    division_expr,
    key_collation_c,
    layer_columns,
    layer_indexes,
    partition_ident,
    partition_name,
    table_ident,
)

log = logging.getLogger(__name__)


def relkind(conn: psycopg.Connection, name: str) -> str | None:
    """``p`` (partitioned), ``r`` (a plain table) or None (no such table) of ``data.<name>``."""
    row = conn.execute("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = %s AND c.relname = %s", (DATA_SCHEMA, name)).fetchone()
    return row[0] if row else None


_PARTITIONS_SQL = ("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                   "WHERE i.inhparent = to_regclass(%s)")


def _divisions_of(name: str, relnames: list[str]) -> list[str]:
    prefix = name + "__"
    return sorted(r[len(prefix):] for r in relnames if r.startswith(prefix))


def partition_divisions(conn: psycopg.Connection, spec: LayerSpec) -> list[str]:
    """The counties that have a partition of the layer, in code order."""
    rows = conn.execute(_PARTITIONS_SQL, (f'{DATA_SCHEMA}."{spec.name}"',)).fetchall()
    return _divisions_of(spec.name, [r[0] for r in rows])


async def partition_divisions_async(conn: psycopg.AsyncConnection, name: str) -> list[str]:
    """:func:`partition_divisions` on an async connection (the API's)."""
    cur = await conn.execute(_PARTITIONS_SQL, (f'{DATA_SCHEMA}."{name}"',))
    return _divisions_of(name, [r[0] for r in await cur.fetchall()])


def foreign_partitions(conn: psycopg.Connection, spec: LayerSpec | str) -> dict[str, str]:
    """``{division: foreign server}`` of the layer's counties placed on a shard (foreign
    partitions, geobase/db/shards.py); the other counties' partitions are local tables."""
    name = spec if isinstance(spec, str) else spec.name
    rows = conn.execute(
        "SELECT c.relname, s.srvname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_foreign_table f ON f.ftrelid = c.oid JOIN pg_foreign_server s ON s.oid = f.ftserver "
        "WHERE i.inhparent = to_regclass(%s)", (f'{DATA_SCHEMA}."{name}"',)).fetchall()
    prefix = name + "__"
    return {r[0][len(prefix):]: r[1] for r in rows if r[0].startswith(prefix)}


def has_unique_indexes(conn: psycopg.Connection, spec: LayerSpec) -> bool:
    """Whether the layer table itself carries its unique indexes (the primary key, the current
    key), as made; False once :func:`split_unique_indexes` gave each partition its own."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass(%s) AND indisunique)",
                        (f'{DATA_SCHEMA}."{spec.name}"',)).fetchone()[0]


def partition_unique_indexes(spec: LayerSpec) -> list[tuple[str, sql.Composable]]:
    """The unique indexes each partition carries itself when the layer table has none: the row
    id (the primary key's role) and the current key. Both hold the partition key, so unique in
    each county's partition is unique in the layer."""
    return [(f"{spec.name}_rid", sql.SQL("(_rid, division)"))] + [
        (idx, body) for idx, body, unique in layer_indexes(spec) if unique]


def split_unique_indexes(conn: psycopg.Connection, spec: LayerSpec) -> bool:
    """Move the layer table's unique indexes down to its partitions, in the caller's
    transaction; True when it did. PostgreSQL attaches no foreign table (a county on a shard)
    to a partitioned table with a unique index, because it cannot enforce it across servers;
    the indexes here hold the partition key, so each partition's own (and the shard's own,
    made by geobase/db/shards.py) enforce the same rule. Takes the layer table's ACCESS
    EXCLUSIVE lock and rebuilds these indexes once (first placement of a county of the layer)."""
    if not has_unique_indexes(conn, spec):
        return False
    tbl = table_ident(spec)
    for (con,) in conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
                               (f'{DATA_SCHEMA}."{spec.name}"',)).fetchall():
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(tbl, sql.Identifier(con)))
    for idx, _, unique in layer_indexes(spec):
        if unique:
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(DATA_SCHEMA, idx)))
    foreign = foreign_partitions(conn, spec)
    for division in partition_divisions(conn, spec):
        if division not in foreign:
            make_unique_indexes(conn, spec, partition_ident(spec, division), division)
    return True


def make_unique_indexes(conn: psycopg.Connection, spec: LayerSpec, table: sql.Composable, division: str) -> None:
    """:func:`partition_unique_indexes` on one county's table (local, or on its shard)."""
    for idx, body in partition_unique_indexes(spec):
        conn.execute(sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} {}").format(
            sql.Identifier(f"{idx}__{division}"), table, body))


def _rid_sequence(conn: psycopg.Connection, spec: LayerSpec) -> str:
    return conn.execute("SELECT pg_get_serial_sequence(%s, '_rid')", (f'{DATA_SCHEMA}."{spec.name}"',)).fetchone()[0]


def _columns(spec: LayerSpec, *, rid_default: str | None = None,
             division_generated: sql.Composable | None = None) -> list[sql.Composable]:
    """Column definitions of the layer table, or (``rid_default``: the layer's row-id sequence)
    of a table that is to become one of its partitions."""
    out = []
    for name, typ, cons in layer_columns(spec):
        c: sql.Composable = sql.SQL(cons)
        if rid_default and name == "_rid":
            c = sql.SQL("NOT NULL DEFAULT nextval({})").format(sql.Literal(rid_default))
        elif division_generated is not None and name == DIVISION:
            c = sql.SQL("NOT NULL GENERATED ALWAYS AS ({}) STORED").format(division_generated)
        elif name == DIVISION:  # a writer that names no county (a script, a test) writes unassigned rows
            c = sql.SQL("NOT NULL DEFAULT {}").format(sql.Literal(UNASSIGNED))
        out.append(sql.SQL("{} {} {}").format(sql.Identifier(name), sql.SQL(typ), c))
    return out


def _create_parent(conn: psycopg.Connection, spec: LayerSpec) -> None:
    """The partitioned layer table and its indexes (:func:`ensure_layer_table` adds the empty
    unassigned partition, which is always there: rows written without a county land in it)."""
    cols = _columns(spec) + [sql.SQL("PRIMARY KEY (_rid, {})").format(sql.Identifier(DIVISION))]
    conn.execute(sql.SQL("CREATE TABLE {} ({}) PARTITION BY LIST ({})").format(
        table_ident(spec), sql.SQL(", ").join(cols), sql.Identifier(DIVISION)))
    _make_indexes(conn, spec)


def create_beside(conn: psycopg.Connection, spec: LayerSpec, name: str,
                  division_generated: sql.Composable | None = None) -> sql.Composed:
    """A table ``data.<name>`` shaped like the layer's partitions, not attached (no reader sees it,
    nothing of the layer table is locked). ``division_generated``: fill ``division`` from each
    row's attributes while COPYing (made a plain column again by :func:`attach`)."""
    ident = sql.Identifier(DATA_SCHEMA, name)
    cols = _columns(spec, rid_default=_rid_sequence(conn, spec), division_generated=division_generated)
    cols += [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in _extra_columns(conn, spec, spec.name)]
    # vacuum_truncate off: a truncating vacuum's ACCESS EXCLUSIVE lock is replayed on every read
    # replica, where it cancels or stalls the reads of the county (migration 0014_s12prov)
    conn.execute(sql.SQL("CREATE TABLE {} ({}) WITH (vacuum_truncate = off)").format(
        ident, sql.SQL(", ").join(cols)))
    return ident


def attach(conn: psycopg.Connection, spec: LayerSpec, name: str, division: str, *, replace_empty: bool = False
           ) -> None:
    """Attach the table ``data.<name>`` as county ``division``'s partition, in the caller's
    transaction: the layer's indexes are built on it, and every row is checked to be of that
    county (psycopg.errors.CheckViolation else, which aborts the transaction). Its indexes are
    built first, after its rows, under the layer's index names with the county appended
    (``land_use_cur_geom__339901``), and the ATTACH adopts them.
    ``replace_empty``: drop the county's existing partition first; only for a first load into an
    empty layer table (the DROP takes the layer table's ACCESS EXCLUSIVE lock until the commit:
    readers of the empty layer wait for its first version instead of seeing it empty)."""
    final = partition_name(spec, division)
    split = not has_unique_indexes(conn, spec)
    if replace_empty and division in partition_divisions(conn, spec):
        conn.execute(sql.SQL("DROP TABLE {}").format(partition_ident(spec, division)))
    ident = sql.Identifier(DATA_SCHEMA, name)
    if conn.execute("SELECT attgenerated <> '' FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
                    (f'{DATA_SCHEMA}."{name}"', DIVISION)).fetchone()[0]:
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP EXPRESSION").format(ident, sql.Identifier(DIVISION)))
    build_indexes(conn, spec, ident, division, split=split)
    if name != final:
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(ident, sql.Identifier(final)))
    conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
        table_ident(spec), partition_ident(spec, division), sql.Literal(check_division(division))))


def build_indexes(conn: psycopg.Connection, spec: LayerSpec, table: sql.Composable, division: str, *,
                  split: bool) -> None:
    """The layer's indexes on county ``division``'s table ``table`` (one not yet attached, or
    its table on a shard), named after the layer's: plans read e.g. ``land_use_cur_geom__339901``.
    ``split``: the layer table has no unique index to adopt the unique ones, so the table keeps
    its own (:func:`split_unique_indexes`). Indexes already there are kept (a caller that built
    them before taking a lock readers wait for)."""
    for idx, body, unique in layer_indexes(spec):
        conn.execute(sql.SQL("CREATE {unique} INDEX IF NOT EXISTS {idx} ON {tbl} {body}").format(
            unique=sql.SQL("UNIQUE" if unique else ""), idx=sql.Identifier(f"{idx}__{division}"), tbl=table, body=body))
    if split:
        make_unique_indexes(conn, spec, table, division)


def ensure_partition(conn: psycopg.Connection, spec: LayerSpec, division: str) -> bool:
    """County ``division``'s (empty) partition, made beside and attached if missing; True if made."""
    if division in partition_divisions(conn, spec):
        return False
    name = partition_name(spec, division)
    create_beside(conn, spec, name)
    attach(conn, spec, name, division)
    return True


def _make_indexes(conn: psycopg.Connection, spec: LayerSpec) -> None:
    # tiles find their rows through the geom index (tiles.mvt.filter_envelope): the geom_3857
    # index of earlier versions is one GiST to maintain and build for nothing
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(DATA_SCHEMA, f"{spec.name}_cur_geom3857")))
    split = not has_unique_indexes(conn, spec)
    for idx, body, unique in layer_indexes(spec):
        if unique and split:  # each partition has its own (split_unique_indexes): counties on shards
            continue
        conn.execute(sql.SQL("CREATE {unique} INDEX IF NOT EXISTS {idx} ON {tbl} {body}").format(
            unique=sql.SQL("UNIQUE" if unique else ""), idx=sql.Identifier(idx), tbl=table_ident(spec), body=body))


def ensure_layer_table(conn: psycopg.Connection, spec: LayerSpec) -> None:
    """Create the layer's partitioned table and its indexes, migrate a table made before
    partitioning, or add columns for attributes new in the spec."""
    if spec.kind != "vector":
        return
    kind = relkind(conn, spec.name)
    if kind == "r":
        migrate_unpartitioned(conn, spec)
    elif kind is None:
        _create_parent(conn, spec)
    tbl = table_ident(spec)
    _refuse_new_columns_on_shards(conn, spec)
    for a in spec.attributes:  # on the partitioned table: every partition gets it
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
            tbl, sql.Identifier(a.name), sql.SQL(a.pg_type)))
    key_collation_c(conn, spec)
    _make_indexes(conn, spec)
    ensure_partition(conn, spec, UNASSIGNED)


def _refuse_new_columns_on_shards(conn: psycopg.Connection, spec: LayerSpec) -> None:
    """A new attribute of a layer with counties on shards would be added to the coordinator's
    foreign tables but not to the shards' tables, and every read of those counties would then
    fail: stop with what to do instead (move the counties back, migrate, place them again)."""
    foreign = foreign_partitions(conn, spec)
    if not foreign:
        return
    have = {r[0] for r in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                                       "AND attnum > 0 AND NOT attisdropped", (f'{DATA_SCHEMA}."{spec.name}"',))}
    new = [a.name for a in spec.attributes if a.name not in have]
    if new:
        where = ", ".join(f"{d} on {srv}" for d, srv in sorted(foreign.items()))
        raise SetupError(
            f"layer {spec.name}: new attributes {', '.join(new)} cannot be added while counties are on shards "
            f"({where}); move them back (geobase db shard unplace --division D --layer {spec.name}), run "
            "`geobase db migrate`, then place them again")


def _extra_columns(conn: psycopg.Connection, spec: LayerSpec, table: str) -> list[tuple[str, str]]:
    """Columns of ``data.<table>`` that today's spec no longer has (kept: nothing is lost), with
    their types."""
    known = {name for name, _, _ in layer_columns(spec)}
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (f'{DATA_SCHEMA}."{table}"',)).fetchall()
    return [(n, t) for n, t in rows if n not in known]


def migrate_unpartitioned(conn: psycopg.Connection, spec: LayerSpec) -> int:
    """Move the rows of a layer table made before partitioning into the partitioned table, each
    into its county's partition (its division attribute, else :data:`UNASSIGNED`), keeping row
    ids, versions and columns the spec no longer names; one transaction (a savepoint inside
    the caller's). A view on the old table stops it with a message naming the view."""
    legacy = f"{spec.name[:40]}__unpartitioned"
    old = sql.Identifier(DATA_SCHEMA, legacy)
    with conn.transaction():
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(table_ident(spec), sql.Identifier(legacy)))
        for (con,) in conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) "
                                   "AND contype IN ('p', 'u')", (f'{DATA_SCHEMA}."{legacy}"',)).fetchall():
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(old, sql.Identifier(con)))
        for (idx,) in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                                   (DATA_SCHEMA, legacy)).fetchall():
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(DATA_SCHEMA, idx)))
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN _rid DROP IDENTITY IF EXISTS").format(old))
        extra = _extra_columns(conn, spec, legacy)
        _create_parent(conn, spec)
        for name, typ in extra:
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                table_ident(spec), sql.Identifier(name), sql.SQL(typ)))
        have = {r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (f'{DATA_SCHEMA}."{legacy}"',)).fetchall()}
        expr = division_expr(spec, None, malformed=UNASSIGNED)
        cols = [n for n, _, _ in layer_columns(spec) if n in have and n != DIVISION] + [n for n, _ in extra]
        names = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
        moved = 0
        for (division,) in conn.execute(sql.SQL("SELECT DISTINCT {} FROM {}").format(expr, old)).fetchall():
            name = partition_name(spec, division)  # each county's rows beside, then indexed and attached
            moved += conn.execute(sql.SQL("INSERT INTO {t} ({c}, {d}) SELECT {c}, {e} FROM {o} WHERE {e} = {v}").format(
                t=create_beside(conn, spec, name), c=names, d=sql.Identifier(DIVISION), e=expr, o=old,
                v=sql.Literal(division))).rowcount
            attach(conn, spec, name, division)
        conn.execute(sql.SQL("SELECT setval({}, (SELECT coalesce(max(_rid), 0) + 1 FROM {}), false)").format(
            sql.Literal(_rid_sequence(conn, spec)), table_ident(spec)))
        try:
            with conn.transaction():
                conn.execute(sql.SQL("DROP TABLE {}").format(old))
        except psycopg.errors.DependentObjectsStillExist as exc:
            raise SetupError(
                f"layer {spec.name}: its table predates county partitions and cannot be migrated while other "
                f"objects depend on it ({exc.diag.message_detail or exc}); drop them, run `geobase db migrate`, "
                "and make them again on the partitioned table") from None
    log.info("layer %s: moved %d rows into county partitions", spec.name, moved)
    return moved

"""Physical layout of layer data: one versioned table per vector layer in the ``data`` schema.

Every row carries the version range in which it was current: ``_vfrom`` (the version that
added it) and ``_vto`` (the version that removed or replaced it; NULL while current). Current
rows have their own partial indexes, so reads of the current layer cost what an unversioned
table would, while past versions stay queryable (time travel, diffs, rollback).

Columns:
  _rid       row id (identity), internal
  _key       stable feature key from the spec's ``source_key`` (the feature id in URLs)
  _hash      XXH3-128 of attributes + geometry, to diff a new snapshot against the current rows
  _vfrom     version that introduced this row
  _vto       version that retired it (NULL = current)
  <attrs>    one column per spec attribute, typed
  _area_m2   ellipsoidal area on CGCS2000 (polygon layers) / _length_m (line layers)
  geom       geometry in EPSG:4490 (storage CRS)
  geom_3857  the same geometry in Web Mercator for tiles
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from geobase.specs import LayerSpec

log = logging.getLogger(__name__)

DATA_SCHEMA = "data"
STORAGE_SRID = 4490
SYSTEM_COLUMNS = ("_rid", "_key", "_hash", "_vfrom", "_vto")


def table_ident(spec: LayerSpec | str) -> sql.Composed:
    name = spec if isinstance(spec, str) else spec.name
    return sql.Identifier(DATA_SCHEMA, name)


def measure_column(spec: LayerSpec) -> str | None:
    """``_area_m2`` for polygon layers, ``_length_m`` for line layers, None for points."""
    if spec.geometry == "MultiPolygon":
        return "_area_m2"
    if spec.geometry == "MultiLineString":
        return "_length_m"
    return None


def _col(alias: str | None, column: str) -> sql.Composable:
    return sql.Identifier(alias, column) if alias else sql.Identifier(column)


def current_filter(alias: str | None = None) -> sql.Composed:
    """Rows of the current version (``alias``: the table's alias in the query, if any)."""
    return sql.SQL("{} IS NULL").format(_col(alias, "_vto"))


def as_of_filter(version: int, alias: str | None = None) -> sql.Composed:
    """Rows that were current in ``version`` (bound as a literal int, never user text)."""
    v = sql.Literal(int(version))
    return sql.SQL("({f} <= {v} AND ({t} IS NULL OR {t} > {v}))").format(
        f=_col(alias, "_vfrom"), t=_col(alias, "_vto"), v=v)


def added_between(v1: int, v2: int, alias: str | None = None) -> sql.Composed:
    """Rows added after ``v1`` and still current in ``v2`` (the "new" side of a diff)."""
    a, b = sql.Literal(int(v1)), sql.Literal(int(v2))
    return sql.SQL("({f} > {a} AND {f} <= {b} AND ({t} IS NULL OR {t} > {b}))").format(
        f=_col(alias, "_vfrom"), t=_col(alias, "_vto"), a=a, b=b)


def removed_between(v1: int, v2: int, alias: str | None = None) -> sql.Composed:
    """Rows current in ``v1`` and retired by ``v2`` (the "old" side of a diff)."""
    a, b = sql.Literal(int(v1)), sql.Literal(int(v2))
    return sql.SQL("({f} <= {a} AND {t} IS NOT NULL AND {t} > {a} AND {t} <= {b})").format(
        f=_col(alias, "_vfrom"), t=_col(alias, "_vto"), a=a, b=b)


def key_collation(conn: psycopg.Connection, spec: LayerSpec) -> str | None:
    """The collation of the layer table's ``_key`` column (None: no table yet)."""
    row = conn.execute(
        "SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = '_key'", (f'{DATA_SCHEMA}."{spec.name}"',)).fetchone()
    return row[0] if row else None


def _key_collation_c(conn: psycopg.Connection, spec: LayerSpec) -> None:
    """Feature keys compare bytewise (``COLLATE "C"``): the same order as the cluster's C.UTF-8
    for UTF-8 text, but PostgreSQL sorts "C" with abbreviated keys and memcmp instead of
    strcoll, which halves the key index builds of a bulk load. Tables made before get their
    key column (and its indexes) converted once; a table with views of its own on it (QGIS
    projects, tipg) keeps its collation, which costs speed only, and says so in the log."""
    coll = key_collation(conn, spec)
    if coll is None or coll == "C":
        return
    try:
        with conn.transaction():  # a savepoint when the caller's transaction is open
            conn.execute(sql.SQL('ALTER TABLE {} ALTER COLUMN _key TYPE text COLLATE "C"').format(table_ident(spec)))
    except psycopg.errors.FeatureNotSupported as exc:  # views or rules depend on the column
        log.warning("layer %s: feature keys keep collation %s (%s: %s); drop the dependent views once to let "
                    "geobase convert them to byte order", spec.name, coll, str(exc).splitlines()[0],
                    exc.diag.message_detail or "")


def layer_columns(spec: LayerSpec) -> list[tuple[str, str, str]]:
    """The columns of a layer table: (name, type, constraints), in table order."""
    cols = [("_rid", "bigint", "GENERATED ALWAYS AS IDENTITY PRIMARY KEY"), ("_key", 'text COLLATE "C"', "NOT NULL"),
            ("_hash", "text", "NOT NULL"), ("_vfrom", "integer", "NOT NULL"), ("_vto", "integer", "")]
    cols += [(a.name, a.pg_type, "") for a in spec.attributes]
    measure = measure_column(spec)
    if measure:
        cols.append((measure, "double precision", ""))
    cols.append(("geom", f"geometry({spec.geometry}, 4490)", "NOT NULL"))
    cols.append(("geom_3857", f"geometry({spec.geometry}, 3857)", "NOT NULL"))
    return cols


def empty_rows(spec: LayerSpec) -> sql.Composed:
    """A row source with the layer table's columns and no rows, which names neither the table nor
    its row type: a reader of a layer without a version need not wait for the table lock a
    first load holds until its version commits."""
    return sql.SQL("(SELECT {} LIMIT 0)").format(sql.SQL(", ").join(
        sql.SQL("NULL::{} AS {}").format(sql.SQL(typ), sql.Identifier(name))
        for name, typ, _ in layer_columns(spec)))


def ensure_layer_table(conn: psycopg.Connection, spec: LayerSpec) -> None:
    """Create the layer's table and indexes, or add columns for attributes new in the spec."""
    if spec.kind != "vector":
        return
    tbl = table_ident(spec)
    cols = [sql.SQL("{} {} {}").format(sql.Identifier(name), sql.SQL(typ), sql.SQL(cons))
            for name, typ, cons in layer_columns(spec)]
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(tbl, sql.SQL(", ").join(cols)))
    for a in spec.attributes:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                tbl, sql.Identifier(a.name), sql.SQL(a.pg_type)
            )
        )
    _key_collation_c(conn, spec)
    name = spec.name
    indexes = [
        (f"{name}_cur_key", sql.SQL("(_key) WHERE _vto IS NULL"), True),
        (f"{name}_cur_geom", sql.SQL("USING gist (geom) WHERE _vto IS NULL"), False),
        (f"{name}_key_hist", sql.SQL("(_key, _vfrom)"), False),
        (f"{name}_vto", sql.SQL("(_vto) WHERE _vto IS NOT NULL"), False),
        (f"{name}_vfrom", sql.SQL("(_vfrom)"), False),
    ]
    # tiles find their rows through the geom index (tiles.mvt.filter_envelope): the geom_3857
    # index of earlier versions is one GiST to maintain and build for nothing
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(DATA_SCHEMA, f"{name}_cur_geom3857")))
    for idx, body, unique in indexes:
        conn.execute(
            sql.SQL("CREATE {unique} INDEX IF NOT EXISTS {idx} ON {tbl} {body}").format(
                unique=sql.SQL("UNIQUE" if unique else ""), idx=sql.Identifier(idx), tbl=tbl, body=body
            )
        )

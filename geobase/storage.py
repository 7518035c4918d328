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
  division   the 6-digit county code (行政区划代码) the row belongs to: the partition key
  <attrs>    one column per spec attribute, typed
  _area_m2   ellipsoidal area on CGCS2000 (polygon layers) / _length_m (line layers)
  geom       geometry in EPSG:4490 (storage CRS)
  geom_3857  the same geometry in Web Mercator for tiles

Partitions: ``data.<layer>`` is LIST-partitioned by ``division``; county D's rows live in
``data."<layer>__D"`` (:mod:`geobase.partitions` makes, attaches and migrates them). A row's county
is the first 6 digits of the layer's division attribute (:data:`DIVISION_FIELDS`: ``zldwdm``,
``xzqdm``, ``xian``) or the ingest's ``--division``; a delivery that names no county at all (a
layer without such an attribute, e.g. rivers) goes to :data:`UNASSIGNED` (``000000``, not a
county code: GB/T 2260 codes start at 11). Every read that names a county gets
:func:`division_filter`, a literal, so the planner prunes the other partitions and never opens
(nor waits for) them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import psycopg
from psycopg import sql

from geobase.errors import Conflict, InvalidInput
from geobase.specs import LayerSpec

log = logging.getLogger(__name__)

DATA_SCHEMA = "data"
STORAGE_SRID = 4490
SYSTEM_COLUMNS = ("_rid", "_key", "_hash", "_vfrom", "_vto", "division")
#: the partition key column: the 6-digit county code (行政区划代码) of the row
DIVISION = "division"
#: the partition of rows whose delivery names no county (not a GB/T 2260 code)
UNASSIGNED = "000000"
#: spec attributes a row's county is read from (first 6 characters), the first one a layer has
DIVISION_FIELDS = ("zldwdm", "xzqdm", "xian")
_DIVISION_RE = re.compile(r"^[0-9]{6}$")


def check_division(value: str, parameter: str = "division") -> str:
    """A county code as given by a caller (``--division``, ``division=``): 6 digits, else refused."""
    text = str(value).strip()
    if not _DIVISION_RE.match(text):
        raise InvalidInput(f"{parameter}: {value!r} is not a 6-digit county code (行政区划代码, e.g. 339901)",
                           parameter=parameter)
    return text


def division_field(spec: LayerSpec) -> str | None:
    """The attribute a row's county is derived from (None: the layer has none)."""
    names = set(spec.attribute_names)
    return next((f for f in DIVISION_FIELDS if f in names), None)


def division_expr(spec: LayerSpec, division: str | None, malformed: str = "") -> sql.Composable:
    """SQL of a row's county from its attributes: the first 6 characters of the division field
    when they are digits; ``division`` (the ingest's ``--division``, else :data:`UNASSIGNED`)
    when the field is empty or absent; ``malformed`` (``''``: refused by the ingest's check)
    when the field holds something else."""
    fallback = sql.Literal(division or UNASSIGNED)
    field = division_field(spec)
    if field is None:
        return fallback
    f = sql.Identifier(field)
    return sql.SQL("(CASE WHEN {f} IS NULL OR btrim({f}) = '' THEN {fb}::text "
                   "WHEN {f} ~ '^[0-9]{{6}}' THEN left({f}, 6) ELSE {bad}::text END)").format(
        f=f, fb=fallback, bad=sql.Literal(malformed))


def division_values(values, division: str | None, malformed: str = ""):
    """:func:`division_expr` over an arrow string array of the division field's values (None:
    the layer has none, every row gets the fallback): the same county per row, computed by the
    ingest's normaliser instead of per row by the COPY backend (a generated column with a
    regular expression was a quarter of the database's COPY work). Kept beside the SQL, and
    ``tests/test_ingest_division.py`` checks the two agree value by value; a direct load still
    has the database check each row against its partition's county (a CHECK constraint)."""
    import pyarrow as pa  # the server imports this module without the heavy libraries
    import pyarrow.compute as pc

    fallback = division or UNASSIGNED
    if values is None:
        return fallback
    text = values.cast(pa.string())
    empty = pc.or_kleene(pc.is_null(text), pc.equal(pc.ascii_trim(text, " "), "")).fill_null(True)
    county = pc.match_substring_regex(text, "^[0-9]{6}").fill_null(False)
    return pc.if_else(empty, fallback, pc.if_else(county, pc.utf8_slice_codeunits(text, 0, 6), malformed))


def division_filter(divisions: str | Iterable[str], alias: str | None = None) -> sql.Composed:
    """Rows of the county (or counties) named, as literals checked to be 6 digits: the planner
    prunes every other partition at plan time (a bound parameter would leave it to run time,
    after every partition of a generic plan was locked)."""
    divs = [divisions] if isinstance(divisions, str) else list(divisions)
    lits = sql.SQL(", ").join(sql.Literal(check_division(d)) for d in divs)
    return sql.SQL("{} IN ({})").format(_col(alias, DIVISION), lits) if divs else sql.SQL("FALSE")


def partition_name(spec: LayerSpec | str, division: str) -> str:
    """The table of one county's rows: ``<layer>__<division>``."""
    name = spec if isinstance(spec, str) else spec.name
    return f"{name}__{check_division(division)}"


#: the 6-digit county of each of a layer's partitions (``<layer>__<division>``); the one
#: parameter: the layer's table as text (:func:`table_regclass_text`)
COUNTY_PARTITIONS_SQL = ("SELECT right(c.relname, 6) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                         "WHERE i.inhparent = to_regclass(%s) AND c.relname ~ '__[0-9]{6}$'")


def table_regclass_text(spec: LayerSpec | str) -> str:
    """The layer's table as ``to_regclass`` reads it (the parameter of :data:`COUNTY_PARTITIONS_SQL`)."""
    name = spec if isinstance(spec, str) else spec.name
    return f'{DATA_SCHEMA}."{name}"'


def partition_ident(spec: LayerSpec | str, division: str) -> sql.Composed:
    return sql.Identifier(DATA_SCHEMA, partition_name(spec, division))


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


def key_collation_c(conn: psycopg.Connection, spec: LayerSpec) -> None:
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
    cols = [("_rid", "bigint", "GENERATED ALWAYS AS IDENTITY"), ("_key", 'text COLLATE "C"', "NOT NULL"),
            ("_hash", "text", "NOT NULL"), ("_vfrom", "integer", "NOT NULL"), ("_vto", "integer", ""),
            (DIVISION, "text", "NOT NULL")]
    cols += [(a.name, a.pg_type, "") for a in spec.attributes]
    measure = measure_column(spec)
    if measure:
        cols.append((measure, "double precision", ""))
    cols.append(("geom", f"geometry({spec.geometry}, 4490)", "NOT NULL"))
    cols.append(("geom_3857", f"geometry({spec.geometry}, 3857)", "NOT NULL"))
    return cols


def layer_indexes(spec: LayerSpec) -> list[tuple[str, sql.Composable, bool]]:
    """(name, definition, unique) of a layer table's indexes, made on the partitioned table and so
    on every county's partition. A feature key is unique among the current rows of its county
    (a unique index of a partitioned table must hold the partition key; ``_key`` leads, so a
    lookup by key alone still uses it)."""
    name = spec.name
    return [
        (f"{name}_cur_key", sql.SQL("(_key, division) WHERE _vto IS NULL"), True),
        (f"{name}_cur_geom", sql.SQL("USING gist (geom) WHERE _vto IS NULL"), False),
        (f"{name}_key_hist", sql.SQL("(_key, _vfrom)"), False),
        (f"{name}_vto", sql.SQL("(_vto) WHERE _vto IS NOT NULL"), False),
        (f"{name}_vfrom", sql.SQL("(_vfrom)"), False),
    ]


def retired_row_indexes(spec: LayerSpec) -> list[tuple[str, sql.Composable]]:
    """(name, definition) of the layer indexes that hold only retired rows (``_vto IS NOT
    NULL``): no row of a first load enters them, so a load builds them on its empty table before
    the COPY (the predicate is false for every row, nothing is inserted) instead of scanning the
    whole loaded table once more for an empty index."""
    return [(idx, body) for idx, body, _unique in layer_indexes(spec) if idx == f"{spec.name}_vto"]


def empty_rows(spec: LayerSpec) -> sql.Composed:
    """A row source with the layer table's columns and no rows, which names neither the table nor
    its row type: a reader of a layer without a version need not wait for the table lock a
    first load holds until its version commits."""
    return sql.SQL("(SELECT {} LIMIT 0)").format(sql.SQL(", ").join(
        sql.SQL("NULL::{} AS {}").format(sql.SQL(typ), sql.Identifier(name))
        for name, typ, _ in layer_columns(spec)))


#: between the county and the key of a county-qualified feature id (geobase/features/ids.py)
ID_SEP = "-"


def shared_key_conflict(layer: str, key: str, divisions: Iterable[str]) -> Conflict:
    """The refusal of an edit by a bare feature key that names a current feature in more than one county.

    A key is unique per county only (two counties' deliveries may both hold BSM ``00000002``): an
    edit that names no county would stage, check and retire every county's feature of that key
    (and put back one). The caller names one by its county-qualified id (geobase/features/ids.py)."""
    divs = sorted(set(divisions))
    ids = [f"{d}{ID_SEP}{key}" for d in divs]
    return Conflict(f"feature key {key!r} of {layer!r} is a feature of {len(divs)} counties ({', '.join(ids)}); "
                    "an edit by the bare key would change all of them, so it is refused and nothing was changed: "
                    "name one by its county-qualified id", parameter="featureId",
                    details={"divisions": divs, "candidates": ids})

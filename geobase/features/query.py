"""A validated items request as SQL: :class:`FeatureQuery` composes the page, the count and the
download rows of one layer version; :func:`changes_source` the change feed between two versions.
Which rows belong to a version is :mod:`geobase.storage`'s to say (current, as-of, added and
removed between two versions)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from geobase.crs import Crs
from geobase.errors import InvalidInput
from geobase.features.cursors import check_cursor_value
from geobase.features.ids import FeatureRef, id_sql
from geobase.specs import LayerSpec
from geobase.storage import (added_between, as_of_filter, current_filter, division_filter, empty_rows,
                             measure_column, removed_between, table_ident)


def queryable_types(spec: LayerSpec, hidden: set[str]) -> dict[str, str]:
    """Property name -> spec type of what this caller may filter and sort on (the attributes
    not masked for the caller, plus the stored ellipsoidal area/length)."""
    types = {a.name: a.type for a in spec.attributes if a.name not in hidden}
    m = measure_column(spec)
    if m:
        types[m] = "number"
    return types


def number_columns(spec: LayerSpec) -> set[str]:
    """The double precision columns of a layer: its ``number`` attributes and the stored
    ellipsoidal area/length."""
    names = {a.name for a in spec.attributes if a.type == "number"}
    m = measure_column(spec)
    if m:
        names.add(m)
    return names


def json_real_sql(column: sql.Composable) -> sql.Composable:
    """A double precision column as a JSON value that reads as a real number.

    PostgreSQL writes an integral double as ``5`` (and ``0``), and clients that type a field
    from the JSON (GDAL's GeoJSON and OAPIF readers, QGIS) then make it an Integer and
    truncate every later ``0.8`` to 0. Integral values below 1e15 (above, PostgreSQL already
    writes an exponent) get a ``.0``; every other value is PostgreSQL's shortest exact text,
    so no precision is lost. NULL stays null; NaN and infinities stay the strings
    ``to_json`` writes for them."""
    return sql.SQL("CASE WHEN {c} = trunc({c}) AND abs({c}) < 1e15 THEN ({c}::text || '.0')::json "
                   "ELSE to_json({c}) END").format(c=column)


#: system columns that are never NULL (geobase/storage.py): an order by them alone needs no NULLS case
_NOT_NULL = ("_key", "division", "_rid")


@dataclass
class SortKey:
    column: str  # a spec attribute, "_key" or "_rid"
    desc: bool = False
    cast: str = "text"


@dataclass
class FeatureQuery:
    """A validated items request for one layer (built by :func:`build_query`)."""

    spec: LayerSpec
    version: int | None
    is_current: bool
    properties: list[str]
    out_crs: Crs
    precision: int
    skip_geometry: bool
    where: list[sql.Composable]
    sort: list[SortKey]
    sort_sig: str
    limit: int | None
    cursor_dir: str = "n"
    cursor_values: list[Any] | None = None
    has_spatial_or_filter: bool = False
    extra_property: tuple[str, sql.Composable] | None = None  # change feeds: ("change", expr)
    source: sql.Composable | None = None  # FROM clause; default: the layer table
    #: an outside caller's desensitisation (geobase.opendata.desensitise): wraps the row source
    desensitise: Any = None
    #: ids qualified by county (a province layer: geobase/features/ids.py)
    qualified_ids: bool = False

    # -- SQL pieces ----------------------------------------------------------------------------
    def geometry_sql(self, axis_order: bool = True) -> sql.Composable:
        """The geometry in the output CRS; ``axis_order``: in the CRS's own axis order (GeoJSON
        per OGC Part 2), else x/y as files (GeoPackage, FlatGeobuf, WKT in CSV) store it."""
        g: sql.Composable = sql.Identifier("geom")
        if self.out_crs.srid not in (4326, 4490):
            g = sql.SQL("ST_Transform({}, {})").format(g, sql.Literal(self.out_crs.srid))
        if self.out_crs.flip and axis_order:
            g = sql.SQL("ST_FlipCoordinates({})").format(g)
        return g

    def properties_sql(self) -> sql.Composable:
        numbers = number_columns(self.spec)
        pairs: list[sql.Composable] = []
        for name in self.properties:
            value = json_real_sql(sql.Identifier(name)) if name in numbers else sql.Identifier(name)
            pairs.append(sql.SQL("{}, {}").format(sql.Literal(name), value))
        if self.extra_property:
            pairs.append(sql.SQL("{}, {}").format(sql.Literal(self.extra_property[0]), self.extra_property[1]))
        if not pairs:
            return sql.SQL("'{}'::json")
        chunks = [pairs[i:i + 45] for i in range(0, len(pairs), 45)]  # json_build_object takes <= 100 args
        objs = [sql.SQL("json_build_object({})").format(sql.SQL(", ").join(c)) for c in chunks]
        if len(objs) == 1:
            return objs[0]
        return sql.SQL("({})::json").format(sql.SQL(" || ").join(sql.SQL("{}::jsonb").format(o) for o in objs))

    def feature_sql(self) -> sql.Composable:
        geom = (sql.SQL("NULL") if self.skip_geometry else
                sql.SQL("ST_AsGeoJSON({}, {}, 0)::json").format(self.geometry_sql(), sql.Literal(self.precision)))
        return sql.SQL("json_build_object('type', 'Feature', 'id', {}, 'geometry', {}, 'properties', {})::text").format(
            id_sql(self.qualified_ids), geom, self.properties_sql())

    def from_sql(self) -> sql.Composable:
        if self.desensitise is not None:  # filters and output see only the desensitised rows
            extra = ["_key", "_rid", "division"] + ([self.extra_property[0]] if self.extra_property else [])
            m = measure_column(self.spec)
            return self.desensitise.source_sql(self._from_sql(), self._version_sql(),
                                               self.spec.attribute_names + ([m] if m else []), extra)
        return self._from_sql()

    def _from_sql(self) -> sql.Composable:
        if self.source is not None:
            return self.source
        if self.version is None:
            # no version, no rows: and no wait for the table a first load holds locked
            return sql.SQL("{} AS t").format(empty_rows(self.spec))
        return sql.SQL("{} AS t").format(table_ident(self.spec))

    def version_sql(self) -> sql.Composable:
        return sql.SQL("TRUE") if self.desensitise is not None else self._version_sql()

    def _version_sql(self) -> sql.Composable:
        if self.source is not None:
            return sql.SQL("TRUE")
        if self.version is None:
            return sql.SQL("FALSE")
        return current_filter() if self.is_current else as_of_filter(self.version)

    def where_sql(self, with_cursor: bool = True) -> sql.Composable:
        parts = [self.version_sql(), *self.where]
        if with_cursor and self.cursor_values is not None:
            parts.append(self._keyset(self.cursor_values, forward=self.cursor_dir == "n"))
        return sql.SQL(" AND ").join(parts)

    def _keyset(self, values: list[Any], forward: bool) -> sql.Composable:
        """Rows strictly after the boundary row in the (forward or reversed) order."""
        if len(values) != len(self.sort):
            raise InvalidInput("cursor: does not match this query", parameter="cursor")
        if all(k.column in _NOT_NULL for k in self.sort) and len({k.desc for k in self.sort}) == 1 \
                and None not in values:
            # the id order (key, and county in a province): one row comparison, which the key index
            # takes as its condition; the OR form below is a filter that reads every earlier row
            for key, v in zip(self.sort, values):
                check_cursor_value(v, key.cast)
            asc = (not self.sort[0].desc) if forward else self.sort[0].desc
            return sql.SQL("(({}) {} ({}))").format(
                sql.SQL(", ").join(sql.Identifier(k.column) for k in self.sort), sql.SQL(">" if asc else "<"),
                sql.SQL(", ").join(sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(k.cast))
                                   for k, v in zip(self.sort, values)))
        ors: list[sql.Composable] = []
        eqs: list[sql.Composable] = []
        for key, v in zip(self.sort, values):
            check_cursor_value(v, key.cast)
            col = sql.Identifier(key.column)
            asc = (not key.desc) if forward else key.desc
            nulls_last = forward
            op = sql.SQL(">" if asc else "<")
            lit = sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(key.cast)) if v is not None else None
            if v is None:
                after = sql.SQL("FALSE") if nulls_last else sql.SQL("{} IS NOT NULL").format(col)
                eq = sql.SQL("{} IS NULL").format(col)
            else:
                cmp = sql.SQL("{} {} {}").format(col, op, lit)
                after = sql.SQL("({} OR {} IS NULL)").format(cmp, col) if nulls_last else cmp
                eq = sql.SQL("{} = {}").format(col, lit)
            ors.append(sql.SQL(" AND ").join([*eqs, after]) if eqs else after)
            eqs.append(eq)
        return sql.SQL("({})").format(sql.SQL(" OR ").join(ors))

    def order_sql(self, forward: bool = True) -> sql.Composable:
        items = []
        for key in self.sort:
            desc = key.desc if forward else not key.desc
            items.append(sql.SQL("{} {} NULLS {}").format(
                sql.Identifier(key.column), sql.SQL("DESC" if desc else "ASC"), sql.SQL("LAST" if forward else "FIRST")))
        return sql.SQL(", ").join(items)

    def page_sql(self) -> sql.Composable:
        """SELECT sort values..., feature text — one row per feature, ``limit + 1`` rows to
        know whether a next page exists."""
        forward = self.cursor_dir == "n"
        keys = sql.SQL(", ").join(sql.Identifier(k.column) for k in self.sort)
        q = sql.SQL("SELECT {keys}, {feat} FROM {src} WHERE {where} ORDER BY {order}").format(
            keys=keys, feat=self.feature_sql(), src=self.from_sql(), where=self.where_sql(),
            order=self.order_sql(forward))
        if self.limit is not None:
            q = sql.SQL("{} LIMIT {}").format(q, sql.Literal(self.limit + 1))
        return q

    def count_sql(self) -> sql.Composable:
        return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(self.from_sql(), self.where_sql(with_cursor=False))

    def only_feature(self, ref: FeatureRef) -> None:
        """Narrow the query to one feature (``/items/{featureId}``, resolved by
        :func:`geobase.features.ids.resolve`): its key and its county, as literals."""
        self.where.append(sql.SQL("_key = {} AND {}").format(sql.Literal(ref.key), division_filter(ref.division)))

    async def first_row(self, conn: psycopg.AsyncConnection) -> tuple | None:
        """The first row of the page (sort values..., feature text), None when nothing matches."""
        cur = await conn.execute(self.page_sql())
        return await cur.fetchone()

    async def count(self, conn: psycopg.AsyncConnection) -> int:
        """numberMatched: the rows the filters select, whatever the page."""
        cur = await conn.execute(self.count_sql())
        return (await cur.fetchone())[0]

    def export_columns(self) -> list[tuple[str, str]]:
        """(property, spec type) of the output columns of downloads."""
        types = {a.name: a.type for a in self.spec.attributes}
        cols = [(p, types.get(p, "number")) for p in self.properties]
        if self.extra_property:
            cols.append((self.extra_property[0], "text"))
        return cols

    def rows_sql(self, geometry: str = "wkb") -> sql.Composable:
        """Plain rows for downloads: id, properties..., geometry (WKB or WKT) in the output CRS."""
        cols: list[sql.Composable] = [sql.SQL("{} AS id").format(id_sql(self.qualified_ids))]
        for name in self.properties:
            cols.append(sql.Identifier(name))
        if self.extra_property:
            cols.append(sql.SQL("{} AS {}").format(self.extra_property[1], sql.Identifier(self.extra_property[0])))
        if not self.skip_geometry:
            g = self.geometry_sql(axis_order=False)
            if geometry == "wkt":
                cols.append(sql.SQL("ST_AsText({}, {}) AS wkt").format(g, sql.Literal(self.precision)))
            else:
                cols.append(sql.SQL("ST_AsBinary({}) AS geometry").format(g))
        q = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
            sql.SQL(", ").join(cols), self.from_sql(), self.where_sql(), self.order_sql(True))
        if self.limit is not None:
            q = sql.SQL("{} LIMIT {}").format(q, sql.Literal(self.limit))
        return q


def changes_source(spec: LayerSpec, v_from: int, v_to: int,
                   divisions: list[str] | None = None) -> tuple[sql.Composable, sql.Composable]:
    """FROM clause of the change feed between two versions and the ``change`` expression.

    Rows current at ``v_to`` that appeared after ``v_from`` (n), FULL JOINed on ``_key`` with
    rows current at ``v_from`` retired by ``v_to`` (o): both -> changed, n only -> added,
    o only -> removed (the old row is output). A feature is its key in its county.
    ``divisions`` (``division=``) filters both sides inside the join, so the planner prunes the
    other counties' partitions (a filter on the join's COALESCEd county would scan them all)."""
    cols = ["_rid", "_hash", *spec.attribute_names]
    m = measure_column(spec)
    if m:
        cols.append(m)
    cols.append("geom")
    pick = sql.SQL(", ").join(
        sql.SQL("CASE WHEN n._key IS NULL THEN o.{c} ELSE n.{c} END AS {c}").format(c=sql.Identifier(c)) for c in cols)
    src = sql.SQL(
        "(SELECT COALESCE(n._key, o._key) AS _key, COALESCE(n.division, o.division) AS division, {pick}, "
        "CASE WHEN o._key IS NULL THEN 'added' WHEN n._key IS NULL THEN 'removed' ELSE 'changed' END AS change "
        "FROM (SELECT * FROM {tbl} WHERE {added}) n "
        "FULL JOIN (SELECT * FROM {tbl} WHERE {removed}) o USING (_key, division) "
        "WHERE n._hash IS DISTINCT FROM o._hash) AS t").format(
        pick=pick, tbl=table_ident(spec), added=_in_counties(added_between(v_from, v_to), divisions),
        removed=_in_counties(removed_between(v_from, v_to), divisions))
    return src, sql.Identifier("change")


def _in_counties(cond: sql.Composable, divisions: list[str] | None) -> sql.Composable:
    return sql.SQL("{} AND {}").format(cond, division_filter(divisions)) if divisions else cond


def etag_for(*parts: Any) -> str:
    return '"' + hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:32] + '"'

"""CQL2 filters (OGC API - Features Part 3) into SQL with bound parameters.

pygeofilter parses ``cql2-text`` and ``cql2-json`` into an AST; this module walks the AST and
emits a ``psycopg.sql.Composed`` whose every literal is a bound parameter (``sql.Literal``
is never given user text for identifiers: property names are checked against the layer's
queryables — the spec's attributes minus those masked for the caller).

Supported (and declared in /conformance):
  basic-cql2                     =, <>, <, <=, >, >=, AND, OR, NOT, IS NULL, boolean literals
  advanced-comparison-operators  LIKE, BETWEEN, IN
  property-property              both sides of a comparison may be properties
  basic-spatial-functions(-plus) S_INTERSECTS with any geometry literal
  spatial-functions              S_EQUALS, S_DISJOINT, S_TOUCHES, S_WITHIN, S_OVERLAPS, S_CROSSES,
                                 S_CONTAINS
  temporal (where meaningful)    T_BEFORE, T_AFTER, T_EQUALS, T_DURING on ``date``/``datetime``
                                 attributes against DATE()/TIMESTAMP() instants or intervals;
                                 comparisons (<, >, ...) against DATE()/TIMESTAMP() as well.
Not supported (400): arithmetic, functions other than the above, array operators.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from psycopg import sql
from pygeofilter import ast, values
from pygeofilter.parsers.cql2_json import parse as parse_json
from pygeofilter.parsers.cql2_text import parse as parse_text

from geobase.errors import InvalidInput

PARAM = "filter"
GEOMETRY_NAMES = ("geometry", "geom")

_CMP = {
    ast.ComparisonOp.EQ: "=", ast.ComparisonOp.NE: "<>", ast.ComparisonOp.LT: "<",
    ast.ComparisonOp.LE: "<=", ast.ComparisonOp.GT: ">", ast.ComparisonOp.GE: ">=",
}
_SPATIAL = {
    ast.SpatialComparisonOp.INTERSECTS: "ST_Intersects", ast.SpatialComparisonOp.DISJOINT: "ST_Disjoint",
    ast.SpatialComparisonOp.CONTAINS: "ST_Contains", ast.SpatialComparisonOp.WITHIN: "ST_Within",
    ast.SpatialComparisonOp.TOUCHES: "ST_Touches", ast.SpatialComparisonOp.CROSSES: "ST_Crosses",
    ast.SpatialComparisonOp.OVERLAPS: "ST_Overlaps", ast.SpatialComparisonOp.EQUALS: "ST_Equals",
}
#: pg cast per spec attribute type, so a bound literal compares with the column's type
_CASTS = {"text": "text", "integer": "bigint", "number": "double precision", "boolean": "boolean",
          "date": "date", "datetime": "timestamptz"}


def parse(text: str, lang: str | None) -> ast.Node:
    """Parse a filter in ``cql2-text`` (default) or ``cql2-json``; syntax errors are 400s."""
    lang = (lang or "cql2-text").strip().lower()
    if lang not in ("cql2-text", "cql2-json"):
        raise InvalidInput(f"filter-lang: {lang!r} is not supported (use cql2-text or cql2-json)",
                           parameter="filter-lang")
    try:
        if lang == "cql2-json":
            return parse_json(json.loads(text))
        return parse_text(text)
    except InvalidInput:
        raise
    except Exception as exc:  # lark / json errors: the message helps the caller find the spot
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"filter: not valid {lang}: {msg[:300]}", parameter=PARAM) from None


class Translator:
    """Walks a pygeofilter AST and builds SQL over one layer's table.

    ``queryables`` maps property name -> spec type ("text", "number", ...);
    ``geometry_sql(geojson_dict)`` returns SQL of a literal geometry in the storage CRS
    (it applies the filter CRS and its axis order)."""

    def __init__(self, queryables: dict[str, str], geometry_sql: Callable[[dict], sql.Composable],
                 geom_column: str = "geom"):
        self.queryables = queryables
        self.geometry_sql = geometry_sql
        self.geom_column = geom_column

    # -- entry -------------------------------------------------------------------------------
    def translate(self, node: Any) -> sql.Composable:
        out = self._node(node)
        if isinstance(out, tuple):
            raise InvalidInput("filter: the expression is not a condition (true/false)", parameter=PARAM)
        return out

    # -- helpers -----------------------------------------------------------------------------
    def _prop(self, node: ast.Attribute) -> tuple[sql.Composable, str]:
        name = node.name
        if name in GEOMETRY_NAMES:
            return sql.Identifier(self.geom_column), "geometry"
        if name not in self.queryables:
            raise InvalidInput(
                f"filter: unknown property {name!r}; queryables: {', '.join(sorted(self.queryables))}",
                parameter=PARAM)
        return sql.Identifier(name), self.queryables[name]

    def _literal(self, value: Any, typ: str | None) -> sql.Composable:
        """Bind a literal, checked against the type of the property it is compared with."""
        if isinstance(value, values.Geometry) or isinstance(value, values.Envelope):
            raise InvalidInput("filter: a geometry is only allowed in spatial functions", parameter=PARAM)
        if isinstance(value, (dt.datetime, dt.date)):
            if typ not in (None, "date", "datetime"):
                raise InvalidInput(f"filter: a date/time literal cannot be compared with a {typ} property",
                                   parameter=PARAM)
            return sql.SQL("{}::{}").format(sql.Literal(value.isoformat()),
                                            sql.SQL(_CASTS[typ or ("datetime" if isinstance(value, dt.datetime) else "date")]))
        if isinstance(value, bool):
            if typ not in (None, "boolean"):
                raise InvalidInput(f"filter: a boolean cannot be compared with a {typ} property", parameter=PARAM)
            return sql.SQL("{}::boolean").format(sql.Literal(value))
        if isinstance(value, (int, float)):
            if typ not in (None, "integer", "number"):
                raise InvalidInput(f"filter: the number {value!r} cannot be compared with a {typ} property "
                                   f"(quote it: '{value}')", parameter=PARAM)
            return sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(_CASTS[typ or "number"]))
        if isinstance(value, str):
            if typ in ("integer", "number"):
                raise InvalidInput(f"filter: the string {value!r} cannot be compared with a {typ} property",
                                   parameter=PARAM)
            if typ in ("date", "datetime"):
                try:
                    (dt.datetime if typ == "datetime" else dt.date).fromisoformat(value)
                except ValueError:
                    raise InvalidInput(f"filter: {value!r} is not an ISO {typ}", parameter=PARAM) from None
            if typ == "boolean":
                raise InvalidInput(f"filter: {value!r} cannot be compared with a boolean property", parameter=PARAM)
            return sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(_CASTS[typ or "text"]))
        if value is None:
            return sql.SQL("NULL")
        raise InvalidInput(f"filter: unsupported operand {value!r}", parameter=PARAM)

    def _operand(self, node: Any, other_type: str | None = None) -> tuple[sql.Composable, str | None]:
        if isinstance(node, ast.Attribute):
            return self._prop(node)
        if isinstance(node, (ast.Arithmetic, ast.Function)):
            raise InvalidInput("filter: arithmetic and functions are not supported", parameter=PARAM)
        return self._literal(node, other_type), other_type

    def _pair(self, lhs: Any, rhs: Any) -> tuple[sql.Composable, sql.Composable]:
        if isinstance(lhs, ast.Attribute):
            a, t = self._prop(lhs)
            b, _ = self._operand(rhs, t)
        elif isinstance(rhs, ast.Attribute):
            b, t = self._prop(rhs)
            a, _ = self._operand(lhs, t)
        else:
            a, t = self._operand(lhs)
            b, _ = self._operand(rhs, t)
        if t == "geometry":
            raise InvalidInput("filter: compare geometries with spatial functions (S_INTERSECTS, ...)",
                               parameter=PARAM)
        return a, b

    def _geometry(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.Attribute):
            col, t = self._prop(node)
            if t != "geometry":
                raise InvalidInput(f"filter: {node.name!r} is not a geometry", parameter=PARAM)
            return col
        if isinstance(node, values.Geometry):
            return self.geometry_sql(dict(node.geometry))
        if isinstance(node, values.Envelope):
            return self.geometry_sql({"type": "Polygon", "coordinates": [[
                [node.x1, node.y1], [node.x2, node.y1], [node.x2, node.y2], [node.x1, node.y2], [node.x1, node.y1]]]})
        raise InvalidInput("filter: spatial functions take the geometry property and a geometry literal",
                           parameter=PARAM)

    def _temporal(self, node: Any) -> tuple[sql.Composable, sql.Composable]:
        """(start, end) SQL of a temporal operand: a date/datetime property or literal/interval."""
        if isinstance(node, ast.Attribute):
            col, t = self._prop(node)
            if t not in ("date", "datetime"):
                raise InvalidInput(f"filter: {node.name!r} is not a date or time", parameter=PARAM)
            return col, col
        if isinstance(node, values.Interval):
            lo = self._literal(node.start, None) if node.start is not None else sql.SQL("'-infinity'::timestamptz")
            hi = self._literal(node.end, None) if node.end is not None else sql.SQL("'infinity'::timestamptz")
            return lo, hi
        if isinstance(node, (dt.date, dt.datetime)):
            lit = self._literal(node, None)
            return lit, lit
        raise InvalidInput("filter: temporal functions take a date property and DATE()/TIMESTAMP()/INTERVAL()",
                           parameter=PARAM)

    # -- dispatch ----------------------------------------------------------------------------
    def _node(self, n: Any) -> sql.Composable:
        if isinstance(n, bool):
            return sql.SQL("TRUE" if n else "FALSE")
        if isinstance(n, ast.Include):
            return sql.SQL("TRUE")
        if isinstance(n, ast.And):
            return sql.SQL("({} AND {})").format(self._node(n.lhs), self._node(n.rhs))
        if isinstance(n, ast.Or):
            return sql.SQL("({} OR {})").format(self._node(n.lhs), self._node(n.rhs))
        if isinstance(n, ast.Not):
            return sql.SQL("(NOT {})").format(self._node(n.sub_node))
        if isinstance(n, ast.Comparison):
            a, b = self._pair(n.lhs, n.rhs)
            return sql.SQL("({} {} {})").format(a, sql.SQL(_CMP[n.op]), b)
        if isinstance(n, ast.Between):
            col, t = self._operand(n.lhs)
            return sql.SQL("({} {}BETWEEN {} AND {})").format(
                col, sql.SQL("NOT " if n.not_ else ""), self._operand(n.low, t)[0], self._operand(n.high, t)[0])
        if isinstance(n, ast.Like):
            col, t = self._operand(n.lhs)
            if t != "text":
                raise InvalidInput("filter: LIKE applies to text properties", parameter=PARAM)
            pattern = n.pattern if isinstance(n.pattern, str) else None
            if pattern is None:
                raise InvalidInput("filter: LIKE needs a string pattern", parameter=PARAM)
            return sql.SQL("({} {}{} {})").format(col, sql.SQL("NOT " if n.not_ else ""),
                                                 sql.SQL("ILIKE" if n.nocase else "LIKE"), sql.Literal(pattern))
        if isinstance(n, ast.In):
            col, t = self._operand(n.lhs)
            if not n.sub_nodes:
                return sql.SQL("FALSE") if not n.not_ else sql.SQL("TRUE")
            items = sql.SQL(", ").join(self._operand(v, t)[0] for v in n.sub_nodes)
            return sql.SQL("({} {}IN ({}))").format(col, sql.SQL("NOT " if n.not_ else ""), items)
        if isinstance(n, ast.IsNull):
            col, _ = self._operand(n.lhs)
            return sql.SQL("({} IS {}NULL)").format(col, sql.SQL("NOT " if n.not_ else ""))
        if isinstance(n, ast.SpatialComparisonPredicate):
            fn = _SPATIAL.get(n.op)
            if fn is None:
                raise InvalidInput(f"filter: spatial function {n.op} is not supported", parameter=PARAM)
            return sql.SQL("{}({}, {})").format(sql.SQL(fn), self._geometry(n.lhs), self._geometry(n.rhs))
        if isinstance(n, ast.BBox):
            env = values.Envelope(n.minx, n.maxx, n.miny, n.maxy)
            return sql.SQL("ST_Intersects({}, {})").format(self._geometry(n.lhs), self._geometry(env))
        if isinstance(n, ast.TemporalPredicate):
            (a0, a1), (b0, b1) = self._temporal(n.lhs), self._temporal(n.rhs)
            op = n.op
            if op == ast.TemporalComparisonOp.BEFORE:
                return sql.SQL("({} < {})").format(a1, b0)
            if op == ast.TemporalComparisonOp.AFTER:
                return sql.SQL("({} > {})").format(a0, b1)
            if op == ast.TemporalComparisonOp.TEQUALS:
                return sql.SQL("({} = {} AND {} = {})").format(a0, b0, a1, b1)
            if op == ast.TemporalComparisonOp.DURING:
                return sql.SQL("({} > {} AND {} < {})").format(a0, b0, a1, b1)
            if op == ast.TemporalComparisonOp.DISJOINT:
                return sql.SQL("({} < {} OR {} > {})").format(a1, b0, a0, b1)
            raise InvalidInput(f"filter: temporal operator {op.name} is not supported "
                               "(T_BEFORE, T_AFTER, T_EQUALS, T_DURING, T_DISJOINT are)", parameter=PARAM)
        if isinstance(n, ast.Attribute):
            col, t = self._prop(n)
            if t == "boolean":
                return col
        raise InvalidInput(f"filter: unsupported expression {type(n).__name__}", parameter=PARAM)


def to_sql(text: str, lang: str | None, queryables: dict[str, str],
           geometry_sql: Callable[[dict], sql.Composable]) -> sql.Composable:
    """Parse and translate a filter for one layer (see :class:`Translator`)."""
    return Translator(queryables, geometry_sql).translate(parse(text, lang))

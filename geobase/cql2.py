"""CQL2 filters (OGC API - Features Part 3) into SQL with bound parameters.

The ``cql2`` package (Rust cql2-rs) parses both encodings: ``cql2-text`` is converted to the
``cql2-json`` tree, ``cql2-json`` is read into the same tree (malformed geometries and unknown
node shapes are refused there). This module compiles that JSON tree into a
``psycopg.sql.Composed`` whose every literal is a bound parameter: property names are checked
against the caller's queryables (the spec's attributes minus those masked for the caller) and
become ``sql.Identifier``; geometry literals are checked and reprojected in Python
(:func:`geobase.crs.to_storage`, the one check of coordinates given in a CRS) and bound as WKB.

``Expr.validate()`` (cql2-rs's JSON-schema check) is not called on requests: it costs ~25 ms
for a simple filter and seconds for a dozen nested NOTs (a cheap denial of service); the
compiler below checks every node it accepts (operator, arity, operand types) and refuses the
rest. Deeply nested text would overflow the parser's stack (a crash of the server, not an
exception), so text is bounded before it is parsed (:mod:`geobase.cql2_parse`).

Supported (and declared in /conformance):
  basic-cql2                     =, <>, <, <=, >, >=, AND, OR, NOT, IS NULL, boolean literals
  advanced-comparison-operators  LIKE, BETWEEN, IN
  property-property              properties and literals on either side
  basic-spatial-functions(-plus) S_INTERSECTS with any geometry literal or BBOX
  spatial-functions              S_EQUALS, S_DISJOINT, S_TOUCHES, S_WITHIN, S_OVERLAPS, S_CROSSES,
                                 S_CONTAINS
  temporal (where meaningful)    T_BEFORE, T_AFTER, T_EQUALS, T_DURING, T_DISJOINT on ``date``/
                                 ``datetime`` attributes against DATE()/TIMESTAMP() instants or
                                 intervals; comparisons (<, >, ...) against DATE()/TIMESTAMP().
Not supported (400): arithmetic, CASEI/ACCENTI, other functions, array operators.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from typing import Any

from psycopg import sql

from geobase.cql2_parse import bad as _bad
from geobase.cql2_parse import parse
from geobase.errors import InvalidInput

GEOMETRY_NAMES = ("geometry", "geom")

_CMP = {"=": "=", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_SPATIAL = {
    "s_intersects": "ST_Intersects", "s_disjoint": "ST_Disjoint", "s_contains": "ST_Contains",
    "s_within": "ST_Within", "s_touches": "ST_Touches", "s_crosses": "ST_Crosses",
    "s_overlaps": "ST_Overlaps", "s_equals": "ST_Equals",
}
_TEMPORAL = {"t_before", "t_after", "t_equals", "t_during", "t_disjoint"}
#: pg cast per spec attribute type, so a bound literal compares with the column's type
_CASTS = {"text": "text", "integer": "bigint", "number": "double precision", "boolean": "boolean",
          "date": "date", "datetime": "timestamptz"}
_NUMERIC = ("integer", "number")
_TIME = ("date", "datetime")


def _is_prop(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"property"}


def _is_geometry(node: Any) -> bool:
    return isinstance(node, dict) and ("bbox" in node or ("type" in node and (
        "coordinates" in node or "geometries" in node)))


class Translator:
    """Compiles a cql2-json tree into SQL over one layer's table.

    ``queryables`` maps property name -> spec type ("text", "number", ...);
    ``geometry_sql(geojson_dict)`` returns SQL of a literal geometry in the storage CRS
    (it applies the filter CRS and its axis order, and refuses coordinates outside it)."""

    def __init__(self, queryables: dict[str, str], geometry_sql: Callable[[dict], sql.Composable],
                 geom_column: str = "geom"):
        self.queryables = queryables
        self.geometry_sql = geometry_sql
        self.geom_column = geom_column

    # -- entry -------------------------------------------------------------------------------
    def translate(self, node: Any) -> sql.Composable:
        if isinstance(node, bool):
            return sql.SQL("TRUE" if node else "FALSE")
        if _is_prop(node):
            col, t = self._prop(node)
            if t == "boolean":
                return col
        if not isinstance(node, dict) or "op" not in node:
            raise _bad("the expression is not a condition (true/false)")
        return self._op(node)

    # -- operands ----------------------------------------------------------------------------
    def _prop(self, node: dict) -> tuple[sql.Composable, str]:
        name = node["property"]
        if not isinstance(name, str):
            raise _bad("a property name must be a string")
        if name in GEOMETRY_NAMES:
            return sql.Identifier(self.geom_column), "geometry"
        if name not in self.queryables:
            raise _bad(f"unknown property {name!r}; queryables: {', '.join(sorted(self.queryables))}")
        return sql.Identifier(name), self.queryables[name]

    @staticmethod
    def _literal_type(node: Any) -> str | None:
        """The spec type a literal carries on its own (None: NULL)."""
        if isinstance(node, bool):
            return "boolean"
        if isinstance(node, (int, float)):
            return "number"
        if isinstance(node, str):
            return "text"
        if isinstance(node, dict) and "date" in node:
            return "date"
        if isinstance(node, dict) and "timestamp" in node:
            return "datetime"
        if node is None:
            return None
        if _is_geometry(node):
            raise _bad("a geometry is only allowed in spatial functions (S_INTERSECTS, ...)")
        if isinstance(node, dict) and "op" in node:
            raise _bad(f"{node['op']!r}: arithmetic and functions are not supported")
        raise _bad(f"unsupported operand {json.dumps(node)[:100]}")

    def _literal(self, node: Any, typ: str | None) -> sql.Composable:
        """Bind a literal, checked against the type of what it is compared with."""
        own = self._literal_type(node)
        if own is None:
            return sql.SQL("NULL")
        typ = typ or own
        if own in _TIME:
            value = node.get("date") or node.get("timestamp")
            if typ not in _TIME:
                raise _bad(f"a date/time literal cannot be compared with a {typ} property")
            try:
                (dt.date.fromisoformat if own == "date" else
                 lambda v: dt.datetime.fromisoformat(v.replace("Z", "+00:00")))(value)
            except (TypeError, ValueError):
                raise _bad(f"{value!r} is not an ISO {'date' if own == 'date' else 'timestamp'}") from None
            return sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(_CASTS[typ]))
        if own == "boolean":
            if typ != "boolean":
                raise _bad(f"a boolean cannot be compared with a {typ} property")
            return sql.SQL("{}::boolean").format(sql.Literal(node))
        if own == "number":
            if typ not in _NUMERIC:
                raise _bad(f"the number {node!r} cannot be compared with a {typ} property (quote it: '{node}')")
            if not math.isfinite(node):
                raise _bad(f"{node!r} is not a finite number")
            if typ == "integer" and float(node).is_integer():
                return sql.SQL("{}::bigint").format(sql.Literal(int(node)))
            # a fraction against an integer compares exactly as numeric (a bigint cast would round)
            return sql.SQL("{}::{}").format(sql.Literal(node), sql.SQL(
                "numeric" if typ == "integer" else "double precision"))
        # text
        if typ in _NUMERIC:
            raise _bad(f"the string {node!r} cannot be compared with a {typ} property")
        if typ in _TIME:
            try:
                (dt.datetime if typ == "datetime" else dt.date).fromisoformat(node.replace("Z", "+00:00"))
            except ValueError:
                raise _bad(f"{node!r} is not an ISO {typ}") from None
        if typ == "boolean":
            raise _bad(f"{node!r} cannot be compared with a boolean property")
        return sql.SQL("{}::{}").format(sql.Literal(node), sql.SQL(_CASTS[typ]))

    def _operand(self, node: Any, other_type: str | None = None) -> tuple[sql.Composable, str | None]:
        if _is_prop(node):
            return self._prop(node)
        return self._literal(node, other_type), other_type or self._literal_type(node)

    def _pair(self, lhs: Any, rhs: Any) -> tuple[sql.Composable, sql.Composable, str | None]:
        """Two comparable operands (property or literal on either side)."""
        if _is_prop(lhs):
            a, t = self._prop(lhs)
            if _is_prop(rhs):
                b, t2 = self._prop(rhs)
                if not (t == t2 or (t in _NUMERIC and t2 in _NUMERIC) or (t in _TIME and t2 in _TIME)):
                    raise _bad(f"{lhs['property']!r} ({t}) cannot be compared with {rhs['property']!r} ({t2})")
            else:
                b, _ = self._operand(rhs, t)
        elif _is_prop(rhs):
            b, t = self._prop(rhs)
            a, _ = self._operand(lhs, t)
        else:
            a, t = self._operand(lhs)
            b, _ = self._operand(rhs, t)
        if t == "geometry":
            raise _bad("compare geometries with spatial functions (S_INTERSECTS, ...)")
        return a, b, t

    def _geometry(self, node: Any) -> sql.Composable:
        if _is_prop(node):
            col, t = self._prop(node)
            if t != "geometry":
                raise _bad(f"{node['property']!r} is not a geometry")
            return col
        if isinstance(node, dict) and "bbox" in node:
            box = node["bbox"]
            if not (isinstance(box, list) and len(box) in (4, 6)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
                raise _bad("BBOX takes 4 (or 6) numbers")
            x1, y1, x2, y2 = (box[0], box[1], box[2], box[3]) if len(box) == 4 else (box[0], box[1], box[3], box[4])
            if x1 > x2 or y1 > y2:
                raise _bad(f"BBOX {box}: the lower corner must come first (min <= max on both axes)")
            return self.geometry_sql({"type": "Polygon", "coordinates": [[
                [x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]})
        if _is_geometry(node):
            return self.geometry_sql(node)
        raise _bad("spatial functions take the geometry property and geometry literals")

    def _temporal(self, node: Any) -> tuple[sql.Composable, sql.Composable]:
        """(start, end) SQL of a temporal operand: a date/datetime property or literal/interval."""
        if _is_prop(node):
            col, t = self._prop(node)
            if t not in _TIME:
                raise _bad(f"{node['property']!r} is not a date or time")
            return col, col
        if isinstance(node, dict) and "interval" in node:
            ends = node["interval"]
            if not (isinstance(ends, list) and len(ends) == 2):
                raise _bad("INTERVAL takes a start and an end")
            out = []
            for end, inf in zip(ends, ("-infinity", "infinity")):
                if end == "..":
                    out.append(sql.SQL("{}::timestamptz").format(sql.Literal(inf)))
                elif _is_prop(end):
                    out.append(self._temporal(end)[0])
                elif isinstance(end, str):
                    out.append(self._literal({"timestamp" if "T" in end else "date": end}, None))
                else:
                    out.append(self._literal(end, None))
            return out[0], out[1]
        if isinstance(node, dict) and ("date" in node or "timestamp" in node):
            lit = self._literal(node, None)
            return lit, lit
        raise _bad("temporal functions take a date property and DATE()/TIMESTAMP()/INTERVAL()")

    # -- operators ---------------------------------------------------------------------------
    def _op(self, n: dict) -> sql.Composable:
        op, args = n.get("op"), n.get("args")
        if not isinstance(op, str) or not isinstance(args, list):
            raise _bad("an operation needs 'op' and a list of 'args'")
        lop = op.lower()

        def arity(k: int) -> None:
            if len(args) != k:
                raise _bad(f"{op!r} takes {k} arguments, got {len(args)}")

        if lop in ("and", "or"):
            if len(args) < 2:
                raise _bad(f"{op!r} takes at least 2 arguments")
            return sql.SQL("({})").format(sql.SQL(f" {lop.upper()} ").join(self.translate(a) for a in args))
        if lop == "not":
            arity(1)
            return sql.SQL("(NOT {})").format(self.translate(args[0]))
        if lop in _CMP:
            arity(2)
            a, b, _ = self._pair(args[0], args[1])
            return sql.SQL("({} {} {})").format(a, sql.SQL(_CMP[lop]), b)
        if lop == "between":
            arity(3)
            col, t = self._operand(args[0])
            if t not in _NUMERIC and t not in _TIME and t != "text":
                raise _bad("BETWEEN applies to numbers, text and dates")
            return sql.SQL("({} BETWEEN {} AND {})").format(
                col, self._operand(args[1], t)[0], self._operand(args[2], t)[0])
        if lop == "like":
            arity(2)
            col, t = self._operand(args[0])
            if t != "text":
                raise _bad("LIKE applies to text properties")
            if not isinstance(args[1], str):
                raise _bad("LIKE needs a string pattern (CASEI/ACCENTI are not supported)")
            return sql.SQL("({} LIKE {})").format(col, sql.Literal(args[1]))
        if lop == "in":
            arity(2)
            if not isinstance(args[1], list):
                raise _bad("IN needs a list of values")
            col, t = self._operand(args[0])
            if not args[1]:
                return sql.SQL("FALSE")
            items = sql.SQL(", ").join(self._operand(v, t)[0] for v in args[1])
            return sql.SQL("({} IN ({}))").format(col, items)
        if lop == "isnull":
            arity(1)
            col, _ = self._operand(args[0])
            return sql.SQL("({} IS NULL)").format(col)
        if lop in _SPATIAL:
            arity(2)
            return sql.SQL("{}({}, {})").format(sql.SQL(_SPATIAL[lop]), self._geometry(args[0]), self._geometry(args[1]))
        if lop in _TEMPORAL:
            arity(2)
            (a0, a1), (b0, b1) = self._temporal(args[0]), self._temporal(args[1])
            if lop == "t_before":
                return sql.SQL("({} < {})").format(a1, b0)
            if lop == "t_after":
                return sql.SQL("({} > {})").format(a0, b1)
            if lop == "t_equals":
                return sql.SQL("({} = {} AND {} = {})").format(a0, b0, a1, b1)
            if lop == "t_during":
                return sql.SQL("({} > {} AND {} < {})").format(a0, b0, a1, b1)
            return sql.SQL("({} < {} OR {} > {})").format(a1, b0, a0, b1)  # t_disjoint
        if lop.startswith("t_"):
            raise _bad(f"temporal operator {op!r} is not supported (T_BEFORE, T_AFTER, T_EQUALS, T_DURING, "
                       "T_DISJOINT are)")
        if lop.startswith("a_"):
            raise _bad(f"array operator {op!r} is not supported")
        if lop in ("+", "-", "*", "/", "^", "%", "div"):
            raise _bad("arithmetic is not supported")
        raise _bad(f"function or operator {op!r} is not supported")


def to_sql(text: str, lang: str | None, queryables: dict[str, str],
           geometry_sql: Callable[[dict], sql.Composable]) -> sql.Composable:
    """Parse and translate a filter for one layer (see :class:`Translator`)."""
    return Translator(queryables, geometry_sql).translate(parse(text, lang))


def equality_sql(name: str, typ: str, value: str) -> sql.Composable:
    """``name = value`` of a property filter given as a query parameter (OGC API - Features
    Part 1): the text is read as the property's type, then compiled like a CQL2 comparison."""
    literal: Any = value
    if typ in _NUMERIC:
        try:
            literal = float(value)
        except ValueError:
            raise InvalidInput(f"{name}: {value!r} is not a number", parameter=name) from None
    elif typ == "boolean":
        if value.strip().lower() not in ("true", "false"):
            raise InvalidInput(f"{name}: {value!r} is not true/false", parameter=name)
        literal = value.strip().lower() == "true"
    tree = {"op": "=", "args": [{"property": name}, literal]}
    try:
        return Translator({name: typ}, lambda g: sql.SQL("NULL")).translate(tree)
    except InvalidInput as exc:
        raise InvalidInput(exc.message.replace("filter: ", f"{name}: ", 1), parameter=name) from None

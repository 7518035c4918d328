"""Attribute values of a delivered batch: converted to the layer's types, checked against
required fields and code lists, and the feature keys built.

Two paths give the same values: arrow kernels over whole columns for a clean batch
(:meth:`AttributeNormalizer.fast`), and row by row for a batch with any problem, which reports
each one with its row number (:meth:`AttributeNormalizer.slow`). The row-by-row converters
(``CONVERTERS``) define what a value means; the arrow path only takes the cases it can do
identically and otherwise says "ask the row-by-row path".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from geobase.ingest.copybin import arrow_type
from geobase.ingest.encoding import EncodingSniffer
from geobase.ingest.report import QualityReport

from geobase.specs import Attribute, LayerSpec, Registry


def _text(v: Any) -> str | None:
    if type(v) is str:
        v = v.strip()
        return v or None
    if v is None:
        return None
    if isinstance(v, float):
        if v != v:
            return None
        return str(int(v)) if v.is_integer() else repr(v)
    s = str(v).strip()
    return s or None


def _int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None if v is None else int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if v != v:
            return None
        if v.is_integer():
            return int(v)
        raise ValueError(f"{v!r} is not a whole number")
    s = str(v).strip()
    if not s:
        return None
    f = float(s)
    if not f.is_integer():
        raise ValueError(f"{s!r} is not a whole number")
    return int(f)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        f = float(v)
        return None if f != f else f
    s = str(v).strip().replace(",", "")
    return float(s) if s else None


def _date(v: Any) -> dt.date | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    s = str(v).strip()
    if not s:
        return None
    for fmt in ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y-%m-%dT%H:%M:%S"):
        try:
            return dt.datetime.strptime(s[:19] if "T" in s else s, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"{s!r} is not a date")


def _datetime(v: Any) -> dt.datetime | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v if v.tzinfo else v.replace(tzinfo=dt.UTC)
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day, tzinfo=dt.UTC)
    s = str(v).strip()
    if not s:
        return None
    d = dt.datetime.fromisoformat(s)
    return d if d.tzinfo else d.replace(tzinfo=dt.UTC)


def _bool(v: Any) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if not s:
        return None
    if s in ("1", "true", "t", "yes", "y", "是"):
        return True
    if s in ("0", "false", "f", "no", "n", "否"):
        return False
    raise ValueError(f"{v!r} is not a boolean")


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "text": _text, "integer": _int, "number": _num, "date": _date, "datetime": _datetime, "boolean": _bool,
}


KIND_TYPES = {"text": pa.string(), "number": pa.float64(), "integer": pa.int64()}


def as_list(v: Any) -> list:
    return v.to_pylist() if hasattr(v, "to_pylist") else list(v)


def _null_if(mask: pa.Array, v: pa.Array) -> pa.Array:
    return pc.if_else(mask, pa.scalar(None, v.type), v)


def convert_arrow(kind: str, col: pa.Array) -> pa.Array | None:
    """``CONVERTERS[kind]`` over a whole arrow column, or None when only the row-by-row
    converter can say (strings to numbers, dates, booleans, fractional integers)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_null(t):
        return pa.nulls(len(col), KIND_TYPES.get(kind, pa.string())) if kind in KIND_TYPES else None
    if kind == "text":
        if pa.types.is_large_string(t):
            col, t = col.cast(pa.string()), pa.string()
        if pa.types.is_string(t):
            try:
                v = pc.utf8_trim_whitespace(col)
            except pa.ArrowInvalid:  # not UTF-8: the row-by-row path says where and why
                return None
            return _null_if(pc.equal(pc.utf8_length(v), 0), v)
        if pa.types.is_integer(t):
            return col.cast(pa.string())
        return None
    if kind == "number":
        if pa.types.is_floating(t):
            v = col.cast(pa.float64())
            return _null_if(pc.is_nan(v), v) if pc.any(pc.is_nan(v)).as_py() else v
        if pa.types.is_integer(t):
            return col.cast(pa.float64())
        return None
    if kind == "integer":
        if pa.types.is_integer(t):
            return col.cast(pa.int64())
        if pa.types.is_floating(t):
            v = col.cast(pa.float64())
            v = _null_if(pc.is_nan(v), v) if pc.any(pc.is_nan(v)).as_py() else v
            if pc.all(pc.equal(pc.floor(v), v)).as_py() not in (True, None):
                return None
            try:
                return v.cast(pa.int64())
            except (pa.ArrowInvalid, OverflowError):
                return None
        return None
    return None




class AttributeNormalizer:
    """The attribute half of a batch: code lists and key attributes looked up once per file."""

    def __init__(self, spec: LayerSpec, registry: Registry, columns: dict[str, str], report: QualityReport,
                 sniffer: EncodingSniffer | None):
        self.spec = spec
        self.columns = columns  # attribute -> source column (the field plan)
        self.report = report
        self.sniffer = sniffer
        self.attrs: list[Attribute] = list(spec.attributes)
        self.codes = {a.name: registry.code_list(a.code_list).lookup() for a in self.attrs if a.code_list}
        self.assignable = {n: {c for c, code in codes.items() if code.assignable} for n, codes in self.codes.items()}
        self.assignable_arrow = {n: pa.array(sorted(ok), pa.string()) for n, ok in self.assignable.items()}
        self.key_attrs = list(spec.source_key)

    def _convert_slow(self, a: Attribute, src: str, col: list, bad: np.ndarray, row_numbers: np.ndarray) -> list:
        """Row by row: decode sniffed text, convert, and report each value that does not fit."""
        conv = CONVERTERS[a.type]
        out: list = [None] * len(col)
        for i, v in enumerate(col):
            if v is not None and self.sniffer is not None and isinstance(v, str):
                try:
                    v = self.sniffer.decode(v)
                except ValueError as exc:
                    bad[i] = True
                    self.report.add("bad_text_encoding", int(row_numbers[i]), None, f"{src}: {exc}")
                    continue
            try:
                out[i] = conv(v)
            except (ValueError, TypeError, OverflowError) as exc:
                bad[i] = True
                self.report.add("bad_type", int(row_numbers[i]), None,
                                f"{a.name} ({src}): {exc if str(exc) else repr(v)} is not {a.type}")
        return out

    def fast(self, columns: dict[str, pa.Array], n: int) -> tuple[list[pa.Array], pa.Array] | None:
        """Attributes converted and checked with arrow kernels, and the feature keys; None when
        the batch needs the row-by-row path (any problem to report, sniffed text, a conversion
        without a vectorised equivalent)."""
        if self.sniffer is not None:
            return None
        out: list[pa.Array] = []
        for a in self.attrs:
            src = self.columns.get(a.name)
            if src is None:
                if a.required or a.name in self.key_attrs:
                    return None
                out.append(pa.nulls(n, arrow_type(a.pg_type)))
                continue
            v = convert_arrow(a.type, columns[src])
            if v is None:
                return None
            if (a.required or a.name in self.key_attrs) and v.null_count:
                return None
            value_set = self.assignable_arrow.get(a.name)
            if value_set is not None:
                if v.type != value_set.type:
                    return None
                inside = pc.sum(pc.is_in(v, value_set=value_set)).as_py() or 0
                if inside + v.null_count != n:
                    return None
            out.append(v)
        key_vals = [out[self.spec.attribute_names.index(k)] for k in self.key_attrs]
        if all(pa.types.is_string(k.type) for k in key_vals):
            keys = key_vals[0] if len(key_vals) == 1 else pc.binary_join_element_wise(*key_vals, "|")
        else:  # str() of numbers as the row-by-row path writes them
            keys = pa.array(["|".join(str(p) for p in parts) for parts in zip(*(k.to_pylist() for k in key_vals))],
                            pa.string())
        return out, keys

    def slow(self, columns: dict[str, list], n: int, bad: np.ndarray, row_numbers: np.ndarray
                         ) -> tuple[list[list], list[str | None]]:
        """Row by row: convert, check and report every attribute problem with its row number."""
        keys: list[str | None] = [None] * n
        values: list[list] = []
        for a in self.attrs:
            src = self.columns.get(a.name)
            if src is None:
                if a.required or a.name in self.key_attrs:  # pragma: no cover - plan_fields refuses earlier
                    bad[:] = True
                values.append([None] * n)
                continue
            col = columns[src]
            out = None
            if self.sniffer is None:
                try:  # fast path: the whole column converts without a problem
                    out = list(map(CONVERTERS[a.type], col))
                except (ValueError, TypeError, OverflowError):
                    out = None
            if out is None:
                out = self._convert_slow(a, src, col, bad, row_numbers)
            if a.required or a.name in self.key_attrs:
                for i in [i for i, x in enumerate(out) if x is None]:
                    if self.sniffer is not None and bad[i]:
                        continue  # already reported as undecodable text
                    bad[i] = True
                    self.report.add("required_missing", int(row_numbers[i]), None, f"{a.name} ({src}) is empty")
            codes = self.codes.get(a.name)
            if codes is not None:
                ok = self.assignable[a.name]
                for i in [i for i, x in enumerate(out) if x is not None and x not in ok]:
                    x = out[i]
                    code = codes.get(x)
                    bad[i] = True
                    if code is None:
                        self.report.add("unknown_code", int(row_numbers[i]), None,
                                        f"{a.name} = {x!r} is not in code list {a.code_list}")
                    else:
                        self.report.add("code_not_assignable", int(row_numbers[i]), None,
                                        f"{a.name} = {x!r} ({code.zh}) is a group heading, not an assignable code")
            values.append(out)
        key_idx = [self.spec.attribute_names.index(k) for k in self.key_attrs]
        for i in range(n):
            parts = [values[j][i] for j in key_idx]
            if all(p is not None for p in parts):
                keys[i] = "|".join(str(p) for p in parts)
        return values, keys

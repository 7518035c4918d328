"""Turn a batch of delivered features into rows of the layer: mapped, typed, checked, repaired,
promoted to multi-geometries and reprojected to CGCS2000 (EPSG:4490) plus Web Mercator.

Geometry work is vectorised over the whole batch (shapely 2 / pyproj on coordinate arrays); the
per-row Python loop only handles attribute typing and code lists. Each problem is recorded in the
quality report with the row number and feature key; the row is marked bad so the policy
(reject / skip / keep) can decide.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from geobase.ingest.encoding import EncodingSniffer
from geobase.ingest.report import QualityReport
from pyproj import CRS, Transformer

from geobase.errors import InvalidInput
from geobase.specs import Attribute, LayerSpec, Registry

# shapely type ids
POINT, LINE, POLY, MPOINT, MLINE, MPOLY, COLL = 0, 1, 3, 4, 5, 6, 7
FAMILY = {"MultiPolygon": {POLY, MPOLY}, "MultiLineString": {LINE, MLINE, 2}, "MultiPoint": {POINT, MPOINT}}
FAMILY_NAME = {POINT: "Point", LINE: "LineString", 2: "LinearRing", POLY: "Polygon", MPOINT: "MultiPoint",
               MLINE: "MultiLineString", MPOLY: "MultiPolygon", COLL: "GeometryCollection"}
BUILDERS = {"MultiPolygon": shapely.multipolygons, "MultiLineString": shapely.multilinestrings,
            "MultiPoint": shapely.multipoints}
#: Outside the source CRS's area of use by more than this many degrees counts as "outside".
AREA_OF_USE_MARGIN_DEG = 1.0


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


#: Pseudo source column: the feature id GDAL reports (GeoJSON ``id`` or row sequence).
FID_COLUMN = "__fid__"


@dataclass
class FieldPlan:
    """Which delivered column feeds which attribute."""

    columns: dict[str, str]  # attribute -> source column
    ignored: list[str]

    @property
    def uses_fid(self) -> bool:
        return FID_COLUMN in self.columns.values()


def plan_fields(spec: LayerSpec, source_fields: list[str], extra_map: dict[str, str] | None = None) -> FieldPlan:
    """Map delivered field names to attributes (case-insensitive, spec's ``source`` names first)."""
    by_upper = {f.upper(): f for f in source_fields}
    columns: dict[str, str] = {}
    extra = {k.upper(): v for k, v in (extra_map or {}).items()}
    for src_upper, attr in extra.items():
        if src_upper in by_upper and attr not in columns:
            columns[attr] = by_upper[src_upper]
    for a in spec.attributes:
        if a.name in columns:
            continue
        for cand in [*a.source, a.name]:
            if cand.upper() in by_upper:
                columns[a.name] = by_upper[cand.upper()]
                break
    used = set(columns.values())
    for a in spec.attributes:  # "source feature id" keys fall back to the file's own feature ids
        if a.name in spec.source_key and a.name not in columns and "FID_SRC" in {x.upper() for x in [*a.source, a.name]}:
            columns[a.name] = FID_COLUMN
    missing = [a for a in spec.attributes if (a.required or a.name in spec.source_key) and a.name not in columns]
    if missing:
        names = ", ".join(f"{a.name} (delivered as {' / '.join(a.source) or a.name.upper()})" for a in missing)
        raise InvalidInput(
            f"required field(s) missing from the file: {names}; fields present: {', '.join(source_fields) or 'none'}",
            parameter="path")
    return FieldPlan(columns, [f for f in source_fields if f not in used])


class BatchNormalizer:
    """Stateful over a whole file: row numbering, encoding sniffing, transformers."""

    def __init__(self, spec: LayerSpec, registry: Registry, plan: FieldPlan, src_crs: CRS, report: QualityReport,
                 sniffer: EncodingSniffer | None):
        self.spec = spec
        self.plan = plan
        self.report = report
        self.sniffer = sniffer
        self.row0 = 0
        self.attrs: list[Attribute] = list(spec.attributes)
        self.codes = {a.name: registry.code_list(a.code_list).lookup() for a in self.attrs if a.code_list}
        self.assignable = {n: {c for c, code in codes.items() if code.assignable} for n, codes in self.codes.items()}
        self.key_attrs = list(spec.source_key)
        self.to_4490 = None if src_crs.to_epsg() == 4490 else Transformer.from_crs(src_crs, 4490, always_xy=True)
        self.to_3857 = Transformer.from_crs(4490, 3857, always_xy=True)
        aou = src_crs.area_of_use
        self.aou = None
        if aou is not None:
            m = AREA_OF_USE_MARGIN_DEG
            self.aou = (aou.west - m, aou.south - m, aou.east + m, aou.north + m)
        self.geometry = spec.geometry
        self.family = FAMILY[spec.geometry]
        self.type_counts: dict[str, int] = {}
        self.rows_outside = 0
        self.rows_with_geom = 0

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

    def _reproject(self, geoms: np.ndarray, transformer: Transformer) -> np.ndarray:
        def fn(x, y):
            return transformer.transform(x, y)
        return shapely.transform(geoms, lambda c: np.column_stack(fn(c[:, 0], c[:, 1])))

    def process(self, columns: dict[str, list], wkb: list) -> tuple[list[list], int]:
        """Rows ready for COPY (row, key, hash, attrs..., geom hex, geom_3857 hex) and the bad-row count."""
        n = len(wkb)
        row_numbers = np.arange(self.row0 + 1, self.row0 + n + 1)
        self.row0 += n
        bad = np.zeros(n, dtype=bool)
        keys: list[str | None] = [None] * n

        # -- attributes --------------------------------------------------------------------
        values: list[list] = []
        for a in self.attrs:
            src = self.plan.columns.get(a.name)
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

        # -- geometry ----------------------------------------------------------------------
        geoms = shapely.from_wkb(np.asarray(wkb, dtype=object), on_invalid="ignore")
        has_z = shapely.has_z(geoms)
        if has_z.any():  # Polygon Z from KML/CAD: storage is 2D
            geoms[has_z] = shapely.force_2d(geoms[has_z])
        missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        geom_bad = missing.copy()
        for i in np.flatnonzero(missing):
            bad[i] = True
            self.report.add("empty_geometry", int(row_numbers[i]), keys[i], "geometry is empty or missing")
        present = ~missing
        types = shapely.get_type_id(geoms)
        for t, c in zip(*np.unique(types[present], return_counts=True)):
            name = FAMILY_NAME.get(int(t), str(t))
            self.type_counts[name] = self.type_counts.get(name, 0) + int(c)
        self.rows_with_geom += int(present.sum())
        # repair invalid geometries
        invalid = present & ~shapely.is_valid(geoms)
        if invalid.any():
            reasons = shapely.is_valid_reason(geoms[invalid])
            repaired = shapely.make_valid(geoms[invalid])
            if self.geometry == "MultiPolygon":  # keep the polygonal parts only
                repaired = np.array([_polygonal(g) for g in repaired], dtype=object)
            geoms[invalid] = repaired
            for i, reason in zip(np.flatnonzero(invalid), reasons):
                g = geoms[i]
                if g is None or shapely.is_empty(g) or not shapely.is_valid(g):
                    bad[i] = geom_bad[i] = True
                    self.report.add("invalid_unrepairable", int(row_numbers[i]), keys[i], f"{reason}; repair left no valid geometry")
                else:
                    self.report.add("invalid_repaired", int(row_numbers[i]), keys[i], reason)
            types = shapely.get_type_id(geoms)
        wrong = present & ~np.isin(types, list(self.family)) & ~geom_bad
        for i in np.flatnonzero(wrong):
            bad[i] = geom_bad[i] = True
            self.report.add("wrong_geometry_type", int(row_numbers[i]), keys[i],
                            f"{FAMILY_NAME.get(int(types[i]), types[i])} in a {self.geometry} layer")
        idx = np.flatnonzero(~geom_bad)  # rows whose geometry we can build
        g = geoms[idx]
        if self.to_4490 is not None and len(g):
            g = self._reproject(g, self.to_4490)
        if len(g):
            b = shapely.bounds(g)
            lonlat_bad = ~np.isfinite(b).all(axis=1)
            outside = np.zeros(len(b), dtype=bool)
            if self.aou is not None:
                w, s, e, nn = self.aou
                if w <= e:
                    outside |= (b[:, 0] < w) | (b[:, 2] > e)
                else:  # the area of use crosses the antimeridian (e.g. Alaska: 172E .. 130W)
                    outside |= ((b[:, 0] < w) & (b[:, 0] > e)) | ((b[:, 2] < w) & (b[:, 2] > e))
                outside |= (b[:, 1] < s) | (b[:, 3] > nn)
            lonlat_bad |= (b[:, 0] < -180.5) | (b[:, 2] > 180.5) | (b[:, 1] < -90.5) | (b[:, 3] > 90.5)
            for j in np.flatnonzero(lonlat_bad | outside):
                i = idx[j]
                if lonlat_bad[j]:  # not even longitude/latitude: unusable
                    bad[i] = geom_bad[i] = True
                self.rows_outside += 1
                self.report.add("coordinates_impossible" if lonlat_bad[j] else "outside_crs_area",
                                int(row_numbers[i]), keys[i],
                                f"bounds {tuple(round(float(x), 4) for x in b[j])} after transforming to EPSG:4490 "
                                f"lie outside the source CRS's area of use")
            parts, pidx = shapely.get_parts(g, return_index=True)
            multi = np.empty(len(g), dtype=object)
            built = BUILDERS[self.geometry](parts, indices=pidx)
            multi[: len(built)] = built
            g = multi
        g3857 = self._reproject(g, self.to_3857) if len(g) else g
        # EWKB bytes (with SRID) for a binary COPY: geometry_recv reads them as they are
        hex4490 = shapely.to_wkb(shapely.set_srid(g, 4490), include_srid=True) if len(g) else []
        hex3857 = shapely.to_wkb(shapely.set_srid(g3857, 3857), include_srid=True) if len(g) else []

        rows = []
        keep_bad = self.report.on_error == "keep"
        md5 = hashlib.md5
        by_row = list(zip(*values)) if values else [()] * n
        first = self.row0 - n + 1
        for j, i in enumerate(idx.tolist()):
            if keys[i] is None or geom_bad[i] or (bad[i] and not keep_bad):
                continue
            attrs = by_row[i]
            g = hex4490[j]
            h = md5("\x1f".join(["" if v is None else str(v) for v in attrs]).encode() + b"\x1e" + g).hexdigest()
            rows.append((first + i, keys[i], h, *attrs, g, hex3857[j]))
        return rows, int(bad.sum())


def _polygonal(g):
    if g is None:
        return None
    t = shapely.get_type_id(g)
    if t in (POLY, MPOLY):
        return g
    if t == COLL:
        parts = [p for p in shapely.get_parts(g) if shapely.get_type_id(p) in (POLY, MPOLY)]
        if not parts:
            return None
        return shapely.union_all(parts) if len(parts) > 1 else parts[0]
    return None

"""Turn a batch of delivered features into rows of the layer: mapped, typed, checked, repaired,
promoted to multi-geometries and reprojected to CGCS2000 (EPSG:4490) plus Web Mercator.

Everything is vectorised over the whole batch, because per-row Python was the ingest's cost:
attributes are converted and checked with arrow kernels, geometries with shapely 2 / pyproj on
coordinate arrays, and a clean batch of polygons is reprojected and written as WKB straight from
its coordinate arrays (:mod:`geobase.ingest.wkb`); rows leave as binary-COPY field encodings
(:mod:`geobase.ingest.copybin`). A batch with an attribute problem takes the row-by-row path,
which records each problem in the quality report with the row number and feature key; the row
is marked bad so the policy (reject / skip / keep) can decide.

The attribute half lives in :mod:`geobase.ingest.normalize_attributes`, the geometry half in
:mod:`geobase.ingest.normalize_geometry`; this module plans the fields, puts the two halves of a
batch together into staging rows and keeps the stated-area check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from geobase.ingest.area import AREA_TOLERANCE, stated_area_factor
from geobase.ingest.copybin import arrow_type, content_hash, encode_field, field_parts, from_numpy, join_fields
from geobase.ingest.encoding import EncodingSniffer
from geobase.ingest.normalize_attributes import AttributeNormalizer, as_list
from geobase.ingest.normalize_geometry import GeometryNormalizer, ParsedGeometry
from geobase.ingest.report import QualityReport
from geobase.ingest.shp import ShapeBatch
from pyproj import CRS

from geobase.errors import InvalidInput
from geobase.specs import LayerSpec, Registry

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
        self.row0 = 0
        self.attributes = AttributeNormalizer(spec, registry, plan.columns, report, sniffer)
        self.attrs = self.attributes.attrs
        self.geometries = GeometryNormalizer(spec, src_crs, report)
        #: bounds (EPSG:4490) of every row returned so far, or None
        self.extent: list[float] | None = None
        #: keys of the rows the last :meth:`process` returned (duplicate check without SQL)
        self.last_keys: pa.Array = pa.array([], pa.string())
        #: attribute values (spec order) of the rows the last :meth:`process` returned
        self.last_values: list[pa.Array] = []
        #: polygon layers: the ellipsoidal area is computed here and loaded as ``_area_m2``
        self.computes_area = spec.geometry == "MultiPolygon"
        #: stated vs ellipsoidal area of every loaded row (see :class:`AreaCheck`)
        self.area_check = AreaCheck(spec) if self.computes_area and spec.stated_area_field else None
        #: loaded rows whose area is left to the database (NaN here: an edge too long, see area.py)
        self.areas_missing = 0

    @property
    def type_counts(self) -> dict[str, int]:
        return self.geometries.type_counts

    @property
    def rows_with_geom(self) -> int:
        return self.geometries.rows_with_geom

    @property
    def rows_outside(self) -> int:
        return self.geometries.rows_outside

    def parse_geometry(self, wkb: pa.Array | list | ShapeBatch) -> ParsedGeometry:
        """See :meth:`geobase.ingest.normalize_geometry.GeometryNormalizer.prepare` (run by the
        reader thread for the next batch)."""
        return self.geometries.prepare(wkb)

    def process(self, columns: dict[str, pa.Array], wkb: pa.Array | ShapeBatch, parsed: ParsedGeometry | None = None
                ) -> tuple[list[pa.Array], int, int]:
        """Binary-COPY field encodings of the batch's loadable rows, in staging column order
        (row, key, hash, attrs... + EWKB 4490 as one block of joined fields, EWKB 3857[,
        ellipsoidal area of a polygon layer]), the number of those rows and the bad-row count.

        The attributes of a clean batch are converted and checked with arrow kernels; a batch
        with any attribute problem (or sniffed text) takes the row-by-row path, which reports
        every problem with its row number. ``parsed``: :meth:`parse_geometry` of ``wkb``, if
        done already."""
        n = len(wkb)
        row_numbers = np.arange(self.row0 + 1, self.row0 + n + 1)
        first = self.row0 + 1
        self.row0 += n
        bad = np.zeros(n, dtype=bool)

        fast = self.attributes.fast(columns, n)
        if fast is not None:
            values_arrow, keys_arrow = fast
            keys_list: list[str | None] | None = None

            def key_of(i: int) -> str | None:
                return keys_arrow[i].as_py()
        else:
            values, keys_list = self.attributes.slow({c: as_list(v) for c, v in columns.items()}, n, bad, row_numbers)

            def key_of(i: int) -> str | None:
                return keys_list[i]

        idx, geom_bad, ewkb4490, ewkb3857, bounds, areas = self.geometries.process(
            wkb, parsed or self.parse_geometry(wkb), key_of, bad, row_numbers)

        if fast is not None:  # no attribute problems: every row with a usable geometry loads
            take = np.arange(len(idx))
            rows_idx = idx
        else:
            keep_bad = self.report.on_error == "keep"
            sel = np.array([keys_list[i] is not None and not geom_bad[i] and (keep_bad or not bad[i])
                            for i in idx.tolist()], dtype=bool) if len(idx) else np.zeros(0, dtype=bool)
            take = np.flatnonzero(sel)
            rows_idx = idx[take]
            values_arrow = [pa.array(v, type=arrow_type(a.pg_type)) for a, v in zip(self.attrs, values)]
            keys_arrow = pa.array(keys_list, pa.string())
        m = len(rows_idx)
        if m == 0:
            self.last_keys = pa.array([], pa.string())
            self.last_values = []
            return [], 0, int(bad.sum())
        ridx = from_numpy(rows_idx, pa.int64())
        every_row = m == n and bool((rows_idx == np.arange(n)).all())  # a clean batch: no copy to take

        def rows_of(arr: pa.Array) -> pa.Array:
            return arr if every_row else arr.take(ridx)

        self.last_values = [rows_of(v) for v in values_arrow]
        tk = from_numpy(take, pa.int64())
        g4490 = ewkb4490.take(tk) if len(take) != len(ewkb4490) else ewkb4490
        g3857 = ewkb3857.take(tk) if len(take) != len(ewkb3857) else ewkb3857
        # the attributes' and the geometry's fields, joined in one pass: what the content hash
        # is computed over, and COPYed as they are (one block of columns, see rows_payload)
        attrs_geom = join_fields([*(p for v in self.last_values for p in field_parts(v)), *field_parts(g4490)])
        hashes = content_hash(attrs_geom)
        self.last_keys = rows_of(keys_arrow)
        bt = bounds[take]
        if len(bt):
            lo, hi = bt[:, :2].min(axis=0), bt[:, 2:].max(axis=0)
            e = self.extent
            self.extent = [*np.minimum(lo, e[:2]), *np.maximum(hi, e[2:])] if e else [*lo, *hi]
        fields = [encode_field(from_numpy(rows_idx + first, pa.int64())), encode_field(self.last_keys),
                  encode_field(hashes), attrs_geom, encode_field(g3857)]
        if self.computes_area:
            area = areas[take] if len(take) != len(areas) else areas
            self.areas_missing += int(np.isnan(area).sum())
            fields.append(encode_field(from_numpy(area, pa.float64(), nan_is_null=True)))  # NaN: the database computes it
            if self.area_check is not None:
                self.area_check.add(self.last_keys, self.last_values[self.area_check.index], area)
        return fields, m, int(bad.sum())


class AreaCheck:
    """Stated vs ellipsoidal area of the loaded rows, kept as the batches go by: how many
    deviate by more than ``tolerance`` and the ``limit`` worst (the same figures
    :func:`geobase.ingest.loader.area_deviation` computes in SQL over a table), so a first load
    needs no scan of the rows it has just written. Rows whose area the database computes (NaN
    here, see :mod:`geobase.ingest.area`) are listed in ``pending_keys`` for the caller to check
    in SQL and :meth:`merge`."""

    def __init__(self, spec: LayerSpec, tolerance: float | None = None, limit: int = 20):
        self.index = spec.attribute_names.index(spec.stated_area_field)
        self.factor = stated_area_factor(spec.stated_area_unit)
        self.tolerance = AREA_TOLERANCE if tolerance is None else tolerance
        self.limit = limit
        self.count = 0
        self.pending_keys: list[str] = []
        self._worst: tuple[np.ndarray, list, np.ndarray, np.ndarray] = (np.zeros(0), [], np.zeros(0), np.zeros(0))

    def add(self, keys: pa.Array, stated: pa.Array, area: np.ndarray) -> None:
        s = stated.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False) * self.factor
        unknown = np.isnan(area)
        if unknown.any():
            self.pending_keys += keys.filter(from_numpy(unknown & (s > 0))).to_pylist()
        with np.errstate(invalid="ignore"):
            dev = (s > 0) & (np.abs(area - s) > self.tolerance * s)
        if dev.any():
            i = np.flatnonzero(dev)
            self._take(len(i), keys.take(from_numpy(i, pa.int64())).to_pylist(), s[i], area[i])

    def merge(self, count: int, samples: list[dict]) -> None:
        """Add deviations found elsewhere (in SQL, as :func:`area_deviation` reports them)."""
        self._take(count, [d["key"] for d in samples], np.array([d["stated_m2"] for d in samples], dtype=float),
                   np.array([d["ellipsoidal_m2"] for d in samples], dtype=float))

    def _take(self, count: int, keys: list, s: np.ndarray, area: np.ndarray) -> None:
        """Count ``count`` deviating rows and keep the worst of them and of those seen so far."""
        self.count += count
        w_rel, w_keys, w_s, w_a = self._worst
        rel_all = np.concatenate([w_rel, np.abs(area - s) / s])
        keys_all = w_keys + keys
        s_all, a_all = np.concatenate([w_s, s]), np.concatenate([w_a, area])
        keep = np.argsort(-rel_all, kind="stable")[: self.limit]
        self._worst = (rel_all[keep], [keys_all[k] for k in keep], s_all[keep], a_all[keep])

    def result(self) -> tuple[int, list[dict]]:
        _rel, keys, s, a = self._worst
        return self.count, [{"key": k, "stated_m2": round(float(st), 2), "ellipsoidal_m2": round(float(ar), 2),
                             "deviation": round(float((ar - st) / st), 4)} for k, st, ar in zip(keys, s, a)]

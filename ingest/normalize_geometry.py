"""Geometries of a delivered batch: checked, repaired, promoted to multi-geometries and
reprojected to CGCS2000 (EPSG:4490) plus Web Mercator, vectorised with shapely 2 / pyproj over
coordinate arrays. A clean batch of polygons is reprojected and written as WKB straight from
its coordinate arrays (:mod:`geobase.ingest.wkb`), with no per-geometry GEOS work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import shapely
from geobase.ingest.area import polygon_areas
from geobase.ingest.report import QualityReport
from geobase.ingest.shp import ShapeBatch
from geobase.ingest.threads import in_thread
from geobase.ingest.wkb import multipolygon_layout, single_ring_polygons
from pyproj import CRS, Transformer

from geobase.specs import LayerSpec

# shapely type ids
POINT, LINE, POLY, MPOINT, MLINE, MPOLY, COLL = 0, 1, 3, 4, 5, 6, 7
FAMILY = {"MultiPolygon": {POLY, MPOLY}, "MultiLineString": {LINE, MLINE, 2}, "MultiPoint": {POINT, MPOINT}}
FAMILY_NAME = {POINT: "Point", LINE: "LineString", 2: "LinearRing", POLY: "Polygon", MPOINT: "MultiPoint",
               MLINE: "MultiLineString", MPOLY: "MultiPolygon", COLL: "GeometryCollection"}
BUILDERS = {"MultiPolygon": shapely.multipolygons, "MultiLineString": shapely.multilinestrings,
            "MultiPoint": shapely.multipoints}
#: Outside the source CRS's area of use by more than this many degrees counts as "outside".
AREA_OF_USE_MARGIN_DEG = 1.0
#: EPSG:3857's sphere radius (PROJ ``webmerc``: WGS84 semi-major axis).
WEB_MERCATOR_R = 6378137.0
_DEG = np.pi / 180

KeyOf = Callable[[int], "str | None"]
#: (indices of the rows with a usable geometry, per-row "geometry unusable" flags, WKB in
#: EPSG:4490, WKB in EPSG:3857, bounds of the usable rows, their ellipsoidal areas)
GeometryBatch = tuple[np.ndarray, np.ndarray, pa.Array, pa.Array, np.ndarray, np.ndarray]


@dataclass
class ParsedGeometry:
    """A batch's geometries as GEOS objects (2D), with their validity; for a clean batch of
    polygons, also their coordinates already in EPSG:4490 (:meth:`GeometryNormalizer.prepare`)."""

    geoms: np.ndarray
    has_z: np.ndarray
    valid: np.ndarray
    #: (x, y in EPSG:4490, ring offsets, polygon offsets, geometry offsets) or None
    coords: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


def parse_geometry(wkb: pa.Array | list | ShapeBatch) -> ParsedGeometry:
    """Parse the batch's WKB (or take the polygons the numpy Shapefile reader built) and test
    validity: the GEOS work of a batch that needs no state of the normaliser, so the reader
    thread does it for the next batch while this one is normalised (shapely releases the GIL)."""
    if isinstance(wkb, ShapeBatch):
        geoms = wkb.geoms
    elif isinstance(wkb, pa.Array):
        geoms = shapely.from_wkb(wkb.to_numpy(zero_copy_only=False), on_invalid="ignore")
    else:
        geoms = shapely.from_wkb(np.asarray(wkb, dtype=object), on_invalid="ignore")
    has_z = shapely.has_z(geoms)
    if has_z.any():  # Polygon Z from KML/CAD: storage is 2D
        geoms[has_z] = shapely.force_2d(geoms[has_z])
    return ParsedGeometry(geoms, has_z, shapely.is_valid(geoms))


def web_mercator(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EPSG:4490/4326 degrees -> EPSG:3857 metres with numpy: PROJ's ``webmerc`` formulas
    (x = R·λ, y = R·asinh(tan φ)), ~20x faster than a pyproj call. x is bit-identical to PROJ, y
    within 4e-9 m (libm vs numpy rounding of tan/asinh in the last bit)."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    return WEB_MERCATOR_R * (lon * _DEG), WEB_MERCATOR_R * np.arcsinh(np.tan(lat * _DEG))


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


def _not_lonlat(b: np.ndarray) -> np.ndarray:
    """Rows whose bounds are not even longitude/latitude (a wrong CRS, or garbage)."""
    return (b[:, 0] < -180.5) | (b[:, 2] > 180.5) | (b[:, 1] < -90.5) | (b[:, 3] > 90.5)


def _reproject(geoms: np.ndarray, transformer: Transformer) -> np.ndarray:
    def fn(x, y):
        return transformer.transform(x, y)
    return shapely.transform(geoms, lambda c: np.column_stack(fn(c[:, 0], c[:, 1])))


class GeometryNormalizer:
    """The geometry half of a batch; counts over the whole file (types, rows outside the CRS's
    area of use) for the report and the whole-file CRS check."""

    def __init__(self, spec: LayerSpec, src_crs: CRS, report: QualityReport):
        self.report = report
        # building a transformer searches PROJ's database (~0.3 s each): the one to EPSG:4490 is
        # built in a thread while the load is being set up, the one to 3857 only if the general
        # path needs it (the fast path computes Web Mercator itself, see web_mercator)
        self._to_4490 = None if src_crs.to_epsg() == 4490 else in_thread(
            functools.partial(Transformer.from_crs, src_crs, 4490, always_xy=True), name="ingest-transformer")
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
        #: polygon layers: the ellipsoidal area is computed here and loaded as ``_area_m2``
        self.computes_area = spec.geometry == "MultiPolygon"

    @property
    def to_4490(self) -> Transformer | None:
        """Source CRS -> EPSG:4490 (None: the source is EPSG:4490)."""
        return self._to_4490() if self._to_4490 is not None else None

    @functools.cached_property
    def to_3857(self) -> Transformer:
        return Transformer.from_crs(4490, 3857, always_xy=True)

    def prepare(self, wkb: pa.Array | list) -> ParsedGeometry:
        """:func:`parse_geometry`, and for a clean batch of polygons (the usual one) their
        coordinates reprojected to EPSG:4490: the reader thread does it for the next batch while
        this one is normalised (PROJ releases the GIL). Reprojection was the largest single cost
        of the batch on the normalising thread. Reports nothing: :meth:`process` does."""
        parsed = parse_geometry(wkb)
        if self._fast_candidate(parsed):
            parsed.coords = self._fast_coords(parsed.geoms, wkb if isinstance(wkb, pa.Array | ShapeBatch) else None)
        return parsed

    def _fast_candidate(self, parsed: ParsedGeometry, missing: np.ndarray | None = None,
                        types: np.ndarray | None = None) -> bool:
        """A batch of valid, non-empty 2D Polygons/MultiPolygons for a polygon layer."""
        if self.geometry != "MultiPolygon" or parsed.has_z.any() or not parsed.valid.all():
            return False
        geoms = parsed.geoms
        missing = shapely.is_missing(geoms) | shapely.is_empty(geoms) if missing is None else missing
        types = shapely.get_type_id(geoms) if types is None else types
        return not missing.any() and bool(np.isin(types, (POLY, MPOLY)).all())

    def _fast_coords(self, geoms: np.ndarray, raw: pa.Array | ShapeBatch | None):
        """(x, y in EPSG:4490, ring, polygon and geometry offsets) of a batch of polygons."""
        n = len(geoms)
        if isinstance(raw, ShapeBatch):  # one-ring polygons read from the .shp: their coordinates
            simple = (raw.coords, raw.ring_off) if raw.coords is not None else None
        else:
            simple = single_ring_polygons(raw) if raw is not None else None
        if simple is not None:  # the delivered WKB itself: no need to walk the GEOS objects
            coords, ring_off = simple
            gtype, offs = shapely.GeometryType.POLYGON, (ring_off, np.arange(n + 1))
        else:
            gtype, coords, offs = shapely.to_ragged_array(geoms)
        if gtype == shapely.GeometryType.POLYGON:
            ring_off, poly_off, geom_off = offs[0], offs[1], np.arange(n + 1)
        elif gtype == shapely.GeometryType.MULTIPOLYGON:
            ring_off, poly_off, geom_off = offs
        else:  # pragma: no cover - the caller checked the types
            return None
        x, y = coords[:, 0], coords[:, 1]
        if self.to_4490 is not None:
            x, y = self.to_4490.transform(x, y)
            x, y = np.asarray(x), np.asarray(y)
        return x, y, ring_off, poly_off, geom_off

    def process(self, wkb: pa.Array | list, parsed: ParsedGeometry, key_of: KeyOf, bad: np.ndarray,
                row_numbers: np.ndarray) -> GeometryBatch:
        """Check, repair, promote and reproject the batch's geometries (see :data:`GeometryBatch`);
        ``bad`` (per row) is set for the rows whose geometry is unusable."""
        raw = wkb if isinstance(wkb, pa.Array | ShapeBatch) else None
        geoms, _has_z = parsed.geoms, parsed.has_z
        missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        geom_bad = missing.copy()
        types = self._count(geoms, missing, key_of, bad, row_numbers)
        invalid = ~missing & ~parsed.valid
        if self._fast_candidate(parsed, missing, types):
            fast = self._polygons_fast(parsed, key_of, row_numbers, raw)
            if fast is not None:
                return fast
        if invalid.any():
            types = self._repair(geoms, invalid, geom_bad, key_of, bad, row_numbers)
        wrong = ~missing & ~np.isin(types, list(self.family)) & ~geom_bad
        for i in np.flatnonzero(wrong):
            bad[i] = geom_bad[i] = True
            self.report.add("wrong_geometry_type", int(row_numbers[i]), key_of(i),
                            f"{FAMILY_NAME.get(int(types[i]), types[i])} in a {self.geometry} layer")
        idx = np.flatnonzero(~geom_bad)  # rows whose geometry we can build
        g, idx = self._to_storage(geoms[idx], idx, geom_bad, key_of, bad, row_numbers)
        return self._encode(g, idx, geom_bad)

    def _count(self, geoms: np.ndarray, missing: np.ndarray, key_of: KeyOf, bad: np.ndarray,
               row_numbers: np.ndarray) -> np.ndarray:
        """Report empty geometries, count the types of the others; returns the type ids."""
        for i in np.flatnonzero(missing):
            bad[i] = True
            self.report.add("empty_geometry", int(row_numbers[i]), key_of(i), "geometry is empty or missing")
        present = ~missing
        types = shapely.get_type_id(geoms)
        for t, c in zip(*np.unique(types[present], return_counts=True)):
            name = FAMILY_NAME.get(int(t), str(t))
            self.type_counts[name] = self.type_counts.get(name, 0) + int(c)
        self.rows_with_geom += int(present.sum())
        return types

    def _repair(self, geoms: np.ndarray, invalid: np.ndarray, geom_bad: np.ndarray, key_of: KeyOf,
                bad: np.ndarray, row_numbers: np.ndarray) -> np.ndarray:
        """Repair invalid geometries in place (a polygon layer keeps the polygonal parts);
        report each repair or its failure. Returns the type ids after the repair."""
        reasons = shapely.is_valid_reason(geoms[invalid])
        repaired = shapely.make_valid(geoms[invalid])
        if self.geometry == "MultiPolygon":  # keep the polygonal parts only
            repaired = np.array([_polygonal(g) for g in repaired], dtype=object)
        geoms[invalid] = repaired
        for i, reason in zip(np.flatnonzero(invalid), reasons):
            g = geoms[i]
            if g is None or shapely.is_empty(g) or not shapely.is_valid(g):
                bad[i] = geom_bad[i] = True
                self.report.add("invalid_unrepairable", int(row_numbers[i]), key_of(i),
                                f"{reason}; repair left no valid geometry")
            else:
                self.report.add("invalid_repaired", int(row_numbers[i]), key_of(i), reason)
        return shapely.get_type_id(geoms)

    def _outside(self, b: np.ndarray) -> np.ndarray:
        """Rows whose bounds (EPSG:4490) leave the source CRS's area of use (with the margin)."""
        outside = np.zeros(len(b), dtype=bool)
        if self.aou is not None:
            w, s, e, nn = self.aou
            if w <= e:
                outside |= (b[:, 0] < w) | (b[:, 2] > e)
            else:  # the area of use crosses the antimeridian (e.g. Alaska: 172E .. 130W)
                outside |= ((b[:, 0] < w) & (b[:, 0] > e)) | ((b[:, 2] < w) & (b[:, 2] > e))
            outside |= (b[:, 1] < s) | (b[:, 3] > nn)
        return outside

    def _report_outside(self, i: int, b: np.ndarray, impossible: bool, key_of: KeyOf, row_numbers: np.ndarray) -> None:
        self.rows_outside += 1
        self.report.add("coordinates_impossible" if impossible else "outside_crs_area", int(row_numbers[i]), key_of(i),
                        f"bounds {tuple(round(float(x), 4) for x in b)} after transforming to EPSG:4490 "
                        f"lie outside the source CRS's area of use")

    def _to_storage(self, g: np.ndarray, idx: np.ndarray, geom_bad: np.ndarray, key_of: KeyOf, bad: np.ndarray,
                    row_numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reproject to EPSG:4490, drop rows that are not longitude/latitude then (reporting
        them and rows outside the CRS's area of use) and promote to multi-geometries."""
        if self.to_4490 is not None and len(g):
            g = _reproject(g, self.to_4490)
        if not len(g):
            return g, idx
        b = shapely.bounds(g)
        lonlat_bad = ~np.isfinite(b).all(axis=1) | _not_lonlat(b)
        for j in np.flatnonzero(lonlat_bad | self._outside(b)):
            i = idx[j]
            if lonlat_bad[j]:  # not even longitude/latitude: unusable
                bad[i] = geom_bad[i] = True
            self._report_outside(i, b[j], bool(lonlat_bad[j]), key_of, row_numbers)
        if lonlat_bad.any():
            g = g[~lonlat_bad]
            idx = idx[~lonlat_bad]
        parts, pidx = shapely.get_parts(g, return_index=True)
        multi = np.empty(len(g), dtype=object)
        built = BUILDERS[self.geometry](parts, indices=pidx)
        multi[: len(built)] = built
        return multi, idx

    def _encode(self, g: np.ndarray, idx: np.ndarray, geom_bad: np.ndarray) -> GeometryBatch:
        """WKB for a binary COPY (geometry_recv takes the SRID from the column's typmod) in both
        CRSs, bounds and (polygon layers) ellipsoidal areas."""
        g3857 = _reproject(g, self.to_3857) if len(g) else g
        if len(g):
            ewkb4490 = pa.array(shapely.to_wkb(g), pa.binary())
            ewkb3857 = pa.array(shapely.to_wkb(g3857), pa.binary())
        else:
            ewkb4490 = ewkb3857 = pa.array([], pa.binary())
        areas = np.zeros(0)
        if self.computes_area and len(g):
            _t, coords, (ring_off, poly_off, geom_off) = shapely.to_ragged_array(g)
            areas = polygon_areas(coords[:, 0], coords[:, 1], ring_off, poly_off, geom_off)
        return idx, geom_bad, ewkb4490, ewkb3857, shapely.bounds(g).reshape(-1, 4), areas

    def _polygons_fast(self, parsed: ParsedGeometry, key_of: KeyOf, row_numbers: np.ndarray,
                       raw: pa.Array | None = None) -> GeometryBatch | None:
        """A batch of valid, non-empty 2D (Multi)Polygons: reproject the coordinate arrays (done
        by :meth:`prepare` in the reader thread, if it ran) and write both WKBs from them
        (:mod:`geobase.ingest.wkb`), with no per-geometry GEOS work. None (before reporting
        anything) when a coordinate is unusable: the general path reports it."""
        got = parsed.coords if parsed.coords is not None else self._fast_coords(parsed.geoms, raw)
        if got is None:
            return None
        x, y, ring_off, poly_off, geom_off = got
        n = len(parsed.geoms)
        layout = multipolygon_layout(ring_off, poly_off, geom_off)
        if layout is None:
            return None
        starts = ring_off[poly_off[geom_off[:-1]]]
        b = np.column_stack([np.minimum.reduceat(x, starts), np.minimum.reduceat(y, starts),
                             np.maximum.reduceat(x, starts), np.maximum.reduceat(y, starts)])
        if not np.isfinite(b).all() or _not_lonlat(b).any():
            return None
        for i in np.flatnonzero(self._outside(b)):
            self._report_outside(i, b[i], False, key_of, row_numbers)
        x3, y3 = web_mercator(x, y)
        areas = polygon_areas(x, y, ring_off, poly_off, geom_off)
        return (np.arange(n), np.zeros(n, dtype=bool), layout.wkb(x, y), layout.wkb(x3, y3), b, areas)

"""Tabulation and steep farmland on Apache Sedona, over GeoParquet exports of the layers.

Which Sedona: SedonaDB (PyPI ``sedonadb``, Apache Sedona's single-node engine), because Sedona
for Spark cannot be installed from the registries this project may use: its JVM jars
(``sedona-spark-shaded``, ``geotools-wrapper``) are published on Maven Central only, and the
``apache-sedona`` wheel carries just the Python bindings. The join below is written in the
Sedona SQL that Sedona for Spark shares (``ST_Intersects`` join, ``ST_Covers``,
``ST_Intersection``, ``ST_AsBinary``) over the same GeoParquet, so a Spark job would load the
exports with ``sedona.read.format("geoparquet")``, register the views ``a`` and ``b``, run the
same statement and measure the pieces in a pandas UDF; that path is not run here (no jars).

Areas: PostGIS measures ``ST_Area(geom::geography)`` on the geography's ellipsoid (CGCS2000 =
GRS80) with GeographicLib's geodesic polygon area, and uses the stored ``_area_m2`` where one
feature covers the other. Sedona's ``ST_Area`` is planar, so the engine takes the pieces' WKB
out of Sedona and measures them with pyproj's ``Geod(ellps="GRS80")`` (the same GeographicLib
algorithm), and takes ``_area_m2`` exactly where PostGIS does. Same pairs, same classes, same
counts; areas equal to rounding (see ``tests/interop_sedona``).

Imported on first use only (``sedonadb`` is an optional extra: ``pip install geobase[sedona]``)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import psycopg

from geobase.analysis.common import class_column, inputs_checked, layer_versions, table_report, units
from geobase.analysis.engines.export import export_layer
from geobase.analysis.input import InputGeometry
from geobase.analysis.tabulate import aoi_from_code
from geobase.errors import InvalidInput, ServiceUnavailable
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def connect():
    """A SedonaDB session; a clear error when the optional engine is not installed."""
    try:
        import sedonadb  # the same module apache-sedona exposes as ``sedona.db``
    except ImportError as exc:
        raise ServiceUnavailable("the Sedona engine is not installed: run scripts/setup.sh --sedona "
                                 "(pip install 'geobase[sedona]')") from exc
    return sedonadb.connect()


def _ident(name: str) -> str:
    """A field name of a layer spec, quoted for Sedona SQL (spec names only, checked)."""
    if not _IDENT.match(name):
        raise InvalidInput(f"{name!r} is not a plain field name", parameter="class_a")
    return f'"{name}"'


def geodesic_areas(wkbs: list[bytes | None]):
    """Ellipsoidal areas (GRS80, GeographicLib via pyproj) of WKB geometries: the polygons in
    them (exterior minus holes, whatever the orientation), 0 for lines and points, as
    ``ST_Area(geography)`` measures them."""
    import numpy as np
    import shapely
    from pyproj import Geod

    geod = Geod(ellps="GRS80")
    out = np.zeros(len(wkbs))
    for i, w in enumerate(wkbs):
        if w is None:
            continue
        g = shapely.from_wkb(w)
        parts = shapely.get_parts(shapely.get_parts(g))
        for p in parts:
            if p.geom_type != "Polygon" or p.is_empty:
                continue
            area = abs(geod.polygon_area_perimeter(*p.exterior.xy)[0])
            for ring in p.interiors:
                area -= abs(geod.polygon_area_perimeter(*ring.xy)[0])
            out[i] += area
    return out


def tabulate_pairs_sql(fa: str, fb: str, with_aoi: bool) -> str:
    """Every intersecting pair of A x B with what PostGIS would measure for it: the stored area
    of the covered feature (``known``) or the piece to measure (``piece``)."""
    a_cls, b_cls = f"CAST(a.{_ident(fa)} AS VARCHAR)", f"CAST(b.{_ident(fb)} AS VARCHAR)"
    if not with_aoi:
        return f"""
        SELECT {a_cls} AS ca, {b_cls} AS cb,
               CASE WHEN ST_Covers(b.geometry, a.geometry) THEN a._area_m2
                    WHEN ST_Covers(a.geometry, b.geometry) THEN b._area_m2 END AS known,
               CASE WHEN ST_Covers(b.geometry, a.geometry) THEN
                         CASE WHEN a._area_m2 IS NULL THEN ST_AsBinary(a.geometry) END
                    WHEN ST_Covers(a.geometry, b.geometry) THEN
                         CASE WHEN b._area_m2 IS NULL THEN ST_AsBinary(b.geometry) END
                    ELSE ST_AsBinary(ST_Intersection(a.geometry, b.geometry)) END AS piece
        FROM a JOIN b ON ST_Intersects(a.geometry, b.geometry)"""
    return f"""
        SELECT {a_cls} AS ca, {b_cls} AS cb,
               CASE WHEN ST_Covers(aoi.geometry, a.geometry) AND ST_Covers(b.geometry, a.geometry)
                    THEN a._area_m2 END AS known,
               CASE WHEN ST_Covers(aoi.geometry, a.geometry) AND ST_Covers(b.geometry, a.geometry) THEN
                         CASE WHEN a._area_m2 IS NULL THEN ST_AsBinary(a.geometry) END
                    WHEN ST_Covers(aoi.geometry, a.geometry)
                         THEN ST_AsBinary(ST_Intersection(a.geometry, b.geometry))
                    ELSE ST_AsBinary(ST_Intersection(ST_Intersection(a.geometry, aoi.geometry), b.geometry)) END
                    AS piece
        FROM aoi, a JOIN b ON ST_Intersects(a.geometry, b.geometry)
        WHERE ST_Intersects(a.geometry, aoi.geometry) AND ST_Intersects(b.geometry, aoi.geometry)"""


def tabulate_rows(path_a: Path, path_b: Path, fa: str, fb: str, aoi_wkb: bytes | None = None) -> list[tuple]:
    """(class a, class b, m², pairs) of the two GeoParquet files, computed by Sedona (the join
    and the pieces) and pyproj (the ellipsoidal areas), batch by batch."""
    import math

    sd = connect()
    sd.read_parquet(str(path_a)).to_view("a", overwrite=True)
    sd.read_parquet(str(path_b)).to_view("b", overwrite=True)
    if aoi_wkb is not None:
        import geoarrow.pyarrow as ga
        import pyarrow as pa

        sd.create_data_frame(pa.table({"geometry": ga.with_crs(ga.as_wkb([aoi_wkb]), "EPSG:4490")})).to_view(
            "aoi", overwrite=True)
    cells: dict[tuple[str, str], list[float]] = {}
    reader = sd.sql(tabulate_pairs_sql(fa, fb, aoi_wkb is not None)).to_arrow_reader()
    for batch in reader:
        d = batch.to_pydict()
        measured = geodesic_areas(d["piece"])
        for ca, cb, known, m in zip(d["ca"], d["cb"], d["known"], measured):
            acc = cells.setdefault((ca, cb), [0.0, 0])
            acc[0] += float(known) if known is not None and not math.isnan(known) else float(m)
            acc[1] += 1
    return [(ca, cb, v[0], v[1]) for (ca, cb), v in sorted(cells.items())]


async def tabulate(conn: psycopg.AsyncConnection, settings: Settings, registry: Registry, visible: list[LayerSpec],
                   layer_a: str, layer_b: str, *, aoi: InputGeometry | None = None, aoi_code: str | None = None,
                   principal=None, workdir: Path | None = None) -> dict:
    """The tabulation of :func:`geobase.analysis.tabulate.tabulate`, run by Sedona over
    GeoParquet exports of the two layers' current versions; the same report."""
    import asyncio

    vis = {s.name: s for s in visible}
    for p, n in (("layer_a", layer_a), ("layer_b", layer_b)):
        if n not in vis or vis[n].geometry != "MultiPolygon":
            raise InvalidInput(f"{p}: unknown, hidden or non-polygon layer {n!r}", parameter=p)
    fa = class_column(registry, vis[layer_a], None, "class_a", principal)
    fb = class_column(registry, vis[layer_b], None, "class_b", principal)
    aoi_wkb, aoi_m2, aoi_info = None, None, {"whole": True}
    if aoi_code:
        aoi_wkb, aoi_m2, name = await aoi_from_code(conn, aoi_code)
        aoi_info = {"code": aoi_code, "name": name, "area": units(aoi_m2)}
    elif aoi is not None:
        aoi_wkb, aoi_m2 = aoi.wkb, aoi.area_m2
        aoi_info = {"geometry": aoi.geojson, "area": units(aoi_m2), "input_crs": aoi.source_crs}
    inputs_checked()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        pa_, _ = await export_layer(conn, settings, registry, layer_a, Path(tmp), principal)
        pb_, _ = await export_layer(conn, settings, registry, layer_b, Path(tmp), principal)
        rows = await asyncio.to_thread(tabulate_rows, pa_, pb_, fa, fb, aoi_wkb)
        if aoi_m2 is None:
            aoi_m2 = await asyncio.to_thread(_sum_areas, pa_)
            aoi_info["area"] = units(aoi_m2)
            aoi_info["area_source"] = f"sum of {layer_a} areas"
    report = table_report(layer_a, fa, layer_b, fb, rows, aoi_m2, aoi_info,
                          await layer_versions(conn, [layer_a, layer_b]))
    return {**report, "engine": "sedona"}


def _sum_areas(path: Path) -> float:
    """Sum of a layer's areas as PostGIS sums them: ``_area_m2``, else the geodesic area."""
    sd = connect()
    sd.read_parquet(str(path)).to_view("s", overwrite=True)
    total = 0.0
    for batch in sd.sql("SELECT _area_m2 AS known, CASE WHEN _area_m2 IS NULL THEN ST_AsBinary(geometry) END AS piece "
                        "FROM s").to_arrow_reader():
        d = batch.to_pydict()
        for known, m in zip(d["known"], geodesic_areas(d["piece"])):
            total += float(known) if known is not None else float(m)
    return total

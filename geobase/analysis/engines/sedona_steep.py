"""Steep farmland with Sedona: Sedona selects the farmland parcels from the GeoParquet export of
the land-use layer; the slope zonal statistics are the DEM code of
:mod:`geobase.analysis.slope` (one label raster, ``numpy.bincount``), so the verdict of every
parcel is the one PostGIS's path gives. (Sedona's raster functions would rasterise and
average differently; the point of this engine is the province-wide vector side, read from
GeoParquet.)"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import psycopg

from geobase.analysis.common import inputs_checked, layer_versions
from geobase.analysis.engines.export import export_layer
from geobase.analysis.engines.sedona import connect, geodesic_areas
from geobase.analysis.slope import FARMLAND_CODES, _zonal, dem_path, steep_report
from geobase.errors import InvalidInput
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry

_CODE = re.compile(r"^[0-9A-Za-z]{1,10}$")


def farmland_rows(path: Path, codes: tuple[str, ...]) -> list[tuple]:
    """(id, dlbm, gdpdjb, zldwdm, area, WKB) of the parcels of ``codes``, by id (byte order, as
    PostGIS's ``COLLATE "C"``), read by Sedona; id: the export's, the Features API's id
    (county-qualified in a province); area = ``_area_m2``, else the ellipsoidal area (as
    PostGIS's coalesce)."""
    if not codes or not all(_CODE.match(c) for c in codes):
        raise InvalidInput("codes: land-use codes are letters and digits", parameter="codes")
    sd = connect()
    sd.read_parquet(str(path)).to_view("f", overwrite=True)
    in_list = ", ".join(f"'{c}'" for c in codes)
    out: list[tuple] = []
    q = (f"SELECT id, dlbm, gdpdjb, zldwdm, _area_m2, ST_AsBinary(geometry) AS wkb FROM f "
         f"WHERE dlbm IN ({in_list}) ORDER BY id")
    for batch in sd.sql(q).to_arrow_reader():
        d = batch.to_pydict()
        measured = geodesic_areas(d["wkb"])
        for i in range(len(d["id"])):
            area = d["_area_m2"][i]
            out.append((d["id"][i], d["dlbm"][i], d["gdpdjb"][i], d["zldwdm"][i],
                        float(area) if area is not None else float(measured[i]), d["wkb"][i]))
    return out


async def steep_farmland(conn: psycopg.AsyncConnection, settings: Settings, registry: Registry,
                         visible: list[LayerSpec], *, threshold_deg: float = 25.0, min_share: float | None = None,
                         codes: tuple[str, ...] = FARMLAND_CODES, layer: str = "land_use", dem_layer: str = "dem",
                         principal=None, workdir: Path | None = None) -> dict:
    """:func:`geobase.analysis.slope.steep_farmland` with the parcels read by Sedona from a
    GeoParquet export; the same report."""
    vis = {s.name: s for s in visible}
    for n in (layer, dem_layer):
        if n not in vis:
            raise InvalidInput(f"layer {n!r} is unknown or not visible", parameter="layer")
    if not (0 < threshold_deg < 90):
        raise InvalidInput("threshold_deg: must be between 0 and 90", parameter="threshold_deg")
    path, dem_version = await dem_path(conn, settings, dem_layer)
    inputs_checked()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        parquet, _ = await export_layer(conn, settings, registry, layer, Path(tmp), principal)
        rows = await asyncio.to_thread(farmland_rows, parquet, tuple(codes))
    stats = await asyncio.to_thread(_zonal, path, [r[5] for r in rows], threshold_deg)
    report = steep_report(rows, stats, threshold_deg, min_share) | {"engine": "sedona"}
    versions = await layer_versions(conn, [layer])
    versions[dem_layer] = {"version": dem_version, "path": str(path.name)}
    report["versions"] = versions
    return report

"""A small synthetic county loaded straight into the versioned ``data.<layer>`` tables, the way
an ingest commits a version (rows retired with ``_vto``, new rows with ``_vfrom``, the version
row with its extent, ``current_version`` moved), so tile tests do not depend on the ingest.

Layout (lon 113.00..113.10, lat 30.00..30.10):
  land_use       20 x 20 parcels of 0.005°, dlbm cycling through LAND_CODES by column
  control_lines  STBHHX square over the west half, CZKFBJ square in the east
  water_areas    one lake in the middle
  dem            a tilted plane (1 m rise per 10 m east) as a GeoTIFF in EPSG:4490
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg

from geobase.db import database_url
from geobase.settings import Settings

LON0, LAT0, STEP, N = 113.0, 30.0, 0.005, 20
LAND_CODES = ["0101", "0301", "0701", "1101"]
LAND_COLOURS = {"0101": "#f3e46e", "0301": "#215821", "0701": "#ef804f", "1101": "#185a87"}


def square(x0: float, y0: float, x1: float, y1: float) -> str:
    return f"MULTIPOLYGON((({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0})))"


def commit_version(conn: psycopg.Connection, layer: str, rows: list[dict], geom_col: str = "wkt") -> int:
    """Replace the layer's current rows by ``rows`` as a new version; returns the version."""
    cur = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM catalog.layer_versions WHERE layer = %s", (layer,))
    v = cur.fetchone()[0]
    conn.execute(f'UPDATE data."{layer}" SET _vto = %s WHERE _vto IS NULL', (v,))
    measure = "_area_m2"
    for r in rows:
        attrs = {k: val for k, val in r.items() if k not in (geom_col, "_key")}
        cols = ", ".join(f'"{k}"' for k in attrs)
        ph = ", ".join(["%s"] * len(attrs))
        conn.execute(
            f'INSERT INTO data."{layer}" (_key, _hash, _vfrom, {cols}, {measure}, geom, geom_3857) '
            f"SELECT %s, md5(%s), %s, {ph}, ST_Area(g::geography), g, ST_Transform(g, 3857) "
            f"FROM (SELECT ST_GeomFromText(%s, 4490) AS g) s",
            (r["_key"], json.dumps(r, sort_keys=True), v, *attrs.values(), r[geom_col]),
        )
    conn.execute(
        "INSERT INTO catalog.layer_versions (layer, version, mode, source_name, rows_total, rows_added, extent) "
        "SELECT %s, %s, 'replace', 'test', count(*), count(*), "
        "ARRAY[ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)] FROM "
        f'(SELECT ST_Extent(geom)::geometry AS e, count(*) FROM data."{layer}" WHERE _vto IS NULL) s GROUP BY e',
        (layer, v),
    )
    conn.execute("UPDATE catalog.layers SET current_version = %s WHERE name = %s", (v, layer))
    return v


def land_use_rows() -> list[dict]:
    rows = []
    for i in range(N):
        for j in range(N):
            code = LAND_CODES[i % len(LAND_CODES)]
            x0, y0 = LON0 + i * STEP, LAT0 + j * STEP
            rows.append({"_key": f"LU{i:02d}{j:02d}", "bsm": f"LU{i:02d}{j:02d}", "dlbm": code, "dlmc": f"class {code}",
                         "qsdwmc": "secret owner", "zldwmc": "village", "tbmj": 250000.0,
                         "wkt": square(x0, y0, x0 + STEP, y0 + STEP)})
    return rows


def control_rows() -> list[dict]:
    return [
        {"_key": "K1", "bsm": "K1", "kind": "STBHHX", "kzxmc": "red line",
         "wkt": square(LON0 + 0.01, LAT0 + 0.01, LON0 + 0.045, LAT0 + 0.09)},
        {"_key": "K2", "bsm": "K2", "kind": "CZKFBJ", "kzxmc": "town",
         "wkt": square(LON0 + 0.06, LAT0 + 0.02, LON0 + 0.09, LAT0 + 0.05)},
    ]


def water_rows(shift: float = 0.0) -> list[dict]:
    return [{"_key": "W1", "fid_src": "W1", "kind": "lake", "name": "Test lake",
             "wkt": square(LON0 + 0.04 + shift, LAT0 + 0.06, LON0 + 0.06 + shift, LAT0 + 0.08)}]


def write_dem(path: Path) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    w, h, res = 240, 240, 0.0005
    lon0, lat1 = LON0 - 0.01, LAT0 + 0.11
    cols = np.arange(w)[None, :].repeat(h, 0)
    metres_per_px = res * 111320 * np.cos(np.radians(30.05))
    elev = (100 + cols * metres_per_px * 0.1).astype("float32")  # 10% grade eastwards = 5.71°
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32", crs="EPSG:4490",
                       transform=from_origin(lon0, lat1, res, res), nodata=-9999, tiled=True,
                       blockxsize=128, blockysize=128) as dst:
        dst.write(elev, 1)
    return path


def register_dem(conn: psycopg.Connection, path: Path) -> int:
    cur = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM catalog.layer_versions WHERE layer = 'dem'")
    v = cur.fetchone()[0]
    conn.execute(
        "INSERT INTO catalog.layer_versions (layer, version, mode, source_name, extent, metadata) "
        "VALUES ('dem', %s, 'replace', 'test', %s, %s)",
        (v, [LON0 - 0.01, LAT0 - 0.01, LON0 + 0.11, LAT0 + 0.11], json.dumps({"path": str(path)})))
    conn.execute("UPDATE catalog.layers SET current_version = %s WHERE name = 'dem'", (v,))
    return v


def load_test_county(settings: Settings, *, dem: bool = True, public_control_lines: bool = False) -> None:
    with psycopg.connect(database_url(settings)) as conn:
        commit_version(conn, "land_use", land_use_rows())
        commit_version(conn, "control_lines", control_rows())
        commit_version(conn, "water_areas", water_rows())
        if dem:
            register_dem(conn, write_dem(settings.data_path / "rasters" / "dem_v1.tif"))
        if public_control_lines:
            conn.execute("UPDATE catalog.layers SET sharing = 'public' WHERE name = 'control_lines'")
        conn.commit()

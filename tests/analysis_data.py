"""Small hand-made layers for the analysis tests: inserted straight into ``data.<layer>`` per
storage.py, with the catalog's version rows, so the tests do not depend on the ingest.

Geometry (lon/lat, EPSG:4490) around 118.30°E 30.00°N, cells of 0.01° (~0.96 x 1.11 km):
  land_use      4 x 4 cells; column 0 paddy 0101, column 1 forest 0301, column 2 urban
                residential 0701, column 3 industrial 0601 — a coverage
  planning_zones west half (cols 0-1) 030 farmland protection, east half 041 construction zone
  control_lines STBHHX over cell (row 3, col 2) (construction in the red line -> conflict);
                YJJBNT over column 0 rows 0-1; CZKFBJ over columns 2-3 (no overlap with YJJBNT)
  admin_divisions county 339901 (whole grid) and township 339901001 (rows 0-1)
  rivers        a line along lat 30.02 (between rows 1 and 2)
"""

from __future__ import annotations

import asyncio
import hashlib

import psycopg
import shapely
from psycopg import sql
from pyproj import Geod
from shapely.geometry import LineString, MultiLineString, MultiPolygon, box

X0, Y0, D = 118.30, 30.00, 0.01
GEOD = Geod(ellps="GRS80")


def geod_area(g) -> float:
    """Ellipsoidal area on GRS80 (= CGCS2000), computed independently of PostGIS."""
    return abs(GEOD.geometry_area_perimeter(g)[0])


def run(settings, fn):
    """Run ``fn(conn)`` on an async connection to the test database."""
    async def go():
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            return await fn(conn)
    return asyncio.run(go())


LAND = {0: ("0101", "水田"), 1: ("0301", "乔木林地"), 2: ("0701", "城镇住宅用地"), 3: ("0601", "工业用地")}


def cell(r: int, c: int):
    return box(X0 + c * D, Y0 + r * D, X0 + (c + 1) * D, Y0 + (r + 1) * D)


def insert(conn: psycopg.Connection, layer: str, rows: list[tuple[str, dict, object]], *, version: int = 1,
           vto: int | None = None, register: bool = True) -> None:
    for key, attrs, geom in rows:
        if geom.geom_type in ("Polygon",):
            geom = MultiPolygon([geom])
        if geom.geom_type == "LineString":
            geom = MultiLineString([geom])
        cols = list(attrs)
        measure = "_area_m2" if geom.geom_type == "MultiPolygon" else "_length_m"
        fn = "ST_Area" if measure == "_area_m2" else "ST_Length"
        q = sql.SQL(
            "INSERT INTO {t} (_key, _hash, _vfrom, _vto, {cols}, {m}, geom, geom_3857) "
            "SELECT %s, %s, %s, %s, {vals}, {fn}(g::geography), g, ST_Transform(g, 3857) "
            "FROM (SELECT ST_GeomFromWKB(%s, 4490) AS g) s"
        ).format(t=sql.Identifier("data", layer), cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
                 m=sql.Identifier(measure), vals=sql.SQL(", ").join(sql.Placeholder() * len(cols)), fn=sql.SQL(fn))
        h = hashlib.md5(f"{key}{attrs}{geom.wkt}".encode()).hexdigest()
        conn.execute(q, [key, h, version, vto, *attrs.values(), shapely.to_wkb(geom)])
    if register:
        register_version(conn, layer, version, len(rows))


def register_version(conn: psycopg.Connection, layer: str, version: int, n: int) -> None:
    conn.execute(
        "INSERT INTO catalog.layer_versions (layer, version, mode, source_name, rows_total) VALUES (%s,%s,'replace',%s,%s)"
        " ON CONFLICT DO NOTHING", (layer, version, f"test-{layer}-v{version}", n))
    conn.execute("UPDATE catalog.layers SET current_version = greatest(coalesce(current_version, 0), %s) WHERE name = %s",
                 (version, layer))


def load_small_county(url: str) -> None:
    with psycopg.connect(url) as conn:
        land = []
        for r in range(4):
            for c in range(4):
                code, name = LAND[c]
                land.append((f"LU{r}{c}", {"bsm": f"LU{r}{c}", "dlbm": code, "dlmc": name, "qsdwmc": "秘密村"},
                             cell(r, c)))
        insert(conn, "land_use", land)
        west = box(X0, Y0, X0 + 2 * D, Y0 + 4 * D)
        east = box(X0 + 2 * D, Y0, X0 + 4 * D, Y0 + 4 * D)
        insert(conn, "planning_zones", [("PZ1", {"bsm": "PZ1", "ghfqdm": "030"}, west),
                                        ("PZ2", {"bsm": "PZ2", "ghfqdm": "041"}, east)])
        insert(conn, "control_lines", [
            ("HX1", {"bsm": "HX1", "kind": "STBHHX"}, cell(3, 2)),
            ("NT1", {"bsm": "NT1", "kind": "YJJBNT"}, box(X0, Y0, X0 + D, Y0 + 2 * D)),
            ("KF1", {"bsm": "KF1", "kind": "CZKFBJ"}, box(X0 + 2 * D, Y0, X0 + 4 * D, Y0 + 3 * D)),
        ])
        insert(conn, "admin_divisions", [
            ("339901", {"xzqdm": "339901", "xzqmc": "示范县", "level": "county"}, box(X0, Y0, X0 + 4 * D, Y0 + 4 * D)),
            ("339901001", {"xzqdm": "339901001", "xzqmc": "甲镇", "level": "township"},
             box(X0, Y0, X0 + 4 * D, Y0 + 2 * D)),
        ])
        insert(conn, "rivers", [("R1", {"fid_src": "R1", "name": "清水河"},
                                 LineString([(X0 - D, Y0 + 2 * D), (X0 + 5 * D, Y0 + 2 * D)]))])
        conn.commit()

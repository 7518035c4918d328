"""Tabulation: areas by class of layer A x class of layer B within an area of interest (a
division code, a polygon, or the whole county).

Conventions: see :mod:`geobase.analysis.common`."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg import sql

from geobase.analysis.common import class_column, inputs_checked, layer_versions, units
from geobase.analysis.input import InputGeometry
from geobase.errors import InvalidInput
from geobase.specs import LayerSpec, Registry
from geobase.storage import DATA_SCHEMA, UNASSIGNED, current_filter, division_filter, table_ident

#: the layer of administrative divisions an area of interest is named from, and its code and name fields
DIVISIONS_LAYER, DIVISION_CODE, DIVISION_NAME = "admin_divisions", "xzqdm", "xzqmc"


async def aoi_from_code(conn: psycopg.AsyncConnection, code: str) -> tuple[bytes, float, str]:
    """WKB, area and name of an administrative division (township or county) by its code."""
    if not code.isdigit() or len(code) not in (6, 9, 12):
        raise InvalidInput(f"aoi: {code!r} is not a 6/9/12-digit division code", parameter="aoi")
    cur = await conn.execute(sql.SQL(
        "SELECT ST_AsBinary(ST_Union(geom)), ST_Area(ST_Union(geom)::geography), min({name}) "
        "FROM {tbl} WHERE {cur} AND {code} = %s AND {county}").format(
            name=sql.Identifier(DIVISION_NAME), tbl=table_ident(DIVISIONS_LAYER), cur=current_filter(),
            code=sql.Identifier(DIVISION_CODE), county=division_filter(aoi_divisions(code))), (code,))
    wkb, area, name = await cur.fetchone()
    if wkb is None:
        raise InvalidInput(f"aoi: no administrative division with code {code!r}", parameter="aoi")
    return bytes(wkb), float(area), name


def aoi_divisions(aoi_code: str | None) -> list[str] | None:
    """The partitions an area of interest named by a division code reads: its county's and the
    unassigned one (rows no county claims); None (every county) for a polygon or the whole layer."""
    return [aoi_code[:6], UNASSIGNED] if aoi_code else None


def tabulate_sql(a: LayerSpec, fa: str, b: LayerSpec, fb: str, *, with_aoi: bool,
                 part: tuple[int, int] | None = None, part_on: str = "b",
                 divisions: list[str] | None = None) -> sql.Composed:
    """Areas by class of A x class of B.

    Speed comes from three things: (1) a feature wholly covered by the other skips
    ST_Intersection and uses its precomputed ``_area_m2``; (2) the few large features (zones)
    drive the nested loop with the many small ones (parcels) found through their GiST index, so
    consecutive ST_Intersects/ST_Covers calls share the same large geometry and PostGIS reuses
    its prepared (indexed) form instead of rescanning 1,000s of vertices per pair; (3) ``part`` =
    (k, n) splits the work by ``mod(<part_on>._rid, n)`` over several connections — on the
    large-feature side, which keeps the good join order in every part."""
    alias = sql.Identifier(part_on)
    part_sql = sql.SQL("AND mod({}._rid, {n}) = {k}").format(alias, n=sql.Literal(part[1]), k=sql.Literal(part[0])) \
        if part else sql.SQL("")
    if divisions:  # a county's area of interest: the planner reads that county's partitions only
        part_sql = sql.SQL("{} AND {} AND {}").format(part_sql, division_filter(divisions, "a"),
                                                      division_filter(divisions, "b"))
    if not with_aoi:
        return sql.SQL("""
            SELECT a.{fa}::text, b.{fb}::text, sum(
                CASE WHEN ST_Covers(b.geom, a.geom) THEN coalesce(a._area_m2, ST_Area(a.geom::geography))
                     WHEN ST_Covers(a.geom, b.geom) THEN coalesce(b._area_m2, ST_Area(b.geom::geography))
                     ELSE ST_Area(ST_Intersection(a.geom, b.geom)::geography) END), count(*)
            FROM {ta} a JOIN {tb} b ON ST_Intersects(a.geom, b.geom) AND {cur_b}
            WHERE {cur_a} {part}
            GROUP BY 1, 2 ORDER BY 1, 2
        """).format(fa=sql.Identifier(fa), fb=sql.Identifier(fb), ta=table_ident(a), tb=table_ident(b), part=part_sql,
                    cur_a=current_filter("a"), cur_b=current_filter("b"))
    return sql.SQL("""
        WITH aoi AS (SELECT ST_GeomFromWKB(%(aoi)s, 4490) AS g)
        SELECT a.{fa}::text, b.{fb}::text, sum(
            CASE WHEN ST_Covers(aoi.g, a.geom) AND ST_Covers(b.geom, a.geom) THEN coalesce(a._area_m2, ST_Area(a.geom::geography))
                 WHEN ST_Covers(aoi.g, a.geom) THEN ST_Area(ST_Intersection(a.geom, b.geom)::geography)
                 ELSE ST_Area(ST_Intersection(ST_Intersection(a.geom, aoi.g), b.geom)::geography) END), count(*)
        FROM aoi, {ta} a JOIN {tb} b ON ST_Intersects(a.geom, b.geom) AND {cur_b}
        WHERE {cur_a} AND ST_Intersects(a.geom, aoi.g) AND ST_Intersects(b.geom, aoi.g) {part}
        GROUP BY 1, 2 ORDER BY 1, 2
    """).format(fa=sql.Identifier(fa), fb=sql.Identifier(fb), ta=table_ident(a), tb=table_ident(b), part=part_sql,
                cur_a=current_filter("a"), cur_b=current_filter("b"))


async def _row_estimate(conn: psycopg.AsyncConnection, spec: LayerSpec) -> float:
    cur = await conn.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                             (f'{DATA_SCHEMA}."{spec.name}"',))
    row = await cur.fetchone()
    return float(row[0]) if row else 0.0


async def tabulate(conn: psycopg.AsyncConnection, registry: Registry, visible: list[LayerSpec], layer_a: str,
                   layer_b: str, *, class_a: str | None = None, class_b: str | None = None,
                   aoi: InputGeometry | None = None, aoi_code: str | None = None,
                   conninfo: str | None = None, workers: int = 1, principal=None) -> dict:
    """Areas by class of ``layer_a`` x class of ``layer_b`` within an area of interest (a
    division code, a polygon, or the whole county when neither is given)."""
    vis = {s.name: s for s in visible}
    for p, n in (("layer_a", layer_a), ("layer_b", layer_b)):
        if n not in vis or vis[n].geometry != "MultiPolygon":
            raise InvalidInput(f"{p}: unknown, hidden or non-polygon layer {n!r}", parameter=p)
    a, b = vis[layer_a], vis[layer_b]
    fa = class_column(registry, a, class_a, "class_a", principal)
    fb = class_column(registry, b, class_b, "class_b", principal)
    wkb, aoi_m2, aoi_info = await _area_of_interest(conn, aoi, aoi_code)
    inputs_checked()
    rows = await _tabulate_rows(conn, a, fa, b, fb, wkb, conninfo, workers, aoi_divisions(aoi_code))
    cells: dict[tuple[str, str], list[float]] = {}
    for ca, cb, m2, n in rows:
        if float(m2 or 0) <= 1e-6:  # features that only touch along an edge
            continue
        acc = cells.setdefault((ca, cb), [0.0, 0])
        acc[0] += float(m2 or 0)
        acc[1] += int(n)
    total = sum(v[0] for v in cells.values())
    if aoi_m2 is None:
        cur = await conn.execute(sql.SQL("SELECT sum(coalesce(_area_m2, ST_Area(geom::geography))) FROM {} "
                                         "WHERE {}").format(table_ident(a), current_filter()))
        aoi_m2 = float((await cur.fetchone())[0] or 0)
        aoi_info["area"] = units(aoi_m2)
        aoi_info["area_source"] = f"sum of {layer_a} areas"
    row_tot: dict[str, float] = {}
    col_tot: dict[str, float] = {}
    for (ca, cb), (m2, _) in cells.items():
        row_tot[ca] = row_tot.get(ca, 0.0) + m2
        col_tot[cb] = col_tot.get(cb, 0.0) + m2
    versions = await layer_versions(conn, [layer_a, layer_b])
    return {
        "analysis": "tabulate",
        "layer_a": {"name": layer_a, "class_field": fa}, "layer_b": {"name": layer_b, "class_field": fb},
        "aoi": aoi_info,
        "cells": [{"a": ca, "b": cb, **units(v[0]), "pieces": v[1]} for (ca, cb), v in sorted(cells.items())],
        "totals_a": [{"a": k, **units(v)} for k, v in sorted(row_tot.items())],
        "totals_b": [{"b": k, **units(v)} for k, v in sorted(col_tot.items())],
        "total": units(total),
        "coverage_of_aoi": round(total / aoi_m2, 8) if aoi_m2 else None,
        "versions": versions,
    }


async def _area_of_interest(conn: psycopg.AsyncConnection, aoi: InputGeometry | None,
                            aoi_code: str | None) -> tuple[bytes | None, float | None, dict[str, Any]]:
    """(WKB, area, report entry) of the area of interest: a division, a polygon or the whole county."""
    if aoi_code:
        wkb, aoi_m2, name = await aoi_from_code(conn, aoi_code)
        return wkb, aoi_m2, {"code": aoi_code, "name": name, "area": units(aoi_m2)}
    if aoi is not None:
        return aoi.wkb, aoi.area_m2, {"geometry": aoi.geojson, "area": units(aoi.area_m2), "input_crs": aoi.source_crs}
    return None, None, {"whole": True}


async def _tabulate_rows(conn: psycopg.AsyncConnection, a: LayerSpec, fa: str, b: LayerSpec, fb: str,
                         wkb: bytes | None, conninfo: str | None, workers: int,
                         divisions: list[str] | None = None) -> list[tuple]:
    """(class a, class b, m², pieces) rows, split over ``workers`` connections when given."""
    params = {"aoi": wkb} if wkb is not None else None
    if not (workers > 1 and conninfo):
        cur = await conn.execute(tabulate_sql(a, fa, b, fb, with_aoi=wkb is not None, divisions=divisions), params)
        return await cur.fetchall()
    part_on = "b" if await _row_estimate(conn, b) <= await _row_estimate(conn, a) else "a"

    async def run_part(k: int) -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as c2:
            await c2.execute("SET max_parallel_workers_per_gather = 0")
            q = tabulate_sql(a, fa, b, fb, with_aoi=wkb is not None, part=(k, workers), part_on=part_on,
                             divisions=divisions)
            cur = await c2.execute(q, params)
            return await cur.fetchall()

    rows: list[tuple] = []
    for part_rows in await asyncio.gather(*(run_part(k) for k in range(workers))):
        rows.extend(part_rows)
    return rows

"""Shared helpers of the indicator tests: run the engine on a database, read the stored values,
and compute the same areas independently (geopandas + shapely + pyproj Geod on GRS80 over the
rows read from the database, never our SQL)."""

from __future__ import annotations

import asyncio

import geopandas as gpd
import psycopg
import pytest
import shapely
from pyproj import Geod

from geobase.indicators import engine
from geobase.indicators.spec import get_indicators
from geobase.specs import get_registry

GEOD = Geod(ellps="GRS80")


def process(settings) -> dict:
    """Run the indicator engine over the queued versions, as the server's job does."""
    reg = get_registry(settings)

    async def go():
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            return await engine.process(conn, reg, get_indicators(reg), settings.data_path)

    return asyncio.run(go())


def latest(settings) -> dict[tuple[str, str], float | None]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT DISTINCT ON (indicator, division) indicator, division, value "
                            "FROM catalog.indicator_values ORDER BY indicator, division, id DESC").fetchall()
    return {(i, d): v for i, d, v in rows}


def value_rows(settings, indicator: str) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT division, value, cause_layer, cause_version FROM catalog.indicator_values "
                            "WHERE indicator = %s ORDER BY id", (indicator,)).fetchall()


def frame(settings, layer: str, columns: list[str]) -> gpd.GeoDataFrame:
    """The current rows of a layer as a GeoDataFrame (EPSG:4490)."""
    cols = ", ".join(f'"{c}"::text AS "{c}"' for c in columns)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(f"SELECT {cols}, ST_AsBinary(geom) FROM data.{layer} WHERE _vto IS NULL").fetchall()
    data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
    return gpd.GeoDataFrame(data, geometry=shapely.from_wkb([bytes(r[-1]) for r in rows]), crs=4490)


def geod_m2(g) -> float:
    """Ellipsoidal area of a (multi)polygon on GRS80 (the CGCS2000 ellipsoid)."""
    if g is None or g.is_empty:
        return 0.0
    polys = [p for p in getattr(g, "geoms", [g]) if p.geom_type in ("Polygon", "MultiPolygon")]
    total = 0.0
    for p in polys:
        for part in getattr(p, "geoms", [p]):
            total += abs(GEOD.geometry_area_perimeter(part)[0])
    return total


def area_in(features: gpd.GeoDataFrame, region) -> float:
    """Sum of the Geod areas of each feature cut by ``region`` (pair by pair, as defined)."""
    hits = features[features.intersects(region)]
    return sum(geod_m2(shapely.intersection(g, region)) for g in hits.geometry)


def townships(settings) -> gpd.GeoDataFrame:
    t = frame(settings, "admin_divisions", ["xzqdm", "level"])
    return t[t["level"] == "township"]


def group_codes(registry, group: str) -> set[str]:
    cl = registry.code_lists["gbt21010_2017"].codes
    return {c.code for c in (cl.values() if isinstance(cl, dict) else cl) if c.group == group}


def category_codes(registry, category: str) -> set[str]:
    cl = registry.code_lists["gbt21010_2017"].codes
    return {c.code for c in (cl.values() if isinstance(cl, dict) else cl) if c.category == category and c.assignable}


def in_codes(df: gpd.GeoDataFrame, field: str, codes: set[str]) -> gpd.GeoDataFrame:
    return df[df[field].isin(codes) | df[field].str[:4].isin(codes)]


@pytest.fixture(scope="session")
def computed_template(pg_server, county_template):
    """The sample county with every indicator computed once (a template database): tests clone
    it instead of computing the county again."""
    from conftest import create_database, drop_database, settings_for

    name, data_dir = county_template
    db = f"{name}_indicators"
    settings = settings_for(create_database(pg_server, db, name), data_dir)
    steps = process(settings)
    yield db, data_dir, steps
    drop_database(pg_server, db)


@pytest.fixture
def computed_db(new_db, computed_template):
    """A private copy of the county with its indicators computed (nothing queued)."""
    name, data_dir, _ = computed_template
    return new_db(template=name).model_copy(update={"data_dir": data_dir})

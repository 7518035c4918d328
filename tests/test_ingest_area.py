"""Ellipsoidal areas computed by the ingest (numpy, :mod:`geobase.ingest.area`) agree with
PostGIS's ``ST_Area(geom::geography)``, and the rows they do not cover get PostGIS's own.

What a user checks: the ``_area_m2`` of a parcel is the area QGIS or PostGIS report for it on
the CGCS2000 ellipsoid, whichever way the file was loaded, and the stated-area check flags the
same rows either way.
"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
import shapely
from geobase.ingest import pipeline
from geobase.ingest.area import MAX_EDGE_DEG, polygon_areas
from geobase.ingest.pipeline import ingest
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Polygon
from test_ingest import land_use_gdf, query, write_shp

#: PostGIS's own rounding on small parcels is up to 1.5e-6 of the area (see geobase.ingest.area)
POSTGIS_REL = 3e-6


def _postgis_areas(settings, geoms) -> np.ndarray:
    with psycopg.connect(settings.database_url) as conn:
        return np.array([conn.execute("SELECT ST_Area(ST_GeomFromWKB(%s, 4490)::geography)",
                                      (shapely.to_wkb(g),)).fetchone()[0] for g in geoms])


def _ours(geoms) -> np.ndarray:
    multi = np.array([g if g.geom_type == "MultiPolygon" else MultiPolygon([g]) for g in geoms], dtype=object)
    _t, coords, offs = shapely.to_ragged_array(multi)
    return polygon_areas(coords[:, 0], coords[:, 1], *offs)


def _parcel(rng, lon: float, lat: float, size_deg: float) -> Polygon:
    """A random convex-ish quadrilateral of about ``size_deg``, random orientation."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, 5))
    r = size_deg * rng.uniform(0.4, 0.5, 5)
    ring = list(zip(lon + r * np.cos(ang), lat + r * np.sin(ang)))
    p = Polygon(ring)
    return p if rng.random() < 0.5 else Polygon(ring[::-1])  # both ring orientations


def _laea_area(p: Polygon) -> float:
    """Shoelace area in a Lambert azimuthal equal-area projection centred on the polygon: exact
    up to rounding for a parcel (its edges are straight there to well below a millimetre)."""
    c = p.centroid
    tr = Transformer.from_crs("EPSG:4490", f"+proj=laea +lat_0={c.y} +lon_0={c.x} +ellps=GRS80", always_xy=True)
    x, y = tr.transform(*map(np.array, p.exterior.xy))
    return abs(0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1])))


def test_parcel_areas_are_exact_and_agree_with_postgis(db_settings):
    rng = np.random.default_rng(7)
    parcels = [_parcel(rng, rng.uniform(75, 134), rng.uniform(18, 53), rng.choice([2e-4, 1e-3, 4e-3]))
               for _ in range(300)]
    ours = _ours(parcels)
    np.testing.assert_allclose(ours, [_laea_area(p) for p in parcels], rtol=2e-9)
    np.testing.assert_allclose(ours, _postgis_areas(db_settings, parcels), rtol=POSTGIS_REL)


def test_holes_and_multipolygons_agree_with_postgis(db_settings):
    rng = np.random.default_rng(3)
    outer = [(110, 30), (110.004, 30), (110.004, 30.004), (110, 30.004)]
    hole = [(110.001, 30.001), (110.002, 30.001), (110.002, 30.002)]
    geoms = [Polygon(outer, [hole]), Polygon(outer[::-1], [hole]),  # ring orientation as delivered, either way
             MultiPolygon([Polygon(outer, [hole]), _parcel(rng, 110.01, 30.01, 0.003)]),
             _parcel(rng, 100, 20, 1e-5)]  # a 1 m sliver
    ref, ours = _postgis_areas(db_settings, geoms), _ours(geoms)
    np.testing.assert_allclose(ours, ref, rtol=POSTGIS_REL, atol=1e-5)  # PostGIS: ~4e-6 m² on a 0.3 m² sliver
    assert ours[0] == pytest.approx(ours[1]) and ours[0] < ref[2]  # the hole is subtracted, the parts added


def test_geometries_with_long_edges_are_left_to_postgis():
    small = Polygon([(110, 30), (110 + MAX_EDGE_DEG * 0.9, 30), (110, 30.001)])
    big = Polygon([(110, 30), (110.3, 30.1), (110.1, 30.25)])  # ~30 km edges: ours would be 1.5e-6 off
    assert list(np.isnan(_ours([small, big, MultiPolygon([small, big.buffer(0)])]))) == [False, True, True]


@pytest.mark.parametrize("direct", [True, False], ids=["direct first load", "staging"])
def test_loaded_areas_are_postgis_areas_and_long_edged_parcels_are_checked(new_db, tmp_path, monkeypatch, direct):
    """A parcel with 2 km edges among 100 m parcels: its area comes from PostGIS, the others
    agree with PostGIS, and its wrong stated area is reported by either load path."""
    settings = new_db()
    if direct:
        monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 0)
    gdf = land_use_gdf(30)
    x0, y0 = gdf.geometry.iloc[-1].bounds[2] + 1000, gdf.geometry.iloc[-1].bounds[3]
    gdf.loc[29, "geometry"] = Polygon([(x0, y0), (x0 + 2000, y0), (x0 + 2000, y0 + 2000), (x0, y0 + 2000)])
    gdf.loc[29, "TBMJ"] = 1_000_000.0  # stated: 1 km²; it is 4 km²
    gdf.loc[3, "TBMJ"] = 5_000.0  # a 100 m parcel stated at half its area
    res = ingest(settings, "land_use", write_shp(gdf, tmp_path / "d", cpg=True), coverage=False)
    assert res.rows_total == 30
    rows = query(settings, "SELECT _key, _area_m2, ST_Area(geom::geography) FROM data.land_use ORDER BY _key")
    ours, ref = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    np.testing.assert_allclose(ours, ref, rtol=POSTGIS_REL)
    assert ours[29] == ref[29]  # computed by PostGIS itself
    area = res.report["checks"]["area"]
    assert area["deviating"] == 2
    assert [s["key"] for s in area["samples"]] == [gdf.loc[29, "BSM"], gdf.loc[3, "BSM"]]  # worst first
    assert area["samples"][0]["deviation"] == pytest.approx(3.0, rel=1e-3)
    assert not query(settings, "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                               "WHERE c.relname = 'land_use' AND NOT t.tgisinternal")

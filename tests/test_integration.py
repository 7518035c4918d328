"""Cross-area checks a user makes on the running demo: the declared conformance covers every
mounted area, the DEM downloads as a COG that GDAL reads by ranges, the sample county's
land-use coverage has no gaps or overlaps in PostGIS."""

from __future__ import annotations

import psycopg
import rasterio
from rasterio.io import MemoryFile


def test_conformance_declares_features_tiles_and_processes(county_server):
    with county_server.client() as c:
        classes = c.get("/conformance").json()["conformsTo"]
    assert any("ogcapi-features-1/1.0/conf/core" in k for k in classes)
    assert any("ogcapi-tiles-1/1.0/conf/core" in k for k in classes)
    assert any("ogcapi-processes-1/1.0/conf/core" in k for k in classes)
    assert len(classes) == len(set(classes))


def test_dem_coverage_is_a_cog_readable_by_range(county_server):
    with county_server.client() as c:
        r = c.get("/collections/dem/coverage")
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/tiff")
        with MemoryFile(r.content) as mem, mem.open() as ds:
            assert ds.crs.to_epsg() == 4490
            assert ds.overviews(1), "a COG carries overviews"
            assert ds.profile.get("tiled")
        part = c.get("/collections/dem/coverage", headers={"Range": "bytes=0-1023"})
        assert part.status_code == 206 and len(part.content) == 1024
        assert c.get("/collections/land_use/coverage").status_code == 400
        assert c.get("/collections/nope/coverage").status_code == 404
    # GDAL itself, remotely
    with rasterio.open(f"/vsicurl/{county_server.url}/collections/dem/coverage") as ds:
        assert ds.width > 100 and ds.read(1, window=((0, 8), (0, 8))).shape == (8, 8)


def test_sample_land_use_coverage_has_no_gaps_or_overlaps_in_postgis(county_shared):
    """The committed sample tiles the county: union = sum of parts = county area (1e-6), and no
    two parcels overlap by more than 0.1 m² (coordinates are rounded to 1 mm, so T-junctions
    leave overlaps of a few hundredths of a square metre)."""
    with psycopg.connect(county_shared.database_url) as conn:
        total, union, n = conn.execute(
            "SELECT sum(ST_Area(geom::geography)), ST_Area(ST_Union(geom)::geography), count(*) "
            "FROM data.land_use WHERE _vto IS NULL").fetchone()
        county = conn.execute(
            "SELECT ST_Area(geom::geography) FROM data.admin_divisions WHERE _vto IS NULL AND level = 'county'"
        ).fetchone()[0]
        overlaps = conn.execute(
            """SELECT count(*) FROM data.land_use a JOIN data.land_use b
                 ON a._rid < b._rid AND a.geom && b.geom AND ST_Intersects(a.geom, b.geom)
               WHERE a._vto IS NULL AND b._vto IS NULL
                 AND ST_Area(ST_Intersection(a.geom, b.geom)::geography) > 0.1""").fetchone()[0]
    assert n > 5000
    assert overlaps == 0
    assert abs(total - union) / union < 1e-6
    assert abs(union - county) / county < 1e-6


def test_items_geometry_is_plain_rfc7946(county_server):
    """GeoJSON geometries carry no legacy ``crs`` member (clients such as QGIS reject mixes)."""
    with county_server.client() as c:
        for params in ({"limit": 3}, {"limit": 3, "crs": "http://www.opengis.net/def/crs/EPSG/0/4527"}):
            fc = c.get("/collections/land_use/items", params=params).json()
            assert fc["features"]
            for f in fc["features"]:
                assert set(f["geometry"]) == {"type", "coordinates"}


def test_site_check_accepts_the_demo_site_file_as_posted(county_server):
    """`curl -d @demo_site.geojson /analysis/site-check` works with the FeatureCollection as is."""
    from tests.conftest import SAMPLE

    body = (SAMPLE / "demo_site.geojson").read_bytes()
    with county_server.client() as c:
        r = c.post("/analysis/site-check", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        doc = r.json()
        wrapped = c.post("/analysis/site-check", json={"geometry": __import__("json").loads(body)}).json()
    assert doc["site"]["area"]["m2"] == wrapped["site"]["area"]["m2"] > 1e6
    assert doc["verdict_of_evaluated_rules"] in ("needs-approval", "prohibited", "warning")
    assert doc["verdict"] == "incomplete" and not doc["complete"]  # the public may not see the control lines

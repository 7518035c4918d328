"""Tiles over the ingested sample county: the generalised county-wide land-use picture, the
real DEM COG, and a real ingest of a new water version changing exactly the affected tiles."""

from __future__ import annotations

import json

import mapbox_vector_tile
import psycopg
from conftest import SAMPLE, LiveServer
from geobase.tiles.tms import WEB_MERCATOR_QUAD as W
from geobase.tiles.tms import lonlat_to_mercator

from geobase.db import database_url


def county_extent(settings) -> list[float]:
    with psycopg.connect(database_url(settings)) as conn:
        return list(conn.execute(
            "SELECT v.extent FROM catalog.layers l JOIN catalog.layer_versions v "
            "ON v.layer = l.name AND v.version = l.current_version WHERE l.name = 'land_use'").fetchone()[0])


def tile_at(z, lon, lat):
    x, y = lonlat_to_mercator(lon, lat)
    span = W.tile_span(z)
    return int((x - W.origin[0]) // span), int((W.origin[1] - y) // span)


def test_county_wide_tiles_draw_land_use_within_size_bound(county_server, county_shared):
    ext = county_extent(county_shared)
    lon, lat = (ext[0] + ext[2]) / 2, (ext[1] + ext[3]) / 2
    with psycopg.connect(database_url(county_shared)) as conn:
        area_by_class = dict(conn.execute(
            "SELECT dlbm, sum(_area_m2) FROM data.land_use WHERE _vto IS NULL GROUP BY dlbm").fetchall())
    with county_server.client() as c:
        x, y = tile_at(8, lon, lat)
        r = c.get(f"/tiles/land_use/8/{x}/{y}.mvt", headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200 and len(r.content) < 500 * 1024
        feats = mapbox_vector_tile.decode(r.content)["land_use"]["features"]
        drawn = {f["properties"]["dlbm"] for f in feats}
        # the z8 picture still shows the classes covering most of the county (minor ones merge into
        # their neighbours at 1.2 km cells), and only classes that exist
        assert drawn <= set(area_by_class)
        assert sum(area_by_class[c] for c in drawn) >= 0.9 * sum(area_by_class.values())
        assert len(feats) > 200
        for z in (10, 12, 14):
            x, y = tile_at(z, lon, lat)
            r = c.get(f"/tiles/onemap/{z}/{x}/{y}.mvt", headers={"Accept-Encoding": "identity"})
            assert r.status_code == 200 and len(r.content) < 500 * 1024, (z, len(r.content))
            assert "land_use" in mapbox_vector_tile.decode(r.content)
        x, y = tile_at(12, lon, lat)
        png = c.get(f"/tiles/dem/hillshade/12/{x}/{y}.png")
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG" and len(png.content) > 5000


def test_ingest_of_new_water_version_changes_only_water_tiles(county_db, tmp_path):
    from geobase.ingest.pipeline import ingest

    ext = county_extent(county_db)
    srv = LiveServer(county_db)
    try:
        with psycopg.connect(database_url(county_db)) as conn:
            lon, lat = conn.execute(
                "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_PointOnSurface(geom) c FROM data.water_areas "
                "WHERE _vto IS NULL ORDER BY _area_m2 DESC LIMIT 1) s").fetchone()
        x, y = tile_at(13, lon, lat)
        urls = {n: f"/tiles/{n}/13/{x}/{y}.mvt" for n in ("water_areas", "land_use", "onemap")}
        with srv.client() as c:
            before = {n: c.get(u) for n, u in urls.items()}
            assert all(r.status_code == 200 for r in before.values()), {n: r.status_code for n, r in before.items()}
            # a new delivery: every water body shifted ~100 m east
            doc = json.loads((SAMPLE / "water.geojson").read_text(encoding="utf-8"))

            def shift(coords):
                return [shift(c) for c in coords] if isinstance(coords[0], list) else [coords[0] + 0.001, coords[1]]

            for f in doc["features"]:
                f["geometry"]["coordinates"] = shift(f["geometry"]["coordinates"])
            path = tmp_path / "water_v2.geojson"
            path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
            result = ingest(county_db, "water_areas", path)
            assert result.version and result.version > 1
            after = {n: c.get(u) for n, u in urls.items()}
    finally:
        srv.stop()
    assert after["water_areas"].headers["etag"] != before["water_areas"].headers["etag"]
    assert after["water_areas"].content != before["water_areas"].content
    assert after["onemap"].headers["etag"] != before["onemap"].headers["etag"]
    assert after["land_use"].headers["etag"] == before["land_use"].headers["etag"]
    assert after["land_use"].headers["x-tile-cache"] == "hit"
    assert ext  # the county is loaded


def test_web_mercator_tiles_read_the_rows_of_the_tile_through_the_geom_index(county_shared):
    """A tile holds the features whose Web Mercator geometry meets the (buffered) tile, found
    through the one spatial index of the layer (on the stored EPSG:4490 geom): no sequential
    scan, and the same rows as filtering geom_3857 itself."""
    from geobase.security import PUBLIC, hidden_attributes
    from geobase.specs import get_registry
    from geobase.tiles.mvt import BUFFER, EXTENT, filter_envelope, layer_mvt_sql, plan_layer

    reg = get_registry(county_shared)
    spec = reg.layers["land_use"]
    ext = county_extent(county_shared)
    with psycopg.connect(database_url(county_shared)) as conn:
        idx = [r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'land_use'")]
        assert "land_use_cur_geom" in idx and not any("3857" in i for i in idx)
        first, west = (conn.execute(f"SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM data.land_use "
                                    f"WHERE _vto IS NULL ORDER BY {o} LIMIT 1) s").fetchone()
                       for o in ("_key", "ST_XMin(geom)"))
        for z, lon, lat in ((16, *first), (14, (ext[0] + ext[2]) / 2, (ext[1] + ext[3]) / 2),
                            (13, *west)):  # at the county's edge: rows on one side only
            x, y = tile_at(z, lon, lat)
            xmin, ymin, xmax, ymax = W.bounds(z, y, x)
            m = (xmax - xmin) * BUFFER / EXTENT
            ours = conn.execute(psycopg.sql.SQL("SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND geom && {}")
                                .format(filter_envelope(W, xmin - m, ymin - m, xmax + m, ymax + m))).fetchone()[0]
            ref = conn.execute("SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND geom_3857 && "
                               "ST_MakeEnvelope(%s, %s, %s, %s, 3857)", (xmin - m, ymin - m, xmax + m, ymax + m)
                               ).fetchone()[0]
            assert ours == ref and ref > 0, (z, ours, ref)
            plan = plan_layer(spec, reg, z, hidden_attributes(PUBLIC, spec))
            explained = json.dumps(conn.execute(psycopg.sql.SQL("EXPLAIN (FORMAT JSON) SELECT {}").format(
                layer_mvt_sql(plan, W, z, y, x))).fetchone()[0])
            assert "land_use_cur_geom" in explained and '"Seq Scan"' not in explained, z

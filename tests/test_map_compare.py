"""Comparing versions of a layer (issue 21 item 4): vector tiles of an earlier version
(``/tiles/{layer}/{z}/{x}/{y}.mvt?version=``), and the one map's time slider and swipe over them,
on the sample county after the demo's land-use change delivery (v2: farmland parcels become
rural homesteads, one parcel is split)."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator

import mapbox_vector_tile
import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for
from test_tiles_county import tile_at

from geobase.settings import Settings

Z = 17


@pytest.fixture(scope="module")
def changed_county(pg_server: str, county_template, tmp_path_factory) -> Iterator[Settings]:
    """The sample county with the demo's second land-use version (shared by this module's tests)."""
    from geobase.ingest.sample import ingest_sample_county

    name, data_dir = county_template
    db = f"gb_cmp_{uuid.uuid4().hex[:8]}"
    s = settings_for(create_database(pg_server, db, name), tmp_path_factory.mktemp("cmp"))
    s = s.model_copy(update={"data_dir": data_dir})
    ingest_sample_county(s, echo=lambda *a, **k: None, with_changes=True)
    yield s
    drop_database(pg_server, db)


@pytest.fixture(scope="module")
def compare_server(changed_county) -> Iterator[LiveServer]:
    srv = LiveServer(changed_county)
    yield srv
    srv.stop()


def changed_parcel(settings: Settings) -> dict:
    """The largest parcel whose class the change delivery changed: key, classes, a point in it."""
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT n._key, o.dlbm, n.dlbm, ST_X(ST_PointOnSurface(n.geom)), ST_Y(ST_PointOnSurface(n.geom)) "
            "FROM data.land_use n JOIN data.land_use o ON o._key = n._key AND o._vto = 2 "
            "WHERE n._vfrom = 2 AND n._vto IS NULL AND o.dlbm <> n.dlbm "
            "AND ST_Equals(o.geom, n.geom) ORDER BY n._area_m2 DESC LIMIT 1").fetchone()
    assert row is not None, "the change delivery changed no parcel's class"
    return {"key": row[0], "v1": row[1], "v2": row[2], "lon": row[3], "lat": row[4]}


def classes_of(body: bytes, key: str) -> list[str]:
    layers = mapbox_vector_tile.decode(body)
    return [f["properties"]["dlbm"] for f in layers.get("land_use", {}).get("features", [])
            if f["properties"].get("_key") == key]


def test_a_tile_of_an_earlier_version_draws_the_rows_of_that_version(compare_server, changed_county):
    p = changed_parcel(changed_county)
    x, y = tile_at(Z, p["lon"], p["lat"])
    url = f"/tiles/land_use/{Z}/{x}/{y}.mvt"
    with compare_server.client() as c:
        now = c.get(url)
        v1, v2 = c.get(url, params={"version": 1}), c.get(url, params={"version": 2})
        assert now.status_code == v1.status_code == v2.status_code == 200, (now.text, v1.text, v2.text)
        assert classes_of(v1.content, p["key"]) == [p["v1"]]
        assert classes_of(v2.content, p["key"]) == [p["v2"]]
        assert v2.content == now.content  # the current version is today's tile
        assert v1.headers["etag"] != v2.headers["etag"]
        again = c.get(url, params={"version": 1})  # cached under its own version
        assert again.headers["x-tile-cache"] == "hit" and again.content == v1.content
        assert c.get(url, params={"version": 1}, headers={"If-None-Match": v1.headers["etag"]}).status_code == 304
        for bad in ({"version": 3}, {"version": 0}, {"version": "two"}):
            r = c.get(url, params=bad)
            assert r.status_code == 400 and "version" in r.text, (bad, r.status_code, r.text)
        r = c.get(f"/tiles/land_use,water_areas/{Z}/{x}/{y}.mvt", params={"version": 1})
        assert r.status_code == 400 and "version" in r.text
        r = c.get(f"/tiles/onemap/{Z}/{x}/{y}.mvt", params={"version": 1})
        assert r.status_code == 400 and "version" in r.text
        r = c.get(url, params={"versoin": 1})  # unknown parameters are still refused
        assert r.status_code == 400 and "versoin" in r.text

"""One answer to a county code on every endpoint that takes one (issue 16; the one check is
geobase/division_check.py): a code that is no known county is a 400 naming the parameter; a known
county the layer holds nothing of answers 200 and empty — items, downloads, CQL2
``division``, the change feed and its Server-Sent Events stream, and an analysis' ``aoi`` (one
feature by key keeps its 404 for a county that holds no such feature).

Counties A and B deliver land use; county C delivers only its administrative division (so it is
known, with no land use partition); county D (339999) is known nowhere.

Real PostGIS, real ingests of shapefiles, real HTTP to a uvicorn subprocess.
"""

from __future__ import annotations

import geopandas as gpd
import httpx
import psycopg
from shapely.geometry import box
from test_divisions import A, B, C, load
from test_ingest import write_shp

from geobase.catalog import sync_catalog
from geobase.division_check import cql2_counties, known_counties_sync
from geobase.ingest.pipeline import ingest

D = "339999"  # well formed, no county of anything


def _admin(settings, tmp_path) -> None:
    """The administrative divisions of A, B and C (one delivery, three counties' partitions)."""
    rows = [{"XZQDM": code, "XZQMC": f"县{code}", "JB": "county", "MJ": 4e6,
             "geometry": box(39500000 + i * 2000, 3300000, 39502000 + i * 2000, 3302000)}
            for i, code in enumerate((A, B, C))]
    gdf = gpd.GeoDataFrame(rows, crs="EPSG:4527")
    ingest(settings, "admin_divisions", write_shp(gdf, tmp_path / "xzq", "XZQ"), coverage=False)


def _province(settings, tmp_path) -> None:
    load(settings, tmp_path, A)
    load(settings, tmp_path, B)
    _admin(settings, tmp_path)
    with psycopg.connect(settings.database_url) as conn:
        sync_catalog(conn, settings)
        conn.commit()


def _refused(r: httpx.Response, parameter: str, says: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text[:500])
    body = r.json()
    assert body["parameter"] == parameter and says in body["description"], body


def test_known_counties_are_those_any_layer_holds(db_settings, tmp_path):
    _province(db_settings, tmp_path)
    with psycopg.connect(db_settings.database_url) as conn:
        known = known_counties_sync(conn)
    assert {A, B, C} <= known and D not in known
    assert cql2_counties(f"division = '{A}' AND dlbm = '0101'", None) == [A]
    assert cql2_counties(f"division IN ('{B}', '{C}') OR '{A}' = division", None) == [B, C, A]
    assert cql2_counties("division <> '339901'", None) == []  # names no county it reads
    assert cql2_counties("dlbm = '0101'", None) == []


def test_every_endpoint_answers_a_county_code_alike(db_settings, tmp_path, live_server):
    _province(db_settings, tmp_path)
    srv = live_server(db_settings)
    with srv.client() as http:
        items = "/collections/land_use/items"

        def features(url: str, **params) -> list:
            r = http.get(url, params=params)
            assert r.status_code == 200, (url, params, r.text[:500])
            return r.json()["features"]

        # known, with rows: the county's own
        assert len(features(items, division=A, limit=100)) == 16
        # known (its admin division), no land use partition: empty, everywhere
        assert features(items, division=C) == []
        assert features(items, division=f"{A},{C}", limit=100) != []
        assert features(items, filter=f"division = '{C}'") == []
        assert features(items, filter=f"division IN ('{C}')") == []
        assert features("/collections/land_use/changes", **{"from": 0, "division": C}) == []
        r = http.get(items, params={"division": C, "f": "csv"})
        assert r.status_code == 200 and len(r.text.strip().splitlines()) == 1  # the header, no rows
        assert http.get(f"{items}/00000001", params={"division": C}).status_code == 404  # no such feature there
        with http.stream("GET", "/collections/land_use/changes/stream", params={"division": C, "until": 2},
                         headers={"Last-Event-ID": "0", "Accept": "text/event-stream"}) as s:
            assert s.status_code == 200
            assert "id: " not in s.read().decode()  # versions 1 and 2 touched A and B: no event for C

        # unknown: a 400 naming the parameter, everywhere
        for url, params, parameter in (
                (items, {"division": D}, "division"),
                (items, {"division": f"{A},{D}"}, "division"),
                (items, {"division": D, "f": "csv"}, "division"),
                (items, {"division": D, "f": "parquet"}, "division"),
                (items, {"filter": f"division = '{D}'"}, "filter"),
                (items, {"filter": f"dlbm = '0101' AND division IN ('{A}', '{D}')"}, "filter"),
                ("/collections/land_use/changes", {"from": 0, "division": D}, "division"),
                ("/collections/land_use/changes/stream", {"until": 2, "division": D}, "division")):
            r = http.get(url, params=params)
            _refused(r, parameter, "not a known division")
            assert D in r.json()["description"]
        # malformed: a 400 naming the parameter too
        _refused(http.get(items, params={"division": "33"}), "division", "6-digit county code")
        # one feature by key: a county that is nowhere holds no such feature (404, test_shared_keys.py)
        assert http.get(f"{items}/00000001", params={"division": D}).status_code == 404
        _refused(http.get(items, params={"filter": "division = '33'"}), "filter", "6-digit county code")
        # tiles take no county: asked for one, they refuse it by name rather than draw every county
        r = http.get("/tiles/land_use/14/13717/6694.mvt", params={"division": A})
        _refused(r, "division", "division")

        # an analysis' area of interest: the admin layer's division, else a 400 naming aoi
        def tabulate(aoi: str) -> httpx.Response:
            return http.post("/processes/tabulate/execution", json={"inputs": {
                "layer_a": "land_use", "layer_b": "land_use", "class_a": "dlbm", "class_b": "dlbm", "aoi": aoi}})

        r = tabulate(C)
        assert r.status_code == 200, r.text[:500]
        _refused(tabulate(D), "aoi", D)

"""One answer to a county code on every endpoint that takes one (issue 16; the one check is
geobase/division_check.py): a code that is no known county is a 400 naming the parameter; a known
county the layer holds nothing of answers 200 and empty — items, downloads, CQL2
``division``, the change feed and its Server-Sent Events stream, vector tiles, one feature by
key, and an analysis' ``aoi`` (one feature by key keeps its 404 for a known county that holds
no such feature).

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
        # one feature by key: an unknown county is a 400 naming division too, as the lists answer
        # (it was a 404, "no such feature there"; a known county without the feature stays a 404)
        _refused(http.get(f"{items}/00000001", params={"division": D}), "division", "not a known division")
        _refused(http.get(items, params={"filter": "division = '33'"}), "filter", "6-digit county code")
        # tiles take a county as items do (tests/test_tile_counties.py draws them): an unknown one
        # is a 400 naming division on every tile URL; a known county without land use draws nothing
        for url in ("/tiles/land_use/14/13717/6694.mvt", "/collections/land_use/tiles/WebMercatorQuad/14/6694/13717",
                    "/map/tiles/WebMercatorQuad/14/6694/13717"):
            _refused(http.get(url, params={"division": D}), "division", "not a known division")
            assert http.get(url, params={"division": C}).status_code == 204

        # an analysis' area of interest: the admin layer's division, else a 400 naming aoi
        def tabulate(aoi: str) -> httpx.Response:
            return http.post("/processes/tabulate/execution", json={"inputs": {
                "layer_a": "land_use", "layer_b": "land_use", "class_a": "dlbm", "class_b": "dlbm", "aoi": aoi}})

        r = tabulate(C)
        assert r.status_code == 200, r.text[:500]
        _refused(tabulate(D), "aoi", D)


def test_a_county_loaded_after_the_server_started_is_known_at_once(db_settings, tmp_path, live_server):
    """The known counties are kept per catalog state (every layer's version): the partitions'
    query runs again only when a version changed, and a county delivered while the server runs
    is known on the very next request."""
    import asyncio

    from geobase import division_check

    load(db_settings, tmp_path, A)
    srv = live_server(db_settings)
    with srv.client() as http:
        items = "/collections/land_use/items"
        _refused(http.get(items, params={"division": B}), "division", "not a known division")
        _refused(http.get("/tiles/land_use/14/13717/6694.mvt", params={"division": B}), "division", B)
        load(db_settings, tmp_path, B)
        r = http.get(items, params={"division": B, "limit": 100})
        assert r.status_code == 200 and len(r.json()["features"]) == 16, r.text[:300]
        assert http.get("/tiles/land_use/14/13717/6694.mvt", params={"division": B}).status_code in (200, 204)

    async def partition_reads() -> list[set[str]]:
        """The known counties three times, the third after C's delivery: the partitions read twice."""
        async with await psycopg.AsyncConnection.connect(db_settings.database_url, autocommit=True) as conn:
            reads, execute = [], conn.execute

            async def counted(query, *args, **kw):
                if query == division_check._KNOWN_SQL:
                    reads.append(query)
                return await execute(query, *args, **kw)

            conn.execute = counted
            got = [await division_check.known_counties(conn), await division_check.known_counties(conn)]
            await asyncio.to_thread(load, db_settings, tmp_path, C)
            got.append(await division_check.known_counties(conn))
            assert len(reads) == 2, reads  # none for the second: the same catalog state
            return got

    first, second, third = asyncio.run(partition_reads())
    assert first == second and {A, B} <= first and C not in first and C in third

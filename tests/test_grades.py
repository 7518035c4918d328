"""Grades x openness x network zones (issue 19): a dataset is visible or invisible everywhere at
once — the catalog, the collections, items, downloads, tiles (the layer's own and the one map's)
and analysis inputs — for every grade (一般/重要/核心), openness class (无条件开放/有条件开放/不予开放)
and zone (涉密内网/政务外网/互联网). One real server per zone over one copy of the sample county;
the dataset's grade and openness are the admin's override in the catalog, changed between cases
(the servers read them per request)."""

from __future__ import annotations

import uuid

import httpx
import mapbox_vector_tile
import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for, tile_xy

from geobase.opendata.grades import GRADES, OPENNESS, ZONES, open_to_anonymous, zone_allows

LAYER = "planning_zones"   # sharing public: only the zone rules can hide it
Z = 12
LIMITS = {"GEOBASE_RATE_LIMIT_PER_S": "10000", "GEOBASE_RATE_LIMIT_BURST": "10000",
          "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000"}


@pytest.fixture(scope="module")
def graded(pg_server, county_template, tmp_path_factory):
    """One copy of the county, keys of an admin and of another department's viewer, and a
    server per zone (started on first use)."""
    from geobase import keys

    name, data_dir = county_template
    db = f"gb_grades_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, db, name)
    settings = settings_for(url, data_dir)
    with psycopg.connect(url, autocommit=True) as conn:
        tokens = {"admin": keys.create_key(conn, name="grades-admin", role="admin", department=None).token,
                  "viewer": keys.create_key(conn, name="grades-viewer", role="viewer", department="forestry").token,
                  "anonymous": None}
        lon, lat = conn.execute(f"SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p "
                                f"FROM data.{LAYER} ORDER BY ST_Area(geom) DESC LIMIT 1) s").fetchone()
    servers: dict[str, LiveServer] = {}

    def server(zone: str) -> LiveServer:
        if zone not in servers:
            servers[zone] = LiveServer(settings, env={"GEOBASE_NETWORK_ZONE": zone, **LIMITS})
        return servers[zone]

    yield url, tokens, server, (lon, lat)
    for srv in servers.values():
        srv.stop()
    drop_database(pg_server, db)


def _outputs(c: httpx.Client, lon: float, lat: float) -> dict[str, bool]:
    """Is the layer there, output by output, for this client? (a point inside one of its features)"""
    x, y = tile_xy(lon, lat, Z)
    d = 0.001
    site_geom = {"type": "Polygon", "coordinates": [[[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d],
                                                     [lon - d, lat + d], [lon - d, lat - d]]]}
    onemap = c.get(f"/tiles/onemap/{Z}/{x}/{y}.mvt")
    assert onemap.status_code in (200, 204), onemap.text
    site = c.post("/processes/site-check/execution", json={"inputs": {"geometry": site_geom}})
    assert site.status_code == 200, site.text
    config = c.get("/map/config")
    assert config.status_code == 200
    status = {
        "collection": c.get(f"/collections/{LAYER}").status_code,
        "items": c.get(f"/collections/{LAYER}/items", params={"limit": 1}).status_code,
        "download gpkg": c.get(f"/collections/{LAYER}/items", params={"f": "gpkg", "limit": 5}).status_code,
        "download parquet": c.get(f"/collections/{LAYER}/items", params={"f": "parquet", "limit": 5}).status_code,
        "tile": c.get(f"/tiles/{LAYER}/{Z}/{x}/{y}.mvt").status_code,
        "tilejson": c.get(f"/tiles/{LAYER}.json").status_code,
        "full download": c.get(f"/catalog/items/{LAYER}/download", params={"f": "geojson"}).status_code,
    }
    for what, code in status.items():
        assert code in (200, 204, 404), (what, code)
    return {
        **{what: code != 404 for what, code in status.items()},
        "collections": LAYER in {col["id"] for col in c.get("/collections").json()["collections"]},
        "layers": LAYER in {lay["name"] for lay in c.get("/layers").json()["layers"]},
        "map config": LAYER in config.text,
        "one map tile": LAYER in (mapbox_vector_tile.decode(onemap.content) if onemap.content else {}),
        "analysis input": LAYER in site.json()["layers"],
    }


def _record(c: httpx.Client) -> dict[str, bool]:
    """Is the layer's catalog record findable (Records item, search, DCAT, CSW)?"""
    item = c.get(f"/catalog/items/{LAYER}")
    assert item.status_code in (200, 404)
    search = {f["id"] for f in c.get("/catalog/items", params={"limit": 1000}).json()["features"]}
    csw = c.get("/csw", params={"service": "CSW", "version": "2.0.2", "request": "GetRecordById", "id": LAYER,
                                "elementsetname": "brief"})
    return {"record": item.status_code == 200, "search": LAYER in search,
            "dcat": f"/collections/catalog/items/{LAYER}" in c.get("/catalog/dcat.jsonld").text,
            "csw": f"<dc:identifier>{LAYER}</dc:identifier>" in csw.text}


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("grade", GRADES)
@pytest.mark.parametrize("openness", OPENNESS)
def test_visible_everywhere_or_nowhere(graded, zone, grade, openness):
    url, tokens, server, point = graded
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE catalog.layers SET grade = %s, openness = %s WHERE name = %s", (grade, openness, LAYER))
    srv = server(zone)
    allowed = zone_allows(zone, grade, openness)
    for caller, token in tokens.items():
        expected = allowed and (caller != "anonymous" or open_to_anonymous(zone, openness))
        headers = {"X-API-Key": token} if token else {}
        with srv.client(headers=headers) as c:
            seen = _outputs(c, *point)
            listed = _record(c)
        assert seen == {k: expected for k in seen}, (zone, grade, openness, caller, seen)
        # the record is listed where the data are visible, and also where they may be requested
        expected_record = allowed and (expected or openness == "conditional")
        assert listed == {k: expected_record for k in listed}, (zone, grade, openness, caller, listed)


def test_the_zone_table_as_documented():
    """The table the operators read: core data only on the classified network, closed or
    important data never on the internet, conditional data on the internet for keys only."""
    assert zone_allows("classified", "core", "closed")
    assert not zone_allows("government", "core", "open")
    assert zone_allows("government", "important", "closed")
    assert not zone_allows("internet", "important", "open")
    assert not zone_allows("internet", "general", "closed")
    assert zone_allows("internet", "general", "conditional") and not open_to_anonymous("internet", "conditional")
    assert not zone_allows("moon", "general", "open") and not zone_allows("internet", None, "open")


def test_unknown_zone_stops_the_start(graded):
    from geobase.errors import ConfigError
    from geobase.settings import Settings

    with pytest.raises(Exception) as err:
        Settings(network_zone="intranet")
    assert "network_zone" in str(err.value) or isinstance(err.value, ConfigError)


def test_desensitised_for_outside_callers(graded):
    """forest (有条件开放) drops its village code and sub-compartment number for outside callers:
    shared publicly on the government network, the anonymous caller's items, downloads, queryables
    and sort keys lack them; a department's key (inside) reads them."""
    url, tokens, server, _ = graded
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE catalog.layers SET sharing = 'public' WHERE name = 'forest'")
    srv = server("government")
    with srv.client() as anon, srv.client(headers={"X-API-Key": tokens["viewer"]}) as inside:
        a = anon.get("/collections/forest/items", params={"limit": 3}).json()["features"]
        i = inside.get("/collections/forest/items", params={"limit": 3}).json()["features"]
        assert a and i
        assert all("cun" not in f["properties"] and "xiao_ban" not in f["properties"] for f in a)
        assert all("cun" in f["properties"] and "xiao_ban" in f["properties"] for f in i)
        header = anon.get("/collections/forest/items", params={"f": "csv", "limit": 3}).text.splitlines()[0]
        assert "cun" not in header.split(",") and "di_lei" in header
        assert "cun" not in anon.get("/collections/forest/queryables").json()["properties"]
        assert anon.get("/collections/forest/items", params={"sortby": "cun"}).status_code == 400
        assert inside.get("/collections/forest/items", params={"sortby": "cun"}).status_code == 200

"""``GET /search`` (issue 21, Find): parcel numbers, division codes and names, village and place
names, and coordinates — against a real server over the sample county, with the expected
answers read by plain SQL and pyproj; masked fields are never searched nor shown."""

from __future__ import annotations

import psycopg
import pytest
from pyproj import Transformer

from geobase.errors import InvalidInput
from geobase.search import parse_position


def _one(settings, query: str, params=()):
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(query, params).fetchone()


def _find(http, q: str, headers: dict | None = None, **kw) -> list[dict]:
    r = http.get("/search", params={"q": q, **kw}, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _refused(r, parameter: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["parameter"] == parameter and parameter in r.json()["description"], r.text


# ------------------------------------------------------------------------------------------
# coordinates (pure)
# ------------------------------------------------------------------------------------------
def test_lon_lat_in_either_order():
    p = parse_position("118.12 29.05")
    assert (p.lon, p.lat) == (118.12, 29.05)
    p = parse_position("29.05, 118.12")
    assert (p.lon, p.lat) == (118.12, 29.05)
    assert parse_position("339901001") is None and parse_position("城关镇") is None


@pytest.mark.parametrize("q", ["39512345.6 3456789.0", "3456789.0 39512345.6", "512345.6 3456789.0 zone 39",
                               "39带 512345.6，3456789.0", "zone=39 39512345.6 3456789.0"])
def test_gauss_kruger_with_zone_prefix_or_explicit_zone(q):
    lon, lat = Transformer.from_crs(4527, 4490, always_xy=True).transform(39512345.6, 3456789.0)
    p = parse_position(q)
    assert abs(p.lon - lon) < 1e-9 and abs(p.lat - lat) < 1e-9, (q, p)
    assert "zone 39" in p.read_as and "EPSG:4527" in p.read_as


def test_six_degree_zone():
    lon, lat = Transformer.from_crs(4498, 4490, always_xy=True).transform(20_612_345.0, 3_456_789.0)  # zone 20
    p = parse_position("20612345 3456789")
    assert abs(p.lon - lon) < 1e-9 and abs(p.lat - lat) < 1e-9


@pytest.mark.parametrize("q", ["512345.6 3456789.0", "39512345.6 3456789.0 zone 40", "512345.6 3456789.0 zone 99"])
def test_projected_numbers_without_a_usable_zone_are_refused(q):
    with pytest.raises(InvalidInput) as e:
        parse_position(q)
    assert e.value.parameter == "q"


# ------------------------------------------------------------------------------------------
# the endpoint
# ------------------------------------------------------------------------------------------
def test_search_finds_parcels_divisions_villages_places_and_positions(county_server, county_shared):
    bsm, tbbh, village, minx, maxy = _one(
        county_shared, "SELECT bsm, tbbh, zldwmc, ST_XMin(geom), ST_YMax(geom) FROM data.land_use "
        "WHERE _vto IS NULL ORDER BY bsm LIMIT 1")
    with county_server.client() as http:
        hits = _find(http, bsm)
        assert hits[0]["layer"] == "land_use" and hits[0]["id"] == bsm and hits[0]["kind"] == "feature", hits
        assert abs(hits[0]["bbox"][0] - minx) < 1e-9 and abs(hits[0]["bbox"][3] - maxy) < 1e-9
        assert bsm in hits[0]["label"] and village in hits[0]["label"]

        same_number = _one(county_shared, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND tbbh = %s",
                           (tbbh,))[0]
        hits = _find(http, tbbh, limit=50)  # 图斑编号 repeats across villages: each one listed
        parcels = [h for h in hits if h["layer"] == "land_use" and h["field"] == "tbbh"]
        assert len(parcels) == min(same_number, 50) and all(h["value"] == tbbh for h in parcels)

        hits = _find(http, "339901")  # the county first, then its townships by their code prefix
        assert hits[0]["layer"] == "admin_divisions" and hits[0]["value"] == "339901", hits
        assert any(h["value"] == "339901001" for h in hits)
        hits = _find(http, "城关镇")
        assert hits[0]["layer"] == "admin_divisions" and hits[0]["value"] == "城关镇", hits

        parcels_in_village = _one(county_shared, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND "
                                  "zldwmc = %s", (village,))[0]
        hits = _find(http, village)
        group = next(h for h in hits if h["layer"] == "land_use" and h["field"] == "zldwmc" and h["value"] == village)
        assert group["kind"] == "group" and group["count"] == parcels_in_village
        items = http.get("/collections/land_use/items", params={"filter": group["filter"], "limit": 1,
                                                                "numberMatched": "true"}).json()
        assert items["numberMatched"] == parcels_in_village  # the group's filter selects its parcels

        hits = _find(http, "月亮湖")
        assert hits and hits[0]["layer"] == "water_areas" and hits[0]["value"] == "月亮湖", hits

        hits = _find(http, "39512345.6 3456789.0")
        lon, lat = Transformer.from_crs(4527, 4490, always_xy=True).transform(39512345.6, 3456789.0)
        assert hits[0]["kind"] == "position" and abs(hits[0]["point"][0] - lon) < 1e-9, hits

        assert _find(http, "没有这个地名") == []
        assert len(_find(http, "1", limit=3)) <= 3


def test_search_refuses_bad_queries_naming_the_parameter(county_server):
    with county_server.client() as http:
        _refused(http.get("/search"), "q")
        _refused(http.get("/search", params={"q": "   "}), "q")
        _refused(http.get("/search", params={"q": "村" * 101}), "q")
        _refused(http.get("/search", params={"q": "512345.6 3456789.0"}), "q")
        _refused(http.get("/search", params={"q": "城关", "limit": "0"}), "limit")
        _refused(http.get("/search", params={"q": "城关", "limit": "51"}), "limit")
        _refused(http.get("/search", params={"q": "城关", "nosuch": "1"}), "nosuch")
        r = http.get("/search", params={"q": "100%_\\'"})  # LIKE and quote characters are literal
        assert r.status_code == 200 and r.json()["results"] == [], r.text


def test_masked_owner_names_are_never_searched_nor_shown(county_db, live_server):
    """qsdwmc (owner unit name) is hidden from the public: a value planted in it is not found by
    an anonymous caller, nor shown in the label of a parcel found by its number, while a
    department key finds it. A layer the caller may not see (forest, internal) is not searched."""
    from geobase import keys

    planted = "秘密权利人甲乙丙"
    with psycopg.connect(county_db.database_url) as conn:
        bsm = conn.execute("SELECT bsm FROM data.land_use WHERE _vto IS NULL ORDER BY bsm LIMIT 1").fetchone()[0]
        conn.execute("UPDATE data.land_use SET qsdwmc = %s WHERE bsm = %s AND _vto IS NULL", (planted, bsm))
        xbh = conn.execute("SELECT xbh FROM data.forest WHERE _vto IS NULL LIMIT 1").fetchone()[0]
        token = keys.create_key(conn, name="planner", role="viewer", department="planning").token
        conn.commit()
    srv = live_server(county_db)
    with srv.client() as http:
        assert _find(http, planted) == []
        assert _find(http, planted[:3]) == []
        r = http.get("/search", params={"q": bsm})
        assert r.status_code == 200 and planted not in r.text
        assert not [h for h in _find(http, xbh) if h["layer"] == "forest"]

        auth = {"Authorization": f"Bearer {token}"}
        hits = _find(http, planted, headers=auth)
        assert [(h["layer"], h["field"], h["value"], h["count"]) for h in hits] == [("land_use", "qsdwmc", planted, 1)]
        assert hits[0]["id"] == bsm
        assert any(h["layer"] == "forest" and h["id"] == xbh for h in _find(http, xbh, headers=auth))


def test_label_points_sit_inside_their_places(county_server, county_shared):
    """/search/labels: one point per township, village and named lake, each inside its place."""
    with county_server.client() as http:
        r = http.get("/search/labels")
        assert r.status_code == 200, r.text
        features = r.json()["features"]
    by_kind: dict[str, list] = {}
    for f in features:
        by_kind.setdefault(f["properties"]["kind"], []).append(f)
    townships = _one(county_shared, "SELECT count(*) FROM data.admin_divisions WHERE _vto IS NULL AND level = 'township'")[0]
    villages = _one(county_shared, "SELECT count(DISTINCT zldwmc) FROM data.land_use WHERE _vto IS NULL")[0]
    assert len(by_kind["township"]) == townships and len(by_kind["village"]) == villages
    assert "月亮湖" in {f["properties"]["name"] for f in by_kind["water"]}
    checks = {"township": "SELECT bool_or(ST_Intersects(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4490))) FROM "
                          "data.admin_divisions WHERE _vto IS NULL AND xzqmc = %s",
              "village": "SELECT bool_or(ST_Intersects(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4490))) FROM "
                         "data.land_use WHERE _vto IS NULL AND zldwmc = %s"}
    for kind, query in checks.items():
        for f in by_kind[kind]:
            x, y = f["geometry"]["coordinates"]
            assert _one(county_shared, query, (x, y, f["properties"]["name"]))[0], f

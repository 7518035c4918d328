"""A feature key is unique per county only: two counties' deliveries may both hold BSM
``00000002`` (tests/test_divisions.py). Reading or editing by the bare key must then never pick
one county's feature silently: the item answers 409 naming both counties' qualified ids
(``339901-00000002``, geobase/features/ids.py) unless ``division=`` names one, an edit by the key
is refused and changes nothing (before, its commit retired BOTH counties' features and put back
one), and a feature's history by its qualified id is its county's.

Real PostGIS, real files through GDAL, a real uvicorn server, httpx."""

from __future__ import annotations

import json

import psycopg
from test_divisions import A, B, county_gdf, load
from test_ingest import query

from geobase import keys

GEOJSON = "application/geo+json"
SHARED = "00000002"  # a BSM of both counties' deliveries


def _admin(settings) -> dict:
    with psycopg.connect(settings.database_url) as conn:
        token = keys.create_key(conn, name="admin-shared", role="admin", department=None).token
        conn.commit()
    return {"Authorization": f"Bearer {token}"}


def _current(settings, key: str) -> list[tuple]:
    return query(settings, "SELECT division, _hash, _vfrom FROM data.land_use WHERE _vto IS NULL AND _key = %s "
                           "ORDER BY division", (key,))


def test_a_key_of_two_counties_is_refused_unless_the_county_is_named(db_settings, tmp_path, live_server):
    s = db_settings
    load(s, tmp_path, A)
    load(s, tmp_path, B)
    assert [d for d, *_ in _current(s, SHARED)] == [A, B]
    h = _admin(s)
    srv = live_server(s)
    with srv.client() as c:
        r = c.get(f"/collections/land_use/items/{SHARED}", headers=h)
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["parameter"] == "featureId" and A in body["description"] and B in body["description"]
        assert body["details"]["candidates"] == [f"{A}-{SHARED}", f"{B}-{SHARED}"]  # the qualified ids
        for county in (A, B):
            r = c.get(f"/collections/land_use/items/{SHARED}", params={"division": county}, headers=h)
            assert r.status_code == 200, r.text
            assert r.json()["id"] == f"{county}-{SHARED}" and r.json()["properties"]["zldwdm"].startswith(county)
        assert c.get(f"/collections/land_use/items/{SHARED}", params={"division": "33990"},
                     headers=h).status_code == 400
        # 339903 is no county of anything here: a 400 naming division, as the lists answer (issue 16)
        r = c.get(f"/collections/land_use/items/{SHARED}", params={"division": "339903"}, headers=h)
        assert r.status_code == 400 and r.json()["parameter"] == "division", r.text
        # a key of one county only needs no division
        only_a = county_gdf(A, n=20)
        load(s, tmp_path, A, only_a, "more")
        assert c.get("/collections/land_use/items/00000018", headers=h).status_code == 200

        # an edit by the shared key is refused and changes nothing in either county
        etag = c.get(f"/collections/land_use/items/{SHARED}", params={"division": A}, headers=h).headers["etag"]
        before = _current(s, SHARED)
        r = c.patch(f"/collections/land_use/items/{SHARED}", params={"reason": "reclassified"},
                    content=json.dumps({"properties": {"dlmc": "旱地"}}),
                    headers={**h, "Content-Type": GEOJSON, "If-Match": etag})
        assert r.status_code == 409 and r.json()["parameter"] == "featureId", r.text
        assert _current(s, SHARED) == before

        # its history by the bare key names both features; by a qualified id, that county's states
        r = c.get(f"/collections/land_use/items/{SHARED}/history", headers=h)
        assert r.status_code == 409 and r.json()["details"]["divisions"] == [A, B], r.text
        for county in (A, B):
            states = c.get(f"/collections/land_use/items/{county}-{SHARED}/history", headers=h).json()["states"]
            assert {st["division"] for st in states} == {county}


def test_a_change_staged_by_key_edits_its_countys_feature_when_another_county_gains_the_key(
        db_settings, tmp_path, live_server):
    """A change names its feature by key and county (geobase/features/ids.py) from its staging on:
    a key another county gained after it was staged changes nothing of that county at commit
    (before the county was named, the commit had to be refused: retiring by key would have ended
    both counties' features)."""
    s = db_settings
    load(s, tmp_path, A, county_gdf(A, n=20))  # keys 00000001..00000020
    load(s, tmp_path, B, county_gdf(B, n=4, dx=2000))  # keys 00000001..00000004
    key = "00000018"  # A's only
    h = _admin(s)
    srv = live_server(s)
    with srv.client() as c:
        sid = c.post("/collections/land_use/sessions", headers=h).json()["id"]
        etag = c.get(f"/collections/land_use/items/{key}", headers=h).headers["etag"]
        r = c.patch(f"/collections/land_use/items/{key}", content=json.dumps({"properties": {"dlmc": "旱地"}}),
                    headers={**h, "Content-Type": GEOJSON, "If-Match": etag, "Edit-Session": sid})
        assert r.status_code == 200, r.text
        load(s, tmp_path, B, county_gdf(B, n=20, dx=2000), "grown")  # B now also has 00000018
        before = _current(s, key)
        assert [d for d, *_ in before] == [A, B]
        r = c.post(f"/collections/land_use/sessions/{sid}/commit", json={"message": "m"}, headers=h)
        assert r.status_code == 200, r.text
        after = _current(s, key)
        assert after[1] == before[1] and after[0][0] == A and after[0][1:] != before[0][1:]  # A's changed, B's not

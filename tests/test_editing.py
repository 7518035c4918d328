"""OGC API - Features Part 4 over real HTTP: create, replace, update, delete, ETags and If-Match
(412/428, nothing changed), edit sessions committed as one version (diff, change feed, time
travel, rollback), unknown parameters, media types, Content-Crs."""

from __future__ import annotations

import json

import httpx

from editing_common import GEOJSON, audit_rows, auth, body_of, ed, feature, layer_state, q, some_key  # noqa: F401

PART4 = "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf"


def test_conformance_declares_part4(ed):
    srv, _, _ = ed
    classes = httpx.get(f"{srv.url}/conformance").json()["conformsTo"]
    for c in ("create-replace-delete", "update", "features"):
        assert f"{PART4}/{c}" in classes


def test_create_replace_update_delete_each_a_version_with_its_reason(ed):
    srv, tokens, settings = ed
    h = auth(tokens, "forestry:editor")
    with srv.client() as c:
        base, etag = feature(c, "forest", some_key(settings, "forest"), h)
        v0 = layer_state(settings, "forest")[0]
        new = json.loads(body_of(base, xbh="EDIT-0001", di_lei="0111"))
        r = c.post("/collections/forest/items", params={"reason": "新造林小班 field survey"}, content=json.dumps(new),
                   headers={**h, "Content-Type": GEOJSON})
        assert r.status_code == 201, r.text
        assert r.headers["location"].endswith("/collections/forest/items/EDIT-0001")
        assert r.json()["version"] == v0 + 1
        got, etag = feature(c, "forest", "EDIT-0001", h)
        assert got["properties"]["di_lei"] == "0111" and etag.startswith('"' + r.headers["etag"].strip('"'))
        # replace (PUT) with the ETag just read
        r = c.put("/collections/forest/items/EDIT-0001", params={"reason": "corrected origin"},
                  content=body_of(got, qi_yuan=got["properties"]["qi_yuan"], ling_zu=None),
                  headers={**h, "Content-Type": GEOJSON, "If-Match": etag})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == v0 + 2
        got, etag2 = feature(c, "forest", "EDIT-0001", h)
        assert got["properties"]["ling_zu"] is None and etag2 != etag
        # update (PATCH, merge patch) with the new ETag
        r = c.patch("/collections/forest/items/EDIT-0001", params={"reason": "canopy measured"},
                    content=json.dumps({"properties": {"yu_bi_du": 0.65}}),
                    headers={**h, "Content-Type": "application/merge-patch+json", "If-Match": etag2})
        assert r.status_code == 200, r.text
        got, etag3 = feature(c, "forest", "EDIT-0001", h)
        assert got["properties"]["yu_bi_du"] == 0.65 and got["properties"]["di_lei"] == "0111"
        # delete
        r = c.delete("/collections/forest/items/EDIT-0001", params={"reason": "duplicate"},
                     headers={**h, "If-Match": etag3})
        assert r.status_code == 200, r.text
        assert c.get("/collections/forest/items/EDIT-0001", headers=h).status_code == 404
        hist = c.get("/collections/forest/items/EDIT-0001/history", headers=h).json()["states"]
        assert [(s["version"], s["reason"], s.get("deleted", False)) for s in hist] == [
            (v0 + 1, "新造林小班 field survey", False), (v0 + 2, "corrected origin", False),
            (v0 + 3, "canopy measured", False), (v0 + 4, "duplicate", True)]
        assert all(s["by"] == "forestry-editor" for s in hist) and hist[2]["properties"]["yu_bi_du"] == 0.65
        assert c.get("/collections/forest/items/NEVER-WAS/history", headers=h).status_code == 404
        assert c.get("/collections/forest/items/EDIT-0001/history").status_code == 404  # forest is internal
        land = some_key(settings, "land_use")
        public = c.get(f"/collections/land_use/items/{land}/history").json()["states"]
        assert public and "qsdwmc" not in public[0]["properties"] and "dlbm" in public[0]["properties"]
    versions = q(settings, "SELECT version, mode, created_by, metadata->>'message', rows_added, rows_changed, "
                 "rows_removed FROM catalog.layer_versions WHERE layer = 'forest' AND version > %s ORDER BY version",
                 (v0,))
    assert [v[1] for v in versions] == ["edit"] * 4
    assert [v[3] for v in versions] == ["新造林小班 field survey", "corrected origin", "canopy measured", "duplicate"]
    assert [(v[4], v[5], v[6]) for v in versions] == [(1, 0, 0), (0, 1, 0), (0, 1, 0), (0, 0, 1)]
    assert all(v[2] == "forestry-editor" for v in versions)
    for action in ("feature.create", "feature.replace", "feature.update", "feature.delete"):
        rows = audit_rows(settings, action, "EDIT-0001")
        assert len(rows) == 1 and rows[0][1] == "editor" and rows[0][3] in (200, 201), (action, rows)
        assert rows[0][4]["reason"] and rows[0][4]["version"] and "forest" in rows[0][5]


def test_if_match_missing_is_428_and_stale_is_412_and_nothing_changes(ed):
    srv, tokens, settings = ed
    h = auth(tokens, "forestry:editor")
    key = some_key(settings, "forest", 3)
    with srv.client() as c:
        got, etag = feature(c, "forest", key, h)
        before = layer_state(settings, "forest")
        body = body_of(got, bh_dj=None)
        r = c.put(f"/collections/forest/items/{key}", params={"reason": "x"}, content=body,
                  headers={**h, "Content-Type": GEOJSON})
        assert r.status_code == 428 and r.json()["parameter"] == "If-Match"
        for call in (lambda hh: c.patch(f"/collections/forest/items/{key}", params={"reason": "x"},
                                        content=b'{"properties": {}}', headers=hh),
                     lambda hh: c.delete(f"/collections/forest/items/{key}", params={"reason": "x"}, headers=hh)):
            assert call({**h, "Content-Type": GEOJSON}).status_code == 428
            assert call({**h, "Content-Type": GEOJSON, "If-Match": '"0123"'}).status_code == 412
            assert call({**h, "Content-Type": GEOJSON, "If-Match": "W/" + etag}).status_code == 412
        assert layer_state(settings, "forest") == before
        # a first writer wins; the second, holding the same ETag, gets 412 and the first write stays
        ok = c.patch(f"/collections/forest/items/{key}", params={"reason": "first"},
                     content=b'{"properties": {"yu_bi_du": 0.31}}', headers={**h, "Content-Type": GEOJSON,
                                                                              "If-Match": etag})
        assert ok.status_code == 200, ok.text
        after_first = layer_state(settings, "forest")
        late = c.patch(f"/collections/forest/items/{key}", params={"reason": "second"},
                       content=b'{"properties": {"yu_bi_du": 0.99}}', headers={**h, "Content-Type": GEOJSON,
                                                                                "If-Match": etag})
        assert late.status_code == 412 and late.json()["details"]["etag"] == ok.headers["etag"]
        assert layer_state(settings, "forest") == after_first
        assert feature(c, "forest", key, h)[0]["properties"]["yu_bi_du"] == 0.31
        # a write outside a session needs its reason
        r = c.patch(f"/collections/forest/items/{key}", content=b'{"properties": {}}',
                    headers={**h, "Content-Type": GEOJSON, "If-Match": ok.headers["etag"]})
        assert r.status_code == 400 and r.json()["parameter"] == "reason"
        assert layer_state(settings, "forest") == after_first


def test_unknown_parameters_media_types_and_bad_bodies_are_refused(ed):
    srv, tokens, settings = ed
    h = auth(tokens, "forestry:editor")
    key = some_key(settings, "forest", 4)
    before = layer_state(settings, "forest")
    with srv.client() as c:
        _, etag = feature(c, "forest", key, h)
        r = c.patch(f"/collections/forest/items/{key}", params={"reason": "x", "dry_run": "true"},
                    content=b'{"properties": {}}', headers={**h, "Content-Type": GEOJSON, "If-Match": etag})
        assert r.status_code == 400 and r.json()["parameter"] == "dry_run"
        r = c.post("/collections/forest/sessions", params={"mode": "x"}, headers=h)
        assert r.status_code == 400 and r.json()["parameter"] == "mode"
        r = c.patch(f"/collections/forest/items/{key}", params={"reason": "x"}, content=b"<xml/>",
                    headers={**h, "Content-Type": "application/xml", "If-Match": etag})
        assert r.status_code == 415
        r = c.post("/collections/forest/items", params={"reason": "x"}, content=b"{not json",
                   headers={**h, "Content-Type": GEOJSON})
        assert r.status_code == 400
        r = c.post("/collections/forest/items", params={"reason": "x"}, content=b'{"type": "FeatureCollection"}',
                   headers={**h, "Content-Type": GEOJSON})
        assert r.status_code == 400
        r = c.post("/collections/dem/items", params={"reason": "x"}, content=b"{}", headers={**h,
                                                                                          "Content-Type": GEOJSON})
        assert r.status_code == 404
    assert layer_state(settings, "forest") == before


def test_content_crs_gauss_kruger_body_lands_in_storage_crs(ed):
    srv, tokens, settings = ed
    h = auth(tokens, "forestry:editor")
    key = some_key(settings, "forest", 5)
    # the feature's geometry in EPSG:4527 (CGCS2000 GK zone 39, northing first), from PostGIS
    gk = json.loads(q(settings, "SELECT ST_AsGeoJSON(ST_FlipCoordinates(ST_Transform(geom, 4527)), 4) FROM "
                      "data.forest WHERE _vto IS NULL AND _key = %s", (key,))[0][0])
    with srv.client() as c:
        got, etag = feature(c, "forest", key, h)
        r = c.patch(f"/collections/forest/items/{key}", params={"reason": "resurveyed in GK"},
                    content=json.dumps({"geometry": gk}),
                    headers={**h, "Content-Type": GEOJSON, "If-Match": etag,
                             "Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/4527>"})
        assert r.status_code == 200, r.text
        r = c.patch(f"/collections/forest/items/{key}", params={"reason": "x"}, content=json.dumps({"geometry": gk}),
                    headers={**h, "Content-Type": GEOJSON, "If-Match": r.headers["etag"],
                             "Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/999999>"})
        assert r.status_code == 400 and r.json()["parameter"] == "Content-Crs"
    # same place to the survey's 0.1 mm rounding: the Hausdorff distance in metres stays tiny
    (d, area_ok), = q(settings, "SELECT ST_HausdorffDistance(ST_Transform(n.geom, 4527), ST_Transform(o.geom, 4527)), "
                      "abs(n._area_m2 - ST_Area(n.geom::geography)) < 1e-6 FROM data.forest n JOIN data.forest o "
                      "ON o._key = n._key AND o._vto = n._vfrom WHERE n._vto IS NULL AND n._key = %s", (key,))
    assert d < 0.01 and area_ok

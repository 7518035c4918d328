"""Edit sessions over real HTTP: several changes, one version with one message (diff, change feed,
time travel and rollback work on it like on an ingest's version), discard, and conflicts with
writes made meanwhile (412 at commit, nothing written)."""

from __future__ import annotations

import json

from editing_common import GEOJSON, auth, body_of, ed, feature, layer_state, q, some_key  # noqa: F401


def _open(c, h, layer="forest") -> str:
    r = c.post(f"/collections/{layer}/sessions", headers=h)
    assert r.status_code == 201, r.text
    assert r.headers["location"].endswith(r.json()["id"])
    return r.json()["id"]


def _patch(c, h, key, props, etag, session=None, layer="forest", **params):
    headers = {**h, "Content-Type": GEOJSON, "If-Match": etag, **({"Edit-Session": session} if session else {})}
    return c.patch(f"/collections/{layer}/items/{key}", params=params, content=json.dumps({"properties": props}),
                   headers=headers)


def test_a_session_of_several_changes_commits_as_one_version(ed):
    from geobase.catalog.history import diff, rollback

    srv, tokens, settings = ed
    h = auth(tokens, "forestry:editor")
    a, b = some_key(settings, "forest", 10), some_key(settings, "forest", 11)
    with srv.client() as c:
        fa, ea = feature(c, "forest", a, h)
        _, eb = feature(c, "forest", b, h)
        before = layer_state(settings, "forest")
        v0 = before[0]
        sid = _open(c, h)
        r1 = _patch(c, h, a, {"yu_bi_du": 0.12}, ea, sid)
        assert r1.status_code == 200 and r1.json()["committed"] is False and r1.json()["version"] is None
        assert _patch(c, h, a, {"yu_bi_du": 0.13}, ea, sid).status_code == 412  # the session moved on
        r2 = _patch(c, h, a, {"yu_bi_du": 0.14}, r1.headers["etag"], sid)
        assert r2.status_code == 200, r2.text
        assert c.delete(f"/collections/forest/items/{b}", headers={**h, "If-Match": eb, "Edit-Session": sid}
                        ).status_code == 200
        r = c.post("/collections/forest/items", content=body_of(fa, xbh="SESSION-NEW"),
                   headers={**h, "Content-Type": GEOJSON, "Edit-Session": sid})
        assert r.status_code == 201, r.text
        info = c.get(f"/collections/forest/sessions/{sid}", headers=h).json()
        assert info["status"] == "open" and [x["op"] for x in info["changes"]] == ["upsert", "delete", "upsert"]
        assert layer_state(settings, "forest") == before  # nothing visible before the commit
        assert feature(c, "forest", a, h)[0]["properties"]["yu_bi_du"] == fa["properties"]["yu_bi_du"]
        assert c.post(f"/collections/forest/sessions/{sid}/commit", json={"message": " "}, headers=h).status_code == 400
        r = c.post(f"/collections/forest/sessions/{sid}/commit", json={"message": "2026 年度小班更新"}, headers=h)
        assert r.status_code == 200, r.text
        v = r.json()["version"]
        assert v == v0 + 1 and (r.json()["added"], r.json()["changed"], r.json()["removed"]) == (1, 1, 1)
        assert c.post(f"/collections/forest/sessions/{sid}/commit", json={"message": "again"},
                      headers=h).status_code == 409
        assert feature(c, "forest", a, h)[0]["properties"]["yu_bi_du"] == 0.14
        audited = q(settings, "SELECT action, status, params->>'reason', (params->>'version')::int FROM "
                    "catalog.audit_log WHERE params->>'session' = %s ORDER BY id", (sid,))
        assert [a[0] for a in audited] == ["edit.session.open", "feature.update", "feature.update", "feature.delete",
                                           "feature.create", "edit.session.read", "edit.session.commit"]
        assert audited[-1][1:] == (200, "2026 年度小班更新", v)
        # the change feed and the diff see one version with three changes
        feed = c.get("/collections/forest/changes", params={"from": v0, "to": v}, headers=h).json()
        changes = {f["properties"].get("xbh") or f["id"]: f["properties"]["change"] for f in feed["features"]}
        assert sorted(changes.values()) == ["added", "changed", "removed"], changes
        d = diff(settings, "forest", v0, v)
        assert (d["added"], d["removed"], d["changed"]) == (1, 1, 1)
        # time travel: as of v0 the feature had its old value
        t0 = q(settings, "SELECT created_at FROM catalog.layer_versions WHERE layer = 'forest' AND version = %s",
               (v0,))[0][0]
        old = c.get(f"/collections/forest/items/{a}", params={"datetime": t0.isoformat()}, headers=h).json()
        assert old["properties"]["yu_bi_du"] == fa["properties"]["yu_bi_du"]
    # and a rollback to v0 restores v0's rows exactly
    rollback(settings, "forest", v0)
    after = layer_state(settings, "forest")
    cur = q(settings, "SELECT md5(string_agg(_key || _hash, ',' ORDER BY _key)) FROM data.forest WHERE _vto IS NULL")
    was = q(settings, "SELECT md5(string_agg(_key || _hash, ',' ORDER BY _key)) FROM data.forest WHERE _vfrom <= %s "
            "AND (_vto IS NULL OR _vto > %s)", (v0, v0))
    assert cur == was and after[0] == v0 + 2


def test_discard_leaves_the_layer_as_it_was(ed):
    srv, tokens, settings = ed
    h = auth(tokens, "forestry:editor")
    key = some_key(settings, "forest", 20)
    with srv.client() as c:
        _, etag = feature(c, "forest", key, h)
        before = layer_state(settings, "forest")
        sid = _open(c, h)
        assert _patch(c, h, key, {"yu_bi_du": 0.5}, etag, sid).status_code == 200
        r = c.delete(f"/collections/forest/sessions/{sid}", headers=h)
        assert r.status_code == 200 and r.json()["changes"] == 1
        assert _patch(c, h, key, {"yu_bi_du": 0.6}, etag, sid).status_code == 409  # discarded: no more changes
        assert c.post(f"/collections/forest/sessions/{sid}/commit", json={"message": "m"}, headers=h).status_code == 409
        assert c.get(f"/collections/forest/sessions/{sid}", headers=h).json()["status"] == "discarded"
        assert c.get("/collections/forest/sessions/00000000-0000-0000-0000-000000000000", headers=h).status_code == 404
        assert _patch(c, h, key, {"yu_bi_du": 0.6}, etag, "not-a-session").status_code == 404
    assert layer_state(settings, "forest") == before


def test_a_session_commit_after_someone_else_changed_its_feature_is_412_and_writes_nothing(ed):
    srv, tokens, settings = ed
    h = auth(tokens, "forestry:editor")
    adm = auth(tokens, "admin")
    a, b = some_key(settings, "forest", 30), some_key(settings, "forest", 31)
    with srv.client() as c:
        _, ea = feature(c, "forest", a, h)
        _, eb = feature(c, "forest", b, h)
        sid = _open(c, h)
        assert _patch(c, h, a, {"yu_bi_du": 0.21}, ea, sid).status_code == 200
        assert _patch(c, h, b, {"yu_bi_du": 0.22}, eb, sid).status_code == 200
        # meanwhile an admin corrects b directly
        assert _patch(c, adm, b, {"yu_bi_du": 0.77}, eb, reason="urgent fix").status_code == 200
        before = layer_state(settings, "forest")
        r = c.post(f"/collections/forest/sessions/{sid}/commit", json={"message": "batch"}, headers=h)
        assert r.status_code == 412 and r.json()["details"]["features"] == [b]
        assert layer_state(settings, "forest") == before
        assert feature(c, "forest", a, h)[0]["properties"]["yu_bi_du"] != 0.21
        assert c.get(f"/collections/forest/sessions/{sid}", headers=h).json()["status"] == "open"
        # another key may not use the session; the admin may
        other = auth(tokens, "nr:editor")
        assert c.post(f"/collections/forest/sessions/{sid}/commit", json={"message": "x"},
                      headers=other).status_code == 403

"""Every write endpoint of editing, and every refusal it can give, over real HTTP on the land-use
coverage (owned by natural resources): 401 without a key, 403 for an editor of another
department, 428 without If-Match, 412 with a stale one, 400 without a reason, 415 for a body that
is not JSON, 422 for a failing check. Each refusal changes nothing (the layer's versions and rows
are as before) and leaves exactly one audit row with its method, path, caller and status; each
success leaves one with the write's action and reason."""

from __future__ import annotations

import json

import pytest

from editing_common import GEOJSON, auth, body_of, ed, feature, layer_state, q  # noqa: F401

LAYER = "land_use"


def _pair(settings) -> tuple[str, str]:
    """Two adjacent current parcels (a merge of them is allowed), away from other tests' picks."""
    return q(settings, "SELECT a._key, b._key FROM data.land_use a JOIN data.land_use b ON a._key < b._key "
             "AND a.geom && b.geom AND ST_Relate(a.geom, b.geom, 'F***1****') WHERE a._vto IS NULL AND b._vto IS NULL "
             "AND ST_Area(a.geom::geography) > 2000 AND ST_Area(b.geom::geography) > 2000 ORDER BY a._key "
             "OFFSET 3 LIMIT 1")[0]


def _line_across(settings, key: str) -> dict:
    """A north-south line through the parcel's centre, past its box on both sides."""
    x, y0, y1 = q(settings, "SELECT ST_X(ST_Centroid(geom)), ST_YMin(geom) - 0.001, ST_YMax(geom) + 0.001 FROM "
                  "data.land_use WHERE _vto IS NULL AND _key = %s", (key,))[0]
    return {"type": "LineString", "coordinates": [[x, y0], [x, y1]]}


def _audit_after(settings, last_id: int) -> list[tuple]:
    return q(settings, "SELECT method, path, status, key_id, action, params->>'reason' FROM catalog.audit_log "
             "WHERE id > %s AND method <> 'GET' ORDER BY id", (last_id,))


def _last_audit(settings) -> int:
    return q(settings, "SELECT coalesce(max(id), 0) FROM catalog.audit_log")[0][0]


def _key_id(tokens, label: str) -> str | None:
    return tokens[label].split("_")[1] if label != "public" else None


def _requests(settings, a: str, b: str, etag_a: str, etag_b: str, fa: dict) -> dict:
    """name -> (method, path, params, body bytes or None, extra headers) of a well-formed write
    (a replace sends the stored geometry at full precision: the coverage allows no sliver)."""
    item = f"/collections/{LAYER}/items/{a}"
    exact = q(settings, "SELECT ST_AsGeoJSON(geom, 15) FROM data.land_use WHERE _vto IS NULL AND _key = %s", (a,))
    fa = {**fa, "geometry": json.loads(exact[0][0])} if exact else fa
    split = {"line": _line_across(settings, a), "ids": [f"{a}-R1", f"{a}-R2"]}
    return {
        "create": ("POST", f"/collections/{LAYER}/items", {"reason": "r"}, body_of(fa, bsm=f"{a}-NEW"), {}),
        "replace": ("PUT", item, {"reason": "r"}, body_of(fa, bz="replaced"), {"If-Match": etag_a}),
        "update": ("PATCH", item, {"reason": "r"}, b'{"properties": {"bz": "patched"}}', {"If-Match": etag_a}),
        "delete": ("DELETE", item, {"reason": "r"}, None, {"If-Match": etag_a}),
        "split": ("POST", f"{item}/split", {"reason": "r"}, json.dumps(split).encode(), {"If-Match": etag_a}),
        "merge": ("POST", f"{item}/merge", {"reason": "r"}, json.dumps({"with": [b]}).encode(),
                  {"If-Match": f"{etag_a}, {etag_b}"}),
        "session": ("POST", f"/collections/{LAYER}/sessions", {}, None, {}),
        "webhook": ("POST", f"/collections/{LAYER}/webhooks", {}, b'{"url": "http://127.0.0.1:9/hook"}', {}),
    }


def _send(c, tokens, label: str, req: tuple, **changes):
    method, path, params, body, extra = req
    params = {k: v for k, v in {**params, **changes.pop("params", {})}.items() if v is not None}
    headers = {**({"Content-Type": GEOJSON} if body is not None else {}), **extra, **changes.pop("headers", {})}
    headers = {k: v for k, v in headers.items() if v is not None}
    return c.request(method, path, params=params, content=changes.pop("body", body),
                     headers=auth(tokens, label, **headers))


# (request, caller, what is changed in it, expected status); "-" in a header or parameter drops it
REFUSALS = [(name, "public", {}, 401) for name in ("create", "replace", "update", "delete", "split", "merge",
                                                  "session", "webhook")]
REFUSALS += [(name, "forestry:editor", {}, 403) for name in ("create", "replace", "update", "delete", "split",
                                                            "merge", "session", "webhook")]
REFUSALS += [(name, "nr:viewer", {}, 403) for name in ("update", "split", "session")]
REFUSALS += [(name, "nr:editor", {"headers": {"If-Match": None}}, 428)
             for name in ("replace", "update", "delete", "split", "merge")]
REFUSALS += [(name, "nr:editor", {"headers": {"If-Match": '"0000"'}}, 412)
             for name in ("replace", "update", "delete", "split", "merge")]
REFUSALS += [(name, "nr:editor", {"params": {"reason": None}}, 400)
             for name in ("create", "replace", "update", "delete", "split", "merge")]
REFUSALS += [(name, "nr:editor", {"params": {"reason": "r", "force": "1"}}, 400)
             for name in ("update", "split", "merge")]
REFUSALS += [(name, "nr:editor", {"headers": {"Content-Type": "text/plain"}}, 415)
             for name in ("create", "replace", "update", "split", "merge")]
REFUSALS += [
    ("update", "nr:editor", {"body": b'{"properties": {"dlbm": "9999"}}'}, 422),
    ("update", "nr:editor", {"body": b'{"geometry": {"type": "Point", "coordinates": [112.9, 28.1]}}'}, 422),
    ("split", "nr:editor", {"body": b'{"line": {"type": "LineString", "coordinates": [[100, 20], [100.1, 20.1]]},'
                                     b' "ids": ["X-1", "X-2"]}'}, 422),
    ("create", "nr:editor", {}, 422),  # a copy of a parcel overlaps it: the coverage refuses
    ("update", "nr:editor", {"body": b"{not json"}, 400),
    ("merge", "nr:editor", {"body": b'{"with": "not a list"}'}, 400),
]


@pytest.fixture(scope="module")
def parcels(ed):
    srv, tokens, settings = ed
    a, b = _pair(settings)
    return a, b


@pytest.mark.parametrize("name,label,changes,status", REFUSALS,
                         ids=[f"{n}-{lbl}-{s}-{i}" for i, (n, lbl, _, s) in enumerate(REFUSALS)])
def test_each_refusal_changes_nothing_and_is_audited(ed, parcels, name, label, changes, status):
    srv, tokens, settings = ed
    a, b = parcels
    with srv.client() as c:
        fa, etag_a = feature(c, LAYER, a, auth(tokens, "admin"))
        _, etag_b = feature(c, LAYER, b, auth(tokens, "admin"))
        req = _requests(settings, a, b, etag_a, etag_b, fa)[name]
        before, hooks, sessions = (layer_state(settings, LAYER), q(settings, "SELECT count(*) FROM catalog.webhooks"),
                                   q(settings, "SELECT count(*) FROM catalog.edit_sessions"))
        last = _last_audit(settings)
        r = _send(c, tokens, label, req, **changes)
        assert r.status_code == status, (name, label, r.status_code, r.text)
    assert layer_state(settings, LAYER) == before
    assert q(settings, "SELECT count(*) FROM catalog.webhooks") == hooks
    assert q(settings, "SELECT count(*) FROM catalog.edit_sessions") == sessions
    rows = _audit_after(settings, last)
    assert len(rows) == 1, rows
    method, path, got, key_id, _action, _reason = rows[0]
    assert (method, path, got, key_id) == (req[0], req[1], status, _key_id(tokens, label)), rows


def test_each_write_that_succeeds_is_audited_with_its_action_and_reason(ed, parcels):
    srv, tokens, settings = ed
    a, b = parcels
    h = auth(tokens, "nr:editor")
    with srv.client() as c:
        fa, etag_a = feature(c, LAYER, a, h)
        _, etag_b = feature(c, LAYER, b, h)
        reqs = _requests(settings, a, b, etag_a, etag_b, fa)
        done = []
        for name, action in (("update", "feature.update"), ("replace", "feature.replace")):
            last = _last_audit(settings)
            _, etag_a = feature(c, LAYER, a, h)
            method, path, params, body, _ = reqs[name]
            r = _send(c, tokens, "nr:editor", (method, path, {"reason": f"why {name}"}, body, {"If-Match": etag_a}))
            assert r.status_code == 200, r.text
            done.append((name, _audit_after(settings, last), action, r.json()["version"]))
        last = _last_audit(settings)
        _, etag_a = feature(c, LAYER, a, h)
        method, path, _, body, _ = reqs["split"]
        r = _send(c, tokens, "nr:editor", (method, path, {"reason": "why split"}, body, {"If-Match": etag_a}))
        assert r.status_code == 200, r.text
        done.append(("split", _audit_after(settings, last), "feature.split", r.json()["version"]))
        one, two = (p["featureId"] for p in r.json()["pieces"])  # adjacent by construction: merge them back
        last = _last_audit(settings)
        tags = f"{feature(c, LAYER, one, h)[1]}, {feature(c, LAYER, two, h)[1]}"
        r = _send(c, tokens, "nr:editor", ("POST", f"/collections/{LAYER}/items/{one}/merge", {"reason": "why merge"},
                                           json.dumps({"with": [two]}).encode(), {"If-Match": tags}))
        assert r.status_code == 200, r.text
        done.append(("merge", _audit_after(settings, last), "feature.merge", r.json()["version"]))
        last = _last_audit(settings)
        _, etag_b = feature(c, LAYER, b, h)
        r = _send(c, tokens, "nr:editor", ("DELETE", f"/collections/{LAYER}/items/{b}", {"reason": "why delete"},
                                           None, {"If-Match": etag_b}))
        assert r.status_code == 422, r.text  # a parcel of a coverage cannot just vanish: it leaves a gap
        done_refused = _audit_after(settings, last)
    assert [(x[2], x[0]) for x in done_refused] == [(422, "DELETE")]
    for name, rows, action, version in done:
        assert len(rows) == 1 and rows[0][2] == 200 and rows[0][4] == action and rows[0][5] == f"why {name}", rows
        assert rows[0][3] == _key_id(tokens, "nr:editor")
        assert q(settings, "SELECT metadata->>'message' FROM catalog.layer_versions WHERE layer = %s AND version = %s",
                 (LAYER, version)) == [(f"why {name}",)]

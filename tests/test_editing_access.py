"""Who may edit (editors of the owning department, admins; 401/403/404 otherwise, nothing changed,
the refusal audited), the editor role granted by the admin API and CLI, and the checks every edit
passes as an ingest would (422 naming the check and the field)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from editing_common import GEOJSON, auth, body_of, ed, feature, layer_state, q, some_key  # noqa: F401

# (layer, caller) -> expected status of a PATCH of one feature's attributes
RIGHTS = [
    ("forest", "public", 404),            # internal layer: not visible without a key
    ("forest", "forestry:analyst", 403),  # the owner department, but not an editor
    ("forest", "nr:editor", 403),         # an editor of another department
    ("forest", "planning:editor", 403),
    ("forest", "forestry:editor", 200),
    ("forest", "admin", 200),
    ("land_use", "public", 401),          # public layer: visible, writing needs a key
    ("land_use", "nr:viewer", 403),
    ("land_use", "forestry:editor", 403),
    ("land_use", "nr:editor", 200),
    ("land_use", "nr:steward", 200),      # a steward's role includes editing
    ("rivers", "nr:editor", 403),         # a line layer of water resources
    ("rivers", "water:editor", 200),
]


@pytest.mark.parametrize("layer,label,status", RIGHTS, ids=[f"{a}-{b}" for a, b, _ in RIGHTS])
def test_only_editors_of_the_owning_department_and_admins_write(ed, layer, label, status):
    srv, tokens, settings = ed
    key = some_key(settings, layer, 1 if layer == "rivers" else 40)
    props = {"lin_zhong": label} if layer == "forest" else ({"bz": f"核实 {label}"} if layer == "land_use" else {})
    with srv.client() as c:
        _, etag = feature(c, layer, key, auth(tokens, "admin"))
        before = layer_state(settings, layer)
        r = c.patch(f"/collections/{layer}/items/{key}", params={"reason": f"check by {label}"},
                    content=json.dumps({"properties": props}),
                    headers=auth(tokens, label, **{"Content-Type": GEOJSON, "If-Match": etag}))
        assert r.status_code == status, r.text
        if status != 200:
            assert layer_state(settings, layer) == before
            # a session cannot be opened either
            assert c.post(f"/collections/{layer}/sessions", headers=auth(tokens, label)).status_code == status
        else:
            assert layer_state(settings, layer)[0] == before[0] + 1
    rows = q(settings, "SELECT status, action, params->>'reason' FROM catalog.audit_log WHERE method = 'PATCH' "
             "AND path = %s AND coalesce(key_id, '') = coalesce(%s, '') ORDER BY id DESC LIMIT 1",
             (f"/collections/{layer}/items/{key}", tokens[label].split("_")[1] if label != "public" else None))
    assert rows and rows[0][0] == status, rows
    if status == 200:
        assert rows[0][1] == "feature.update" and rows[0][2] == f"check by {label}"


def test_the_editor_role_is_granted_by_the_admin_api_and_cli(ed):
    srv, tokens, settings = ed
    with srv.client() as c:
        r = c.post("/admin/keys", json={"name": "forest.editor.2", "role": "editor", "department": "forestry"},
                   headers=auth(tokens, "admin"))
        assert r.status_code in (200, 201), r.text
        api_key = r.json()["key"]
        env = {**os.environ, "GEOBASE_DATABASE_URL": settings.database_url, "GEOBASE_DATA_DIR": str(settings.data_dir)}
        out = subprocess.run([sys.executable, "-m", "geobase.cli", "keys", "create", "--name", "planning.editor.2",
                              "--role", "editor", "--department", "planning", "--json"], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        cli_key = json.loads(out.stdout)["key"]
        for layer, token in (("forest", api_key), ("planning_zones", cli_key)):
            key = some_key(settings, layer, 2)
            _, etag = feature(c, layer, key, auth(tokens, "admin"))
            r = c.patch(f"/collections/{layer}/items/{key}", params={"reason": "granted editor"},
                        content=b'{"properties": {}}', headers={"Authorization": f"Bearer {token}",
                                                                 "Content-Type": GEOJSON, "If-Match": etag})
            assert r.status_code == 200, (layer, r.text)
        # the new planning editor may not touch forestry's layer
        key = some_key(settings, "forest", 2)
        _, etag = feature(c, "forest", key, auth(tokens, "admin"))
        r = c.patch(f"/collections/forest/items/{key}", params={"reason": "x"}, content=b'{"properties": {}}',
                    headers={"Authorization": f"Bearer {cli_key}", "Content-Type": GEOJSON, "If-Match": etag})
        assert r.status_code == 403


BOWTIE = {"type": "Polygon", "coordinates": [[[112.9, 28.1], [112.91, 28.11], [112.91, 28.1], [112.9, 28.11],
                                              [112.9, 28.1]]]}
CHECKS = [  # (merge patch, check, field)
    ({"properties": {"colour": "green"}}, "unknown_field", "colour"),
    ({"properties": {"yu_bi_du": "high"}}, "type", "yu_bi_du"),
    ({"properties": {"pingjun_nl": 12.5}}, "type", "pingjun_nl"),
    ({"properties": {"di_lei": None}}, "required", "di_lei"),
    ({"properties": {"di_lei": "9999"}}, "code_list", "di_lei"),
    ({"properties": {"qi_yuan": "X"}}, "code_list", "qi_yuan"),
    ({"geometry": {"type": "Point", "coordinates": [112.9, 28.1]}}, "geometry_type", "geometry"),
    ({"geometry": BOWTIE}, "geometry_valid", "geometry"),
    ({"geometry": None}, "geometry_required", "geometry"),
]


@pytest.mark.parametrize("patch,check,field", CHECKS, ids=[c[1] + "-" + c[2] for c in CHECKS])
def test_every_edit_is_checked_like_an_ingest_422_names_the_check(ed, patch, check, field):
    srv, tokens, settings = ed
    h = auth(tokens, "forestry:editor")
    key = some_key(settings, "forest", 50)
    with srv.client() as c:
        got, etag = feature(c, "forest", key, h)
        before = layer_state(settings, "forest")
        r = c.patch(f"/collections/forest/items/{key}", params={"reason": "x"}, content=json.dumps(patch),
                    headers={**h, "Content-Type": GEOJSON, "If-Match": etag})
        assert r.status_code == 422, r.text
        assert r.json()["details"]["check"] == check and r.json()["details"]["field"] == field, r.json()
        # the same through a create in a session: refused when staged, nothing staged
        sid = c.post("/collections/forest/sessions", headers=h).json()["id"]
        body = json.loads(body_of(got, xbh=f"CHK-{check}"))
        body["properties"].update(patch.get("properties", {}))
        if "geometry" in patch:
            body["geometry"] = patch["geometry"]
        r = c.post("/collections/forest/items", content=json.dumps(body),
                   headers={**h, "Content-Type": GEOJSON, "Edit-Session": sid})
        assert r.status_code == 422 and r.json()["details"]["check"] == check
        assert c.get(f"/collections/forest/sessions/{sid}", headers=h).json()["changes"] == []
    assert layer_state(settings, "forest") == before

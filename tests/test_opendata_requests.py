"""Request, approve, use and expire over HTTP (issue 19 item 4), on a server in the internet zone:
an outside user registers, asks for the conditional forest inventory, sees the request pending;
another department's steward may not decide it, forestry's steward approves; the requester gets
the key once, reads forest (desensitised) and nothing else; the key expires by itself; a refused
request says why; every step is in the audit log."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for

ENV = {"GEOBASE_NETWORK_ZONE": "internet", "GEOBASE_KEY_CACHE_S": "0",
       "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000"}


@pytest.fixture(scope="module")
def zone_internet(pg_server, county_template):
    from geobase import keys

    name, data_dir = county_template
    db = f"gb_req_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, db, name)
    with psycopg.connect(url, autocommit=True) as conn:
        tokens = {"forestry": keys.create_key(conn, name="forest steward", role="steward", department="forestry").token,
                  "water": keys.create_key(conn, name="water steward", role="steward", department="water_resources").token}
    srv = LiveServer(settings_for(url, data_dir), env=ENV)
    yield srv, tokens, url
    srv.stop()
    drop_database(pg_server, db)


def test_request_approve_use_expire(zone_internet):
    srv, tokens, url = zone_internet
    with srv.client() as c:
        # the public sees the conditional record (so it can ask) but not the data
        assert c.get("/catalog/items/forest").json()["properties"]["openness"] == "conditional"
        assert c.get("/collections/forest/items?limit=1").status_code == 404
        reg = c.post("/catalog/requesters", json={"name": "张三", "organisation": "某大学林学院",
                                                  "contact": "zhangsan@example.edu.cn"})
        assert reg.status_code == 201, reg.text
        me = {"X-Requester-Token": reg.json()["token"]}
        # land use is open (nothing to ask), control lines are important data: not on the internet
        for ds in (["land_use"], ["control_lines"], ["nope"]):
            r = c.post("/catalog/requests", headers=me, json={"datasets": ds, "purpose": "森林碳汇研究"})
            assert r.status_code == 400 and r.json()["parameter"] == "datasets", r.text
        assert c.post("/catalog/requests", json={"datasets": ["forest"], "purpose": "森林碳汇研究"}).status_code == 401
        r = c.post("/catalog/requests", headers=me, json={"datasets": ["forest"], "formats": ["gpkg", "parquet", "json"],
                                                          "purpose": "森林碳汇研究", "days": 7})
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        assert r.json()["status"] == "pending" and r.json()["department"] == "forestry"
        assert c.get("/catalog/requests", headers=me).json()["requests"][0]["status"] == "pending"

        water = {"X-API-Key": tokens["water"]}
        forestry = {"X-API-Key": tokens["forestry"]}
        assert c.get("/admin/requests", headers=water).json()["requests"] == []
        assert c.post(f"/admin/requests/{rid}/approve", headers=water, json={}).status_code == 403
        assert c.post(f"/admin/requests/{rid}/approve", json={}).status_code == 401
        pending = c.get("/admin/requests", headers=forestry, params={"status": "pending"}).json()["requests"]
        assert [p["id"] for p in pending] == [rid] and pending[0]["contact"] == "zhangsan@example.edu.cn"
        ok = c.post(f"/admin/requests/{rid}/approve", headers=forestry, json={"reason": "同意", "days": 1})
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "approved" and ok.json()["key_state"] == "active"
        assert "key" not in ok.json() and "key_token" not in ok.json() or ok.json().get("key_token") is None
        assert c.post(f"/admin/requests/{rid}/refuse", headers=forestry, json={}).status_code == 400

        mine = c.get("/catalog/requests", headers=me).json()["requests"]
        key = mine[0]["key"]
        assert mine[0]["status"] == "approved" and key.startswith("gb_")
        assert "key" not in c.get("/catalog/requests", headers=me).json()["requests"][0]   # shown once

        k = {"X-API-Key": key}
        feats = c.get("/collections/forest/items", headers=k, params={"limit": 5})
        assert feats.status_code == 200, feats.text
        props = feats.json()["features"][0]["properties"]
        assert "di_lei" in props and "cun" not in props and "xiao_ban" not in props   # desensitised
        assert c.get("/collections/land_use/items?limit=1", headers=k).status_code == 404   # out of scope
        assert c.get("/collections/forest/items", headers=k, params={"f": "gpkg", "limit": 5}).status_code == 200
        assert c.get("/catalog/items/forest/download", headers=k, params={"f": "parquet"}).status_code == 200
        assert c.get("/catalog/items/forest/download", headers=k, params={"f": "shp"}).status_code == 403

        # the key expires by itself (time moved forward in the database)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE catalog.api_keys SET expires_at = now() - interval '1 second' WHERE id = %s",
                         (ok.json()["key_id"],))
        assert c.get("/collections/forest/items?limit=1", headers=k).status_code == 401
        assert c.get("/catalog/requests", headers=me).json()["requests"][0]["key_state"] == "expired"

        # a refusal, with its reason, visible to the requester
        r2 = c.post("/catalog/requests", headers=me, json={"datasets": ["forest"], "purpose": "商业开发用途"}).json()
        no = c.post(f"/admin/requests/{r2['id']}/refuse", headers=forestry, json={"reason": "用途不符合开放条件"})
        assert no.status_code == 200 and no.json()["status"] == "refused"
        states = {r["id"]: (r["status"], r["reason"]) for r in c.get("/catalog/requests", headers=me).json()["requests"]}
        assert states[r2["id"]] == ("refused", "用途不符合开放条件")

    # the audit writer flushes in the background: its rows are waited for (30 s at most), not a
    # guessed 1.5 s
    expected = {"catalog.requester.register", "catalog.request.create", "catalog.request.approve",
                "catalog.request.refuse", "catalog.request.read"}
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            actions = {a for (a,) in conn.execute("SELECT action FROM catalog.audit_log").fetchall()}
            if expected <= actions or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert expected <= actions, actions

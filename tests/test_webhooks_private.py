"""Webhooks may not make the server POST into private networks where the deployment forbids it
(GEOBASE_WEBHOOK_ALLOW_PRIVATE; by default refused in the internet zone): refused at registration
over HTTP and the CLI, and again at delivery, on the address actually resolved then (a name that
resolved to a public address when registered and to a private one later is refused, DNS
rebinding), while a deployment that allows private receivers still delivers to them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

from conftest import REPO
from editing_common import q
from test_webhooks import HOOK_ENV, hook_server, wait_for

from geobase import webhooks
from geobase.catalog import webhooks as outbox

PRIVATE = ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
           "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"]
PUBLIC = ["8.8.8.8", "93.184.215.14", "2001:4860:4860::8888"]


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.fixture(scope="module")
def internet(pg_server, county_template):
    """A server in the internet zone (private receivers refused by default) and a loopback receiver."""
    with hook_server(pg_server, county_template, "gb_hookpriv", {**HOOK_ENV, "GEOBASE_NETWORK_ZONE": "internet"}) as h:
        yield h


def test_the_default_follows_the_network_zone_and_the_setting_overrides_it(tmp_path):
    from geobase.settings import Settings

    def s(**kw) -> Settings:
        return Settings(data_dir=tmp_path, **kw)
    assert webhooks.private_allowed(s(network_zone="government"))
    assert webhooks.private_allowed(s(network_zone="classified"))
    assert not webhooks.private_allowed(s(network_zone="internet"))
    assert webhooks.private_allowed(s(network_zone="internet", webhook_allow_private=True))
    assert not webhooks.private_allowed(s(network_zone="government", webhook_allow_private=False))
    refusing = s(network_zone="internet")
    for address in PRIVATE:
        with pytest.raises(webhooks.PrivateAddress):
            webhooks.resolve(address, 80, refusing)
    for address in PUBLIC:
        assert webhooks.resolve(address, 80, refusing) == [address]
    assert webhooks.resolve("127.0.0.1", 80, s(network_zone="government")) == ["127.0.0.1"]


def test_registration_of_a_private_receiver_is_400_in_the_internet_zone(internet):
    srv, tokens, settings, receiver = internet
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    with srv.client() as c:
        for address in PRIVATE:
            r = c.post("/admin/webhooks", json={"layer": "forest", "url": f"http://{_host(address)}:8080/hook"},
                       headers=admin)
            assert r.status_code == 400 and r.json()["parameter"] == "url", (address, r.text)
            assert "GEOBASE_WEBHOOK_ALLOW_PRIVATE" in r.text
        named = receiver.url.replace("127.0.0.1", "localhost") + "/named"
        r = c.post("/admin/webhooks", json={"layer": "forest", "url": named}, headers=admin)
        assert r.status_code == 400 and r.json()["parameter"] == "url", r.text
        r = c.post("/admin/webhooks", json={"layer": "forest", "url": "http://no-such-host.invalid/hook"},
                   headers=admin)
        assert r.status_code == 400 and "does not resolve" in r.text, r.text
        assert q(settings, "SELECT count(*) FROM catalog.webhooks")[0][0] == 0
        ok = c.post("/admin/webhooks", json={"layer": "forest", "url": "http://93.184.215.14/hook"}, headers=admin)
        assert ok.status_code == 201, ok.text
        assert c.delete(f"/admin/webhooks/{ok.json()['id']}", headers=admin).status_code == 200
    env = {**os.environ, "GEOBASE_DATABASE_URL": settings.database_url, "GEOBASE_DATA_DIR": str(settings.data_dir),
           "GEOBASE_NETWORK_ZONE": "internet"}
    cli = subprocess.run([sys.executable, "-m", "geobase.cli", "admin", "webhook", "add", "forest", receiver.url + "/cli"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode != 0 and "GEOBASE_WEBHOOK_ALLOW_PRIVATE" in cli.stdout + cli.stderr, cli.stdout + cli.stderr
    assert q(settings, "SELECT count(*) FROM catalog.webhooks WHERE removed_at IS NULL")[0][0] == 0


def test_a_delivery_to_a_name_now_resolving_to_a_private_address_is_refused(internet):
    """The webhook is stored as if its name resolved publicly at registration (the row is written
    as registration writes it); at delivery it resolves to loopback: refused, never sent, and on
    the dead-letter list with the reason."""
    srv, tokens, settings, receiver = internet
    with psycopg.connect(settings.database_url) as conn:
        hook = outbox.add_webhook(conn, layer="forest", url=receiver.url.replace("127.0.0.1", "localhost") + "/rebound",
                                  secret=webhooks.new_secret(), events=["version"], description=None, department=None,
                                  created_by="test")
        assert outbox.enqueue(conn, "forest", "version", {"version": 99, "previous_version": 98}) == 1
        conn.commit()
    rows = wait_for(lambda: [r for r in q(settings, "SELECT status, last_error, attempts FROM "
                                          "catalog.webhook_deliveries WHERE webhook_id = %s", (hook["id"],))
                             if r[0] != "pending"], "the delivery's outcome")
    assert rows[0][0] == "dead" and rows[0][2] == 1 and "refused" in rows[0][1] and "non-global" in rows[0][1], rows
    assert receiver.requests("/rebound") == []
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    with srv.client() as c:
        dead = c.get("/admin/webhooks/deliveries", params={"status": "dead"}, headers=admin).json()["deliveries"]
    assert [d["webhook_id"] for d in dead] == [hook["id"]] and "refused" in json.dumps(dead)


def test_allowed_private_receivers_still_get_their_deliveries(pg_server, county_template):
    """GEOBASE_WEBHOOK_ALLOW_PRIVATE=true in the internet zone: registered and delivered to loopback."""
    env = {**HOOK_ENV, "GEOBASE_NETWORK_ZONE": "internet", "GEOBASE_WEBHOOK_ALLOW_PRIVATE": "true"}
    with hook_server(pg_server, county_template, "gb_hookok", env) as (srv, tokens, settings, receiver):
        with srv.client() as c:
            r = c.post("/admin/webhooks", json={"layer": "forest", "url": receiver.url + "/allowed"},
                       headers={"Authorization": f"Bearer {tokens['admin']}"})
            assert r.status_code == 201, r.text
        with psycopg.connect(settings.database_url) as conn:
            outbox.enqueue(conn, "forest", "version", {"version": 7, "previous_version": 6})
            conn.commit()
        got = wait_for(lambda: receiver.requests("/allowed"), "the delivery")
        assert json.loads(got[0]["body"])["version"] == 7

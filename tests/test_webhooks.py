"""Signed webhooks over real HTTP: a receiver on loopback gets each new version of a layer,
signed with the webhook's secret; failures are retried with backoff, end on the dead-letter list
an admin sees and can retry, and a delivery survives a restart of the server mid-retry."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import REPO, LiveServer, create_database, drop_database, settings_for
from editing_common import FAST, auth, edit_forest, make_editing_keys, q
from test_security_common import unique_name

HOOK_ENV = {**FAST, "GEOBASE_WEBHOOK_BACKOFF_S": "0.3", "GEOBASE_WEBHOOK_MAX_ATTEMPTS": "3",
            "GEOBASE_WEBHOOK_POLL_S": "0.2", "GEOBASE_WEBHOOK_TIMEOUT_S": "5"}


class Receiver:
    """A real HTTP server on loopback: per path, a script of statuses to answer (the last repeats)."""

    def __init__(self) -> None:
        self.script: dict[str, list[int]] = {}
        self.got: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.got.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    statuses = outer.script.get(self.path, [200])
                    status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests(self, path: str) -> list[dict]:
        with self.lock:
            return [g for g in self.got if g["path"] == path]

    def close(self) -> None:
        self.server.shutdown()


def wait_for(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = check()
        if out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def hook_server(pg_server, county_template, prefix: str, env: dict):
    """(server, tokens, settings, receiver) over a private copy of the sample county, the server
    started with ``env``; everything stopped and dropped afterwards."""
    template, data_dir = county_template
    name = unique_name(prefix)
    settings = settings_for(create_database(pg_server, name, template), data_dir)
    tokens = make_editing_keys(settings)
    receiver = Receiver()
    srv = LiveServer(settings, env=env)
    try:
        yield srv, tokens, settings, receiver
    finally:
        srv.stop()
        receiver.close()
        drop_database(pg_server, name)


@pytest.fixture(scope="module")
def hooks(pg_server, county_template):
    with hook_server(pg_server, county_template, "gb_hook", HOOK_ENV) as h:
        yield h


def _sig(secret: str, ts: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()


def _deliveries(settings, wid: str) -> list[tuple]:
    return q(settings, "SELECT id, status, attempts, last_status FROM catalog.webhook_deliveries "
             "WHERE webhook_id = %s ORDER BY id", (wid,))


def test_registration_refuses_hostile_urls_and_never_shows_the_secret_again(hooks):
    srv, tokens, settings, receiver = hooks
    admin, ed = auth(tokens, "admin"), auth(tokens, "forestry:editor")
    with srv.client() as c:
        for bad in ("ftp://example.org/x", "http://user:pw@example.org/x", "http://@example.org/", "javascript:x",
                    "http:///nohost", "http://example.org/a b", "http://example.org/x#frag",
                    "http://example.org/" + "a" * 2000, "file:///etc/passwd", "http://example.org:99999/"):
            r = c.post("/admin/webhooks", json={"layer": "forest", "url": bad}, headers=admin)
            assert r.status_code in (400, 422), (bad, r.status_code, r.text)
        assert c.post("/admin/webhooks", json={"layer": "nope", "url": receiver.url}, headers=admin).status_code == 404
        assert c.post("/admin/webhooks", json={"layer": "forest", "url": receiver.url}, headers=ed).status_code == 403
        assert c.post("/admin/webhooks", json={"layer": "forest", "url": receiver.url}).status_code == 401
        other = auth(tokens, "planning:editor")
        assert c.post("/collections/forest/webhooks", json={"url": receiver.url}, headers=other).status_code == 403
        assert c.post("/collections/forest/webhooks", json={"url": receiver.url},
                      headers=auth(tokens, "forestry:analyst")).status_code == 403
        r = c.post("/collections/forest/webhooks", json={"url": receiver.url + "/quiet?token=abc",
                                                         "description": "department receiver"}, headers=ed)
        assert r.status_code == 201, r.text
        made = r.json()
        secret, wid = made["secret"], made["id"]
        assert secret.startswith("whsec_") and len(secret) > 40 and made["layer"] == "forest"
        listed = c.get("/collections/forest/webhooks", headers=ed).json()["webhooks"]
        assert [w["id"] for w in listed] == [wid] and all("secret" not in w for w in listed)
        every = c.get("/admin/webhooks", headers=admin)
        assert every.status_code == 200 and secret not in every.text
        assert c.get("/admin/webhooks", headers=ed).status_code == 403
        assert c.delete(f"/collections/forest/webhooks/{wid}", headers=ed).json() == {"id": wid, "removed": True}
        assert c.delete(f"/admin/webhooks/{wid}", headers=admin).status_code == 404
    audit = json.dumps(q(settings, "SELECT action, params, layers FROM catalog.audit_log WHERE action LIKE 'webhook.%%' "
                         "ORDER BY id"), default=str)
    assert '"webhook.add"' in audit and '"webhook.remove"' in audit and wid in audit
    assert secret not in audit and "token=abc" not in audit
    assert secret not in srv.logs()


def test_a_version_is_delivered_signed_and_retried_after_two_500s(hooks):
    srv, tokens, settings, receiver = hooks
    admin, ed = auth(tokens, "admin"), auth(tokens, "forestry:editor")
    receiver.script["/flaky"] = [500, 500, 200]
    with srv.client() as c:
        r = c.post("/admin/webhooks", json={"layer": "forest", "url": receiver.url + "/flaky"}, headers=admin)
        assert r.status_code == 201, r.text
        secret, wid = r.json()["secret"], r.json()["id"]
        v = edit_forest(c, ed, settings, 70, "survey 2026-12")
        got = wait_for(lambda: len(receiver.requests("/flaky")) >= 3 and receiver.requests("/flaky"), "3 attempts")
        assert wait_for(lambda: _deliveries(settings, wid)[0][1] == "delivered" and _deliveries(settings, wid),
                        "delivered")[0][1:] == ("delivered", 3, 200)
        assert len({g["headers"]["X-Geobase-Delivery"] for g in got}) == 1
        assert len({g["body"] for g in got}) == 1  # every retry sends the same bytes
        last = got[-1]
        ts, sig, body = last["headers"]["X-Geobase-Timestamp"], last["headers"]["X-Geobase-Signature"], last["body"]
        assert sig == _sig(secret, ts, body)  # verifies with the secret
        assert sig != _sig(secret, ts, body.replace(b"survey", b"SURVEY"))  # a tampered body does not
        assert sig != _sig(secret, str(int(ts) + 1), body)  # nor a replayed one with a new timestamp
        from geobase.webhooks import verify
        assert verify(secret, ts, body, sig) and not verify(secret, ts, body + b" ", sig)
        assert not verify("whsec_other", ts, body, sig)
        data = json.loads(body)
        assert data["event"] == "version" and data["layer"] == "forest" and data["version"] == v
        assert data["previous_version"] == v - 1 and data["mode"] == "edit" and data["message"] == "survey 2026-12"
        assert data["counts"] == {"added": 0, "removed": 0, "changed": 1, "total": data["counts"]["total"]}
        assert data["diff"].endswith(f"/collections/forest/changes?from={v - 1}&to={v}")
        assert last["headers"]["X-Geobase-Event"] == "version"
        c.delete(f"/admin/webhooks/{wid}", headers=admin)


def test_an_always_failing_receiver_ends_on_the_dead_letter_list_and_an_admin_retries(hooks):
    srv, tokens, settings, receiver = hooks
    admin, ed = auth(tokens, "admin"), auth(tokens, "forestry:editor")
    receiver.script["/down"] = [503]
    with srv.client() as c:
        wid = c.post("/admin/webhooks", json={"layer": "forest", "url": receiver.url + "/down"},
                     headers=admin).json()["id"]
        edit_forest(c, ed, settings, 71, "always failing")
        wait_for(lambda: _deliveries(settings, wid)[0][1] == "dead", "dead letter")
        assert len(receiver.requests("/down")) == 3
        dead = c.get("/admin/webhooks/deliveries", params={"status": "dead"}, headers=admin).json()["deliveries"]
        mine = [d for d in dead if d["webhook_id"] == wid]
        assert len(mine) == 1 and mine[0]["attempts"] == 3 and mine[0]["last_error"] == "HTTP 503"
        assert c.get("/admin/webhooks/deliveries", headers=ed).status_code == 403
        out = subprocess.run([sys.executable, "-m", "geobase.cli", "admin", "webhook", "deliveries", "--json"],
                             capture_output=True, text=True, cwd=str(REPO), timeout=120,
                             env={**_cli_env(settings)})
        assert out.returncode == 0, out.stderr
        assert mine[0]["id"] in [d["id"] for d in json.loads(out.stdout)]
        receiver.script["/down"] = [200]
        r = c.post(f"/admin/webhooks/deliveries/{mine[0]['id']}/retry", headers=admin)
        assert r.status_code == 200 and r.json()["status"] == "pending"
        wait_for(lambda: _deliveries(settings, wid)[0][1] == "delivered", "delivered after the retry")
        assert c.post(f"/admin/webhooks/deliveries/{mine[0]['id']}/retry", headers=admin).status_code == 404
        c.delete(f"/admin/webhooks/{wid}", headers=admin)
    rows = q(settings, "SELECT principal, params->>'delivery' FROM catalog.audit_log WHERE action = 'webhook.retry'")
    assert any(d == str(mine[0]["id"]) for _, d in rows)


def _cli_env(settings) -> dict:
    import os

    return {**os.environ, "GEOBASE_DATABASE_URL": settings.database_url, "GEOBASE_DATA_DIR": str(settings.data_dir)}


def test_the_cli_adds_lists_and_removes_and_the_secret_is_printed_once(hooks):
    _, _, settings, receiver = hooks
    run = lambda *a: subprocess.run([sys.executable, "-m", "geobase.cli", "admin", "webhook", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=str(REPO), timeout=120, env=_cli_env(settings))
    out = run("add", "forest", receiver.url + "/cli", "--json")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    listed = run("list", "--json")
    assert made["id"] in listed.stdout and made["secret"] not in listed.stdout
    bad = run("add", "forest", "gopher://x")
    assert bad.returncode != 0 and "http" in bad.stderr
    assert run("remove", made["id"]).returncode == 0
    assert made["id"] not in run("list", "--json").stdout
    audit = json.dumps(q(settings, "SELECT action, principal, params FROM catalog.audit_log WHERE action LIKE "
                         "'webhook.%%' AND principal LIKE 'cli:%%'"))
    assert '"webhook.add"' in audit and '"webhook.remove"' in audit and made["secret"] not in audit


def test_a_delivery_survives_a_restart_of_the_server_mid_retry(pg_server, county_template, live_server):
    template, data_dir = county_template
    name = unique_name("gb_hookr")  # its own database: no other server's worker may deliver meanwhile
    settings = settings_for(create_database(pg_server, name, template), data_dir)
    tokens = make_editing_keys(settings)
    admin, ed = auth(tokens, "admin"), auth(tokens, "forestry:editor")
    receiver = Receiver()
    receiver.script["/restart"] = [500, 200]
    slow = {**HOOK_ENV, "GEOBASE_WEBHOOK_BACKOFF_S": "4"}
    try:
        first = live_server(settings, env=slow)
        with first.client() as c:
            v = edit_forest(c, ed, settings, 72, "before the webhook")
            wid = c.post("/admin/webhooks", json={"layer": "forest", "url": receiver.url + "/restart"},
                         headers=admin).json()["id"]
        # a rollback makes a version too (every path that writes a version row is announced)
        from geobase.catalog.history import rollback
        made = rollback(settings, "forest", v - 1, user="test")
        wait_for(lambda: _deliveries(settings, wid)[0][2] == 1, "the first (failed) attempt")
        first.stop()
        assert _deliveries(settings, wid)[0][1:3] == ("pending", 1)
        second = live_server(settings, env=slow)  # a new process: only the outbox in PostgreSQL remembers
        wait_for(lambda: _deliveries(settings, wid)[0][1] == "delivered", "delivered after the restart")
        got = receiver.requests("/restart")
        assert len(got) == 2 and got[0]["body"] == got[1]["body"]
        body = json.loads(got[-1]["body"])
        assert body["version"] == made["version"] and body["mode"] == "rollback" and body["restored_from"] == v - 1
        with second.client() as c:
            assert c.delete(f"/admin/webhooks/{wid}", headers=admin).status_code == 200
    finally:
        receiver.close()
        drop_database(pg_server, name)

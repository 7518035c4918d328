"""A server SIGKILLed in the middle of an edit session's commit: the session is committed whole or
not at all. The commit is held mid-way deterministically (after its rows are written, before its
version row can be: a test transaction holds the layer's catalog row), then the server is killed;
nothing of the session is in the layer, the session is still open, and a new server commits it
whole."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import psycopg

from editing_common import FAST, GEOJSON, layer_state, make_editing_keys, q

N = 40


def _waiting_commit(settings) -> bool:
    rows = q(settings, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
             "AND wait_event_type = 'Lock' AND (query ILIKE '%%layer_versions%%' OR query ILIKE '%%catalog.layers%%')")
    return rows[0][0] > 0


def _layer_lock_free(settings) -> bool:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT pg_try_advisory_xact_lock(hashtextextended('ingest:forest', 0))").fetchone()[0]


def test_sigkill_during_a_session_commit_commits_nothing_and_the_session_survives(county_db, live_server):
    settings = county_db
    tokens = make_editing_keys(settings)
    h = {"Authorization": f"Bearer {tokens['forestry:editor']}"}
    srv = live_server(settings, env=FAST)
    keys = [r[0] for r in q(settings, "SELECT _key FROM data.forest WHERE _vto IS NULL ORDER BY _key LIMIT %s", (N,))]
    with srv.client() as c:
        sid = c.post("/collections/forest/sessions", headers=h).json()["id"]
        for i, key in enumerate(keys):
            etag = c.get(f"/collections/forest/items/{key}", headers=h).headers["etag"]
            r = c.patch(f"/collections/forest/items/{key}", json={"properties": {"lin_zhong": f"killed-{i}"}},
                        headers={**h, "If-Match": etag, "Edit-Session": sid, "Content-Type": GEOJSON})
            assert r.status_code == 200, r.text
    before = layer_state(settings, "forest")

    blocker = psycopg.connect(settings.database_url)
    blocker.execute("SELECT 1 FROM catalog.layers WHERE name = 'forest' FOR UPDATE")
    outcome: dict = {}

    def commit() -> None:
        try:
            outcome["r"] = httpx.post(f"{srv.url}/collections/forest/sessions/{sid}/commit", json={"message": "m"},
                                      headers=h, timeout=120)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=commit)
    t.start()
    deadline = time.monotonic() + 120
    while not _waiting_commit(settings):
        assert time.monotonic() < deadline, "the commit never reached its version row"
        time.sleep(0.1)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(30)
    blocker.rollback()
    blocker.close()
    t.join(60)
    assert "error" in outcome, outcome  # the client saw the connection drop, not an answer
    deadline = time.monotonic() + 120
    while not _layer_lock_free(settings):  # the orphaned backend notices its client is gone and rolls back
        assert time.monotonic() < deadline
        time.sleep(0.2)

    assert layer_state(settings, "forest") == before
    assert q(settings, "SELECT status, version FROM catalog.edit_sessions WHERE id = %s", (sid,)) == [("open", None)]
    assert q(settings, "SELECT count(*) FROM data.forest WHERE _vto IS NULL AND lin_zhong LIKE 'killed-%%'") == [(0,)]

    srv2 = live_server(settings, env=FAST)
    with srv2.client() as c:
        r = c.post(f"/collections/forest/sessions/{sid}/commit", json={"message": "after the crash"}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["changed"] == N and r.json()["version"] == before[0] + 1
    assert q(settings, "SELECT count(*) FROM data.forest WHERE _vto IS NULL AND lin_zhong LIKE 'killed-%%'") == [(N,)]

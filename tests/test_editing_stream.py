"""Server-Sent Events on /collections/{id}/changes/stream over real HTTP: a subscriber learns of
a committed edit as it happens, and one that was away resumes with Last-Event-ID."""

from __future__ import annotations

import json
import threading

import httpx

from editing_common import GEOJSON, auth, ed, edit_forest, feature, layer_state, some_key  # noqa: F401


def _events(resp: httpx.Response, connected: threading.Event | None = None) -> list[dict]:
    out, current = [], {}
    for line in resp.iter_lines():
        if line.startswith("retry:") and connected is not None:
            connected.set()
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            out.append(current)
            current = {}
    return out


def test_a_subscriber_gets_each_new_version_and_resumes_with_last_event_id(ed):
    srv, tokens, settings = ed
    h = auth(tokens, "forestry:editor")
    v0 = layer_state(settings, "forest")[0]
    got: dict = {}
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{srv.url}/collections/forest/changes/stream", params={"until": v0 + 1},
                          headers={**h, "Accept": "text/event-stream"}, timeout=120) as resp:
            got["status"], got["type"] = resp.status_code, resp.headers["content-type"]
            got["events"] = _events(resp, connected)

    t = threading.Thread(target=listen)
    t.start()
    assert connected.wait(120), "the stream never started"
    with srv.client() as c:
        v1 = edit_forest(c, h, settings, 60, "live")
        t.join(120)
        assert not t.is_alive()
        assert got["status"] == 200 and got["type"].startswith("text/event-stream")
        assert [e["id"] for e in got["events"]] == [v1]
        data = got["events"][0]["data"]
        assert data["message"] == "live" and data["mode"] == "edit" and data["rows_changed"] == 1
        assert data["changes"].endswith(f"/collections/forest/changes?from={v1 - 1}&to={v1}")
        assert c.get(data["changes"], headers=h).json()["features"]
        # away for two more versions: resume from the last event seen
        v2, v3 = edit_forest(c, h, settings, 61, "second"), edit_forest(c, h, settings, 62, "third")
        with c.stream("GET", "/collections/forest/changes/stream", params={"until": v3},
                      headers={**h, "Last-Event-ID": str(v1)}) as resp:
            resumed = _events(resp)
        assert [(e["id"], e["data"]["message"]) for e in resumed] == [(v2, "second"), (v3, "third")]
        # refusals
        r = c.get("/collections/forest/changes/stream", params={"until": 0}, headers={**h, "Last-Event-ID": "x"})
        assert r.status_code == 400 and r.json()["parameter"] == "Last-Event-ID"
        assert c.get("/collections/forest/changes/stream", params={"until": 0}).status_code == 404  # internal layer
        r = c.get("/collections/forest/changes/stream", params={"until": 0, "since": 1}, headers=h)
        assert r.status_code == 400 and r.json()["parameter"] == "since"
        r = c.get("/collections/forest/changes/stream", params={"until": 0}, headers={**h, "Accept": "text/html"})
        assert r.status_code == 406

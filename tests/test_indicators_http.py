"""Indicators over real HTTP: the server's own job recomputes after an edit commits through the
API (the request does not wait for it), the warning it raises is listed and pushed on
/warnings/stream; values by division as JSON and as Excel CSV; who sees which indicator; the
admin's target import naming a bad row."""

from __future__ import annotations

import json
import threading
import time

import httpx
import psycopg
import pytest
from editing_common import FAST, GEOJSON, auth, feature, make_editing_keys
from indicators_common import computed_db, computed_template, latest  # noqa: F401 (fixtures)

TOWN = "339901003"


@pytest.fixture
def served(computed_db, live_server):
    settings = computed_db
    tokens = make_editing_keys(settings)
    return live_server(settings, env={**FAST, "GEOBASE_INDICATOR_POLL_S": "0.5"}), settings, tokens


def _events(resp: httpx.Response, connected: threading.Event) -> list[dict]:
    out, current = [], {}
    for line in resp.iter_lines():
        if line.startswith("retry:"):
            connected.set()
        if line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            out.append(current)
            current = {}
    return out


def test_an_edit_through_the_api_raises_a_warning_pushed_to_subscribers(served):
    srv, settings, tokens = served
    with psycopg.connect(settings.database_url) as conn:
        key, _ = conn.execute("""
            SELECT x._key, x.dlbm FROM data.land_use x JOIN data.admin_divisions t ON t._vto IS NULL AND t.xzqdm = %s
            WHERE x._vto IS NULL AND x.dlbm IN ('0101', '0102', '0103') AND ST_CoveredBy(x.geom, t.geom)
            ORDER BY x._area_m2 DESC LIMIT 1""", (TOWN,)).fetchone()
    target = latest(settings)[("farmland_area", TOWN)]
    admin = auth(tokens, "admin")
    with srv.client() as c:
        r = c.post("/admin/indicators/targets", content=f"indicator,division,target\nfarmland_area,{TOWN},{target}\n",
                   headers={**admin, "Content-Type": "text/csv"})
        # today's value is the target: within the yellow margin at once (event 1), red after any loss
        assert r.status_code == 200 and r.json() == {"imported": 1, "raised": 1, "cleared": 0}, r.text
        got: dict = {}
        connected = threading.Event()

        def listen() -> None:
            with httpx.stream("GET", f"{srv.url}/warnings/stream", params={"until": 3},
                              headers={**admin, "Accept": "text/event-stream"}, timeout=120) as resp:
                got["events"] = _events(resp, connected)

        t = threading.Thread(target=listen)
        t.start()
        assert connected.wait(60)
        _, etag = feature(c, "land_use", key, auth(tokens, "nr:editor"))
        r = c.patch(f"/collections/land_use/items/{key}", params={"reason": "built over"},
                    json={"properties": {"dlbm": "0601"}},
                    headers={**auth(tokens, "nr:editor"), "If-Match": etag, "Content-Type": GEOJSON})
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            warnings = c.get("/warnings", params={"status": "open"}, headers=admin).json()["warnings"]
            if warnings and warnings[0]["cause"]:
                break
            time.sleep(0.5)
        assert [(w["indicator"], w["division"], w["level"], w["cause"]) for w in warnings] == [
            ("farmland_area", TOWN, "red", {"layer": "land_use", "version": version})]
        assert warnings[0]["parcels"][0]["key"] == key and warnings[0]["name_zh"] == "耕地保有量"
        t.join(60)
        assert [(e["event"], e["data"]["warning"]["level"]) for e in got["events"]] == [("cleared", "yellow"),
                                                                                      ("raised", "red")]
    with psycopg.connect(settings.database_url) as conn:
        jobs = conn.execute("SELECT status, result FROM catalog.jobs WHERE kind = 'indicators' "
                            "ORDER BY created_at").fetchall()
    steps = [s for status, result in jobs if status == "successful" for s in result["steps"]]
    assert {"layer": "land_use", "version": version, "kind": "incremental", "divisions": ["339901", TOWN]} in steps


def test_values_as_json_and_excel_csv_and_who_sees_which_indicator(served):
    srv, settings, tokens = served
    admin = auth(tokens, "admin")
    with srv.client() as c:
        public = {i["id"] for i in c.get("/indicators").json()["indicators"]}
        everything = c.get("/indicators", headers=admin).json()
        # control lines are internal: the indicators over them are not the public's
        assert "farmland_area" in public and "basic_farmland_area" not in public
        assert {i["id"] for i in everything["indicators"]} >= public | {"basic_farmland_area"}
        assert c.get("/indicators/basic_farmland_area").status_code == 404
        doc = c.get("/indicators/farmland_area", params={"division": TOWN}).json()
        assert doc["unit"] == "ha" and [d["division"] for d in doc["divisions"]] == [TOWN]
        assert doc["divisions"][0]["value"] == pytest.approx(latest(settings)[("farmland_area", TOWN)])
        assert set(doc["divisions"][0]["series"][0]["versions"]) >= {"land_use", "admin_divisions"}
        r = c.get("/indicators/farmland_area", params={"f": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.content.startswith(b"\xef\xbb\xbfindicator,name_zh,unit,division")
        assert len(r.text.strip().splitlines()) == 1 + 7 and "耕地保有量" in r.text
        r = c.get("/indicators/farmland_area", headers={"Accept": "text/csv"})
        assert r.headers["content-type"].startswith("text/csv")
        assert c.get("/indicators/nosuch").status_code == 404
        # targets: admins only, a bad row named, nothing imported
        bad = "indicator,division,target\nfarmland_area,339901001,1\nfarmland_area,339901009,1\n"
        assert c.post("/admin/indicators/targets", content=bad, headers={"Content-Type": "text/csv"}).status_code == 401
        r = c.post("/admin/indicators/targets", content=bad, headers={**admin, "Content-Type": "text/csv"})
        assert r.status_code == 400 and "row 3: unknown division '339901009'" in r.text
        assert c.get("/indicators/farmland_area", params={"division": "339901001"}).json()[
            "divisions"][0]["target"] is None
        # acknowledging needs a key of an analyst or above
        assert c.post("/warnings/1/acknowledge").status_code == 401
        assert c.post("/warnings/999/acknowledge", headers=admin).status_code == 404

"""A site-check verdict computed from part of the rules says so at the top, in JSON, HTML and
CSV (issue 12 item 17): the public, who may not see the control lines, gets "incomplete: N
rules need data you may not see", never a bare "needs-approval"; a key that sees everything
gets a complete verdict."""

from __future__ import annotations

import csv
import io
import json
import re

import psycopg
from conftest import SAMPLE

from geobase.keys import create_key


def _admin_key(settings) -> str:
    with psycopg.connect(settings.database_url) as conn:
        k = create_key(conn, name="verdict test admin", role="admin", department=None)
        conn.commit()
    return k.token


def test_partial_site_check_verdict_is_marked_incomplete_in_every_format(county_db, live_server):
    body = json.loads((SAMPLE / "demo_site.geojson").read_text(encoding="utf-8"))
    admin = {"X-API-Key": _admin_key(county_db)}
    srv = live_server(county_db)
    with srv.client() as c:
        def post(headers, f):
            r = c.post("/analysis/site-check", params={"f": f}, json={"geometry": body}, headers=headers)
            assert r.status_code == 200, r.text
            return r

        # public: rules on the hidden control lines are not evaluated
        pub = post({}, "json").json()
        n_hidden = sum(1 for r in pub["rules"] if r["verdict"] == "not-evaluated")
        assert n_hidden >= 1 and len(pub["not_evaluated"]) == n_hidden
        assert pub["complete"] is False and pub["verdict"] == "incomplete"
        assert pub["summary"].startswith(f"incomplete: {n_hidden} rule{'s' if n_hidden > 1 else ''} "
                                         f"need{'' if n_hidden > 1 else 's'} data you may not see")
        assert pub["verdict_of_evaluated_rules"] in pub["summary"]
        assert list(pub).index("complete") < list(pub).index("rules")

        html = post({}, "html").text
        text = re.sub(r"<[^>]+>", " ", html)
        top = text[:text.index("Rules")]
        assert pub["summary"] in top and "incomplete" in top

        rows = list(csv.DictReader(io.StringIO(post({}, "csv").text)))
        assert rows[0]["id"] == "(overall)" and rows[0]["verdict"] == "incomplete"
        assert rows[0]["complete"] == "False" and rows[0]["reason"] == pub["summary"]
        assert {r["id"] for r in rows[1:]} == {r["id"] for r in pub["rules"]}

        # a key with all access: every rule evaluated, a complete verdict, no "incomplete" anywhere
        full = post(admin, "json").json()
        assert full["complete"] is True and not full["not_evaluated"]
        assert full["verdict"] == full["summary"] == full["verdict_of_evaluated_rules"]
        assert full["verdict"] in ("ok", "warning", "needs-approval", "prohibited")
        html = post(admin, "html").text
        assert "incomplete" not in re.sub(r"<style>.*?</style>", "", html, flags=re.DOTALL)
        assert f"Overall verdict: <b class='{full['verdict']}'>{full['verdict']}</b>" in html
        rows = list(csv.DictReader(io.StringIO(post(admin, "csv").text)))
        assert rows[0]["id"] == "(overall)" and rows[0]["verdict"] == full["verdict"] and rows[0]["complete"] == "True"

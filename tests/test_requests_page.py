"""The requests admin page in headless Chromium, as a department's steward uses it
(``/admin/requests?f=html``): enter the key, see the pending requests with the requester's
contact, approve one with a key life of 3 days (the row then shows the key's expiry), try to
refuse another without a reason (refused by the page), refuse it with one; the requester sees
both decisions. Served offline: no request leaves this server, no error in the console."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlparse

import pytest
from browser_harness import browser_context
from test_map_browser import _chromium_installed  # noqa: F401 (the harness)

pytestmark = [pytest.mark.browser]


def test_requests_page(county_db, live_server):
    import psycopg

    from geobase import keys

    with psycopg.connect(county_db.database_url, autocommit=True) as conn:
        steward = keys.create_key(conn, name="林业局审核员", role="steward", department="forestry").token
    srv = live_server(county_db, env={"GEOBASE_KEY_CACHE_S": "0"})
    with srv.client() as c:
        me = {"X-Requester-Token": c.post("/catalog/requesters", json={
            "name": "王五", "organisation": "某测绘院", "contact": "wangwu@example.com"}).json()["token"]}
        ids = [c.post("/catalog/requests", headers=me, json={"datasets": ["forest"], "formats": ["gpkg"],
                                                            "purpose": purpose, "days": 30}).json()["id"]
               for purpose in ("林地变更调查", "商业选址参考")]
    host = urlparse(srv.url).netloc
    outside, problems = [], []
    with browser_context(viewport={"width": 1400, "height": 800}, locale="zh-CN") as context:
        page = context.new_page()

        def route(r):
            u = urlparse(r.request.url)
            if u.scheme in ("http", "https", "ws", "wss") and u.netloc != host:
                outside.append(r.request.url)
                return r.abort()
            return r.continue_()

        page.route("**/*", route)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "401" not in m.text else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{srv.url}/admin/requests?f=html", wait_until="networkidle")
        assert page.locator("h1").inner_text().startswith("数据申请审核")
        page.fill("#key", steward)
        page.click("#load")
        page.wait_for_selector(f"tr[data-id='{ids[0]}']")
        assert page.locator("#requests tbody tr").count() == 2
        first = page.locator(f"tr[data-id='{ids[0]}']")
        assert "wangwu@example.com" in first.inner_text() and "林地变更调查" in first.inner_text()
        # approve the first for 3 days
        first.locator("input.days").fill("3")
        first.locator("input.reason").fill("用于林地变更调查，同意")
        first.locator("button.approve").click()
        page.wait_for_function(f"!document.querySelector(\"tr[data-id='{ids[0]}']\")")   # left the pending list
        assert "已批准" in page.locator("#message").inner_text()
        # refusing without a reason is stopped by the page
        second = page.locator(f"tr[data-id='{ids[1]}']")
        second.locator("button.refuse").click()
        assert "理由" in page.locator("#message").inner_text()
        second.locator("input.reason").fill("用途不符合开放条件")
        second.locator("button.refuse").click()
        page.wait_for_function("document.querySelectorAll('#requests tbody tr').length === 0")
        # everything, with the decisions and the key's expiry
        page.select_option("#status", "")
        page.wait_for_selector(f"tr[data-id='{ids[1]}'] td.status-refused")
        done = page.locator(f"tr[data-id='{ids[0]}']")
        assert "已批准" in done.inner_text() and "到期" in done.inner_text()
        assert "用途不符合开放条件" in page.locator(f"tr[data-id='{ids[1]}']").inner_text()
    assert not outside, outside
    assert not problems, problems
    with srv.client() as c:
        mine = {r["id"]: r for r in c.get("/catalog/requests", headers=me).json()["requests"]}
    assert mine[ids[0]]["status"] == "approved" and mine[ids[0]]["reason"] == "用于林地变更调查，同意"
    expires = dt.datetime.fromisoformat(mine[ids[0]]["key_expires_at"])
    left = expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=2, hours=23) < left <= dt.timedelta(days=3)
    assert mine[ids[1]]["status"] == "refused" and mine[ids[1]]["reason"] == "用途不符合开放条件"

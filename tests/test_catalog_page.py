"""The catalog page in headless Chromium, as a person uses it: search, tick a facet, open a
record and see its download links, switch to English; the map shows the records' extents; no
request leaves this server and no error is logged."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from browser_harness import browser_context
from test_map_browser import _chromium_installed  # noqa: F401 (the harness)

pytestmark = [pytest.mark.browser]


def test_catalog_page(county_server):
    host = urlparse(county_server.url).netloc
    outside, problems = [], []
    with browser_context(viewport={"width": 1200, "height": 800}, locale="zh-CN") as context:
        page = context.new_page()

        def route(r):
            if urlparse(r.request.url).scheme in ("http", "https", "ws", "wss") and urlparse(r.request.url).netloc != host:
                outside.append(r.request.url)
                return r.abort()
            return r.continue_()

        page.route("**/*", route)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{county_server.url}/catalog", wait_until="networkidle")
        page.wait_for_selector("#list article")
        assert page.locator("h1").inner_text() == "数据资源目录"
        total = page.locator("#list article").count()
        assert total >= 8
        # the map drew one extent per record that has one
        page.wait_for_function("window.geobaseCatalog.state.shown && window.geobaseCatalog.state.shown.length > 0")
        # search
        page.fill("#q", "地类图斑")
        page.click("#go")
        page.wait_for_function("document.querySelectorAll('#list article').length === 1")
        assert page.locator("#list article").first.get_attribute("data-id") == "land_use"
        assert "q=%E5%9C%B0" in page.url
        # a facet: clear the search, tick 有条件开放
        page.fill("#q", "")
        page.click("#go")
        page.wait_for_function(f"document.querySelectorAll('#list article').length === {total}")
        page.check("input[data-facet=openness][value=conditional]")
        page.wait_for_function(f"document.querySelectorAll('#list article').length < {total}")
        ids = {a.get_attribute("data-id") for a in page.locator("#list article").all()}
        assert ids and "land_use" not in ids and "forest" in ids
        page.uncheck("input[data-facet=openness][value=conditional]")
        page.wait_for_function(f"document.querySelectorAll('#list article').length === {total}")
        # a record's page with its download links
        page.click("#list article[data-id=land_use] a.open")
        page.wait_for_selector("#downloads li")
        links = [a.get_attribute("href") for a in page.locator("#downloads a").all()]
        assert any(h.endswith("/collections/land_use/items?f=parquet") for h in links)
        assert any(h.endswith("/collections/land_use/items?f=gpkg") for h in links)
        assert "/catalog/items/land_use" in page.url
        # English
        page.click("#lang")
        page.wait_for_function("document.querySelector('#record h2').textContent === 'Land-use parcels'")
        assert page.locator("h1").inner_text() == "Data catalog"
    assert not outside, outside
    assert not problems, problems

"""The indicator dashboard in headless Chromium, as a planner uses it: the choropleth of an
indicator by township is drawn in its ramp colours, the chosen township's chart has the target
line at the target, a warning is listed and acknowledged with an analyst's key (audited), and
the page switches to English; every request stays on this server."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from indicators_common import computed_db, computed_template, latest  # noqa: F401 (fixtures)
from test_map_browser import ARTIFACTS, count_near, hex_rgb
from test_map_tools import browser_page

pytestmark = [pytest.mark.browser]
TOWN = "339901003"
RAMP = ["#fff5eb", "#fdd0a2", "#fd8d3c", "#d94801", "#7f2704"]


@pytest.fixture
def board(computed_db, live_server):
    """A county with its indicators computed, a target its farmland misses (a red warning), an
    analyst's key and a running server."""
    import asyncio

    from geobase import keys
    from geobase.indicators import targets
    from geobase.indicators.spec import get_indicators
    from geobase.specs import get_registry

    settings = computed_db
    target = latest(settings)[("farmland_area", TOWN)] * 1.2
    reg = get_registry(settings)

    async def imp():
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            return await targets.import_targets(conn, reg, get_indicators(reg),
                                                f"indicator,division,target\nfarmland_area,{TOWN},{target}\n",
                                                source="test", user="test")

    assert asyncio.run(imp())["raised"] == 1
    with psycopg.connect(settings.database_url) as conn:
        token = keys.create_key(conn, name="planner-li", role="analyst", department="planning").token
        conn.commit()
    return live_server(settings), settings, token, target


def test_dashboard_choropleth_chart_and_warning_acknowledged(board):
    srv, settings, token, target = board
    with browser_page() as (page, seen):
        page.host["netloc"] = srv.url.split("//", 1)[1]
        page.goto(f"{srv.url}/dashboard?indicator=farmland_area&division={TOWN}")
        try:
            page.wait_for_function("window.geobaseDashboard && window.geobaseDashboard.ready === true", timeout=60_000)
        except Exception:
            raise AssertionError(f"the dashboard never got ready: {seen['problems']}") from None
        page.wait_for_function("window.geobaseDashboard.map.loaded() && window.geobaseDashboard.map.areTilesLoaded()",
                               timeout=30_000)
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        page.locator("#map").screenshot(path=str(shot))
        # the chart: one point per stored value, the target line where the target is
        chart = page.evaluate("window.geobaseDashboard.chart")
        assert chart["points"] >= 1 and chart["targetY"] is not None
        line = page.locator("#chart line.target-line")
        assert float(line.get_attribute("data-target")) == pytest.approx(target)
        assert chart["lo"] < target < chart["hi"]
        assert "耕地保有量" in page.inner_text("#chart-title")
        # the warning is listed, with its level, indicator and township
        row = page.locator("#warnings tr[data-warning]")
        assert row.count() == 1
        text = row.inner_text()
        assert "红色" in text and "耕地保有量" in text and TOWN in text
        # the public cannot acknowledge; the analyst's key can
        page.click("#warnings button.ack")
        page.wait_for_function("document.getElementById('status').textContent.includes('密钥')")
        page.fill("#key-input", token)
        page.click("#key-form button")
        page.wait_for_function("window.geobaseDashboard.ready === true && "
                               "document.querySelector('#warnings button.ack') !== null", timeout=30_000)
        page.click("#warnings button.ack")
        page.wait_for_function("document.querySelector('#warnings .acked') !== null", timeout=30_000)
        assert "planner-li" in page.inner_text("#warnings")
        # English on the switch
        page.click("#lang-switch")
        page.wait_for_function("document.querySelector('#top h1').textContent.includes('monitoring')")
        # the warning list is fetched again in the new language: wait for it, then read it
        page.wait_for_function("document.querySelector('#warnings').innerText.includes('Cultivated land retained')",
                               timeout=30_000)
        assert "Cultivated land retained" in page.inner_text("#warnings")
        assert "lang=en" in page.url
    assert not seen["outside"], seen["outside"]
    assert not [p for p in seen["problems"] if "401" not in p and "acknowledge" not in p], seen["problems"]
    import rasterio

    with rasterio.open(shot) as src:
        img = np.moveaxis(src.read()[:3], 0, -1).astype(float)
    drawn = [c for c in RAMP if count_near(img, hex_rgb(c), 6) > 500]
    assert len(drawn) >= 3, f"choropleth classes drawn: {drawn}"
    with psycopg.connect(settings.database_url) as conn:
        ack = conn.execute("SELECT acknowledged_by FROM catalog.indicator_warnings").fetchall()
        audit = conn.execute("SELECT principal, params FROM catalog.audit_log WHERE action = 'warning.acknowledge'"
                             ).fetchall()
    assert ack == [("planner-li",)]
    assert len(audit) == 1 and audit[0][0] == "planner-li" and audit[0][1]["division"] == TOWN

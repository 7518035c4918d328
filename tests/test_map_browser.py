"""The web map in headless Chromium: it loads from this server alone, draws the land-use
colours and the control-line outlines, logs no errors, and no request leaves localhost."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from browser_harness import ARGS, CHROMIUM, browser_context, fail_without_chromium  # noqa: F401 (re-exported)
from conftest import ARTIFACTS

pytestmark = [pytest.mark.browser]


@pytest.fixture(autouse=True)
def _chromium_installed() -> None:
    """The browser is part of the test setup (scripts/setup.sh --test installs it): a missing one
    fails the browser tests instead of skipping them, so they cannot pass with nothing run."""
    fail_without_chromium()


def hex_rgb(h: str) -> np.ndarray:
    return np.array([int(h[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)


def count_near(img: np.ndarray, colour: np.ndarray, tol: float) -> int:
    return int((np.abs(img - colour).max(axis=-1) <= tol).sum())


def count_fill(img: np.ndarray, colour: str, opacity: float = 0.75) -> int:
    """Pixels of a semi-transparent fill over any light-grey underlay (background + hillshade)."""
    c = hex_rgb(colour)
    best = 0
    for under in range(150, 250, 10):
        best = max(best, count_near(img, opacity * c + (1 - opacity) * under, 12))
    return best


def largest_classes(settings, n: int = 3) -> dict[str, str]:
    """The n land-use classes covering most of the county -> their legend colours."""
    import psycopg

    from geobase.db import database_url
    from geobase.specs import get_registry

    codes = get_registry(settings).code_lists["gbt21010_2017"].lookup()
    with psycopg.connect(database_url(settings)) as conn:
        rows = conn.execute("SELECT dlbm FROM data.land_use WHERE _vto IS NULL GROUP BY dlbm "
                            "ORDER BY sum(_area_m2) DESC LIMIT %s", (n,)).fetchall()
    return {r[0]: codes[r[0]].color for r in rows}


def open_map(srv, shot: Path, *, init_script: str | None = None, draw_site: bool = False) -> dict:
    """Open /map in headless Chromium and wait for the tiles; what a user would look at:
    the layer switcher, legend, access line, screenshot pixels, the site-check answer, and
    every request made, those that left localhost and any error seen."""
    host = urlparse(srv.url).netloc
    seen: dict = {"requests": [], "outside": [], "problems": []}
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_context(viewport={"width": 1100, "height": 800}) as context:
        page = context.new_page()
        if init_script:
            page.add_init_script(init_script)

        def route(r):
            url = r.request.url
            seen["requests"].append(url)
            if urlparse(url).scheme in ("http", "https", "ws", "wss") and urlparse(url).netloc != host:
                seen["outside"].append(url)
                return r.abort()
            return r.continue_()

        problems = seen["problems"]
        page.route("**/*", route)
        page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
        page.goto(f"{srv.url}/map")
        page.wait_for_function("window.geobaseReady === true", timeout=60_000)
        page.wait_for_function("window.geobaseMap.areTilesLoaded()", timeout=30_000)
        page.wait_for_timeout(500)
        seen["switcher"] = page.inner_text("#layer-list")
        seen["legend"] = page.inner_text("#legend-list")
        seen["access"] = page.inner_text("#key-state")
        page.screenshot(path=str(shot))
        if draw_site:  # the drawing tool reaches the site-check endpoint and shows its answer
            page.click("#draw-btn")
            box = page.locator("#map").bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            for dx, dy in ((-60, -60), (60, -60), (60, 60), (-60, 60)):
                page.mouse.click(cx + dx, cy + dy)
            page.click("#finish-btn")
            page.wait_for_function("window.geobaseSiteCheck.state.done > 0", timeout=60_000)
            seen["site"] = page.inner_text("#site-result")
    import rasterio

    with rasterio.open(shot) as src:
        img = np.moveaxis(src.read()[:3], 0, -1).astype(float)
    seen["map_pixels"] = img[:, 330:]  # the map, right of the side panel
    return seen


def test_map_page_draws_the_one_map(county_db, live_server):
    import psycopg

    from geobase.db import database_url

    with psycopg.connect(database_url(county_db)) as conn:  # an admin opens the control lines to the public
        conn.execute("UPDATE catalog.layers SET sharing = 'public' WHERE name = 'control_lines'")
    land_colours = largest_classes(county_db)
    srv = live_server(county_db)
    seen = open_map(srv, ARTIFACTS / "map.png", draw_site=True)
    requests, switcher, legend, site = seen["requests"], seen["switcher"], seen["legend"], seen["site"]

    assert not seen["outside"], f"requests left localhost: {seen['outside']}"
    assert any("/tiles/onemap/" in u for u in requests) and any("/vendor/maplibre-gl/maplibre-gl.js" in u for u in requests)
    assert any("/tiles/dem/hillshade/" in u for u in requests)
    assert not seen["problems"], (seen["problems"], srv.logs()[-3000:])
    assert "地类图斑" in switcher and "三区三线" in switcher and "v1" in switcher
    assert all(code in legend for code in land_colours)

    img = seen["map_pixels"]
    drawn = {code: count_fill(img, colour) for code, colour in land_colours.items()}
    assert all(n > 1000 for n in drawn.values()), f"land-use colours not drawn: {drawn} {land_colours}"
    red = count_near(img, hex_rgb("#d7191c"), 40)  # ecological red line
    purple = count_near(img, hex_rgb("#7b3294"), 40)  # urban development boundary
    assert red > 300 and purple > 100, (red, purple)
    assert site.strip() and ("选址分析完成" in site or "未提供选址分析" in site), site  # Chinese: the default


def test_map_page_with_a_department_key_shows_internal_layers(county_db, live_server):
    """The control lines are shared among departments only: the public's map has none, while a
    department user who enters a key sees them listed and drawn (the key rides on config,
    style and tile requests alike)."""
    import psycopg

    from geobase import keys
    from geobase.db import database_url

    with psycopg.connect(database_url(county_db)) as conn:
        assert conn.execute("SELECT sharing FROM catalog.layers WHERE name = 'control_lines'").fetchone()[0] == "internal"
        token = keys.create_key(conn, name="forester", role="viewer", department="forestry").token
        conn.commit()
    srv = live_server(county_db)
    with srv.client() as c:  # the public: not in the config
        public = c.get("/map/config").json()
        assert "control_lines" not in {l["name"] for d in public["departments"] for l in d["layers"]}
    seen = open_map(srv, ARTIFACTS / "map-with-key.png",
                    init_script=f"sessionStorage.setItem('geobase.apiKey', {token!r})")
    assert not seen["outside"] and not seen["problems"], (seen["outside"], seen["problems"], srv.logs()[-3000:])
    assert "三区三线" in seen["switcher"] and seen["access"].startswith("已设置密钥"), (seen["switcher"], seen["access"])
    assert token.split("_", 2)[2] not in seen["access"]  # the secret is never shown
    red = count_near(seen["map_pixels"], hex_rgb("#d7191c"), 40)  # ecological red line
    assert red > 300, red

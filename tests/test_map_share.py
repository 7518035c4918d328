"""Adjust and share the one map (issue 21, items 6 and 7) in headless Chromium, as a planner
works: move a layer above another with the keyboard and find the order in the drawing, the
panel and the link (and again after a reload); switch the interface to English and keep it
across a reload; reach every control with Tab and see where the focus is; export the view as a
PNG of the map's own size. Every request goes to this server: any other host is blocked."""

from __future__ import annotations

import struct
from urllib.parse import unquote

import pytest
from conftest import ARTIFACTS
from test_map_tools import browser_page, open_map, settle

pytestmark = pytest.mark.browser

PANEL_ORDER = "[...document.querySelectorAll('#layer-list input[type=checkbox]')].map((c) => c.id.slice(7))"
DRAWN_ORDER = "window.geobaseLayerOrder.styleOrder(window.geobaseMap)"


def hash_part(page, key: str) -> str | None:
    for part in page.evaluate("location.hash").lstrip("#").split("&"):
        if part.startswith(key + "="):
            return unquote(part[len(key) + 1:])
    return None


def test_layer_order_moves_drawing_panel_and_link(county_server):
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map")
        drawn, panel = page.evaluate(DRAWN_ORDER), page.evaluate(PANEL_ORDER)
        assert hash_part(page, "order") is None  # the style's own order is not written
        movable = page.evaluate("[...document.querySelectorAll('button.order-up:not([disabled])')].map((b) => b.id.slice(3))")
        assert movable, panel
        name = movable[0]
        above = [n for n in panel[:panel.index(name)] if n in drawn][-1]  # its neighbour in the panel
        assert drawn.index(above) < drawn.index(name)

        page.focus(f"#up-{name}")
        page.keyboard.press("Enter")  # the keyboard moves it: up, above its neighbour
        settle(page)
        drawn2, panel2 = page.evaluate(DRAWN_ORDER), page.evaluate(PANEL_ORDER)
        assert drawn2.index(name) < drawn2.index(above), drawn2
        assert panel2.index(name) == panel.index(above) and panel2.index(above) == panel.index(above) + 1, panel2
        assert sorted(drawn2) == sorted(drawn) and [n for n in drawn2 if n not in (name, above)] == \
            [n for n in drawn if n not in (name, above)]  # the others keep their places
        assert hash_part(page, "order") == ",".join(drawn2)
        # every style layer of the moved layer now draws above every style layer of the other
        ids = page.evaluate("window.geobaseMap.getStyle().layers.filter((l) => l.metadata && !l.metadata['geobase:label'])"
                            ".map((l) => l.metadata['geobase:layer'])")
        assert max(i for i, n in enumerate(ids) if n == above) < min(i for i, n in enumerate(ids) if n == name), ids
        shared = page.evaluate("location.href")
        assert not seen["outside"] and not seen["problems"], seen

    with browser_page() as (page, seen):  # the link opens in the same order
        open_map(page, shared)
        assert page.evaluate(DRAWN_ORDER) == drawn2 and page.evaluate(PANEL_ORDER) == panel2
        page.focus(f"#down-{name}")
        page.keyboard.press(" ")  # Space moves it back: the default order leaves the link
        settle(page)
        assert page.evaluate(DRAWN_ORDER) == drawn and page.evaluate(PANEL_ORDER) == panel
        assert hash_part(page, "order") is None
        assert not seen["outside"] and not seen["problems"], seen


def test_english_interface_kept_across_reload(county_server):
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map")
        assert page.inner_text("#layers h2") == "图层" and page.inner_text("#measure-line") == "测距"
        assert page.evaluate("document.documentElement.lang") == "zh" and hash_part(page, "lang") is None
        config = page.evaluate("fetch('/map/config').then((r) => r.json())")
        layer = config["departments"][0]["layers"][0]
        assert page.inner_text(f'label[for="toggle-{layer["name"]}"]').startswith(layer["title"]["zh"])

        page.focus("#lang-switch")
        page.keyboard.press("Enter")
        assert page.inner_text("#layers h2") == "Layers" and page.inner_text("#measure-line") == "Distance"
        assert page.inner_text("#draw-btn") == "Draw polygon" and page.inner_text("#export-png") == "Export PNG"
        assert page.get_attribute("#search-input", "placeholder").startswith("Parcel number")
        assert page.inner_text(f'label[for="toggle-{layer["name"]}"]').startswith(layer["title"]["en"])
        assert config["departments"][0]["name"]["en"] in page.inner_text("#layer-list")
        assert hash_part(page, "lang") == "en"
        legend = page.evaluate("fetch('/legend').then((r) => r.json())")
        entry = next(e for e in legend["layers"] if e["classes"])
        shown = page.inner_text("#legend-list")
        assert entry["title"]["en"] in shown and f'{entry["classes"][0]["code"]} {entry["classes"][0]["en"]}' in shown
        assert entry["title"]["zh"] not in shown
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "map-english.png"))
        page.reload()
        page.wait_for_function("window.geobaseReady === true", timeout=60_000)
        assert page.inner_text("#layers h2") == "Layers" and page.evaluate("document.documentElement.lang") == "en"
        assert page.inner_text("#lang-switch") == "中文"
        page.focus("#lang-switch")
        page.keyboard.press(" ")
        assert page.inner_text("#layers h2") == "图层" and hash_part(page, "lang") is None
        assert not seen["outside"] and not seen["problems"], seen


def test_every_panel_control_reached_by_tab_with_a_visible_ring(county_server):
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map")
        n = page.evaluate("""(() => { let i = 0;
            for (const el of document.querySelectorAll('#panel button, #panel input, #panel select, #panel a[href]'))
              if (!el.disabled && el.offsetParent !== null) el.dataset.tabProbe = String(i++);
            return i; })()""")
        assert n > 20
        page.focus("body")
        reached, rings = set(), set()
        for _ in range(n + 15):
            page.keyboard.press("Tab")
            probe, outline = page.evaluate("""(() => { const el = document.activeElement; const s = getComputedStyle(el);
                return [el.dataset.tabProbe || null, s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2]; })()""")
            if probe is not None:
                reached.add(probe)
                if outline:
                    rings.add(probe)
        assert reached == {str(i) for i in range(n)}, (n, sorted(reached))
        assert rings == reached  # each shows a focus ring
        assert not seen["outside"] and not seen["problems"], seen


def test_export_png_of_the_map_size(county_server):
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map#map=12/29.1/118.15")
        with page.expect_download() as download:
            page.click("#export-png")
        assert download.value.suggested_filename.startswith("geobase-map-12.0-") and \
            download.value.suggested_filename.endswith(".png")
        data = open(download.value.path(), "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        canvas = page.evaluate("(() => { const c = window.geobaseMap.getCanvas(); return [c.width, c.height]; })()")
        box = page.locator("#map").bounding_box()
        dpr = page.evaluate("window.devicePixelRatio")
        assert [width, height] == canvas == [round(box["width"] * dpr), round(box["height"] * dpr)]
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / "map-export.png"
        path.write_bytes(data)
        import rasterio
        with rasterio.open(path) as src:
            pixels = src.read()
        assert pixels[:3].std() > 5 and pixels[3].min() > 0  # the drawn map, not a cleared buffer
        assert not seen["outside"] and not seen["problems"], seen

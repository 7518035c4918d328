"""The map for everyone who works in it (issue 21): the interface in Chinese (the default) or
English with no word of the other language left in the panel; measuring and drawing a site
from the keyboard alone (a cross at the map's centre, Space, Enter, Escape, typed coordinates)
in a sensible focus order; and on a tablet (768x1024, touch) the panel folds behind a toggle
while the map fills the screen and the tools still work. Every request goes to this server."""

from __future__ import annotations

import re

import pytest
from pyproj import Geod
from test_map_compare import changed_county, compare_server, wait_compared  # noqa: F401
from test_map_tools import browser_page, open_map, search, settle

pytestmark = pytest.mark.browser

CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
#: Latin words that belong in the Chinese interface: names, units, standards, the language switch,
#: export formats and the attribute code in the filter's example
LATIN_OK = {"geobase", "CGCS", "PNG", "API", "CQL", "English", "km", "m", "ha", "v", "HTTP", "Esc", "CSV", "GeoPackage", "dlbm"}

# The interface's own words in the panel, the toggle and the status line: text nodes and the
# placeholder / aria-label / title attributes, with the compare section and the attribute table's
# bar. Left out: data (search hits, the table's grid: the schema's column titles and the rows, the
# legend's class codes such as "lake") and the language switch, which names the other language on
# purpose.
PANEL_TEXTS = """() => {
  const skip = (el) => el.closest('.search-hit, #lang-switch, #table-grid, [hidden], .code');
  const out = [];
  for (const root of ['panel', 'panel-toggle', 'status', 'table-panel'].map((id) => document.getElementById(id))) {
    const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) if (n.nodeValue.trim() && !skip(n.parentElement)) out.push(n.nodeValue.trim());
    for (const el of [root, ...root.querySelectorAll('*')]) {
      if (skip(el)) continue;
      for (const a of ['placeholder', 'aria-label', 'title']) if (el.getAttribute(a)) out.push(el.getAttribute(a));
    }
  }
  return out;
}"""


def _latin_words(texts: list[str]) -> set[str]:
    return {w for t in texts for w in re.findall(r"[A-Za-z]+", t)} - LATIN_OK


def _exercise(page, cx: float, cy: float) -> None:
    """Put the tools' messages on screen: a search without hits, a measured line, a site drawing."""
    search(page, "没有这个名字zzqq", 1)
    page.click("#measure-line")
    for dx in (-100, 100):
        page.mouse.click(cx + dx, cy)
    page.click("#measure-finish")
    page.click("#draw-btn")
    page.mouse.click(cx, cy + 80)


def _sort_hint(page) -> list[str]:
    """The table's id heading and a heading's sort hint: words, in the grid the check leaves out."""
    return page.evaluate("[document.querySelector('#table-grid th[data-key=id]').textContent, "
                         "document.querySelector('#table-grid th[data-key=tbmj]').title]")


def test_chinese_and_english_interface_leave_no_word_of_the_other(compare_server):
    with browser_page() as (page, seen):
        open_map(page, f"{compare_server.url}/map")
        box = page.locator("#map").bounding_box()
        _exercise(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.fill("#compare-slider", "0")  # two versions side by side: v1 left, the current right
        page.check("#compare-side")
        wait_compared(page)
        page.select_option("#table-layer", "land_use")
        page.uncheck("#table-inview")
        page.click("#table-form button[type=submit]")
        page.wait_for_function("window.geobaseTableState.done >= 1", timeout=30_000)
        assert page.evaluate("window.geobaseTableState.rows.length") > 0
        zh = page.evaluate(PANEL_TEXTS)
        assert not _latin_words(zh), sorted(_latin_words(zh))
        assert any("距离" in t for t in zh) and any("无结果" in t for t in zh) and any("顶点" in t for t in zh), zh
        assert any("处变化" in t and "右：" in t for t in zh) and "并排" in zh and any(t.startswith("共 ") for t in zh), zh
        assert _sort_hint(page) == ["标识", "排序：tbmj"]

        page.click("#lang-switch")
        en = page.evaluate(PANEL_TEXTS)
        assert not [t for t in en if CJK.search(t)], [t for t in en if CJK.search(t)]
        assert any("Distance" in t for t in en) and "No results" in en and any("vertices" in t for t in en), en
        assert any("changes" in t and "Right: " in t for t in en) and "Side by side" in en and any(" rows · " in t for t in en), en
        assert _sort_hint(page) == ["id", "Sort by tbmj"]
        assert page.inner_text("#status") == "Ready" and page.inner_text("#key-state") == "public (no key)"
        assert page.evaluate("document.documentElement.lang") == "en" and "lang=en" in page.evaluate("location.hash")

        page.click("#lang-switch")  # and back: every message the switch touched is Chinese again
        back = page.evaluate(PANEL_TEXTS)
        assert not _latin_words(back), sorted(_latin_words(back))
        assert sorted(back) == sorted(zh)

        page.select_option("#compare-what", "plan")  # the plan against the current land use, in both languages
        wait_compared(page)
        zh = page.evaluate(PANEL_TEXTS)
        assert not _latin_words(zh), sorted(_latin_words(zh))
        assert any("规划" in t and "现状" in t and "|" in t for t in zh), zh
        page.click("#lang-switch")
        en = page.evaluate(PANEL_TEXTS)
        assert not [t for t in en if CJK.search(t)], [t for t in en if CJK.search(t)]
        assert any(t.startswith("Left: plan (") and "Right: current (" in t for t in en) and "Plan vs current" in en, en
        page.click("#lang-switch")
        back = page.evaluate(PANEL_TEXTS)
        assert sorted(back) == sorted(zh)
        assert not seen["outside"] and not seen["problems"], seen


def flat(coords: list[list[float]]) -> list[float]:
    return [v for c in coords for v in c]


def _focus_order(page, start: str, n: int) -> list[str]:
    page.focus(start)
    order = [start.lstrip("#")]
    for _ in range(n):
        page.keyboard.press("Tab")
        order.append(page.evaluate("(document.activeElement.id || document.activeElement.className || '') + ''"))
    return order


def test_measure_and_site_check_from_the_keyboard(county_server):
    geod = Geod(ellps="GRS80")
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map#map=13/29.1/118.15")
        # the tools come right after the search box, in reading order
        order = _focus_order(page, "#search-input", 7)
        assert order[:7] == ["search-input", "", "measure-line", "measure-area", "measure-finish", "measure-clear",
                             ""], order
        centre = lambda: page.evaluate("window.geobaseMap.getCenter().toArray()")

        page.focus("#measure-line")
        page.keyboard.press("Enter")  # starts measuring and hands the focus to the map
        assert page.evaluate("document.activeElement === window.geobaseMap.getCanvas()")
        assert page.is_visible("#draw-cross")
        expected = []
        for keys in ((), ("ArrowRight",) * 6, ("ArrowDown",) * 6):
            for k in keys:
                page.keyboard.press(k)
            settle(page)
            expected.append(centre())
            page.keyboard.press(" ")
        page.keyboard.press("Enter")
        coords = page.evaluate("window.geobaseMeasure.coords")
        assert flat(coords) == pytest.approx(flat(expected), abs=1e-9) and len({tuple(c) for c in coords}) == 3
        assert page.evaluate("window.geobaseMeasure.done") and not page.is_visible("#draw-cross")
        assert page.evaluate("window.geobaseMeasure.length_m") == pytest.approx(geod.line_length(*zip(*coords)), rel=1e-6)

        page.focus("#measure-area")
        page.keyboard.press("Enter")
        page.keyboard.press(" ")
        page.keyboard.press("ArrowLeft")
        page.keyboard.press(" ")
        page.keyboard.press("Backspace")  # takes the last point back
        assert len(page.evaluate("window.geobaseMeasure.coords")) == 1
        page.keyboard.press("Escape")  # cancels: nothing measured, nothing drawn
        assert page.evaluate("window.geobaseMeasure.coords") == [] and page.evaluate("window.geobaseMeasure.mode") is None
        assert page.inner_text("#measure-result") == ""

        # typed coordinates, exact: a line along the parallel 29.1
        form = "#measure .coord-form"
        page.fill(f"{form} input", "abc")
        page.press(f"{form} input", "Enter")
        assert page.is_visible(f"{form} .coord-error")
        for typed in ("118.10 29.1", "118.12, 29.1"):
            page.fill(f"{form} input", typed)
            page.press(f"{form} input", "Enter")
        assert not page.is_visible(f"{form} .coord-error")
        assert page.evaluate("window.geobaseMeasure.coords") == [[118.10, 29.1], [118.12, 29.1]]
        assert page.evaluate("window.geobaseMeasure.length_m") == pytest.approx(geod.line_length([118.10, 118.12], [29.1, 29.1]),
                                                                               rel=1e-9)

        # a site drawn and sent without the mouse
        page.focus("#draw-btn")
        page.keyboard.press("Enter")
        ring = []
        for keys in ((), ("ArrowRight",) * 5, ("ArrowUp",) * 5):
            for k in keys:
                page.keyboard.press(k)
            settle(page)
            ring.append(centre())
            page.keyboard.press(" ")
        page.keyboard.press("Enter")
        page.wait_for_function("window.geobaseSiteCheck.state.done > 0", timeout=60_000)
        assert flat(page.evaluate("window.geobaseSiteCheck.state.coords")) == pytest.approx(flat(ring), abs=1e-9)
        assert page.evaluate("window.geobaseSiteCheck.state.status") == 200, page.inner_text("#site-result")
        assert "选址分析完成" in page.inner_text("#site-result")
        assert not seen["outside"] and not seen["problems"], seen


def test_on_a_tablet_the_panel_folds_away_and_the_tools_work(county_server, county_shared):
    import psycopg

    with psycopg.connect(county_shared.database_url) as conn:
        bsm = conn.execute("SELECT bsm FROM data.land_use WHERE _vto IS NULL ORDER BY _area_m2 DESC LIMIT 1").fetchone()[0]
    with browser_page(viewport={"width": 768, "height": 1024}, touch=True) as (page, seen):
        open_map(page, f"{county_server.url}/map")
        canvas = page.locator("#map canvas").bounding_box()
        assert canvas["x"] == 0 and canvas["width"] == 768 and canvas["height"] == 1024  # the map fills the screen
        assert not page.is_visible("#panel") and page.is_visible("#panel-toggle")
        assert page.get_attribute("#panel-toggle", "aria-expanded") == "false"

        page.tap("#panel-toggle")
        page.wait_for_function("getComputedStyle(document.getElementById('panel')).visibility === 'visible'")
        assert page.get_attribute("#panel-toggle", "aria-expanded") == "true"
        page.tap("#measure-line")  # a tool that takes points closes the panel: the map is free
        page.wait_for_function("getComputedStyle(document.getElementById('panel')).visibility === 'hidden'")
        for x, y in ((200, 400), (500, 450), (560, 700)):
            page.touchscreen.tap(x, y)
        assert len(page.evaluate("window.geobaseMeasure.coords")) == 3
        page.tap("#panel-toggle")
        page.tap("#measure-finish")
        assert "km" in page.inner_text("#measure-result") or " m" in page.inner_text("#measure-result")

        page.fill("#search-input", bsm)
        page.press("#search-input", "Enter")
        page.wait_for_function("(window.geobaseSearchState.done || 0) >= 1", timeout=30_000)
        page.tap("#search-hit-0")  # the hit is shown on the map, the panel out of its way
        page.wait_for_function("window.geobaseSearchState.highlighted > 0", timeout=30_000)
        page.wait_for_function("getComputedStyle(document.getElementById('panel')).visibility === 'hidden'")
        settle(page)
        assert page.evaluate("window.geobaseMap.getZoom()") > 13
        page.screenshot(path=str(_artifact("map-tablet.png")))
        assert not seen["outside"] and not seen["problems"], seen


def _artifact(name: str):
    from conftest import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name

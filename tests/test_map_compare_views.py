"""The one map's compare views (issue 21 items 4 and 6) in headless Chromium, as a planner uses
them, on the sample county after the demo's land-use change delivery: two versions side by side
(the panes differ at the changed parcels and nowhere else, the changed parcels outlined, panning
one pane pans the other), the plan layers against current land use (side by side and swiped), and
a shared link that reopens the compare view and the attribute table of a CQL2 filter with the
rows the items API gives. Every request goes to this server: any other host is blocked."""

from __future__ import annotations

from urllib.parse import unquote

import httpx
import numpy as np
import pytest
from test_map_browser import count_near, hex_rgb
from test_map_compare import changed_county, changed_parcel, changed_mask, compare_server, differing, parcel_box  # noqa: F401
from test_map_compare import screenshot, wait_compared
from test_map_tools import browser_page, open_map, settle

pytestmark = pytest.mark.browser
HIGHLIGHT = hex_rgb("#ff00aa")  # compare.js outlines the change feed's parcels in this colour

VISIBLE_DATA = """(m) => [...new Set(m.getStyle().layers.filter((l) => l.metadata && l.metadata['geobase:layer'] &&
    !l.metadata['geobase:label'] && (l.layout || {}).visibility !== 'none').map((l) => l.metadata['geobase:layer']))].sort()"""


def panes(page, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """The left (first map) and right (second map) panes of a side-by-side screenshot, equal sizes."""
    a = page.locator("#map").bounding_box()
    b = page.locator("#compare-map").bounding_box()
    assert a["width"] == pytest.approx(b["width"], abs=1) and a["height"] == b["height"], (a, b)
    assert a["x"] + a["width"] == pytest.approx(b["x"], abs=1)  # side by side, the right pane where the left ends
    x0, x1, w = round(a["x"]), round(b["x"]), round(min(a["width"], b["width"]))
    return img[:, x0:x0 + w], img[:, x1:x1 + w], (x0, x1, w)


def controls_mask(page, shape, x0: int) -> np.ndarray:
    """Pane pixels under the first map's buttons and scale and the status line (which the second map has not)."""
    rects = page.evaluate("[...document.querySelectorAll('#map .maplibregl-ctrl, #status')].map((e) => "
                          "{ const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })")
    mask = np.zeros(shape[:2], bool)
    for left, top, right, bottom in rects:
        for off in (x0, x0 + shape[1]):  # in either pane
            mask[max(0, int(top) - 2):int(bottom) + 3, max(0, int(left) - off - 2):max(0, int(right) - off + 3)] = True
    return mask


def cameras(page) -> list[list[float]]:
    return page.evaluate("[window.geobaseMap, window.geobaseCompareMap].map((m) => "
                         "[m.getCenter().lng, m.getCenter().lat, m.getZoom(), m.getBearing()])")


def drag(page, x: float, y: float, dx: float, dy: float) -> None:
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2, steps=4)
    page.mouse.move(x + dx, y + dy, steps=4)
    page.mouse.up()
    page.wait_for_function("!window.geobaseMap.isMoving() && !window.geobaseCompareMap.isMoving()", timeout=30_000)


def hash_part(page, key: str) -> str | None:
    for part in page.evaluate("location.hash").lstrip("#").split("&"):
        if part.startswith(key + "="):
            return unquote(part[len(key) + 1:])
    return None


def test_side_by_side_versions_differ_at_the_changed_parcels_only_and_move_together(compare_server, changed_county):
    p = changed_parcel(changed_county)
    box = parcel_box(changed_county, p["key"])
    with browser_page() as (page, seen):
        open_map(page, f"{compare_server.url}/map")
        page.select_option("#compare-layer", "land_use")
        page.evaluate(f"window.geobaseMap.fitBounds([[{box[0]}, {box[1]}], [{box[2]}, {box[3]}]], {{padding: 150, duration: 0}})")
        page.fill("#compare-slider", "0")  # left: version 1
        page.check("#compare-side")  # right: the current version 2
        wait_compared(page)
        assert page.input_value("#compare-right") == "2" and page.evaluate("window.geobaseCompareState.version") == 1
        a, b = cameras(page)
        assert a == pytest.approx(b, abs=1e-9)  # the same centre, zoom and bearing in each pane
        img = screenshot(page, "compare-side-versions.png")
        left, right, (x0, _, w) = panes(page, img)

        # where the change lies the panes differ; elsewhere they are the same picture
        mask = changed_mask(page, compare_server, img.shape)[:, x0:x0 + w]
        assert mask.any() and not mask.all()
        diff = differing(left, right)
        diff[:, -5:] = diff[:, :5] = False  # the divider and its shadow
        assert (diff & mask).sum() > 100, (diff & mask).sum()
        off = diff & ~mask & ~controls_mask(page, left.shape, x0)
        assert off.sum() < 50, (off.sum(), np.argwhere(off)[:10])
        colour = lambda im: np.median(im[:, :, :].reshape(-1, 3), axis=0)  # noqa: E731
        x, y = [round(v) for v in page.evaluate(f"Object.values(window.geobaseMap.project([{p['lon']}, {p['lat']}]))")]
        at_left, at_right = colour(left[y - 2:y + 3, x - 2:x + 3]), colour(right[y - 2:y + 3, x - 2:x + 3])
        assert np.abs(at_left - at_right).sum() > 30, (at_left, at_right, p)  # the parcel's class, then and now

        # the changed parcels are outlined in both panes, and nothing else is drawn in that colour
        for pane in (left, right):
            near = np.abs(pane - HIGHLIGHT).max(axis=-1) <= 40
            assert (near & mask).sum() > 50 and (near & ~mask).sum() < 10, ((near & mask).sum(), (near & ~mask).sum())
        assert hash_part(page, "compare") == "side/land_use/1/2"

        # pan the right pane with the mouse: the left follows; pan the left: the right follows
        r = page.locator("#compare-map").bounding_box()
        before = cameras(page)[0]
        drag(page, r["x"] + r["width"] / 2, r["y"] + r["height"] / 2, -120, 80)
        a, b = cameras(page)
        assert a == pytest.approx(b, abs=1e-9) and abs(a[0] - before[0]) > 1e-5 and abs(a[1] - before[1]) > 1e-5
        m = page.locator("#map").bounding_box()
        drag(page, m["x"] + m["width"] / 2, m["y"] + m["height"] / 2, 150, -60)
        a2, b2 = cameras(page)
        assert a2 == pytest.approx(b2, abs=1e-9) and abs(a2[0] - a[0]) > 1e-5
        page.evaluate("window.geobaseCompareMap.rotateTo(30, {duration: 0})")  # the bearing too
        assert cameras(page)[0][3] == pytest.approx(30)
        settle(page)
        assert hash_part(page, "map").split("/")[3] == "30"  # the link follows either pane

        # the divider moves the split: both panes resized, still the same centre
        page.fill("#compare-position", "30")
        wait_compared(page)
        a, b = page.locator("#map").bounding_box(), page.locator("#compare-map").bounding_box()
        assert a["width"] == pytest.approx(0.3 * (a["width"] + b["width"]), abs=2) and a["x"] + a["width"] == pytest.approx(b["x"], abs=1)
        a, b = cameras(page)
        assert a == pytest.approx(b, abs=1e-9)
        assert hash_part(page, "divider") == "0.3"

        # the layer panel works on both panes: a layer switched off, another faded
        page.uncheck("#toggle-rivers")
        page.fill("#opacity-land_use", "40")
        wait_compared(page)
        for js in ("window.geobaseMap", "window.geobaseCompareMap"):
            assert page.evaluate(f"{js}.getLayoutProperty('rivers-line', 'visibility')") == "none", js
            assert page.evaluate(f"{js}.getPaintProperty('compare:land_use-fill', 'fill-opacity')") == pytest.approx(0.75 * 0.4), js
        assert page.evaluate("window.geobaseCompareState.changes") > 0
        page.uncheck("#toggle-land_use")  # the compared layer itself: off in both versions, and on again
        wait_compared(page)
        shown = "[window.geobaseMap, window.geobaseCompareMap].map((m) => m.getLayoutProperty('compare:land_use-fill', 'visibility'))"
        assert page.evaluate(shown) == ["none", "none"]
        page.check("#toggle-land_use")
        wait_compared(page)
        assert page.evaluate(shown) == ["visible", "visible"]

        page.uncheck("#compare-side")  # back to one map: the second map and its pane are gone
        wait_compared(page)
        assert page.evaluate("window.geobaseCompareMap") is None and page.locator("#compare-map").count() == 0
        assert page.locator("#map").bounding_box()["width"] == pytest.approx(m["width"] * 2, abs=2)
        assert hash_part(page, "compare") == "slider/land_use/1" and hash_part(page, "divider") is None
        assert not seen["outside"] and not seen["problems"], (seen, compare_server.logs()[-2000:])


def test_plan_against_current_land_use_side_by_side_and_swiped(compare_server):
    with browser_page() as (page, seen):
        open_map(page, f"{compare_server.url}/map#map=13/29.1/118.15")
        page.select_option("#compare-what", "plan")
        wait_compared(page)
        assert page.is_checked("#compare-side")  # plan against current needs its two maps
        plan, current = page.evaluate(f"[window.geobaseMap, window.geobaseCompareMap].map({VISIBLE_DATA})")
        assert "planning_zones" in plan and "land_use" not in plan, plan
        assert "land_use" in current and "planning_zones" not in current, current
        assert set(plan) - {"planning_zones"} == set(current) - {"land_use"}  # the rest is shared context
        img = screenshot(page, "compare-side-plan.png")
        left, right, _ = panes(page, img)
        assert differing(left, right).mean() > 0.2  # zones against parcels: another picture
        assert hash_part(page, "compare") == "side/plan"

        page.check("#compare-swipe")  # the same comparison as a swipe over one map
        assert not page.is_checked("#compare-side")
        wait_compared(page)
        plan2, current2 = page.evaluate(f"[window.geobaseMap, window.geobaseCompareMap].map({VISIBLE_DATA})")
        assert (plan2, current2) == (plan, current)
        page.fill("#compare-position", "100")  # all plan
        wait_compared(page)
        all_plan = screenshot(page, "compare-swipe-plan-left.png")
        page.fill("#compare-position", "0")  # all current
        wait_compared(page)
        all_current = screenshot(page, "compare-swipe-plan-right.png")
        page.fill("#compare-position", "50")
        wait_compared(page)
        half = screenshot(page, "compare-swipe-plan.png")
        m = page.locator("#map").bounding_box()
        x0, mid, x1 = round(m["x"]), round(m["x"] + m["width"] / 2), round(m["x"] + m["width"])
        assert differing(all_plan[:, x0:x1], all_current[:, x0:x1]).mean() > 0.2
        # left of the divider the plan, right of it the current land use (controls and divider aside)
        assert differing(half[120:-100, x0 + 5:mid - 5], all_plan[120:-100, x0 + 5:mid - 5]).mean() < 0.01
        assert differing(half[120:-100, mid + 5:x1 - 60], all_current[120:-100, mid + 5:x1 - 60]).mean() < 0.01
        assert hash_part(page, "compare") == "swipe/plan"

        page.select_option("#compare-what", "versions")  # back to versions: every layer as the user had it
        page.uncheck("#compare-swipe")
        wait_compared(page)
        assert page.evaluate(f"({VISIBLE_DATA})(window.geobaseMap)") == sorted(set(plan) | {"land_use"})
        assert hash_part(page, "compare") is None
        assert not seen["outside"] and not seen["problems"], (seen, compare_server.logs()[-2000:])


def test_a_shared_link_reopens_the_compare_view_and_the_filtered_table(compare_server, changed_county):
    p = changed_parcel(changed_county)
    flt = "dlbm = '0702' AND tbmj > 100"
    with browser_page() as (page, seen):
        open_map(page, f"{compare_server.url}/map#map=14/{p['lat']}/{p['lon']}")
        page.fill("#compare-slider", "0")
        page.check("#compare-side")
        page.fill("#compare-position", "40")
        wait_compared(page)
        page.select_option("#table-layer", "land_use")
        page.fill("#table-filter", flt)
        page.click("#table-form button[type=submit]")
        page.wait_for_function("window.geobaseTableState.done >= 1", timeout=30_000)
        page.click("#table-grid th[data-key=tbmj]")  # sorted by area, on the server
        page.wait_for_function("window.geobaseTableState.done >= 2", timeout=30_000)
        sent = page.evaluate("[window.geobaseTableState.rows.map((r) => r.id), window.geobaseTableState.query]")
        assert sent[0] and page.evaluate("window.geobaseTableState.error") is None
        settle(page)
        shared = page.evaluate("location.href")
        assert hash_part(page, "compare") == "side/land_use/1/2" and hash_part(page, "divider") == "0.4"
        assert hash_part(page, "table") == "land_use" and hash_part(page, "filter") == flt and hash_part(page, "sortby") == "tbmj"
        assert hash_part(page, "bbox") == ",".join(str(v) for v in sent[1]["bbox"])
        assert not seen["outside"] and not seen["problems"], seen

    with browser_page() as (page, seen):  # someone else opens the link: the same view
        open_map(page, shared)
        page.wait_for_function("window.geobaseTableState.done >= 1", timeout=30_000)
        wait_compared(page)
        state = page.evaluate("window.geobaseCompareState")
        assert (state["what"], state["mode"], state["layer"], state["version"], state["right"]) == ("versions", "side", "land_use", 1, 2)
        assert state["position"] == pytest.approx(0.4) and page.input_value("#compare-position") == "40"
        assert page.is_checked("#compare-side") and page.input_value("#compare-slider") == "0"
        assert page.input_value("#compare-right") == "2" and state["changes"] > 0
        a, b = cameras(page)
        assert a == pytest.approx(b, abs=1e-9) and a[:2] == pytest.approx([p["lon"], p["lat"]], abs=1e-6)
        assert not page.locator("#table-panel").is_hidden()
        assert page.input_value("#table-filter") == flt and page.is_checked("#table-inview")
        rows = page.evaluate("window.geobaseTableState.rows.map((r) => r.id)")
        q = page.evaluate("window.geobaseTableState.query")
        api = httpx.get(f"{compare_server.url}/collections/land_use/items", timeout=30, params={
            "filter": flt, "bbox": ",".join(f"{v:.8f}" for v in q["bbox"]), "sortby": "tbmj", "limit": 50}).json()
        assert rows == [f["id"] for f in api["features"]] == sent[0]  # the items API's rows, in its order
        assert page.evaluate("location.href") == shared  # the reopened view writes the same link
        a, b = page.locator("#map").bounding_box(), page.locator("#compare-map").bounding_box()
        assert a["width"] == pytest.approx(0.4 * (a["width"] + b["width"]), abs=2)  # the split where the sender left it
        screenshot(page, "compare-shared.png")
        assert not seen["outside"] and not seen["problems"], seen

        page.click("#table-close")  # a closed table leaves the link
        assert hash_part(page, "table") is None and hash_part(page, "filter") is None


def test_links_with_the_time_slider_or_a_garbled_table_query(compare_server):
    with browser_page() as (page, seen):  # the time slider at version 1: one map, the layer as it was
        open_map(page, f"{compare_server.url}/map#map=13/29.1/118.15&compare=slider/land_use/1")
        wait_compared(page)
        state = page.evaluate("window.geobaseCompareState")
        assert (state["mode"], state["layer"], state["version"]) == ("none", "land_use", 1) and state["changes"] > 0
        assert page.input_value("#compare-slider") == "0" and page.evaluate("window.geobaseCompareMap") is None
        assert page.evaluate("window.geobaseMap.getSource('compare-version').tiles[0]").endswith("?version=1")
        assert hash_part(page, "compare") == "slider/land_use/1"
        assert not seen["outside"] and not seen["problems"], seen

    with browser_page() as (page, seen):  # plan against current as a swipe; the table's query garbled: no table
        open_map(page, f"{compare_server.url}/map#map=13/29.1/118.15&compare=swipe/plan&table=land_use&bbox=1,2,3")
        wait_compared(page)
        assert page.evaluate("window.geobaseCompareState.what") == "plan" and page.is_checked("#compare-swipe")
        assert page.locator("#table-panel").is_hidden() and hash_part(page, "table") is None
        assert not seen["outside"] and not seen["problems"], seen


def test_plan_side_holds_the_control_lines_for_a_department(compare_server, changed_county):
    """With a department's key the three control lines are a plan layer too: drawn on the plan
    side (the ecological red line in its red), hidden on the current side."""
    import psycopg

    from geobase import keys

    with psycopg.connect(changed_county.database_url) as conn:
        token = keys.create_key(conn, name="planner", role="viewer", department="planning").token
        conn.commit()
    with browser_page() as (page, seen):
        page.add_init_script(f"sessionStorage.setItem('geobase.apiKey', {token!r})")
        open_map(page, f"{compare_server.url}/map#map=11.5/29.1/118.15&compare=side/plan")
        wait_compared(page)
        plan, current = page.evaluate(f"[window.geobaseMap, window.geobaseCompareMap].map({VISIBLE_DATA})")
        assert {"planning_zones", "control_lines"} <= set(plan) and "land_use" not in plan, plan
        assert "land_use" in current and not {"planning_zones", "control_lines"} & set(current), current
        left, right, _ = panes(page, screenshot(page, "compare-side-plan-key.png"))
        red = hex_rgb("#d7191c")  # the ecological protection red line
        n_left, n_right = count_near(left, red, 40), count_near(right, red, 40)
        assert n_left > 300 and n_right * 10 < n_left, (n_left, n_right)  # (a few land-use classes are reddish)
        assert not seen["outside"] and not seen["problems"], seen

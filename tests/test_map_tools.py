"""The one map's tools in headless Chromium, used as a planner would (issue 21): find a parcel,
a village and a position and see them zoomed to and highlighted; measure a line and an area and
read the same numbers pyproj's GeographicLib gives on GRS80; reload a shared link and get the
same view, layers and opacity. Every request goes to this server: any other host is blocked."""

from __future__ import annotations

from contextlib import contextmanager
from urllib.parse import urlparse

import numpy as np
import psycopg
import pytest
from browser_harness import browser_context
from conftest import ARTIFACTS
from pyproj import Geod, Transformer
from test_map_browser import count_near, hex_rgb

pytestmark = pytest.mark.browser


@contextmanager
def browser_page(also: tuple[str, ...] = (), viewport: dict | None = None, touch: bool = False):
    """A page, in a fresh context of the session's Chromium, whose requests may reach the server
    under test only (and the hosts ``also`` names, host:port); yields (page, seen) where seen lists
    requests to other hosts and every error the page met. ``viewport`` and ``touch``: a tablet
    instead of a desktop."""
    seen: dict = {"outside": [], "problems": [], "requests": []}
    with browser_context(viewport=viewport or {"width": 1100, "height": 800}, has_touch=touch,
                         is_mobile=touch) as context:
        page = context.new_page()
        host = {}

        def route(r):
            u = urlparse(r.request.url)
            seen["requests"].append(r.request.url)
            if u.scheme in ("http", "https", "ws", "wss") and u.netloc != host.get("netloc") and u.netloc not in also:
                seen["outside"].append(r.request.url)
                return r.abort()
            return r.continue_()

        page.route("**/*", route)
        page.on("console", lambda m: seen["problems"].append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: seen["problems"].append(f"pageerror: {e}"))
        page.on("response", lambda r: seen["problems"].append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        page.host = host
        yield page, seen


def open_map(page, url: str) -> None:
    page.host["netloc"] = urlparse(url).netloc
    page.goto(url)
    page.wait_for_function("window.geobaseReady === true", timeout=60_000)
    settle(page)


def settle(page) -> None:
    page.wait_for_function("window.geobaseMap.loaded() && window.geobaseMap.areTilesLoaded()", timeout=60_000)
    page.wait_for_timeout(300)


def search(page, q: str, n: int) -> list[dict]:
    page.fill("#search-input", q)
    page.press("#search-input", "Enter")
    page.wait_for_function(f"(window.geobaseSearchState.done || 0) >= {n}", timeout=30_000)
    return page.evaluate("window.geobaseSearchState.results")


def pick(page, i: int = 0) -> int:
    page.click(f"#search-hit-{i}")
    page.wait_for_function("window.geobaseSearchState.highlighted > 0 || window.geobaseSearchState.error", timeout=30_000)
    settle(page)
    return page.evaluate("window.geobaseSearchState.highlighted")


def shot(page, name: str) -> np.ndarray:
    import rasterio

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    with rasterio.open(path) as src:
        return np.moveaxis(src.read()[:3], 0, -1).astype(float)[:, 330:]  # the map, right of the panel


def test_find_zooms_to_and_highlights_parcel_village_and_position(county_server, county_shared):
    with psycopg.connect(county_shared.database_url) as conn:
        bsm, village, box = conn.execute(
            "SELECT bsm, zldwmc, ARRAY[ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom)] FROM data.land_use "
            "WHERE _vto IS NULL ORDER BY _area_m2 DESC LIMIT 1").fetchone()
        in_village = conn.execute("SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND zldwmc = %s",
                                  (village,)).fetchone()[0]
        lon, lat = conn.execute("SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_PointOnSurface(geom) c FROM data.admin_divisions "
                                "WHERE _vto IS NULL AND xzqdm = '339901') x").fetchone()
    easting, northing = Transformer.from_crs(4490, 4527, always_xy=True).transform(lon, lat)  # zone 39, prefixed
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map")
        before = count_near(shot(page, "map-before-search.png"), hex_rgb("#00b8d4"), 30)

        hits = search(page, bsm, 1)
        assert hits[0]["id"] == bsm and bsm in page.inner_text("#search-hit-0"), hits
        assert pick(page) == 1
        bounds = page.evaluate("window.geobaseMap.getBounds().toArray()")
        assert bounds[0][0] <= box[0] and bounds[0][1] <= box[1] and bounds[1][0] >= box[2] and bounds[1][1] >= box[3]
        assert page.evaluate("window.geobaseMap.getZoom()") > 13  # zoomed in to one parcel
        outline = count_near(shot(page, "map-search-parcel.png"), hex_rgb("#00b8d4"), 30)
        assert outline > 200 and outline > 5 * before, (outline, before)  # the parcel's highlight is drawn

        hits = search(page, village, 2)
        i = next(i for i, h in enumerate(hits) if h["field"] == "zldwmc" and h["value"] == village)
        assert pick(page, i) == min(in_village, 1000)  # every parcel of the village highlighted
        assert count_near(shot(page, "map-search-village.png"), hex_rgb("#00b8d4"), 30) > outline

        hits = search(page, f"{easting:.2f} {northing:.2f}", 3)
        assert hits[0]["kind"] == "position" and "EPSG:4527" in hits[0]["label"]
        pick(page)
        centre = page.evaluate("window.geobaseMap.getCenter().toArray()")
        assert centre == pytest.approx([lon, lat], abs=1e-6)

        assert not seen["outside"] and not seen["problems"], (seen, county_server.logs()[-2000:])

        search(page, "512345.6 3456789.0", 4)  # refused (no zone): the reason is shown, not a blank list
        assert "without a zone" in page.inner_text("#search-results")


def test_measure_line_and_area_on_the_ellipsoid(county_server):
    geod = Geod(ellps="GRS80")
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map")
        box = page.locator("#map").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

        page.click("#measure-line")
        for dx, dy in ((-200, -150), (0, 100), (220, -50)):
            page.mouse.click(cx + dx, cy + dy)
        page.click("#measure-finish")
        coords = page.evaluate("window.geobaseMeasure.coords")
        assert len(coords) == 3
        expected = geod.line_length(*zip(*coords))
        assert page.evaluate("window.geobaseMeasure.length_m") == pytest.approx(expected, rel=1e-6)
        shown = page.inner_text("#measure-result")
        assert f"{expected / 1000:,.3f} km" in shown, (shown, expected)
        assert not page.query_selector(".maplibregl-popup")  # measuring clicks open no popups

        page.click("#measure-area")
        for dx, dy in ((-150, -150), (150, -150), (180, 120), (-120, 150)):
            page.mouse.click(cx + dx, cy + dy)
        page.click("#measure-finish")
        ring = page.evaluate("window.geobaseMeasure.coords")
        area = abs(geod.polygon_area_perimeter(*zip(*ring))[0])
        assert page.evaluate("window.geobaseMeasure.area_m2") == pytest.approx(area, rel=1e-6)
        shown = page.inner_text("#measure-result")
        assert f"{area:,.2f} m²" in shown and f"{area / 10000:,.4f} ha" in shown and f"{area * 15 / 10000:,.2f} 亩" in shown, \
            (shown, area)
        shot(page, "map-measure-area.png")
        page.mouse.click(cx, cy)  # finished: a click no longer adds a vertex
        assert len(page.evaluate("window.geobaseMeasure.coords")) == 4
        assert not seen["outside"] and not seen["problems"], seen


def test_a_shared_link_reproduces_view_layers_and_opacity(county_server):
    link = f"{county_server.url}/map#map=13.5/29.1/118.12&layers=land_use,admin_divisions&opacity=land_use:0.3"
    with browser_page() as (page, seen):
        open_map(page, link)
        assert page.evaluate("window.geobaseMap.getZoom()") == pytest.approx(13.5)
        assert page.evaluate("window.geobaseMap.getCenter().toArray()") == pytest.approx([118.12, 29.1], abs=1e-6)
        assert page.is_checked("#toggle-land_use") and page.is_checked("#toggle-admin_divisions")
        assert not page.is_checked("#toggle-water_areas") and not page.is_checked("#toggle-rivers")
        assert page.input_value("#opacity-land_use") == "30"
        assert page.evaluate("window.geobaseMap.getPaintProperty('land_use-fill', 'fill-opacity')") == pytest.approx(0.75 * 0.3)
        assert page.evaluate("window.geobaseMap.getLayoutProperty('rivers-line', 'visibility')") == "none"

        # the planner changes the map: pans, shows the rivers, fades the planning zones
        page.evaluate("window.geobaseMap.jumpTo({center: [118.15, 29.07], zoom: 12.25, bearing: 20})")
        page.check("#toggle-rivers")
        page.fill("#opacity-planning_zones", "40")  # a range input: fill sets its value and fires input
        page.uncheck("#toggle-admin_divisions")
        settle(page)
        shared = page.evaluate("location.href")
        before = shot(page, "map-shared-before.png")
        assert not seen["outside"] and not seen["problems"], seen

    with browser_page() as (page, seen):  # someone else opens the link
        open_map(page, shared)
        assert page.evaluate("window.geobaseMap.getZoom()") == pytest.approx(12.25)
        assert page.evaluate("window.geobaseMap.getCenter().toArray()") == pytest.approx([118.15, 29.07], abs=1e-6)
        assert page.evaluate("window.geobaseMap.getBearing()") == pytest.approx(20)
        assert page.is_checked("#toggle-rivers") and not page.is_checked("#toggle-admin_divisions")
        assert page.input_value("#opacity-planning_zones") == "40" and page.input_value("#opacity-land_use") == "30"
        after = shot(page, "map-shared-after.png")
        assert np.abs(after - before).mean() < 2.0  # the same picture
        assert not seen["outside"] and not seen["problems"], seen


def test_place_names_from_our_own_layers_without_glyph_files(county_server, county_shared):
    """Township and lake names are drawn (placed symbols of the label layers), in Chinese, with
    the browser's CJK font: no glyph file is requested, nothing leaves the server."""
    with psycopg.connect(county_shared.database_url) as conn:
        townships = {r[0] for r in conn.execute("SELECT xzqmc FROM data.admin_divisions WHERE _vto IS NULL "
                                                "AND level = 'township'")}
        lake = conn.execute("SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_PointOnSurface(geom) c FROM data.water_areas "
                            "WHERE _vto IS NULL AND name = '月亮湖') x").fetchone()
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map#map=10.6/29.1/118.15")
        page.wait_for_function("window.geobaseLabels.state.loaded", timeout=30_000)
        settle(page)
        shot(page, "map-labels-county.png")
        drawn = page.evaluate("window.geobaseMap.queryRenderedFeatures({layers: ['label-township']})"
                              ".map((f) => f.properties.name)")
        assert sorted(drawn) == sorted(townships), (drawn, townships)  # each township named once
        page.evaluate(f"window.geobaseMap.jumpTo({{center: [{lake[0]}, {lake[1]}], zoom: 13}})")
        settle(page)
        shot(page, "map-labels-lake.png")
        names = page.evaluate("window.geobaseMap.queryRenderedFeatures({layers: ['label-water']}).map((f) => f.properties.name)")
        assert names == ["月亮湖"], names
        villages = page.evaluate("window.geobaseMap.queryRenderedFeatures({layers: ['label-village']}).map((f) => f.properties.name)")
        assert villages and len(villages) == len(set(villages)), villages  # villages named, each once
        page.uncheck("#toggle-admin_divisions")  # a layer switched off takes its names along
        page.evaluate("window.geobaseMap.jumpTo({center: [118.15, 29.1], zoom: 10.6})")
        settle(page)
        assert page.evaluate("window.geobaseMap.queryRenderedFeatures({layers: ['label-township']}).length") == 0
        assert not [u for u in seen["requests"] if "/glyphs/" in u], seen["requests"]
        assert not seen["outside"] and not seen["problems"], seen

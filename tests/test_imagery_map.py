"""Imagery on the one map, in headless Chromium as a user would use it: the imagery collection
is listed in the panel, choosing its true-colour preset draws the scene UNDER the parcels (a
parcel's pixel is its class colour blended over the scene's colour; beside the county the
scene's own colour), and the date picker switches from the latest scene to an older one. Every
request stays on this server."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psycopg
import pytest
from conftest import ARTIFACTS
from imagery_common import BANDS4, write_scene
from browser_harness import browser_context
from test_map_browser import _chromium_installed  # noqa: F401  (fixture: fail without Chromium)

from geobase.db import database_url
from geobase.imagery.ingest import add_image
from geobase.specs import get_registry

pytestmark = [pytest.mark.browser]

OLDER = [40, 160, 220, 90]  # b1 blue, b2 green, b3 red, b4 nir -> true colour (220, 160, 40)
NEWER = [200, 60, 120, 30]  # true colour (120, 60, 200)


def _rgb(bands: list[int]) -> np.ndarray:
    return np.array([bands[2], bands[1], bands[0]], float)


def _county(settings) -> tuple[list[float], tuple[float, float], str]:
    """The county's bbox, a point inside its largest farmland parcel and that parcel's class."""
    with psycopg.connect(database_url(settings)) as conn:
        ext = conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                           "(SELECT ST_Extent(geom) e FROM data.land_use WHERE _vto IS NULL) x").fetchone()
        dlbm, lon, lat = conn.execute(
            "SELECT dlbm, ST_X(c), ST_Y(c) FROM (SELECT dlbm, ST_PointOnSurface(geom) c FROM data.land_use "
            "WHERE _vto IS NULL AND dlbm LIKE '01%%' ORDER BY _area_m2 DESC LIMIT 1) p").fetchone()
    return list(ext), (lon, lat), dlbm


def _pixel(page, shot: Path, lonlat: tuple[float, float]) -> np.ndarray:
    """The screenshot's colour at a lon/lat (the mean of a 3x3 block around it)."""
    import rasterio

    box = page.locator("#map").bounding_box()
    xy = page.evaluate("([x, y]) => { const p = window.geobaseMap.project([x, y]); return [p.x, p.y]; }", list(lonlat))
    page.screenshot(path=str(shot))
    with rasterio.open(shot) as src:
        img = np.moveaxis(src.read()[:3], 0, -1).astype(float)
    x, y = int(box["x"] + xy[0]), int(box["y"] + xy[1])
    return img[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(axis=0)


def _inside_view(page, lonlat) -> bool:
    box = page.locator("#map").bounding_box()
    x, y = page.evaluate("([x, y]) => { const p = window.geobaseMap.project([x, y]); return [p.x, p.y]; }",
                         list(lonlat))
    return 20 < x < box["width"] - 60 and 20 < y < box["height"] - 40


def _wait_tiles(page) -> None:
    page.wait_for_function("window.geobaseMap.areTilesLoaded() && window.geobaseMap.loaded()", timeout=120_000)
    page.wait_for_timeout(700)


def test_imagery_is_drawn_under_the_parcels_with_a_date_picker(county_db, live_server, tmp_path):
    import playwright.sync_api as playwright

    ext, parcel, dlbm = _county(county_db)
    w, h = ext[2] - ext[0], ext[3] - ext[1]
    bounds = (ext[0] - 0.3 * w, ext[1] - 0.3 * h, ext[2] + 0.3 * w, ext[3] + 0.3 * h)
    add_image(county_db, write_scene(tmp_path / "older.tif", bounds, OLDER, size=400), "county_img",
              when="2024-05-01", cloud_cover=5, bands=BANDS4, item_id="older")
    add_image(county_db, write_scene(tmp_path / "newer.tif", bounds, NEWER, size=400), "county_img",
              when="2024-06-01", cloud_cover=40, bands=BANDS4, item_id="newer")
    reg = get_registry(county_db)
    alpha = reg.layers["land_use"].style.opacity
    fill = np.array([int(reg.code_lists["gbt21010_2017"].lookup()[dlbm].color[i:i + 2], 16) for i in (1, 3, 5)],
                    float)
    srv = live_server(county_db)
    host = urlparse(srv.url).netloc
    outside, problems, seen = [], [], []
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_context(viewport={"width": 1100, "height": 800}) as context:
        page = context.new_page()

        def route(r):
            url = r.request.url
            seen.append(url)
            if urlparse(url).scheme in ("http", "https", "ws", "wss") and urlparse(url).netloc != host:
                outside.append(url)
                return r.abort()
            return r.continue_()

        page.route("**/*", route)
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        page.goto(f"{srv.url}/map")
        try:
            page.wait_for_function("window.geobaseReady === true", timeout=180_000)  # slow on a loaded machine
        except playwright.TimeoutError:
            raise AssertionError(f"the map did not get ready: {problems}") from None
        page.evaluate("window.geobaseMap.jumpTo({zoom: window.geobaseMap.getZoom() - 1})")  # room around the county
        _wait_tiles(page)
        beside = next(pt for pt in [(ext[0] - 0.1 * w, parcel[1]), (ext[2] + 0.1 * w, parcel[1]),
                                    (parcel[0], ext[3] + 0.1 * h), (parcel[0], ext[1] - 0.1 * h)]
                      if _inside_view(page, pt))
        options = page.eval_on_selector_all("#imagery-select option", "os => os.map(o => o.value)")
        assert {"county_img:truecolor", "county_img:ndvi"} <= set(options), options
        before = _pixel(page, ARTIFACTS / "imagery_off.png", parcel)
        page.select_option("#imagery-select", "county_img:truecolor")
        _wait_tiles(page)
        on_parcel = _pixel(page, ARTIFACTS / "imagery_latest.png", parcel)
        on_beside = _pixel(page, ARTIFACTS / "imagery_latest.png", beside)
        order = page.evaluate("window.geobaseMap.getStyle().layers.map(l => l.id)")
        dates = page.eval_on_selector_all("#imagery-date option", "os => os.map(o => o.value)")
        page.select_option("#imagery-date", "2024-05-01")
        _wait_tiles(page)
        old_parcel = _pixel(page, ARTIFACTS / "imagery_older.png", parcel)
        old_beside = _pixel(page, ARTIFACTS / "imagery_older.png", beside)
    assert not outside and not problems, (outside, problems)
    assert any("/imagery/county_img/wmts/truecolor/WebMercatorQuad/" in u for u in seen)
    assert dates == ["", "2024-06-01", "2024-05-01"]
    fills = [i for i, lid in enumerate(order) if lid.startswith("land_use")]
    assert fills and order.index("imagery") < min(fills), order  # drawn under the parcels
    assert np.abs(on_beside - _rgb(NEWER)).max() <= 6, on_beside  # the latest scene, where no parcel is
    assert np.abs(old_beside - _rgb(OLDER)).max() <= 6, old_beside  # the date picker: the older scene
    # on the parcel: the imagery is seen THROUGH the parcel's fill (and whatever else is drawn
    # there): switching scenes changes the pixel by T x (the scenes' difference), one T for
    # every channel, with 0 < T < 1 — T = 1 would be imagery on top, T = 0 no imagery at all
    t = (on_parcel - old_parcel) / (_rgb(NEWER) - _rgb(OLDER))
    assert np.ptp(t) <= 0.06 and 0.1 <= t.mean() <= 1 - alpha + 0.05, (t, on_parcel, old_parcel, before)
    assert np.abs(before - on_parcel).max() > 10  # the imagery changed what the parcel shows
    assert np.abs(on_parcel - (alpha * fill + (1 - alpha) * _rgb(NEWER))).max() <= 14 or t.mean() < 1 - alpha - 0.05, \
        (on_parcel, fill)  # only land use there: exactly its fill over the scene

"""Comparing versions of a layer (issue 21 item 4): vector tiles of an earlier version
(``/tiles/{layer}/{z}/{x}/{y}.mvt?version=``), and the one map's time slider and swipe over them,
on the sample county after the demo's land-use change delivery (v2: farmland parcels become
rural homesteads, one parcel is split)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import mapbox_vector_tile
import numpy as np
import psycopg
import pytest
from conftest import ARTIFACTS, LiveServer, create_database, drop_database, settings_for
from test_map_tools import browser_page, open_map, settle
from test_tiles_county import tile_at

from geobase.settings import Settings

Z = 17


@pytest.fixture(scope="module")
def changed_county(pg_server: str, county_template, changed_county_template) -> Iterator[Settings]:
    """The sample county with the demo's second land-use version (a copy of the session's
    changed_county_template, shared by this module's tests)."""
    _, data_dir = county_template
    db = f"gb_cmp_{uuid.uuid4().hex[:8]}"
    yield settings_for(create_database(pg_server, db, changed_county_template), data_dir)
    drop_database(pg_server, db)


@pytest.fixture(scope="module")
def compare_server(changed_county) -> Iterator[LiveServer]:
    srv = LiveServer(changed_county)
    yield srv
    srv.stop()


def changed_parcel(settings: Settings) -> dict:
    """The largest parcel whose class the change delivery changed: key, classes, a point in it."""
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT n._key, o.dlbm, n.dlbm, ST_X(ST_PointOnSurface(n.geom)), ST_Y(ST_PointOnSurface(n.geom)) "
            "FROM data.land_use n JOIN data.land_use o ON o._key = n._key AND o._vto = 2 "
            "WHERE n._vfrom = 2 AND n._vto IS NULL AND o.dlbm <> n.dlbm "
            "AND ST_Equals(o.geom, n.geom) ORDER BY n._area_m2 DESC LIMIT 1").fetchone()
    assert row is not None, "the change delivery changed no parcel's class"
    return {"key": row[0], "v1": row[1], "v2": row[2], "lon": row[3], "lat": row[4]}


def classes_of(body: bytes, key: str) -> list[str]:
    layers = mapbox_vector_tile.decode(body)
    return [f["properties"]["dlbm"] for f in layers.get("land_use", {}).get("features", [])
            if f["properties"].get("_key") == key]


def test_a_tile_of_an_earlier_version_draws_the_rows_of_that_version(compare_server, changed_county):
    p = changed_parcel(changed_county)
    x, y = tile_at(Z, p["lon"], p["lat"])
    url = f"/tiles/land_use/{Z}/{x}/{y}.mvt"
    with compare_server.client() as c:
        now = c.get(url)
        v1, v2 = c.get(url, params={"version": 1}), c.get(url, params={"version": 2})
        assert now.status_code == v1.status_code == v2.status_code == 200, (now.text, v1.text, v2.text)
        assert classes_of(v1.content, p["key"]) == [p["v1"]]
        assert classes_of(v2.content, p["key"]) == [p["v2"]]
        assert v2.content == now.content  # the current version is today's tile
        assert v1.headers["etag"] != v2.headers["etag"]
        again = c.get(url, params={"version": 1})  # cached under its own version
        assert again.headers["x-tile-cache"] == "hit" and again.content == v1.content
        assert c.get(url, params={"version": 1}, headers={"If-None-Match": v1.headers["etag"]}).status_code == 304
        for bad in ({"version": 3}, {"version": 0}, {"version": "two"}):
            r = c.get(url, params=bad)
            assert r.status_code == 400 and "version" in r.text, (bad, r.status_code, r.text)
        r = c.get(f"/tiles/land_use,water_areas/{Z}/{x}/{y}.mvt", params={"version": 1})
        assert r.status_code == 400 and "version" in r.text
        r = c.get(f"/tiles/onemap/{Z}/{x}/{y}.mvt", params={"version": 1})
        assert r.status_code == 400 and "version" in r.text
        # datetime: the version current at that instant, as the features API picks it
        t1 = c.get("/collections/land_use").json()["extent"]["temporal"]["interval"][0][0]
        at = c.get(url, params={"datetime": t1})
        assert at.status_code == 200 and classes_of(at.content, p["key"]) == [p["v1"]]
        assert c.get(url, params={"datetime": "2000-01-01T00:00:00Z"}).status_code == 204  # no version yet then
        for bad in ({"datetime": "yesterday"}, {"datetime": t1, "version": 1}):
            r = c.get(url, params=bad)
            assert r.status_code == 400 and "datetime" in r.text, (bad, r.status_code, r.text)
        r = c.get(url, params={"versoin": 1})  # unknown parameters are still refused
        assert r.status_code == 400 and "versoin" in r.text


def test_map_config_lists_every_version_of_a_layer(compare_server):
    with compare_server.client() as c:
        layers = {x["name"]: x for d in c.get("/map/config").json()["departments"] for x in d["layers"]}
    assert [v["version"] for v in layers["land_use"]["versions"]] == [1, 2]
    assert [v["version"] for v in layers["rivers"]["versions"]] == [1]


# ---- the map page: time slider and swipe (headless Chromium, every other host blocked) --------
def parcel_box(settings: Settings, key: str) -> list[float]:
    with psycopg.connect(settings.database_url) as conn:
        return list(conn.execute("SELECT ARRAY[ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom)] "
                                 "FROM data.land_use WHERE _key = %s AND _vto IS NULL", (key,)).fetchone()[0])


def wait_compared(page) -> None:
    page.wait_for_function("window.geobaseCompareState.busy === 0", timeout=60_000)
    page.wait_for_function("(!window.geobaseCompareMap || (window.geobaseCompareMap.loaded() && "
                           "window.geobaseCompareMap.areTilesLoaded()))", timeout=60_000)
    settle(page)
    assert page.evaluate("window.geobaseCompareState.error") is None


def screenshot(page, name: str) -> np.ndarray:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))
    return read_png(name)


def read_png(name: str) -> np.ndarray:
    import rasterio

    with rasterio.open(ARTIFACTS / name) as src:
        return np.moveaxis(src.read()[:3], 0, -1).astype(float)


def map_left(page) -> int:
    return int(page.evaluate("document.getElementById('map').getBoundingClientRect().left"))


def colour_at(page, lon: float, lat: float, name: str) -> np.ndarray:
    """The median colour of a 5x5 pixel square at (lon, lat) on a screenshot of the page."""
    x, y = page.evaluate(f"(() => {{ const p = window.geobaseMap.project([{lon}, {lat}]); return [p.x, p.y]; }})()")
    img = screenshot(page, name)
    c, r = round(x + map_left(page)), round(y)
    return np.median(img[r - 2:r + 3, c - 2:c + 3].reshape(-1, 3), axis=0)


def changed_mask(page, server, shape: tuple[int, ...]) -> np.ndarray:
    """Pixels of the page inside the bounding boxes of the features the change feed lists (4 px more)."""
    with server.client() as c:
        feats = c.get("/collections/land_use/changes", params={"from": 1, "to": 2, "limit": 1000}).json()["features"]
    boxes = []
    for f in feats:
        pts = np.array(list(_coords(f["geometry"]["coordinates"])))
        boxes.append([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
    corners = page.evaluate("(bs) => bs.map((b) => [window.geobaseMap.project([b[0], b[3]]), "
                            "window.geobaseMap.project([b[2], b[1]])].map((p) => [p.x, p.y]))", boxes)
    mask = np.zeros(shape[:2], bool)
    left = map_left(page)
    for (x0, y0), (x1, y1) in corners:
        r0, r1 = max(0, int(y0) - 4), max(0, int(y1) + 5)
        c0, c1 = max(0, int(x0) + left - 4), max(0, int(x1) + left + 5)
        mask[r0:r1, c0:c1] = True
    return mask


def _coords(c):
    if isinstance(c[0], (int, float)):
        yield c[:2]
    else:
        for x in c:
            yield from _coords(x)


def differing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).sum(axis=2) > 30


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).sum()) > 30


@pytest.mark.browser
def test_time_slider_and_swipe_show_a_changed_parcel_as_it_was_and_as_it_is(compare_server, changed_county):
    p = changed_parcel(changed_county)
    box = parcel_box(changed_county, p["key"])
    with browser_page() as (page, seen):
        open_map(page, f"{compare_server.url}/map")
        page.select_option("#compare-layer", "land_use")
        wait_compared(page)
        page.evaluate(f"window.geobaseMap.fitBounds([[{box[0]}, {box[1]}], [{box[2]}, {box[3]}]], "
                      "{padding: 150, duration: 0})")
        settle(page)
        now = colour_at(page, p["lon"], p["lat"], "compare-v2.png")

        page.fill("#compare-slider", "0")  # the time slider back to version 1
        wait_compared(page)
        assert page.evaluate("window.geobaseCompareState.version") == 1
        assert page.evaluate("window.geobaseCompareState.changes") > 0  # the changed parcels outlined
        then = colour_at(page, p["lon"], p["lat"], "compare-v1.png")
        assert differ(then, now), (then, now, p)
        assert "v1" in page.inner_text("#compare-info")

        page.fill("#compare-slider", "1")  # and forward again: today's colour
        wait_compared(page)
        assert not differ(colour_at(page, p["lon"], p["lat"], "compare-v2-again.png"), now)

        # the swipe: left version 1 (the slider), right version 2; the divider moved across the parcel
        page.fill("#compare-slider", "0")
        page.check("#compare-swipe")
        wait_compared(page)
        x = page.evaluate(f"window.geobaseMap.project([{p['lon']}, {p['lat']}]).x")
        width = page.evaluate("window.geobaseMap.getContainer().clientWidth")
        page.fill("#compare-position", str(min(100, int((x + 60) / width * 100))))  # the parcel left of it
        wait_compared(page)
        left = colour_at(page, p["lon"], p["lat"], "compare-swipe-left.png")
        page.fill("#compare-position", str(max(0, int((x - 60) / width * 100))))  # the parcel right of it
        wait_compared(page)
        right = colour_at(page, p["lon"], p["lat"], "compare-swipe-right.png")
        assert not differ(left, then) and not differ(right, now) and differ(left, right), (left, right, then, now)

        # and nowhere else: outside the changed parcels, the swipe's left side is version 1's map and its
        # right side version 2's, pixel for pixel (the divider's own columns aside)
        swiped, v1, v2 = read_png("compare-swipe-right.png"), read_png("compare-v1.png"), read_png("compare-v2.png")
        mask = changed_mask(page, compare_server, swiped.shape)
        assert mask.any()
        cut = map_left(page) + int(max(0, int((x - 60) / width * 100)) / 100 * width)
        expected = np.concatenate([v1[:, :cut], v2[:, cut:]], axis=1)
        off = differing(swiped, expected) & ~mask
        off[:, cut - 3:cut + 6] = False
        off[:, :map_left(page)] = False  # the panel (its controls moved)
        assert off.sum() < 50, (off.sum(), np.argwhere(off)[:10])
        assert (differing(v1, v2) & mask).sum() > 100  # where the change lies, the versions differ
        off = differing(v1, v2) & ~mask
        off[:, :map_left(page)] = False
        assert off.sum() < 50, (off.sum(), np.argwhere(off)[:10])

        # the divider itself can be dragged
        b = page.locator("#compare-divider").bounding_box()
        page.mouse.move(b["x"] + b["width"] / 2, b["y"] + 200)
        page.mouse.down()
        page.mouse.move(b["x"] + 200, b["y"] + 200, steps=5)
        page.mouse.up()
        moved = page.evaluate("window.geobaseCompareState.position")
        assert moved == pytest.approx((b["x"] + 200 - map_left(page)) / width, abs=0.01)
        assert page.input_value("#compare-position") == str(round(moved * 100))

        assert not seen["outside"] and not seen["problems"], (seen, compare_server.logs()[-2000:])

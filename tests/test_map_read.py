"""Reading the one map (issue 21 item 5) in headless Chromium, as a planner would: a click
lists the features there from every visible layer with Chinese attribute titles and code-list
names (masked attributes never shown); the attribute table of a CQL2 filter in the view holds
the rows the items API gives for the same query, sorts and pages on the server, zooms to a
row's feature, and links CSV/GeoPackage exports of the same rows. Every other host is blocked."""

from __future__ import annotations

import csv
import io

import httpx
import psycopg
import pytest
from test_map_tools import browser_page, open_map, settle, shot

pytestmark = pytest.mark.browser


def parcel_0101(settings) -> tuple[str, float, float, list[float]]:
    """The largest current 水田 parcel: its bsm, a point inside it and its bbox."""
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT bsm, ST_X(p), ST_Y(p), ARRAY[ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom)] "
            "FROM (SELECT bsm, geom, ST_PointOnSurface(geom) p, _area_m2 FROM data.land_use "
            "WHERE _vto IS NULL AND dlbm = '0101') x ORDER BY _area_m2 DESC LIMIT 1").fetchone()


def click_centre(page) -> None:
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_identify_lists_the_parcel_with_its_class_name_from_every_visible_layer(county_server, county_shared):
    bsm, lon, lat, _ = parcel_0101(county_shared)
    schema = httpx.get(f"{county_server.url}/collections/land_use/schema", timeout=30).json()
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map#map=16/{lat}/{lon}")
        click_centre(page)
        page.wait_for_function("window.geobaseIdentifyState.done >= 1", timeout=30_000)
        state = page.evaluate("window.geobaseIdentifyState")
        assert not state["errors"], state
        parcel = [r for r in state["results"] if r["layer"] == "land_use"]
        assert [r["id"] for r in parcel] == [bsm], parcel  # the one parcel under the click
        attrs = {a["key"]: a for a in parcel[0]["attributes"]}
        assert attrs["dlbm"]["title"] == "地类编码" and attrs["dlbm"]["shown"] == "0101 水田", attrs["dlbm"]
        assert attrs["bsm"]["value"] == bsm
        assert "qsdwmc" not in attrs and "qsdwdm" not in attrs  # masked for the public
        assert set(attrs) <= set(schema["properties"])
        # every visible layer answered: the township and village divisions around the parcel too
        layers = {r["layer"] for r in state["results"]}
        assert "admin_divisions" in layers, layers
        text = page.inner_text("#identify-list")
        assert "地类图斑" in text and "0101 水田" in text and "权属单位名称" not in text, text
        settle(page)
        shot(page, "map-identify.png")

        page.uncheck("#toggle-admin_divisions")  # a layer switched off is not asked
        settle(page)
        click_centre(page)
        page.wait_for_function("window.geobaseIdentifyState.done >= 2", timeout=30_000)
        layers = {r["layer"] for r in page.evaluate("window.geobaseIdentifyState.results")}
        assert "admin_divisions" not in layers and "land_use" in layers, layers
        assert not seen["outside"] and not seen["problems"], seen


def api_pages(url: str, params: dict, n: int) -> list[dict]:
    """The first n pages of the items API for the query, following its next links."""
    pages, r = [], httpx.get(url, params=params, timeout=30)
    while True:
        assert r.status_code == 200, r.text
        pages.append(r.json())
        nxt = [link["href"] for link in pages[-1]["links"] if link["rel"] == "next"]
        if len(pages) == n or not nxt:
            return pages
        r = httpx.get(nxt[0], timeout=30)


def table_rows(page) -> list[tuple]:
    return [(r["id"], r["values"]) for r in page.evaluate("window.geobaseTableState.rows")]


def test_attribute_table_of_a_filter_in_view_matches_the_items_api(county_server, county_shared):
    _, lon, lat, _ = parcel_0101(county_shared)
    items = f"{county_server.url}/collections/land_use/items"
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map#map=11/{lat}/{lon}")
        page.select_option("#table-layer", "land_use")
        page.fill("#table-filter", "dlbm = '0101'")
        page.press("#table-filter", "Enter")
        page.wait_for_function("window.geobaseTableState.done >= 1", timeout=30_000)
        state = page.evaluate("window.geobaseTableState")
        assert state["error"] is None, state["error"]
        bbox = ",".join(f"{v:.8f}" for v in state["query"]["bbox"])
        query = {"filter": "dlbm = '0101'", "bbox": bbox}
        first, second = api_pages(items, {**query, "limit": 50, "numberMatched": "true"}, 2)
        assert first["numberMatched"] > 50, first["numberMatched"]  # the view holds more than a page
        assert table_rows(page) == [(f["id"], f["properties"]) for f in first["features"]]
        assert {f["properties"]["dlbm"] for f in first["features"]} == {"0101"}
        cells = page.eval_on_selector_all("#table-grid tbody tr:first-child td", "(tds) => tds.map((t) => t.textContent)")
        assert cells[0] == first["features"][0]["id"] and "0101 水田" in cells, cells  # the class name, not the raw code
        headers = page.eval_on_selector_all("#table-grid th", "(ths) => ths.map((t) => t.textContent)")
        assert "地类编码" in headers and "权属单位名称" not in headers, headers

        page.click("#table-next")  # paged with the API's next link
        page.wait_for_function("window.geobaseTableState.done >= 2", timeout=30_000)
        assert table_rows(page) == [(f["id"], f["properties"]) for f in second["features"]]
        page.click("#table-prev")
        page.wait_for_function("window.geobaseTableState.done >= 3", timeout=30_000)
        assert table_rows(page) == [(f["id"], f["properties"]) for f in first["features"]]

        page.click("#table-grid th[data-key=tbmj]")  # sorted on the server, largest first on a second click
        page.wait_for_function("window.geobaseTableState.done >= 4", timeout=30_000)
        page.click("#table-grid th[data-key=tbmj]")
        page.wait_for_function("window.geobaseTableState.done >= 5", timeout=30_000)
        (by_area,) = api_pages(items, {**query, "limit": 50, "numberMatched": "true", "sortby": "-tbmj"}, 1)
        assert page.evaluate("window.geobaseTableState.sortby") == "-tbmj"
        assert table_rows(page) == [(f["id"], f["properties"]) for f in by_area["features"]]

        row = by_area["features"][3]  # a row click highlights the feature and zooms to it
        page.click("#table-grid tbody tr[data-i='3']")
        settle(page)
        assert page.evaluate("window.geobaseTableState.selected") == row["id"]
        hit = page.evaluate("window.geobaseMap.getSource('table-hit')._data")
        assert [f["id"] for f in hit["features"]] == [row["id"]]
        (w, s), (e, n) = page.evaluate("window.geobaseMap.getBounds().toArray()")
        xs = [c[0] for ring in row["geometry"]["coordinates"] for part in ring for c in part]
        ys = [c[1] for ring in row["geometry"]["coordinates"] for part in ring for c in part]
        assert w <= min(xs) and e >= max(xs) and s <= min(ys) and n >= max(ys)
        assert page.evaluate("window.geobaseMap.getZoom()") > 14
        shot(page, "map-table.png")

        # the exports are the same query through the API: every matching row, in the table's order
        csv_href = page.get_attribute("#table-csv", "href")
        gpkg_href = page.get_attribute("#table-gpkg", "href")
        assert "f=csv" in csv_href and "bom=true" in csv_href and "f=gpkg" in gpkg_href
        r = httpx.get(page.evaluate("new URL(document.getElementById('table-csv').href).href"), timeout=60)
        assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf"), r.text[:300]
        rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
        everything = api_pages(items, {**query, "limit": 1000, "sortby": "-tbmj"}, 100)
        expected = [f for p in everything for f in p["features"]]
        assert len(expected) == first["numberMatched"]
        assert [row["id"] for row in rows] == [f["id"] for f in expected]
        assert all(row["dlbm"] == "0101" and row["bsm"] == f["properties"]["bsm"] for row, f in zip(rows, expected))
        assert "qsdwmc" not in rows[0]
        g = httpx.get(page.evaluate("document.getElementById('table-gpkg').href"), timeout=60)
        assert g.status_code == 200 and g.content[:16] == b"SQLite format 3\x00"
        assert not seen["outside"] and not seen["problems"], seen


def test_with_a_department_key_identify_shows_owner_names_and_the_export_carries_the_key(county_db, live_server, tmp_path):
    """A department user's key rides on identify, table and export requests alike: the owner
    name masked from the public is listed, and the CSV export (a link cannot send the key)
    downloads with it. A filter the API refuses shows the API's reason, not an empty table."""
    from geobase import keys
    from geobase.db import database_url

    with psycopg.connect(database_url(county_db)) as conn:
        token = keys.create_key(conn, name="planner", role="viewer", department="planning").token
        conn.commit()
    bsm, lon, lat, _ = parcel_0101(county_db)
    srv = live_server(county_db)
    with browser_page() as (page, seen):
        page.add_init_script(f"sessionStorage.setItem('geobase.apiKey', {token!r})")
        open_map(page, f"{srv.url}/map#map=16/{lat}/{lon}")
        click_centre(page)
        page.wait_for_function("window.geobaseIdentifyState.done >= 1", timeout=30_000)
        parcel = [r for r in page.evaluate("window.geobaseIdentifyState.results") if r["layer"] == "land_use"]
        attrs = {a["key"]: a for a in parcel[0]["attributes"]}
        assert [r["id"] for r in parcel] == [bsm] and attrs["qsdwmc"]["title"] == "权属单位名称", attrs
        assert "权属单位名称" in page.inner_text("#identify-list")

        page.select_option("#table-layer", "land_use")
        page.uncheck("#table-inview")
        page.fill("#table-filter", f"bsm = '{bsm}'")
        page.press("#table-filter", "Enter")
        page.wait_for_function("window.geobaseTableState.done >= 1", timeout=30_000)
        assert [r["id"] for r in page.evaluate("window.geobaseTableState.rows")] == [bsm]
        headers = page.eval_on_selector_all("#table-grid th", "(ths) => ths.map((t) => t.textContent)")
        assert "权属单位名称" in headers, headers
        with page.expect_download() as dl:
            page.click("#table-csv")
        path = tmp_path / "export.csv"
        dl.value.save_as(path)
        rows = list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8-sig"))))
        assert [r["id"] for r in rows] == [bsm] and rows[0]["qsdwmc"] == attrs["qsdwmc"]["value"], rows
        assert not seen["outside"] and not seen["problems"], seen

        page.fill("#table-filter", "dlbm = ")  # a typo: the API's reason is shown
        page.press("#table-filter", "Enter")
        page.wait_for_function("window.geobaseTableState.done >= 2", timeout=30_000)
        error = page.evaluate("window.geobaseTableState.error")
        assert error and "filter" in error.lower() and error in page.inner_text("#table-info"), error
        assert page.evaluate("window.geobaseTableState.rows") == []
        assert [p for p in seen["problems"] if "400" not in p] == [], seen["problems"]

"""Editing in the web map (tiles/static/edit.js, editapi.js, editvertex.js) in headless Chromium,
as a department's editor uses it, over a private copy of the sample county: change a parcel's
land-use code with the code-list picker, check and commit (the items API then shows the new value
in a new version, and the map's tiles are reloaded from the change stream); split a parcel by a
drawn line (two parcels whose areas sum to the parcel's); two editors on the same parcel in two
browser contexts (the second sees the conflict, reloads and edits the current state). Every
request goes to this server: any other host is blocked."""

from __future__ import annotations

from contextlib import contextmanager
from urllib.parse import urlparse

import pytest

from browser_harness import browser_session
from editing_common import auth, ed, q  # noqa: F401  (ed: the module's private county and editing keys)
from test_map_modules import node

pytestmark = pytest.mark.browser


@contextmanager
def browser(n: int = 1):
    """``n`` fresh, isolated browser contexts (two editors) of the session's Chromium; yields
    (pages, seen). The contexts are closed afterwards."""
    seen: dict = {"outside": [], "problems": []}
    with browser_session() as b:
        pages = []
        for _ in range(n):
            page = b.new_context(viewport={"width": 1100, "height": 800}).new_page()
            page.host = {}
            page.route("**/*", _router(page.host, seen))
            page.on("pageerror", lambda e: seen["problems"].append(f"pageerror: {e}"))
            pages.append(page)
        yield pages, seen


def _router(host: dict, seen: dict):
    def route(r):
        u = urlparse(r.request.url)
        if u.scheme in ("http", "https", "ws", "wss") and u.netloc != host.get("netloc"):
            seen["outside"].append(r.request.url)
            return r.abort()
        return r.continue_()
    return route


def open_editor(page, srv, token: str, layer: str = "land_use") -> None:
    page.host["netloc"] = urlparse(srv.url).netloc
    page.add_init_script(f"sessionStorage.setItem('geobase.apiKey', {token!r})")
    page.goto(f"{srv.url}/map")
    page.wait_for_function("window.geobaseReady === true", timeout=90_000)
    page.select_option("#edit-layer", layer)
    page.click("#edit-start")


def parcel(settings, offset: int = 40) -> tuple:
    """A land-use parcel away from the county's edge: (bsm, point on surface, bbox, area m², dlbm)."""
    return q(settings, """
        SELECT bsm, ARRAY[ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom))],
               ARRAY[ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom)], ST_Area(geom::geography), dlbm
        FROM data.land_use WHERE _vto IS NULL AND ST_NumGeometries(geom) = 1 AND _area_m2 > 2000
        ORDER BY _key OFFSET %s LIMIT 1""", (offset,))[0]


def frame(page, box: list[float]) -> None:
    page.evaluate(f"window.geobaseMap.fitBounds([[{box[0]}, {box[1]}], [{box[2]}, {box[3]}]], "
                  "{padding: {top: 120, bottom: 120, left: 450, right: 120}, duration: 0})")  # clear of the panel
    page.wait_for_function("window.geobaseMap.loaded() && window.geobaseMap.areTilesLoaded()", timeout=60_000)


def click_at(page, lon: float, lat: float) -> None:
    pt = page.evaluate(f"window.geobaseMap.project([{lon}, {lat}])")
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + pt["x"], box["y"] + pt["y"])


def select(page, settings_parcel) -> None:
    bsm, point, box = settings_parcel[:3]
    frame(page, box)
    click_at(page, *point)
    page.wait_for_function(f"window.geobaseEditState.selected.some((s) => s.id === {bsm!r})", timeout=30_000)
    page.wait_for_selector("#edit-attr-dlbm")


def commit(page, message: str) -> dict:
    page.click("#edit-check")
    page.wait_for_function("window.geobaseEditState.check && window.geobaseEditState.check.ok === true", timeout=30_000)
    page.fill("#edit-message", message)
    page.click("#edit-commit")
    page.wait_for_function("window.geobaseEditState.committed", timeout=60_000)
    return page.evaluate("window.geobaseEditState.committed")


def other_code(page, current: str) -> str:
    codes = page.eval_on_selector_all("#edit-attr-dlbm option", "os => os.map((o) => o.value)")
    assert len(codes) > 10 and current in codes  # the code list, as a picker
    return next(c for c in codes if c and c != current and c.startswith("01"))


def test_vertex_handles_keep_rings_closed():
    square = {"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]]}
    handles, moved = node("editvertex.js", f"(() => {{ const g = {square!r}; "
                          "return [m.handles(g).map((h) => h.path), m.moved(g, [0, 0, 0], [-1, -1]).coordinates]; })()"
                          .replace("'", '"'))
    assert handles == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3]]
    assert moved == [[[[-1, -1], [1, 0], [1, 1], [0, 1], [-1, -1]]]]


def test_edit_an_attribute_with_the_code_list_and_commit(ed):
    srv, tokens, settings = ed
    target = parcel(settings, 40)
    bsm = target[0]
    before = q(settings, "SELECT current_version FROM catalog.layers WHERE name = 'land_use'")[0][0]
    with browser() as ([page], seen):
        open_editor(page, srv, tokens["nr:editor"])
        select(page, target)
        new = other_code(page, target[4])
        page.select_option("#edit-attr-dlbm", new)
        page.click("#edit-apply")
        page.wait_for_function("document.querySelector('#edit-changes').textContent.includes('1')", timeout=30_000)
        done = commit(page, "survey correction from the map")
        assert done["version"] == before + 1 and done["changed"] == 1
        # the change stream told the page, which reloaded the tiles at the new version
        page.wait_for_function(f"window.geobaseEditState.versions.includes({done['version']})", timeout=30_000)
        page.wait_for_function("window.geobaseEditState.refreshed >= 1", timeout=30_000)
        tiles = page.evaluate("window.geobaseMap.getSource('onemap').tiles[0]")
        assert not seen["outside"] and not seen["problems"], seen
    with srv.client() as c:
        r = c.get(f"/collections/land_use/items/{bsm}", headers=auth(tokens, "nr:editor"))
        assert r.json()["properties"]["dlbm"] == new
        hist = c.get(f"/collections/land_use/items/{bsm}/history", headers=auth(tokens, "nr:editor")).json()["states"]
        assert hist[-1]["version"] == done["version"] and hist[-1]["reason"] == "survey correction from the map"
        assert c.get("/tiles/onemap.json", headers=auth(tokens, "nr:editor")).json()["tiles"][0] == tiles


def test_split_a_parcel_by_a_drawn_line(ed):
    srv, tokens, settings = ed
    target = parcel(settings, 55)
    bsm, point, box = target[:3]
    total = "SELECT sum(ST_Area(geom::geography)) FROM data.land_use WHERE _vto IS NULL"
    planar = q(settings, "SELECT ST_Area(geom) FROM data.land_use WHERE _vto IS NULL AND bsm = %s", (bsm,))[0][0]
    covered = q(settings, total)[0][0]
    with browser() as ([page], seen):
        open_editor(page, srv, tokens["nr:editor"])
        select(page, target)
        page.click("#edit-split")
        dx = (box[2] - box[0]) * 0.2
        click_at(page, box[0] - dx, point[1])
        click_at(page, box[2] + dx, point[1])
        page.click("#edit-split-finish")
        page.wait_for_function("window.geobaseEditState.selected.length >= 2 || window.geobaseEditState.error",
                               timeout=30_000)
        assert page.evaluate("window.geobaseEditState.error") is None, page.inner_text("#edit-result")
        pieces = page.evaluate("window.geobaseEditState.selected.map((s) => s.id)")
        done = commit(page, "split along the new road")
        assert not seen["problems"], seen
    assert all(p.startswith(bsm + "-") for p in pieces)
    rows = q(settings, "SELECT bsm, ST_Area(geom) FROM data.land_use WHERE _vto IS NULL AND bsm = ANY(%s)",
             (pieces + [bsm],))
    assert sorted(r[0] for r in rows) == sorted(pieces) and len(rows) >= 2  # the parcel is gone, its pieces are there
    assert sum(r[1] for r in rows) == pytest.approx(planar, rel=1e-12)  # the pieces make the parcel
    # on the ellipsoid an edge cut in two is two geodesics: the pieces alone differ from the parcel by
    # ~1e-8, which the neighbours' copies of those edges (given the same vertices) balance exactly
    assert q(settings, total)[0][0] == pytest.approx(covered, rel=1e-9)
    assert q(settings, "SELECT current_version FROM catalog.layers WHERE name = 'land_use'")[0][0] == done["version"]


def test_two_editors_on_one_parcel_the_second_sees_the_conflict_and_reloads(ed):
    srv, tokens, settings = ed
    target = parcel(settings, 70)
    bsm = target[0]
    with browser(2) as ([first, second], seen):
        open_editor(first, srv, tokens["nr:editor"])
        open_editor(second, srv, tokens["nr:steward"])  # another key of the department
        select(first, target)
        select(second, target)  # both read the same state (the same ETag)
        mine = other_code(first, target[4])
        first.select_option("#edit-attr-dlbm", mine)
        first.click("#edit-apply")
        first.wait_for_function("document.querySelector('#edit-changes').textContent.includes('1')", timeout=30_000)
        done = commit(first, "first editor")
        second.wait_for_function(f"window.geobaseEditState.versions.includes({done['version']})", timeout=30_000)

        theirs = next(c for c in second.eval_on_selector_all("#edit-attr-dlbm option", "os => os.map((o) => o.value)")
                      if c and c not in (mine, target[4]) and c.startswith("01"))
        second.select_option("#edit-attr-dlbm", theirs)
        second.click("#edit-apply")
        second.wait_for_selector("#edit-conflict:not([hidden])", timeout=30_000)
        text = second.inner_text("#edit-conflict")
        assert "冲突" in text and "重新加载" in text, text  # said plainly, in Chinese by default
        second.click("#edit-reload")
        second.wait_for_function("window.geobaseEditState.conflict === false", timeout=30_000)
        assert second.eval_on_selector("#edit-attr-dlbm", "s => s.value") == mine  # the current state
        second.select_option("#edit-attr-dlbm", theirs)
        second.click("#edit-apply")
        second.wait_for_function("document.querySelector('#edit-changes').textContent.includes('1')", timeout=30_000)
        again = commit(second, "second editor, after reloading")
        assert again["version"] == done["version"] + 1
        assert not seen["outside"], seen
    with srv.client() as c:
        assert c.get(f"/collections/land_use/items/{bsm}", headers=auth(tokens, "nr:editor")).json()["properties"]["dlbm"] == theirs


def test_merge_two_parcels_and_see_a_moved_vertex_refused_before_commit(ed):
    srv, tokens, settings = ed
    total = "SELECT sum(ST_Area(geom::geography)) FROM data.land_use WHERE _vto IS NULL"
    a, b, pa, pb, box = q(settings, """
        SELECT a.bsm, b.bsm, ARRAY[ST_X(ST_PointOnSurface(a.geom)), ST_Y(ST_PointOnSurface(a.geom))],
               ARRAY[ST_X(ST_PointOnSurface(b.geom)), ST_Y(ST_PointOnSurface(b.geom))],
               ARRAY[ST_XMin(ST_Union(a.geom, b.geom)), ST_YMin(ST_Union(a.geom, b.geom)),
                     ST_XMax(ST_Union(a.geom, b.geom)), ST_YMax(ST_Union(a.geom, b.geom))]
        FROM data.land_use a JOIN data.land_use b ON a._key < b._key AND a.geom && b.geom
         AND ST_Relate(a.geom, b.geom, 'F***1****')
        WHERE a._vto IS NULL AND b._vto IS NULL AND ST_NumGeometries(a.geom) = 1 AND ST_NumGeometries(b.geom) = 1
          AND ST_Area(a.geom::geography) > 3000 AND ST_Area(b.geom::geography) > 3000
          AND ST_NumGeometries(ST_Union(a.geom, b.geom)) = 1 AND a.bsm NOT LIKE '%%-%%' AND b.bsm NOT LIKE '%%-%%'
        ORDER BY a._key DESC LIMIT 1""")[0]
    covered = q(settings, total)[0][0]
    with browser() as ([page], seen):
        open_editor(page, srv, tokens["nr:editor"])
        frame(page, box)
        click_at(page, *pa)
        page.wait_for_function("window.geobaseEditState.selected.length > 0 || window.geobaseEditState.error",
                               timeout=30_000)
        assert page.evaluate("window.geobaseEditState.selected.map((s) => s.id)") == [a], page.inner_text("#edit-result")
        # a moved vertex: staged, and the check before the commit shows the coverage refusal
        page.click("#edit-vertices")
        page.wait_for_timeout(500)
        v = page.evaluate("window.geobaseEditState.selected[0].geometry.coordinates[0][0][1]")
        start = page.evaluate(f"window.geobaseMap.project({v})")
        centre = page.evaluate(f"window.geobaseMap.project({pa})")
        mb = page.locator("#map").bounding_box()
        dx, dy = start["x"] - centre["x"], start["y"] - centre["y"]
        norm = max(1.0, (dx * dx + dy * dy) ** 0.5)
        page.mouse.move(mb["x"] + start["x"], mb["y"] + start["y"])
        page.mouse.down()
        page.mouse.move(mb["x"] + start["x"] + 25 * dx / norm, mb["y"] + start["y"] + 25 * dy / norm, steps=5)
        page.mouse.up()
        page.click("#edit-apply")
        page.wait_for_function("document.querySelector('#edit-changes').textContent.includes('1')", timeout=30_000)
        page.click("#edit-check")
        page.wait_for_function("window.geobaseEditState.check && window.geobaseEditState.check.details", timeout=30_000)
        shown = page.inner_text("#edit-result")
        assert "检查未通过" in shown and "coverage_" in shown and a in shown, shown
        page.click("#edit-discard")
        page.wait_for_function("document.querySelector('#edit-changes').textContent.includes('0')", timeout=30_000)
        # merge: select both (Shift+click adds), merge, check, commit
        click_at(page, *pa)
        page.wait_for_function(f"window.geobaseEditState.selected.some((s) => s.id === {a!r})", timeout=30_000)
        page.keyboard.down("Shift")
        click_at(page, *pb)
        page.keyboard.up("Shift")
        page.wait_for_function("window.geobaseEditState.selected.length === 2", timeout=30_000)
        page.click("#edit-merge")
        page.wait_for_function("window.geobaseEditState.selected.length === 1 && "
                               "document.querySelector('#edit-changes').textContent.includes('2')", timeout=30_000)
        done = commit(page, "merged: one owner")
        # the section speaks English on the switch
        page.click("#lang-switch")
        assert page.inner_text("#edit h2") == "Edit" and page.inner_text("#edit-start") == "Start editing"
        assert "Committed as version" in page.inner_text("#edit-result")
        assert not seen["outside"] and not seen["problems"], seen
    assert done["removed"] == 1 and done["changed"] == 1
    assert q(settings, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND bsm = ANY(%s)", ([a, b],))[0][0] == 1
    assert q(settings, total)[0][0] == pytest.approx(covered, rel=1e-9)


def test_every_word_the_editor_says_has_both_languages():
    import re

    from test_map_modules import STATIC

    words = node("i18n.js", "Object.keys(m.WORDS)")
    used = set()
    for name in ("edit.js", "editapi.js", "editvertex.js"):
        text = (STATIC / name).read_text(encoding="utf-8")
        used |= set(re.findall(r'"(edit\.[a-z_0-9]+)"', text)) | set(re.findall(r'data-i18n(?:-\w+)?="([\w.]+)"', text))
    assert len(used) > 20 and used <= set(words), sorted(used - set(words))

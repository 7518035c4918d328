"""The map page's JavaScript modules with logic of their own, run under node as the browser runs
them (plain scripts that also export for node): geodesic lengths and areas against pyproj's
GeographicLib (Karney) on GRS80, and the URL state's parse/serialize."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import REPO
from pyproj import Geod

STATIC = REPO / "tiles" / "static"


@pytest.fixture(autouse=True)
def _node_installed() -> None:
    """node comes with npm, which setup installs for the map's assets: missing = broken setup."""
    if shutil.which("node") is None:
        pytest.fail("needs node (scripts/setup.sh installs nodejs/npm)")

LINE = [[118.05, 29.02], [118.13, 29.08], [118.21, 29.03], [118.30, 29.15]]
POLYGON = [[118.05, 29.02], [118.25, 29.01], [118.27, 29.18], [118.10, 29.21], [118.07, 29.12]]
PLOT = [[118.1, 29.1], [118.1003, 29.1], [118.1003, 29.1002], [118.1, 29.1002]]  # ~650 m², a house plot
PROVINCE = [[110, 20], [125, 21], [124, 40], [111, 41]]  # continental: the densified edges still agree


def node(module: str, expression: str):
    script = f"const m = require({json.dumps(str(STATIC / module))}); console.log(JSON.stringify({expression}));"
    return json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True,
                                     timeout=60).stdout)


def test_geodesic_length_and_area_match_pyproj_grs80():
    geod = Geod(ellps="GRS80")
    got = node("geodesic.js", f"[m.length({LINE}), m.area({POLYGON}), m.area({PLOT}), m.area({PROVINCE}), "
                              f"m.area({list(reversed(POLYGON))}), m.area({POLYGON + [POLYGON[0]]})]")
    assert got[0] == pytest.approx(geod.line_length(*zip(*LINE)), rel=1e-6)
    for area, ring in zip(got[1:4], (POLYGON, PLOT, PROVINCE)):
        assert area == pytest.approx(abs(geod.polygon_area_perimeter(*zip(*ring))[0]), rel=1e-6)
    assert got[4] == pytest.approx(got[1], rel=1e-9) and got[5] == pytest.approx(got[1], rel=1e-9)  # orientation, closed ring


def test_units_as_planners_read_them():
    got = node("geodesic.js", "[m.formatLength(812.345), m.formatLength(35731.6), m.formatArea(66666.67), m.MU_M2]")
    assert got[0] == "812.35 m" and got[1] == "35.732 km"
    assert got[2] == "66,666.67 m² · 6.6667 ha · 100.00 亩", got[2]  # 1 亩 = 10000/15 m² (docs/domain.md)
    assert got[3] == pytest.approx(10000 / 15)


def test_url_state_round_trip_and_garbage():
    state = {"view": {"zoom": 12.345, "center": [118.1234567, 29.7654321], "bearing": 15, "pitch": 0},
             "layers": ["land_use", "rivers"], "opacity": {"land_use": 0.5, "rivers": 0}}
    h, back = node("urlstate.js", f"(() => {{ const h = m.serialize({json.dumps(state)}); return [h, m.parse(h)]; }})()")
    assert h == "#map=12.35/29.765432/118.123457/15&layers=land_use,rivers&opacity=land_use:0.5,rivers:0"
    assert back == {"view": {"zoom": 12.35, "center": [118.123457, 29.765432], "bearing": 15, "pitch": 0},
                    "layers": ["land_use", "rivers"], "opacity": {"land_use": 0.5, "rivers": 0}}
    old, junk, empty = node("urlstate.js", "[m.parse('#12/29.1/118.2'), "
                                           "m.parse('#map=99/29/118&layers=a,%3Cb%3E&opacity=x:2,y:0.3,z:&foo=1'), "
                                           "m.parse('')]")
    assert old["view"] == {"zoom": 12, "center": [118.2, 29.1], "bearing": 0, "pitch": 0}  # MapLibre's own links
    assert junk == {"view": None, "layers": ["a"], "opacity": {"y": 0.3}}
    assert empty == {"view": None, "layers": None, "opacity": {}}


def test_url_state_keeps_layer_order_and_language():
    state = {"view": {"zoom": 12, "center": [118.1, 29.1], "bearing": 0, "pitch": 0}, "layers": ["rivers", "land_use"],
             "opacity": {}, "order": ["rivers", "land_use", "admin_divisions"], "lang": "en"}
    h, back = node("urlstate.js", f"(() => {{ const h = m.serialize({json.dumps(state)}); return [h, m.parse(h)]; }})()")
    assert h == "#map=12/29.1/118.1&layers=rivers,land_use&order=rivers,land_use,admin_divisions&lang=en"
    assert back == state
    zh, junk, plain = node("urlstate.js", "[m.serialize({view: null, layers: null, order: [], lang: 'zh'}), "
                                          "m.parse('#order=a,%3Cb%3E,a,c&lang=fr'), m.parse('#layers=a')]")
    assert zh == "#"  # Chinese is the default and an empty order is the style's own: neither is written
    assert junk == {"view": None, "layers": None, "opacity": {}, "order": ["a", "c"]}  # bad names, repeats, unknown language dropped
    assert "order" not in plain and "lang" not in plain


def test_interface_dictionary_has_both_languages_for_every_key():
    words, targets, t = node("i18n.js", "[m.WORDS, m.TARGETS, [m.t('layers'), m.t('layers', 'en'), m.t('no.such.key')]]")
    assert all(len(w) == 2 and all(isinstance(x, str) and x.strip() for x in w) for w in words.values()), words
    assert {key for _, key, _ in targets} <= set(words)  # every element the page names has its words
    assert t == ["图层", "Layers", "no.such.key"]  # Chinese by default; an unknown key shows itself, not blank


def test_url_state_keeps_the_compare_view_and_the_attribute_table():
    state = {"view": {"zoom": 15, "center": [118.1, 29.1], "bearing": 0, "pitch": 0}, "layers": None, "opacity": {},
             "compare": {"mode": "side", "layer": "land_use", "left": 1, "right": 2}, "divider": 0.35,
             "table": {"layer": "land_use", "filter": "dlbm IN ('0101','0103') AND tbmj > 100.5 & 'a=b'",
                       "bbox": [118.01234567, 29.1, 118.2, 29.30000001], "sortby": "-tbmj"}}
    h, back = node("urlstate.js", f"(() => {{ const h = m.serialize({json.dumps(state)}); return [h, m.parse(h)]; }})()")
    assert h == ("#map=15/29.1/118.1&compare=side/land_use/1/2&divider=0.35&table=land_use"
                 "&filter=dlbm%20IN%20('0101'%2C'0103')%20AND%20tbmj%20%3E%20100.5%20%26%20'a%3Db'"
                 "&bbox=118.01234567,29.1,118.2,29.30000001&sortby=-tbmj")
    assert back == state  # the filter comes back character for character, '&' and '=' included
    cases = node("urlstate.js", "[m.serialize({compare: {mode: 'swipe', plan: true}, divider: 0.5}), "
                                "m.serialize({compare: {mode: 'slider', layer: 'land_use', left: 1}, divider: 0.2}), "
                                "m.serialize({compare: {mode: 'side', layer: 'land_use', left: 1}}), "
                                "m.serialize({table: {layer: 'rivers', filter: '', bbox: null, sortby: null}}), "
                                "m.parse('#compare=swipe/plan&divider=0.7'), m.parse('#compare=slider/land_use/2')]")
    assert cases[0] == "#compare=swipe/plan"  # the divider in the middle is the default: not written
    assert cases[1] == "#compare=slider/land_use/1"  # one map: no divider
    assert cases[2] == "#"  # side by side needs its right version: nothing half-written
    assert cases[3] == "#table=rivers"  # the whole layer, in its own order
    assert cases[4] == {"view": None, "layers": None, "opacity": {}, "compare": {"mode": "swipe", "plan": True}, "divider": 0.7}
    assert cases[5]["compare"] == {"mode": "slider", "layer": "land_use", "left": 2}


@pytest.mark.parametrize("hash_", [
    "#compare=slider/plan", "#compare=zoom/land_use/1/2", "#compare=side/land_use/1", "#compare=side/%3Cx%3E/1/2",
    "#compare=swipe/land_use/0/2", "#compare=swipe/land_use/1/2/3", "#compare=swipe/land_use/1.5/2",
    "#compare=swipe/plan/1", "#divider=2", "#divider=-0.1", "#divider=", "#divider=x", "#filter=a%3D1",
    "#bbox=1,2,3,4&sortby=x", "#table=%3Cx%3E&filter=a", "#%E0%A4%A", "#compare=%E0%A4%A",
])
def test_url_state_drops_a_garbled_compare_or_table_part(hash_):
    """A garbled or incomplete part is dropped (never half-applied), and parse never throws."""
    assert node("urlstate.js", f"m.parse({json.dumps(hash_)})") == {"view": None, "layers": None, "opacity": {}}


def test_url_state_opens_no_table_on_another_query_than_the_link_says():
    """A garbled filter, bbox or sortby drops the table: a table of other rows than the sender's
    would be wrong data without an error."""
    got = node("urlstate.js", "['#table=land_use&bbox=1,2,3', '#table=land_use&sortby=a%20b', '#table=land_use&filter=%E0%A4%A', "
                              "'#table=land_use&bbox=118,29.2,118.1,29.1', '#table=land_use&filter=' + 'x'.repeat(4001), "
                              "'#table=land_use&filter='].map(m.parse)")
    assert got[:5] == [{"view": None, "layers": None, "opacity": {}}] * 5  # south > north too
    assert got[5]["table"] == {"layer": "land_use", "filter": "", "bbox": None, "sortby": None}  # an empty filter is no filter
def test_typed_coordinates_are_read_as_lon_lat_or_refused():
    got = node("drawkeys.js", "['118.1 29.1', ' 118.1, 29.1 ', '118.1，29.1', '-75.5;40', '118.1', '118.1 29.1 5', "
                              "'abc def', '200 29', '118 95', '1e2 3', ''].map((s) => m.parseLonLat(s))")
    assert got == [[118.1, 29.1], [118.1, 29.1], [118.1, 29.1], [-75.5, 40], None, None, None, None, None, None, None]


def test_every_message_key_the_modules_use_has_both_languages():
    """say(el, key) and status(key) in the map's modules name keys of the dictionary: a typo would
    show the key itself to the user."""
    import re

    words = node("i18n.js", "Object.keys(m.WORDS)")
    used = set()
    for name in ("map.js", "measure.js", "search.js", "labels.js", "sitecheck.js", "drawkeys.js", "panel.js",
                 "compare.js", "comparemap.js", "table.js"):
        text = (STATIC / name).read_text(encoding="utf-8")
        used |= set(re.findall(r"""(?:say\([^,]+,|status\(|message\("\w+",|\.t\(|data-i18n(?:-\w+)?=\\?")\s*"([a-z_]+\.[a-z0-9_.]+)""", text))
        used |= set(re.findall(r'"((?:compare|table)\.[a-z_]+)"', text))  # the compare and table words, wherever named
    html = (REPO / "tiles" / "templates" / "map.html").read_text(encoding="utf-8")
    used |= set(re.findall(r'data-i18n(?:-\w+)?="([\w.]+)"', html))
    assert len(used) >= 20 and used <= set(words), sorted(used - set(words))

"""The dashboard's JavaScript logic under node, as the browser runs it: the chart's scale puts the
target inside the drawn range and maps values linearly; every word the page names has Chinese and
English."""

from __future__ import annotations

import re

import pytest
from conftest import REPO
from test_map_modules import _node_installed, node  # noqa: F401 (the fixture fails without node)

TEMPLATE = REPO / "tiles" / "templates" / "dashboard.html"
SCRIPT = REPO / "tiles" / "static" / "dashboard.js"


def test_chart_range_covers_values_and_target_and_maps_linearly():
    got = node("dashboard_chart.js", "(() => { const s = m.scale([{value: 10}, {value: 12}], 20);"
                                     " return [s.lo, s.hi, s.y(10), s.y(12), s.y(20), s.x(0), s.x(1),"
                                     " m.range([], null), m.range([5], null)]; })()")
    lo, hi, y10, y12, y20, x0, x1, empty, single = got
    assert lo < 10 and hi > 20
    assert y20 < y12 < y10  # higher values are drawn higher up
    assert (y10 - y12) / 2 == pytest.approx((y12 - y20) / 8)  # linear
    assert x0 < x1 and empty == [0, 1] and single[0] < 5 < single[1]


def test_every_word_of_the_page_has_chinese_and_english():
    words = node("dashboard_i18n.js", "Object.fromEntries(Object.entries(m.WORDS))")
    used = set(re.findall(r'data-i18n(?:-placeholder)?="([^"]+)"', TEMPLATE.read_text(encoding="utf-8")))
    used |= set(re.findall(r'(?<![\w.])(?:t|say)\("([a-z_.]*[a-z_])"', SCRIPT.read_text(encoding="utf-8")))
    used |= {"level.red", "level.yellow", "title"}
    missing = sorted(k for k in used if k not in words)
    assert not missing, missing
    for k, (zh, en) in words.items():
        assert zh and en and zh != en or k in ("key.use",), k
        assert re.search(r"[\u4e00-\u9fff]", zh) or k in ("lang.switch",), k

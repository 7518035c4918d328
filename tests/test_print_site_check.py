"""The site-check report's map sheet and planner-rounded tables (issue 18 item 5).

The HTML report carries the sheet (inline SVG: site outline, land use in its class colours,
legend) instead of the one-colour overlay, its tables round areas (ha to 4 decimals, 亩 to 2)
and collapse long feature lists, while the JSON keeps the exact values; ``f=pdf`` answers the
sheet as PDF, checked in pixels: the land-use class colour inside the site, the CJK legend."""

from __future__ import annotations

import re

import numpy as np
import pymupdf
import pytest
from print_common import LAND_COLOURS, admin_token, blended, class_of_column, county_small

from geobase.specs import get_registry

__all__ = ["admin_token", "county_small"]  # fixtures
# columns 0..8, rows 0..2 of the test county: farmland (0101) in columns 0, 4 and 8 = 9 parcels
SITE = {"type": "Polygon", "coordinates": [[[113.0005, 30.0005], [113.0445, 30.0005], [113.0445, 30.0145],
                                            [113.0005, 30.0145], [113.0005, 30.0005]]]}


@pytest.fixture(scope="module")
def server(county_small):
    from conftest import LiveServer

    srv = LiveServer(county_small)
    yield srv
    srv.stop()


def test_html_report_has_the_sheet_and_rounded_tables_json_stays_exact(server):
    with server.client() as c:
        exact = c.post("/analysis/site-check", json={"geometry": SITE})
        page = c.post("/analysis/site-check", params={"f": "html"}, json={"geometry": SITE})
    assert exact.status_code == page.status_code == 200, page.text
    html = page.text
    svg = html[html.index("<div class='sheet'><svg"):]
    for code in ("0101", "0301", "0701", "1101"):  # every class in the site, in its own colour
        assert LAND_COLOURS[code] in svg, code
    result = exact.json()
    farmland = next(r for r in result["rules"] if r["id"] == "cultivated_land")
    assert len(farmland["features"]) == 9
    assert " … 共 9 个" in html  # the feature list collapsed
    assert " ".join(farmland["features"]) not in html
    ha = result["layers"]["land_use"]["total"]["ha"]
    assert f"{ha:,.4f}" in html and str(ha) not in html.replace(f"{ha:,.4f}", "")  # rounded only in the report
    assert len(str(result["site"]["area"]["m2"]).split(".")[-1]) > 2  # the JSON keeps its exact value
    assert re.search(r"<td>\d[\d,]*\.\d{2}</td>", html)  # 亩 to 2 decimals


def test_site_check_pdf_is_the_sheet(server):
    with server.client() as c:
        r = c.post("/analysis/site-check", params={"f": "pdf"}, json={"geometry": SITE})
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text
        bad = c.post("/analysis/tabulate", params={"f": "pdf"}, json={"layer_a": "land_use"})
        assert bad.status_code == 400 and bad.json()["parameter"] == "f"
    doc = pymupdf.open(stream=r.content, filetype="pdf")
    text = doc[0].get_text()
    assert "建设项目用地合规性审查图" in text and "项目用地范围" in text and "0101 水田" in text
    # page 2: the verdict and the tables, areas rounded for the reader, long lists collapsed
    assert doc.page_count == 2
    tables = doc[1].get_text()
    assert "公顷" in tables and "cultivated_land" in tables and "共 9 个" in tables
    assert re.search(r"\b\d+\.\d{4}\b", tables) and not re.search(r"\b\d+\.\d{5,}\b", tables)
    assert any("WenQuanYi" in f[3] for f in doc[0].get_fonts(full=True))
    # the land use inside the site shows its class colour: find the parcel's pixel from the frame
    pix = doc[0].get_pixmap(dpi=100, alpha=False)
    img = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width, pix.n)[..., :3]
    alpha = get_registry().layers["land_use"].style.opacity
    for i in (1, 2, 4):
        want = np.array(blended(LAND_COLOURS[class_of_column(i)], alpha))
        near = (np.abs(img.astype(int) - want).max(axis=2) <= 4).sum()
        assert near > 300, (i, near)  # each class in the site fills a visible area of the sheet

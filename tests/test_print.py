"""Thematic map sheets (issue 18 item 5): ``POST /maps/print`` renders a layout as PDF/PNG.

The PDF is rendered to pixels by MuPDF (PyMuPDF) and checked there: the title's CJK text is
drawn and its font embedded, the legend shows the class colours of the land use drawn, the
parcels at known points show their class colour, the scale bar is as long as the scale says
(checked against an independent geodesic of the frame's width); and every refusal names its
parameter (unknown keys, paper, DPI, too many features, a hidden layer, a masked label)."""

from __future__ import annotations

import json

import numpy as np
import pymupdf
import pytest
from print_common import (
    LAND_COLOURS,
    admin_token,
    blended,
    class_of_column,
    close,
    county_small,
    parcel_centre,
    rgb,
)
from pyproj import Geod

from geobase.specs import get_registry

__all__ = ["admin_token", "county_small"]  # fixtures
TITLE = "示范县土地利用现状图"
BBOX = [113.0, 30.0, 113.1, 30.1]


@pytest.fixture(scope="module")
def server(county_small):
    from conftest import LiveServer

    srv = LiveServer(county_small, env={"GEOBASE_PRINT_MAX_FEATURES": "1000", "GEOBASE_PRINT_MAX_DPI": "300"})
    yield srv
    srv.stop()


def layout(**kw) -> dict:
    base = {"title": TITLE, "layers": ["land_use", "water_areas"], "extent": {"bbox": BBOX},
            "paper": "A4", "orientation": "landscape", "dpi": 120, "source": "测试县自然资源局",
            "date": "2026-12-06", "approval_number": "测S(2026)001号"}
    base.update(kw)
    return base


def pixels(pdf: bytes, dpi: int = 150) -> np.ndarray:
    page = pymupdf.open(stream=pdf, filetype="pdf")[0]
    pix = page.get_pixmap(dpi=dpi, alpha=False)
    return np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width, pix.n)[..., :3]


def to_px(info: dict, dpi: int, lon: float, lat: float) -> tuple[int, int]:
    """(column, row) of a lon/lat on the rendered page, from the frame's place on the paper."""
    x0, y0, w, h = info["frame_mm"]
    xmin, ymin, xmax, ymax = info["extent"]
    ph = info["paper_mm"][1]
    x_mm = x0 + (lon - xmin) / (xmax - xmin) * w
    y_mm = y0 + (lat - ymin) / (ymax - ymin) * h
    return round(x_mm * dpi / 25.4), round((ph - y_mm) * dpi / 25.4)


def test_sheet_pdf_has_title_legend_class_colours_and_a_true_scale_bar(server):
    with server.client() as c:
        r = c.post("/maps/print", json=layout())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    info = json.loads(r.headers["x-geobase-sheet"])
    doc = pymupdf.open(stream=r.content, filetype="pdf")
    fonts = [f[3] for f in doc[0].get_fonts(full=True)]
    assert any("WenQuanYi" in f for f in fonts), fonts  # the CJK font is embedded (TrueType subset)
    text = doc[0].get_text()
    assert TITLE in text and "审图号" in text and "测S(2026)001号" in text and "图  例" in text
    dpi = 150
    img = pixels(r.content, dpi)
    # the title box holds drawn (non-white) pixels
    tx, ty, tw, th = info["title_box_mm"]
    ph = info["paper_mm"][1]
    box = img[round((ph - ty - th) * dpi / 25.4):round((ph - ty) * dpi / 25.4),
              round(tx * dpi / 25.4):round((tx + tw) * dpi / 25.4)]
    assert (box.min(axis=2) < 128).sum() > 500
    # parcels at known points show their class colour (style opacity 0.75 over white)
    alpha = get_registry().layers["land_use"].style.opacity
    for i, j in [(0, 0), (1, 5), (2, 10), (3, 15), (6, 2), (13, 18)]:
        lon, lat = parcel_centre(i, j)
        if 113.04 <= lon <= 113.06 and 30.06 <= lat <= 30.08:
            continue  # the lake lies over these parcels
        col, row = to_px(info, dpi, lon, lat)
        want = blended(LAND_COLOURS[class_of_column(i)], alpha)
        assert close(img[row, col], want), (i, j, img[row, col], want)
    # the legend shows each class drawn, in full colour, right of the frame
    legend = img[:, round(info["legend"]["x_mm"] * dpi / 25.4):]
    for code, colour in LAND_COLOURS.items():
        assert (np.abs(legend.astype(int) - rgb(colour)).max(axis=2) <= 3).sum() > 50, code
    # the scale bar: its drawn length is the length it names at the printed scale ...
    sb = info["scale_bar"]
    y = round((ph - sb["y_mm"] - sb["height_mm"] / 2) * dpi / 25.4)
    x_from, x_to = round((sb["x_mm"] - 1) * dpi / 25.4), round((sb["x_mm"] + sb["mm"] + 1.5) * dpi / 25.4)
    dark = np.nonzero(img[y, x_from:x_to].max(axis=1) < 200)[0]  # black segments, outlined white ones
    drawn_mm = (dark[-1] - dark[0]) * 25.4 / dpi
    assert abs(drawn_mm - sb["m"] * 1000 / info["scale"]) < 0.5
    # ... and the scale is that of the frame: its width on paper vs the geodesic along the central parallel
    xmin, ymin, xmax, ymax = info["extent"]
    _, _, ground = Geod(ellps="GRS80").inv(xmin, (ymin + ymax) / 2, xmax, (ymin + ymax) / 2)
    assert abs(ground / (info["frame_mm"][2] / 1000) / info["scale"] - 1) < 0.002
    assert info["extent"][0] <= BBOX[0] and info["extent"][2] >= BBOX[2]  # the asked extent is inside the frame


def test_sheet_png_and_area_of_interest(server):
    aoi = {"type": "Polygon", "coordinates": [[[113.01, 30.01], [113.04, 30.01], [113.04, 30.03], [113.01, 30.03],
                                               [113.01, 30.01]]]}
    with server.client() as c:
        r = c.post("/maps/print", json=layout(format="png", dpi=100, extent={"aoi": aoi}, paper="A3",
                                              orientation="portrait", layers=[{"name": "land_use", "opacity": 1.0}]))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    info = json.loads(r.headers["x-geobase-sheet"])
    assert info["paper_mm"] == [297.0, 420.0]
    page = pymupdf.Pixmap(r.content)
    assert abs(page.width - 297 / 25.4 * 100) <= 1 and abs(page.height - 420 / 25.4 * 100) <= 1
    img = np.frombuffer(page.samples, dtype=np.uint8).reshape(page.height, page.width, page.n)[..., :3]
    lon, lat = parcel_centre(3, 3)
    col, row = to_px(info, 100, lon, lat)
    assert close(img[row, col], rgb(LAND_COLOURS[class_of_column(3)]))  # opacity 1 from the layout
    assert info["extent"][0] <= 113.01 and info["extent"][2] >= 113.04


def test_masked_label_and_hidden_layer_are_refused_for_the_public_printed_for_an_admin(server, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    with server.client() as c:
        r = c.post("/maps/print", json=layout(layers=["control_lines"]))
        assert r.status_code == 404 and r.json()["parameter"] == "layers"  # internal layer: as if absent
        r = c.post("/maps/print", json=layout(layers=[{"name": "land_use", "label": "qsdwmc"}]))
        assert r.status_code == 400 and r.json()["parameter"] == "layers[0].label"
        assert "secret owner" not in r.text
        r = c.post("/maps/print", json=layout(layers=["control_lines", {"name": "land_use", "label": "qsdwmc"}],
                                              extent={"bbox": [113.0, 30.0, 113.02, 30.02]}), headers=auth)
        assert r.status_code == 200, r.text
        assert "secret owner" in pymupdf.open(stream=r.content, filetype="pdf")[0].get_text()


@pytest.mark.parametrize("change, parameter", [
    ({"legnd": False}, "legnd"),
    ({"extent": {"bbox": BBOX, "zoom": 3}}, "extent.zoom"),
    ({"layers": [{"name": "land_use", "colour": "red"}]}, "layers[0].colour"),
    ({"paper": "A0"}, "paper"),
    ({"dpi": 1200}, "dpi"),
    ({"extent": {"bbox": [113.1, 30.0, 113.0, 30.1]}}, "extent.bbox"),
    ({"layers": ["no_such_layer"]}, "layers"),
    ({"layers": ["dem"]}, "layers"),
])
def test_refusals_name_the_parameter(server, change, parameter):
    with server.client() as c:
        r = c.post("/maps/print", json=layout(**change))
    assert r.status_code in (400, 404), r.text
    assert r.json()["parameter"] == parameter, r.json()
    assert r.status_code == (404 if change.get("layers") == ["no_such_layer"] else 400)


def test_too_many_features_is_refused_naming_extent(server):
    # the server allows 1000 features per sheet; the county has 400 parcels: three copies of the
    # same layer are refused as named twice, a wider sheet of parcels passes, the limit is per sheet
    with server.client() as c:
        assert c.post("/maps/print", json=layout(layers=["land_use", "land_use"])).json()["parameter"] == "layers"
    from conftest import LiveServer

    small = LiveServer(server.settings, env={"GEOBASE_PRINT_MAX_FEATURES": "100"})
    try:
        with small.client() as c:
            r = c.post("/maps/print", json=layout())
            assert r.status_code == 400 and r.json()["parameter"] == "extent", r.text
            r = c.post("/maps/print", json=layout(extent={"bbox": [113.0, 30.0, 113.02, 30.02]}))
            assert r.status_code == 200, r.text
    finally:
        small.stop()


def test_cli_prints_the_same_sheet_and_names_a_bad_key(county_small, tmp_path):
    import subprocess
    import sys

    env = {**__import__("os").environ, "GEOBASE_DATABASE_URL": county_small.database_url,
           "GEOBASE_DATA_DIR": str(county_small.data_dir)}
    spec = tmp_path / "layout.json"
    spec.write_text(json.dumps({k: v for k, v in layout().items()}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "sheet.png"
    proc = subprocess.run([sys.executable, "-m", "geobase.cli", "map", "print", str(spec), "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the suffix chose PNG: the layout named no format
    spec.write_text(json.dumps({**layout(), "nort_arrow": True}), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "geobase.cli", "map", "print", str(spec), "-o", str(tmp_path / "x.pdf")],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 2 and "nort_arrow" in proc.stderr, proc.stderr
    assert not (tmp_path / "x.pdf").exists()

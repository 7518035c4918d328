"""WMTS GetFeatureInfo (KVP and RESTful, JSON and HTML) and low-zoom picture tiles drawn from
class cells (issue 18 item 6).

GetFeatureInfo is found the way a client finds it: OWSLib reads the capabilities (the operation,
the layer's InfoFormats, the FeatureInfo resource templates) and the test fills the template it
read; the parcel answered at a pixel is the one the test county puts there (column i, row j),
with the public's masked owner name left out and an admin's kept; a hidden layer is 404. Headless
QGIS 3.22 (python3-qgis, the system Python) adds the layer from the capabilities, draws the
parcel's class colour and identifies it. Below land use's detail zoom a WebMercatorQuad tile is
drawn from cells (never refused for its feature count), on the fly and then from the built
pyramid, pixel for pixel the same picture."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from owslib.wmts import WebMapTileService
from PIL import Image
from print_common import LAND_COLOURS, admin_token, class_of_column, close, county_small, parcel_centre, rgb
from test_wmts import c_tile_of, mercator_tile_of

from geobase.db import database_url
from geobase.specs import get_registry

__all__ = ["admin_token", "county_small"]  # fixtures
QGIS_PYTHON = "/usr/bin/python3"
HARNESS = Path(__file__).with_name("qgis_wmts_harness.py")


@pytest.fixture(scope="module")
def server(county_small):
    from conftest import LiveServer

    srv = LiveServer(county_small, env={"GEOBASE_PRINT_MAX_FEATURES": "50"})
    yield srv
    srv.stop()


def _templates(server) -> dict[str, str]:
    wmts = WebMapTileService(f"{server.url}/wmts/1.0.0/WMTSCapabilities.xml")
    assert "GetFeatureInfo" in [op.name for op in wmts.operations]
    layer = wmts.contents["land_use"]
    assert set(layer.infoformats) == {"application/json", "text/html"}
    return {u["format"]: u["template"] for u in layer.resourceURLs if u["resourceType"] == "FeatureInfo"}


def _fill(template: str, tms: str, z: int, row: int, col: int, i: float, j: float) -> str:
    return (template.replace("{Style}", "default").replace("{TileMatrixSet}", tms).replace("{TileMatrix}", str(z))
            .replace("{TileRow}", str(row)).replace("{TileCol}", str(col)).replace("{J}", str(int(j)))
            .replace("{I}", str(int(i))))


@pytest.mark.parametrize("tms, finder", [("c", c_tile_of), ("WebMercatorQuad", mercator_tile_of)])
def test_getfeatureinfo_found_by_owslib_names_the_parcel_at_the_pixel(server, admin_token, tms, finder):
    templates = _templates(server)
    assert set(templates) == {"application/json", "text/html"}
    auth = {"Authorization": f"Bearer {admin_token}"}
    with server.client() as client:
        for i, j in [(0, 0), (2, 3), (9, 1), (13, 17)]:
            row, col, px, py = finder(15, *parcel_centre(i, j))
            url = _fill(templates["application/json"], tms, 15, row, col, px, py)
            r = client.get(url.removeprefix(server.url))
            assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
            feats = [f for f in r.json()["features"] if f["layer"] == "land_use"]
            assert [f["id"] for f in feats] == [f"LU{i:02d}{j:02d}"], r.json()
            props = feats[0]["properties"]
            assert props["dlbm"] == class_of_column(i) and "qsdwmc" not in props  # masked for the public
            assert "secret owner" not in r.text
            admin = client.get(url.removeprefix(server.url), headers=auth).json()
            assert [f for f in admin["features"] if f["layer"] == "land_use"][0]["properties"]["qsdwmc"] == "secret owner"
            page = client.get(_fill(templates["text/html"], tms, 15, row, col, px, py).removeprefix(server.url))
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert f"LU{i:02d}{j:02d}" in page.text and class_of_column(i) in page.text
            assert "secret owner" not in page.text
            kvp = client.get("/wmts", params={"service": "WMTS", "request": "GetFeatureInfo", "version": "1.0.0",
                                              "layer": "land_use", "style": "default", "tilematrixset": tms,
                                              "tilematrix": 15, "tilerow": row, "tilecol": col, "i": int(px),
                                              "j": int(py), "infoformat": "application/json"})
            assert kvp.status_code == 200 and kvp.json() == r.json()


def test_getfeatureinfo_refusals_and_hidden_layers(server, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    row, col, px, py = c_tile_of(14, 113.02, 30.05)  # inside the STBHHX control line square
    path = f"/wmts/1.0.0/control_lines/default/c/14/{row}/{col}/{int(py)}/{int(px)}.json"
    with server.client() as client:
        r = client.get(path)
        assert r.status_code == 404 and r.json()["parameter"] == "layers"  # as if it did not exist
        r = client.get(path, headers=auth)
        assert r.status_code == 200 and [f["id"] for f in r.json()["features"]] == ["K1"]
        onemap = client.get(f"/wmts/1.0.0/onemap/default/c/14/{row}/{col}/{int(py)}/{int(px)}.json").json()
        assert "control_lines" not in {f["layer"] for f in onemap["features"]} and onemap["features"]
        base = "SERVICE=WMTS&REQUEST=GetFeatureInfo&LAYER=land_use&TILEMATRIXSET=c&TILEMATRIX=14&TILEROW=0&TILECOL=0"
        for query, name in [(base + "&I=3", "J"), (base + "&I=256&J=0", "I"), (base + "&I=1&J=1&INFOFORMAT=image/png",
                                                                               "INFOFORMAT"),
                            (base + "&I=1&J=1&FORMAT=image/png", "FORMAT"),
                            ("SERVICE=WMTS&REQUEST=GetTile&LAYER=land_use&TILEMATRIXSET=c&TILEMATRIX=14&TILEROW=0&"
                             "TILECOL=0&I=1", "I")]:
            r = client.get(f"/wmts?{query}")
            assert r.status_code == 400 and r.json()["parameter"] == name, (query, r.text)
        r = client.get(f"/wmts/1.0.0/land_use/default/c/14/{row}/{col}/1/1.png")
        assert r.status_code == 400 and r.json()["parameter"] == "ext"


def _pixel(content: bytes, px: float, py: float):
    return Image.open(io.BytesIO(content)).convert("RGBA").getpixel((int(px), int(py)))


def _dominant_cells(settings, z: int) -> dict[tuple[int, int], str]:
    """Independently of our SQL: each 2-pixel cell (global row, column at ``z``) holding parcel
    bounding-box centres, and the class with the most area there (ties: the smaller code)."""
    span = 2 * 20037508.342789244 / 2**z / 128
    with psycopg.connect(database_url(settings)) as conn:
        rows = conn.execute("SELECT dlbm, ST_AsBinary(geom) FROM data.land_use WHERE _vto IS NULL").fetchall()
    import shapely
    from pyproj import Geod, Transformer

    to_merc = Transformer.from_crs(4490, 3857, always_xy=True)
    geod = Geod(ellps="GRS80")
    acc: dict[tuple[int, int], dict[str, float]] = {}
    for cls, wkb in rows:
        g = shapely.from_wkb(bytes(wkb))
        x0, y0, x1, y1 = g.bounds
        (mx0, mx1), (my0, my1) = to_merc.transform([x0, x1], [y0, y1])
        cell = (int((20037508.342789244 - (my0 + my1) / 2) // span), int(((mx0 + mx1) / 2 + 20037508.342789244) // span))
        area = abs(geod.geometry_area_perimeter(g)[0])
        acc.setdefault(cell, {}).setdefault(cls, 0.0)
        acc[cell][cls] += area
    return {cell: min(by.items(), key=lambda kv: (-round(kv[1]), kv[0]))[0] for cell, by in acc.items()}


def test_low_zoom_tiles_are_drawn_from_cells_on_the_fly_then_from_the_pyramid(server, county_small, tmp_path):
    """z8 (land use's minzoom, below its detail zoom 13): 400 parcels in the tile, the server's
    feature limit 50, yet the tile is drawn (from cells), each parcel's cell in its class colour."""
    alpha = get_registry().layers["land_use"].style.opacity
    z = 8
    row, col, _, _ = mercator_tile_of(z, *parcel_centre(10, 10))
    path = f"/wmts/1.0.0/land_use/default/WebMercatorQuad/{z}/{row}/{col}.png"
    with server.client() as client:
        first = client.get(path)
        assert first.status_code == 200 and first.headers["x-tile-cache"] == "miss", first.text
        cells = _dominant_cells(county_small, z)
        assert len(cells) > 20
        for (cy, cx), cls in cells.items():
            assert (cy // 128, cx // 128) == (row, col)
            pixel = _pixel(first.content, 2 * (cx % 128) + 1, 2 * (cy % 128) + 1)
            assert close(pixel[:3], rgb(LAND_COLOURS[cls]), tol=3), ((cy, cx), cls, pixel)
            assert abs(pixel[3] - alpha * 255) <= 3, pixel
        with psycopg.connect(database_url(county_small)) as conn:
            for _ in range(240):  # the first low-zoom tile started the pyramid's build in the background
                if conn.execute("SELECT 1 FROM tiles.pyramids WHERE layer = 'land_use'").fetchone():
                    break
                time.sleep(0.25)
            else:
                pytest.fail("the tile pyramid of land_use was never built")
    from conftest import LiveServer

    # a second server with an empty tile cache draws the same tile again, now from the pyramid
    other = LiveServer(county_small.model_copy(update={"data_dir": tmp_path}))
    try:
        with other.client() as client:
            again = client.get(path)
    finally:
        other.stop()
    assert again.headers["x-tile-cache"] == "miss"
    assert again.content == first.content  # the pyramid's cells are the on-the-fly ones
    with server.client() as client:
        # the c grid still draws features (no pyramid there): a tile over the limit is refused
        row, col, _, _ = c_tile_of(12, *parcel_centre(10, 10))
        assert client.get(f"/wmts/1.0.0/land_use/default/c/12/{row}/{col}.png").status_code == 400


def _qgis_available() -> bool:
    return subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _qgis_available(), reason="python3-qgis (QGIS 3.22) not installed for the system Python")
def test_qgis_reads_the_wmts_draws_the_class_colour_and_identifies_the_parcel(server, tmp_path):
    import math

    def merc(lon, lat):
        return lon * 20037508.342789244 / 180, math.log(math.tan(math.radians(90 + lat) / 2)) * 6378137.0

    cases = [(1, 7), (4, 3)]
    pts = [[*merc(*parcel_centre(i, j)), 60.0] for i, j in cases]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": "/tmp", "HOME": str(tmp_path)}
    env.pop("PYTHONPATH", None)
    p = subprocess.run([QGIS_PYTHON, str(HARNESS), f"{server.url}/wmts/1.0.0/WMTSCapabilities.xml", "land_use",
                        "WebMercatorQuad", "EPSG:3857", json.dumps(pts)], env=env, capture_output=True, text=True,
                       timeout=600, check=False, cwd=str(HARNESS.parent))
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("GEOBASE-QGIS ")), None)
    assert line, f"QGIS harness failed (rc {p.returncode}): {p.stdout[-2000:]} {p.stderr[-3000:]}"
    out = json.loads(line.removeprefix("GEOBASE-QGIS "))
    assert out["valid"], out
    alpha = get_registry().layers["land_use"].style.opacity
    for (i, j), got in zip(cases, out["points"]):
        want = tuple(round(c * alpha + 255 * (1 - alpha)) for c in rgb(LAND_COLOURS[class_of_column(i)]))
        assert close(rgb(got["color"]), want, tol=10), (i, j, got)
        text = " ".join(got["identify"].values())
        assert f"LU{i:02d}{j:02d}" in text and "secret owner" not in text, got

"""QGIS 3.22 (Debian 12's python3-qgis) draws our layers in their spec colours (issue 12 item 16).

A headless QGIS (the system Python in a subprocess, ``QT_QPA_PLATFORM=offscreen``, driven by
tests/qgis_harness.py) loads

* the vector tile layer of the live county server with our style URL (``styleUrl=``, converted
  by QGIS's own QgsMapBoxGlStyleConverter): the centre pixel of a window inside a parcel must
  show that parcel's class colour from the code list (blended at the style's opacity), for the
  biggest parcel of several land-use classes and planning zones;
* the OAPIF collection: every feature loads (the database's count), and drawn with a renderer
  built from our legend the same parcels show their colours.

The style is also checked with MapLibre's own validator (gl-style-validate from
@maplibre/maplibre-gl-style-spec, installed into .vendor by scripts/setup.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from conftest import ARTIFACTS, REPO

from geobase.db import database_url

QGIS_PYTHON = "/usr/bin/python3"
HARNESS = Path(__file__).with_name("qgis_harness.py")
VALIDATOR = REPO / ".vendor" / "node_modules" / "@maplibre" / "maplibre-gl-style-spec" / "dist" / "gl-style-validate.mjs"


def _qgis_available() -> bool:
    return subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, check=False).returncode == 0


def _harness(*args: str) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": "/tmp",
           "HOME": str(ARTIFACTS / "qgis-home")}
    env.pop("PYTHONPATH", None)
    (ARTIFACTS / "qgis-home").mkdir(parents=True, exist_ok=True)
    p = subprocess.run([QGIS_PYTHON, str(HARNESS), *args], env=env, capture_output=True, text=True, timeout=600, check=False)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("GEOBASE-QGIS ")), None)
    assert line, f"QGIS harness failed (rc {p.returncode}): {p.stdout[-2000:]} {p.stderr[-3000:]}"
    return json.loads(line.removeprefix("GEOBASE-QGIS "))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _blend(colour: str, opacity: float, under: str) -> tuple[float, float, float]:
    c, u = _rgb(colour), _rgb(under)
    return tuple(opacity * a + (1 - opacity) * b for a, b in zip(c, u))


def _dist(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def _interior_points(settings, layer: str, field: str, codes: set[str], n: int = 6) -> list[list]:
    """The centre of the largest inscribed circle of the biggest parcel of up to ``n`` classes
    (each with room for the 40 m render window), in EPSG:3857."""
    with psycopg.connect(database_url(settings)) as conn:
        rows = conn.execute(f"""
            SELECT DISTINCT ON (cls) cls, ST_X(c), ST_Y(c), r FROM (
                SELECT {field}::text AS cls, (ST_MaximumInscribedCircle(geom_3857)).center AS c,
                       (ST_MaximumInscribedCircle(geom_3857)).radius AS r
                FROM (SELECT {field}, geom_3857 FROM data.{layer} WHERE _vto IS NULL
                      ORDER BY _area_m2 DESC LIMIT 400) big) s
            WHERE r > 40 ORDER BY cls, r DESC""").fetchall()
    pts = [[x, y, cls] for cls, x, y, _ in rows if cls in codes]
    pts.sort(key=lambda p: p[2])
    return pts[:n]


def _legend(client) -> dict[str, dict]:
    return {e["layer"]: e for e in client.get("/legend").json()["layers"]}


def _check_pixels(pixels: list[dict], colours: dict[str, str], opacity: float) -> None:
    """Every pixel is its class's colour (blended at ``opacity`` over white or the style's
    background) and nearer to it than to any other class's colour."""
    for px in pixels:
        got = _rgb(px["color"])
        want = [_blend(colours[px["code"]], opacity, under) for under in ("#ffffff", "#f4f3ef")]
        assert min(_dist(got, w) for w in want) <= 12, (px, colours[px["code"]])
        nearest = min(colours, key=lambda c: min(_dist(got, _blend(colours[c], opacity, u))
                                                 for u in ("#ffffff", "#f4f3ef")))
        assert colours[nearest] == colours[px["code"]], (px, nearest)


def test_style_is_valid_per_the_maplibre_style_validator(county_server, tmp_path):
    node = shutil.which("node") or shutil.which("nodejs")
    assert node and VALIDATOR.exists(), "scripts/setup.sh installs node and the style validator"
    with county_server.client() as c:
        style = c.get("/map/style.json").json()
    # QGIS 3.22 reads match labels only as arrays: every label of every match is one
    matches = [p for layer in style["layers"] for p in layer.get("paint", {}).values()
               if isinstance(p, list) and p and p[0] == "match"]
    assert matches and all(isinstance(lbl, list) for m in matches for lbl in m[2:-1:2])
    path = tmp_path / "style.json"
    path.write_text(json.dumps(style), encoding="utf-8")
    p = subprocess.run([node, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and not p.stdout.strip(), p.stdout + p.stderr


@pytest.mark.qgis
@pytest.mark.parametrize("layer, field", [("land_use", "dlbm"), ("planning_zones", "ghfqdm")])
def test_qgis_vector_tiles_with_our_style_show_the_class_colours(county_server, county_shared, layer, field):
    assert _qgis_available(), "python3-qgis (scripts/setup.sh --test installs it)"
    with county_server.client() as c:
        entry = _legend(c)[layer]
    colours = {k["code"]: k["color"] for k in entry["classes"]}
    points = _interior_points(county_shared, layer, field, set(colours))
    assert len(points) >= 2, points
    out = ARTIFACTS / f"qgis-vectortile-{layer}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    spec_opacity = {"land_use": 0.75, "planning_zones": 0.5}[layer]
    res = _harness("vectortile", f"{county_server.url}/tiles/{layer}/{{z}}/{{x}}/{{y}}.mvt",
                   f"{county_server.url}/map/style.json", json.dumps(points), str(out))
    assert res["valid"], res
    fill = next(s for s in res["styles"] if s["name"] == f"{layer}-fill")
    assert fill["layer"] == layer
    assert all(not px["errors"] for px in res["pixels"]), res["pixels"]
    _check_pixels(res["pixels"], colours, spec_opacity)
    assert len({px["color"] for px in res["pixels"]}) == len({colours[p[2]] for p in points})  # not flat


@pytest.mark.qgis
def test_qgis_oapif_loads_every_feature_and_draws_the_legend_colours(county_server, county_shared):
    assert _qgis_available(), "python3-qgis (scripts/setup.sh --test installs it)"
    with county_server.client() as c:
        entry = _legend(c)["land_use"]
    colours = {k["code"]: k["color"] for k in entry["classes"]}
    with psycopg.connect(database_url(county_shared)) as conn:
        n = conn.execute("SELECT count(*) FROM data.land_use WHERE _vto IS NULL").fetchone()[0]
    points = _interior_points(county_shared, "land_use", "dlbm", set(colours), n=3)
    res = _harness("oapif", county_server.url, "land_use", json.dumps(points),
                   json.dumps(entry["classes"]), "dlbm")
    assert res["valid"], res
    assert res["count"] == n
    assert "dlbm" in res["fields"]
    _check_pixels(res["pixels"], colours, 1.0)

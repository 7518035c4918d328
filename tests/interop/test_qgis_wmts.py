"""QGIS 3.22 (Debian 12's python3-qgis, headless) loads our WMTS layer from the capabilities
document, in both tile matrix sets (WebMercatorQuad in EPSG:3857, the Tianditu-style ``c`` in
EPSG:4490), and draws it: the pixel at a known parcel shows the parcel's class colour.

``make interop`` runs these (``-m interop``; ``scripts/setup.sh --interop`` installs QGIS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from interop.clients import QGIS_PYTHON, qgis_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from print_common import LAND_COLOURS, class_of_column, close, county_small, parcel_centre, rgb

pytestmark = pytest.mark.interop
__all__ = ["county_small"]  # fixture

PROBE = r'''
import json, os, sys
from qgis.core import (QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsMapRendererParallelJob,
                       QgsMapSettings, QgsPointXY, QgsProject, QgsRasterLayer, QgsRectangle)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

url, tms, epsg, lon, lat = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
app = QgsApplication([], False)
app.initQgis()
uri = (f"contextualWMSLegend=0&crs={epsg}&dpiMode=7&format=image/png&layers=land_use&styles=default"
       f"&tileMatrixSet={tms}&url={url}/wmts/1.0.0/WMTSCapabilities.xml")
layer = QgsRasterLayer(uri, "wmts", "wms")
out = {"valid": layer.isValid(), "error": layer.error().summary() if not layer.isValid() else ""}
if layer.isValid():
    crs = QgsCoordinateReferenceSystem(epsg)
    p = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4490"), crs, QgsProject.instance()).transform(
        QgsPointXY(lon, lat))
    half = 0.0008 if epsg == "EPSG:4490" else 80.0
    ms = QgsMapSettings()
    ms.setLayers([layer])
    ms.setDestinationCrs(crs)
    ms.setBackgroundColor(QColor(255, 255, 255))
    ms.setOutputSize(QSize(64, 64))
    ms.setExtent(QgsRectangle(p.x() - half, p.y() - half, p.x() + half, p.y() + half))
    job = QgsMapRendererParallelJob(ms)
    job.start()
    job.waitForFinished()
    img = job.renderedImage()
    c = QColor(img.pixel(32, 32))
    out.update({"centre": [c.red(), c.green(), c.blue()], "errors": [e.message for e in job.errors()],
                "non_white": sum(1 for x in range(0, 64, 4) for y in range(0, 64, 4)
                                 if QColor(img.pixel(x, y)).name() != "#ffffff")})
print(json.dumps(out), flush=True)
os._exit(0)
'''


@pytest.fixture(scope="module")
def server(county_small):
    from conftest import LiveServer

    srv = LiveServer(county_small)
    yield srv
    srv.stop()


@pytest.mark.parametrize("tms, epsg", [("c", "EPSG:4490"), ("WebMercatorQuad", "EPSG:3857")])
def test_qgis_322_draws_the_wmts_layer(server, tms, epsg, tmp_path):
    assert qgis_available(), "QGIS is missing: run scripts/setup.sh --interop (Debian python3-qgis)"
    probe = tmp_path / "wmts_probe.py"
    probe.write_text(PROBE)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR="/tmp/runtime-geobase-qgis")
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    i, j = 2, 3
    lon, lat = parcel_centre(i, j)
    proc = subprocess.run([QGIS_PYTHON, str(probe), server.url, tms, epsg, str(lon), str(lat)], check=False,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["valid"], out
    assert out["non_white"] > 200, out  # drawn, not empty
    # the class colour at 75 % opacity over QGIS's white background
    want = tuple(round(c * 0.75 + 255 * 0.25) for c in rgb(LAND_COLOURS[class_of_column(i)]))
    assert close(out["centre"], want, tol=8), out

"""Run by the system Python (/usr/bin/python3, Debian's python3-qgis 3.22) in a subprocess of
tests/test_qgis_style.py, offscreen: loads geobase layers the way a QGIS user does and prints
one JSON document with what QGIS saw.

    qgis_harness.py vectortile <tiles url template> <style url> <json points> <out.png>
    qgis_harness.py oapif <server url> <collection> <json points> <json legend classes> <class field>

Points are [[x_3857, y_3857, expected_code], ...]; for each, the harness renders a small
window centred on the point and reports the colour of the centre pixel."""

from __future__ import annotations

import json
import sys


def _app():
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    return app


def _render(layers, crs, x: float, y: float, half: float, size: int = 64):
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings, QgsRectangle
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    ms = QgsMapSettings()
    ms.setLayers(layers)
    ms.setDestinationCrs(crs)
    ms.setBackgroundColor(QColor(255, 255, 255))
    ms.setOutputSize(QSize(size, size))
    ms.setExtent(QgsRectangle(x - half, y - half, x + half, y + half))
    job = QgsMapRendererParallelJob(ms)
    job.start()
    job.waitForFinished()
    img = job.renderedImage()
    c = QColor(img.pixel(size // 2, size // 2))
    return img, f"#{c.red():02x}{c.green():02x}{c.blue():02x}", [e.message for e in job.errors()]


def vectortile(template: str, style_url: str, points: list, out_png: str) -> dict:
    from urllib.parse import quote

    from qgis.core import QgsCoordinateReferenceSystem, QgsVectorTileLayer

    uri = f"type=xyz&url={quote(template, safe=':/{}')}&zmin=8&zmax=18&styleUrl={quote(style_url, safe=':/')}"
    layer = QgsVectorTileLayer(uri, "geobase")
    # what QGIS does when a user adds the layer: fetch styleUrl and convert it
    # (QgsMapBoxGlStyleConverter); the constructor alone keeps the default renderer
    message, ok = layer.loadDefaultStyle()
    res = {"valid": layer.isValid(), "style_loaded": ok, "style_message": message, "styles": [], "pixels": []}
    ren = layer.renderer()
    if ren is not None and hasattr(ren, "styles"):
        for st in ren.styles():
            sym = st.symbol()
            res["styles"].append({"name": st.styleName(), "layer": st.layerName(),
                                  "color": sym.color().name() if sym else None})
    crs = QgsCoordinateReferenceSystem("EPSG:3857")
    for i, (x, y, code) in enumerate(points):
        img, colour, errors = _render([layer], crs, x, y, 20.0)
        if i == 0:
            img.save(out_png)
        res["pixels"].append({"code": code, "color": colour, "errors": errors})
    return res


def oapif(server: str, collection: str, points: list, classes: list, field: str) -> dict:
    from qgis.core import (
        QgsCategorizedSymbolRenderer,
        QgsCoordinateReferenceSystem,
        QgsFillSymbol,
        QgsRendererCategory,
        QgsVectorLayer,
    )

    layer = QgsVectorLayer(f"url='{server}' typename='{collection}' pageSize='1000'", collection, "OAPIF")
    res = {"valid": layer.isValid(), "error": layer.error().summary() if not layer.isValid() else None}
    if not layer.isValid():
        return res
    res["count"] = sum(1 for _ in layer.getFeatures())
    res["fields"] = {f.name(): f.typeName() for f in layer.fields()}
    cats = []
    for c in classes:
        sym = QgsFillSymbol.createSimple({"color": c["color"], "outline_style": "no"})
        cats.append(QgsRendererCategory(c["code"], sym, c["code"]))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, cats))
    crs = QgsCoordinateReferenceSystem("EPSG:3857")
    res["pixels"] = []
    for x, y, code in points:
        _, colour, errors = _render([layer], crs, x, y, 20.0)
        res["pixels"].append({"code": code, "color": colour, "errors": errors})
    return res


if __name__ == "__main__":
    app = _app()
    kind = sys.argv[1]
    if kind == "vectortile":
        out = vectortile(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5])
    else:
        out = oapif(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5]), sys.argv[6])
    print("GEOBASE-QGIS " + json.dumps(out))
    sys.stdout.flush()
    import os

    os._exit(0)  # QGIS's exit handlers may crash offscreen: the answer is printed already

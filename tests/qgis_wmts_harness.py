"""Run by the system Python (/usr/bin/python3, Debian's python3-qgis 3.22) in a subprocess of
tests/test_wmts_info.py, offscreen: adds a geobase WMTS layer the way a QGIS user does (the
"wms" provider given the capabilities URL and a tile matrix set), draws windows around points
and identifies features there (QGIS sends GetFeatureInfo with the layer's advertised formats).

    qgis_wmts_harness.py <capabilities url> <layer> <tile matrix set> <crs> <json points>

Points are [[x, y, half window], ...] in ``crs``; prints one JSON document: layer validity, per
point the centre pixel's colour and the identify result (text of the HTML answer)."""

from __future__ import annotations

import json
import sys
from urllib.parse import quote

from qgis_harness import _app, _render


def wmts(caps: str, layer: str, tms: str, crs_id: str, points: list) -> dict:
    from qgis.core import QgsCoordinateReferenceSystem, QgsPointXY, QgsRaster, QgsRasterLayer, QgsRectangle

    uri = (f"contextualWMSLegend=0&crs={crs_id}&dpiMode=7&featureCount=10&format=image/png&layers={layer}"
           f"&styles=default&tileMatrixSet={tms}&url={quote(caps, safe=':/')}")
    lay = QgsRasterLayer(uri, layer, "wms")
    res = {"valid": lay.isValid(), "error": lay.error().summary() if not lay.isValid() else None, "points": []}
    if not lay.isValid():
        return res
    prov = lay.dataProvider()
    res["capabilities"] = int(prov.capabilities())
    crs = QgsCoordinateReferenceSystem(crs_id)
    for x, y, half in points:
        _, colour, errors = _render([lay], crs, x, y, half, size=64)
        extent = QgsRectangle(x - half, y - half, x + half, y + half)
        ident = prov.identify(QgsPointXY(x, y), QgsRaster.IdentifyFormatHtml, extent, 64, 64)
        results = {str(k): str(v) for k, v in ident.results().items()} if ident.isValid() else {}
        res["points"].append({"color": colour, "errors": errors, "identify_valid": ident.isValid(),
                              "identify": results,
                              "identify_error": ident.error().summary() if not ident.isValid() else None})
    return res


if __name__ == "__main__":
    app = _app()
    out = wmts(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))
    print("GEOBASE-QGIS " + json.dumps(out))
    sys.stdout.flush()
    import os

    os._exit(0)  # QGIS's exit handlers may crash offscreen: the answer is printed already

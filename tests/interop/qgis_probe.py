"""Run by Debian's /usr/bin/python3 with python3-qgis (not the project's venv): open one OAPIF
layer with QGIS's own provider and print its fields (and optionally values) as one JSON line.

    python3 qgis_probe.py URL LAYER '["prop", ...]'
"""

import json
import os
import sys

from qgis.core import QgsApplication, QgsFeatureRequest, QgsVectorLayer


def main() -> None:
    url, layer, wanted = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    app = QgsApplication([], False)
    app.initQgis()
    vl = QgsVectorLayer(f"url='{url}' typename='{layer}'", layer, "OAPIF")
    out = {"valid": vl.isValid(),
           "fields": {f.name(): f.typeName() for f in vl.fields()}}
    if wanted and vl.isValid():
        rows = {}
        names = [f.name() for f in vl.fields()]
        for feat in vl.getFeatures(QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)):
            attrs = dict(zip(names, feat.attributes()))
            rows[str(attrs["id"])] = [None if attrs[w] is None or (hasattr(attrs[w], "isNull") and attrs[w].isNull())
                                      else attrs[w] for w in wanted]
        out["values"] = rows
    print(json.dumps(out, ensure_ascii=False, default=str), flush=True)
    # QGIS 3.22 headless crashes in its own teardown (exitQgis / interpreter exit: SIGSEGV);
    # the answer is out, so leave without it
    os._exit(0)


if __name__ == "__main__":
    main()

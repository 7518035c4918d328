"""The map's attribute display (tiles/static/attributes.js), run under node as the browser runs
it: the columns and names the identify list and attribute table show are those of the layer's
served schema (/collections/{id}/schema), codes with their code-list names."""

from __future__ import annotations

import json

import httpx
from test_map_modules import node


def test_columns_and_code_names_from_the_served_schema(county_server):
    doc = httpx.get(f"{county_server.url}/collections/land_use/schema", timeout=30).json()
    cols, shown = node("attributes.js", f"(() => {{ const d = {json.dumps(doc)}; const c = m.columns(d); "
                                        "const p = (k) => c.find((x) => x.key === k).prop; "
                                        "return [c.map((x) => [x.key, x.title]), [m.display(p('dlbm'), '0101'), "
                                        "m.display(p('dlbm'), '9999'), m.display(p('tbmj'), 1234.5678), "
                                        "m.display(p('sjnf'), 2023), m.display(p('bz'), null)]]; })()")
    keys = [k for k, _ in cols]
    assert keys[0] == "bsm" and "id" not in keys and "geometry" not in keys  # declared order, id and geometry apart
    assert "qsdwmc" not in keys  # masked for the public: not in the schema, so never a column
    assert dict(cols)["dlbm"] == "地类编码" and dict(cols)["tbmj"] == "图斑面积"
    assert shown == ["0101 水田", "9999", "1234.57", "2023", ""]  # an unknown code is shown raw, not hidden

"""Every query parameter of every GET operation the OpenAPI document declares, given hostile
values one at a time (a NUL byte, invalid UTF-8, an SQL injection attempt, 5,000 characters,
NaN, a huge and a negative number, the parameter twice): the answer is never a 5xx, never a
traceback, a refusal names a parameter (the first problem found: this one, or a required one
missing), a NUL byte is refused under this parameter's name on every route, and a parameter
given twice is refused (else one of the two values would be ignored). The hand-written lists of
tests/test_security_input.py cover the parameters someone thought of; this covers the ones the
document names, including those added later, as the schemathesis fuzz does at random within its
time budget (tests/test_fuzz.py), but every one of them, deterministically."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

# the hostile-input suite's server: one current feature per layer, every kind of key, rate limits
# far above what these requests need, 1 MiB body limit; the checksum of the catalog and data tables
from test_security_input import checksum, target  # noqa: F401 (target: a pytest fixture)

#: raw (already percent-encoded) hostile values
HOSTILE = {
    "nul": "a%00b",
    "invalid_utf8": "%FF%FE",
    "sqli": quote("'; DROP TABLE data.land_use; --"),
    "long": "x" * 5000,
    "nan": "NaN",
    "huge": "9" * 40,
    "negative": "-1",
    "twice": "",  # the parameter given twice (the second value a harmless one)
}
#: values of path parameters that reach the operation's own parameter checks
PATH_VALUES = {"collectionId": "land_use", "layer": "land_use", "name": "land_use", "tileMatrixSetId": "WebMercatorQuad",
               "tileMatrix": "14", "tileRow": "6700", "tileCol": "13500", "z": "14", "x": "13500", "y": "6700",
               "featureId": "f1", "style": "hillshade", "layers": "land_use", "processId": "site-check",
               "indicator": "cultivated_area", "raster": "dem", "collection": "landsat", "collection_id": "land_use",
               "ext": "json", "format": "png", "i": "5", "j": "5", "indicatorId": "cultivated_area", "itemId": "x",
               "job_id": "00000000-0000-0000-0000-000000000000", "lat": "29.1", "lon": "118.1",
               "process_id": "site-check", "recordId": "land_use", "sessionId": "00000000-0000-0000-0000-000000000000"}


def _operations(client) -> list[tuple[str, list[str]]]:
    """(path with its path parameters filled, its query parameter names) of every GET operation."""
    doc = client.get("/api", headers={"Accept": "application/vnd.oai.openapi+json;version=3.0"}).json()
    out, missing = [], set()
    for path, item in doc["paths"].items():
        op = item.get("get")
        if op is None:
            continue
        params = op.get("parameters", []) + item.get("parameters", [])
        names = re.findall(r"{([^}]+)}", path)
        missing |= {f"{n} ({path})" for n in names if n not in PATH_VALUES}
        if missing:
            continue
        filled = path
        for n in names:
            filled = filled.replace("{" + n + "}", PATH_VALUES[n])
        out.append((filled, sorted({p["name"] for p in params if p.get("in") == "query"})))
    assert not missing, f"no example value for these path parameters (add them to PATH_VALUES): {sorted(missing)}"
    return out


def _json(r) -> dict:
    if not r.headers.get("content-type", "").startswith(("application/json", "application/problem+json")):
        return {}
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def test_every_query_parameter_of_every_get_survives_hostile_values(target):
    srv, tokens, settings, before = target
    headers = {"Authorization": f"Bearer {tokens['admin']}"}  # past the access checks, to the parsing
    with srv.client() as c:
        ops = _operations(c)
    assert len(ops) > 50, len(ops)  # the document lists them: a sweep of nothing passes nothing
    requests = []
    for path, names in ops:
        for name in names:
            for kind, value in HOSTILE.items():
                url = f"{path}?{quote(name)}={value}"
                if kind == "twice":
                    url = f"{path}?{quote(name)}={HOSTILE['sqli']}&{quote(name)}=1"
                requests.append((name, kind, url))
    assert len(requests) > 500, len(requests)

    def check(batch) -> list[str]:
        failures = []
        with srv.client() as c:
            for name, kind, url in batch:
                r = c.get(url, headers=headers)
                where = f"{r.status_code} GET {url[:160]}"
                if r.status_code >= 500:
                    failures.append(f"{where}: {r.text[:200]}")
                elif "Traceback" in r.text:
                    failures.append(f"traceback in {where}")
                elif r.status_code == 400 and _json(r) and not (_json(r).get("parameter") or "").strip():
                    # (it may name another parameter: a required one missing, the first problem found)
                    failures.append(f"{where}: the refusal names no parameter: {r.text[:200]}")
                elif kind == "twice" and not (r.status_code == 400 and _json(r).get("parameter")):
                    failures.append(f"{where}: {name!r} given twice not refused (one value would be ignored)")
                elif kind == "nul" and r.status_code == 400 and _json(r).get("parameter") != name:
                    failures.append(f"{where}: a NUL byte in {name!r} refused under another name: {r.text[:200]}")
        return failures

    with ThreadPoolExecutor(4) as pool:  # four clients at once: the sweep's time, not its coverage
        failures = [f for part in pool.map(check, [requests[i::4] for i in range(4)]) for f in part]
    assert not failures, f"{len(failures)} of {len(requests)}:\n" + "\n".join(failures[:80])
    assert checksum(settings.database_url) == before  # nothing written by any of them


NUL_BODIES = [
    ("/analysis/site-check", {"geometry": {"type": "Polygon", "coordinates": [[[112.9, 28.1], [112.91, 28.1],
                                                                              [112.91, 28.11], [112.9, 28.1]]]},
                              "project_type": "a\u0000b"}, "project_type"),
    ("/analysis/tabulate", {"layer_a": "land_use", "layer_b": "planning_zones", "class_a": "dl\u0000bm"}, "class_a"),
    ("/analysis/conflicts", {"rules": ["ok", "r\u0000"]}, "rules[1]"),
    ("/collections/land_use/items", {"type": "Feature", "properties": {"dlmc": "x\u0000"}, "geometry": None},
     "properties.dlmc"),
]


def test_a_nul_character_in_a_json_body_is_refused_naming_its_field(target):
    """A ``\\u0000`` inside a string of a JSON body (analyses, editing): 400 naming the field, not
    the database driver's refusal naming none; nothing written."""
    srv, tokens, settings, before = target
    with srv.client() as c:
        for path, body, field in NUL_BODIES:
            r = c.post(path, json=body, headers={"Authorization": f"Bearer {tokens['admin']}"})
            assert r.status_code == 400 and r.json().get("parameter") == field, (path, r.status_code, r.text[:300])
    assert checksum(settings.database_url) == before


def test_a_member_named_twice_in_a_json_body_is_refused_naming_it(target):
    """``{"layer_a": "land_use", "layer_a": "x"}``: a parser keeps the last and drops the first;
    refused naming the member (analyses, processes, editing), nothing written."""
    srv, tokens, settings, before = target
    auth = {"Authorization": f"Bearer {tokens['admin']}", "Content-Type": "application/json"}
    bodies = [("/analysis/tabulate", '{"layer_a": "land_use", "layer_b": "planning_zones", "layer_a": "water"}',
               "layer_a"),
              ("/processes/tabulate/execution", '{"inputs": {"layer_a": "land_use", "layer_a": "water"}}', "layer_a"),
              ("/collections/land_use/items", '{"type": "Feature", "properties": {"dlbm": "0101", "dlbm": "0102"}, '
                                              '"geometry": null}', "dlbm")]
    with srv.client() as c:
        for path, text, member in bodies:
            r = c.post(path, content=text.encode(), headers=auth)
            assert r.status_code == 400 and r.json().get("parameter") == member, (path, r.status_code, r.text[:300])
            assert "twice" in r.json()["description"], r.text[:300]
    assert checksum(settings.database_url) == before


def test_a_member_named_twice_in_a_model_body_is_refused_naming_it(target):
    """The bodies FastAPI parses into a model (admin sharing, keys, departments): a member named
    twice (the parser kept the last: a layer set public where "department" was also written) is
    a 400 naming it, and the layer's sharing is unchanged."""
    srv, tokens, settings, before = target
    auth = {"Authorization": f"Bearer {tokens['admin']}", "Content-Type": "application/json"}
    with srv.client() as c:
        r = c.put("/admin/layers/land_use/sharing", content=b'{"sharing": "department", "sharing": "public"}',
                  headers=auth)
        assert r.status_code == 400 and r.json().get("parameter") == "sharing", (r.status_code, r.text[:300])
        assert "twice" in r.json()["description"]
        r = c.post("/admin/keys", content=b'{"name": "k", "role": "viewer", "role": "admin"}', headers=auth)
        assert r.status_code == 400 and r.json().get("parameter") == "role", (r.status_code, r.text[:300])
    assert checksum(settings.database_url) == before

"""Unknown query parameters are refused on every route; property filters on /items; inputs
that used to answer 500 are 4xx naming the parameter (issue 12 item 3, issue 13 item 6).

Everything runs against a real uvicorn over the ingested sample county; the expected counts
are plain SQL on the same database."""

from __future__ import annotations

import base64
import json
import re
import time

import psycopg
from conftest import SAMPLE, LiveServer

BOX = [118.1, 29.05, 118.15, 29.1]
EPSG4527 = "http://www.opengis.net/def/crs/EPSG/0/4527"


def _count(settings, query: str, params=()) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(query, params).fetchone()[0]


def _matched(http, **params) -> int:
    r = http.get("/collections/land_use/items", params={"limit": 1, "numberMatched": "true", **params})
    assert r.status_code == 200, r.text
    return r.json()["numberMatched"]


def _refused(r, parameter: str, status: int = 400) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body.get("parameter") == parameter, body
    assert parameter in body["description"], body
    return body


def _all_routes(app) -> list:
    """Every route of the app, flattening included routers (FastAPI >= 0.16x keeps them nested)."""
    out = []

    def walk(routes):
        for r in routes:
            inner = getattr(r, "original_router", None)
            if inner is not None:
                walk(inner.routes)
            else:
                out.append(r)

    walk(app.routes)
    return out


def _fill(path: str) -> str:
    return re.sub(r"\{([^}:]+)(?::([a-z]+))?\}",
                  lambda m: "1" if (m.group(2) == "int" or m.group(1) in ("z", "x", "y", "row", "col")) else "land_use",
                  path)


# ------------------------------------------------------------------------------------------
# 12.3: one mechanism for every route
# ------------------------------------------------------------------------------------------
def test_every_route_refuses_an_unknown_query_parameter(county_server, county_shared):
    from geobase.api.app import create_app

    app = create_app(county_shared)
    checked = 0
    with county_server.client() as http:
        for route in _all_routes(app):
            methods = (getattr(route, "methods", None) or set()) & {"GET", "POST"}
            for method in sorted(methods):
                if getattr(route, "path", "") == "/docs/oauth2-redirect":
                    continue  # OAuth2 redirects carry the provider's parameters by design
                url = _fill(route.path)
                r = http.request(method, url, params={"nosuchparam": "1"}, json={} if method == "POST" else None)
                assert r.status_code == 400, (method, route.path, r.status_code, r.text[:300])
                if r.headers.get("content-type", "").startswith("application/json"):
                    assert r.json().get("parameter") == "nosuchparam", (method, route.path, r.text[:300])
                checked += 1
    assert checked >= 40  # the whole app, not a handful


def test_property_filters_on_items(county_server, county_shared):
    with county_server.client() as http:
        want = _count(county_shared, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND dlbm = '0101'")
        total = _count(county_shared, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL")
        assert 0 < want < total
        assert _matched(http, dlbm="0101") == want
        # typed: a number property compares as a number, combined with filter= by AND
        year = _count(county_shared, "SELECT min(sjnf) FROM data.land_use WHERE _vto IS NULL AND sjnf IS NOT NULL")
        if year is not None:
            assert _matched(http, sjnf=str(year), dlbm="0101") == _count(
                county_shared, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND sjnf = %s AND dlbm = '0101'",
                (year,))
        assert _matched(http, dlbm="0101", filter="tbmj > 1000") == _count(
            county_shared, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND dlbm = '0101' AND tbmj > 1000")
        # the next link keeps the filter
        page = http.get("/collections/land_use/items", params={"dlbm": "0101", "limit": 5}).json()
        assert all(f["properties"]["dlbm"] == "0101" for f in page["features"])
        nxt = next(link["href"] for link in page["links"] if link["rel"] == "next")
        assert "dlbm=0101" in nxt
        # masked for the public: not queryable, whatever the value
        _refused(http.get("/collections/land_use/items", params={"qsdwmc": "x"}), "qsdwmc")
        _refused(http.get("/collections/land_use/items", params={"tbmj": "big"}), "tbmj")
        _refused(http.get("/collections/land_use/items", params={"dlbm": ["0101", "0103"]}), "dlbm")
        _refused(http.get("/collections/land_use/items", params={"dlbmx": "0101"}), "dlbmx")
        # only /items takes property filters
        _refused(http.get("/collections/land_use", params={"dlbm": "0101"}), "dlbm")
        _refused(http.get("/collections/land_use/items/x", params={"dlbm": "0101"}), "dlbm")
        _refused(http.get("/collections/land_use/changes", params={"from": "0", "dlbm": "0101"}), "dlbm")


def test_ingest_option_sent_as_query_parameter_twice_or_misspelt_writes_nothing(county_db, tmp_path):
    from geobase.keys import create_key

    with psycopg.connect(county_db.database_url) as conn:
        steward = create_key(conn, name="steward", role="steward", department="natural_resources").token
        conn.commit()
    before = _count(county_db, "SELECT count(*) FROM catalog.layer_versions WHERE layer = 'land_use'")
    srv = LiveServer(county_db)
    try:
        with srv.client() as http, open(SAMPLE / "DLTB.zip", "rb") as fh:
            r = http.post("/admin/layers/land_use/ingest", params={"dry_run": "true"},
                          headers={"X-API-Key": steward}, files={"file": ("DLTB.zip", fh)})
            body = _refused(r, "dry_run")
            assert "form" in body["description"]
        # in the form: given twice (the framework read the last: a dry run that commits), or
        # misspelt (ignored: the same) — each refused, naming the field
        for data, field in (({"dry_run": ["true", "false"]}, "dry_run"), ({"mode": ["append", "replace"]}, "mode"),
                            ({"dryrun": "true"}, "dryrun")):
            with srv.client() as http, open(SAMPLE / "DLTB.zip", "rb") as fh:
                r = http.post("/admin/layers/land_use/ingest", data=data, headers={"X-API-Key": steward},
                              files={"file": ("DLTB.zip", fh)})
                body = _refused(r, field)
                assert "form field" in body["description"], body
        time.sleep(1)  # a job that had been started would have written by now (nothing may be)
        assert _count(county_db, "SELECT count(*) FROM catalog.layer_versions WHERE layer = 'land_use'") == before
        assert _count(county_db, "SELECT count(*) FROM catalog.jobs WHERE kind LIKE 'ingest%%'") == 0
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------------
# 12.2: BBOX in CQL2 is the same box as bbox=
# ------------------------------------------------------------------------------------------
def test_cql2_bbox_equals_bbox_parameter_and_postgis(county_server, county_shared):
    env = "ST_MakeEnvelope(%s, %s, %s, %s, 4490)"
    want = _count(county_shared, f"SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND ST_Intersects(geom, {env})",
                  BOX)
    total = _count(county_shared, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL")
    ext = _count(county_shared, "SELECT array[ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)] FROM "
                 "(SELECT ST_Extent(geom)::geometry e FROM data.land_use WHERE _vto IS NULL) x")
    assert 0 < want < total
    j = {"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": BOX}]}
    with county_server.client() as http:
        assert _matched(http, bbox=",".join(map(str, BOX))) == want
        assert _matched(http, filter=json.dumps(j), **{"filter-lang": "cql2-json"}) == want
        assert _matched(http, filter=f"S_INTERSECTS(geometry, BBOX({', '.join(map(str, BOX))}))") == want
        x0, y0, x1, y1 = BOX
        poly = f"POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"
        assert _matched(http, filter=f"S_INTERSECTS(geometry, {poly})") == want
        whole = [ext[0] - 0.01, ext[1] - 0.01, ext[2] + 0.01, ext[3] + 0.01]
        j["args"][1]["bbox"] = whole
        assert _matched(http, filter=json.dumps(j), **{"filter-lang": "cql2-json"}) == total
        # a 6-number box (with heights) and a box with its corners swapped
        assert _matched(http, filter=f"S_INTERSECTS(geometry, BBOX({x0}, {y0}, -10, {x1}, {y1}, 10))") == want
        _refused(http.get("/collections/land_use/items", params={"filter": f"S_INTERSECTS(geometry, BBOX({x1}, {y0}, {x0}, {y1}))"}),
                 "filter")


# ------------------------------------------------------------------------------------------
# 13.6: inputs that answered 500, and their siblings
# ------------------------------------------------------------------------------------------
def _cursor(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def test_inputs_that_gave_500_are_4xx_naming_the_parameter(county_server):
    items = "/collections/land_use/items"
    with county_server.client() as http:
        # bbox in EPSG:4527 given easting first (the CRS is northing, easting)
        _refused(http.get(items, params={"bbox": "39590000,3215000,39600000,3220000", "bbox-crs": EPSG4527}), "bbox")
        # ... and northing first works
        assert http.get(items, params={"bbox": "3215000,39590000,3220000,39600000", "bbox-crs": EPSG4527,
                                       "limit": 1}).status_code == 200
        # siblings: absurd or non-finite numbers in a projected bbox-crs
        _refused(http.get(items, params={"bbox": "0,0,1e300,1e300",
                                         "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/3857"}), "bbox")
        _refused(http.get(items, params={"bbox": "1,2,nan,4"}), "bbox")
        # filter-crs EPSG:4527 with a point outside the zone
        for pt in ("POINT(0 0)", "POINT(3215000 10000000)", "POINT(3215000 39000000000)"):
            _refused(http.get(items, params={"filter": f"S_INTERSECTS(geometry, {pt})", "filter-crs": EPSG4527}),
                     "filter")
        _refused(http.get(items, params={"filter": "S_INTERSECTS(geometry, BBOX(0, 0, 1, 1))", "filter-crs": EPSG4527}),
                 "filter")
        # cql2-json with malformed geometries
        for geom in ({"type": "Point", "coordinates": "x"}, {"type": "Nope", "coordinates": [1, 2]},
                     {"type": "Polygon", "coordinates": [[[118, 29], [118.1, 29]]]},
                     {"type": "LineString", "coordinates": [[118, 29]]}, {"bbox": [1, 2, 3]},
                     {"type": "Point", "coordinates": [1e400, 2]}):
            f = {"op": "s_intersects", "args": [{"property": "geometry"}, geom]}
            _refused(http.get(items, params={"filter": json.dumps(f), "filter-lang": "cql2-json"}), "filter")
        # forged cursors: an object, wrong shapes, values that do not fit the sort columns
        for forged in ({"a": 1}, [None, "n", "x", [{"a": 1}]], [{"v": 1}, "n", "x", []], "just text",
                       [None, "n", "x", [[1, 2]]]):
            _refused(http.get(items, params={"cursor": _cursor(forged)}), "cursor")
        good = http.get(items, params={"limit": 2}).json()
        token = next(link["href"] for link in good["links"] if link["rel"] == "next").split("cursor=")[1].split("&")[0]
        version, direction, sig, values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        _refused(http.get(items, params={"limit": 2, "cursor": _cursor([version, direction, sig, [{"x": 1}]])}), "cursor")
        _refused(http.get(items, params={"limit": 2, "cursor": _cursor([version, direction, sig, [1.5, 2]])}), "cursor")
        # the change feed: empty versions, and its cursor goes through the same check
        _refused(http.get("/collections/land_use/changes", params={"from": ""}), "from")
        _refused(http.get("/collections/land_use/changes", params={"from": "0", "to": ""}), "to")
        _refused(http.get("/collections/land_use/changes", params={"from": "0", "cursor": _cursor({"a": 1})}), "cursor")
        # deep nesting is refused, not a crash of the server
        _refused(http.get(items, params={"filter": "(" * 3000 + "dlbm = '0101'" + ")" * 3000}), "filter")
        _refused(http.get(items, params={"filter": "NOT " * 500 + "dlbm = '0101'"}), "filter")
        assert http.get("/health").status_code == 200


def test_bad_job_input_is_refused_at_submission(county_server, county_shared):
    """Inputs that only the run can check (versions, rules, layers, division codes) are checked
    at submission by the run's own checks (analysis.common.check_inputs): 400, and no job is made."""
    bad = [("change", {"layer": "land_use", "v1": 1, "v2": 99}, "v2"),
           ("change", {"layer": "forest", "v1": 1, "v2": 2}, "layer"),
           ("tabulate", {"aoi": "999999"}, "aoi"),
           ("tabulate", {"layer_a": "land_use", "class_a": "nosuchfield"}, "class_a"),
           ("conflicts", {"rules": ["nope"]}, "rules"),
           ("buffer", {"distance_m": 50, "water_layers": ["rivers", "nope"]}, "water_layers"),
           ("site-check", {"geometry": {"type": "Polygon", "coordinates": [[[118.1, 29.1], [118.11, 29.1],
                                                                           [118.11, 29.11], [118.1, 29.1]]]},
                           "layers": ["nope"]}, "layers"),
           ("steep-farmland", {"threshold_deg": 95}, "threshold_deg")]
    before = _count(county_shared, "SELECT count(*) FROM catalog.jobs")
    with county_server.client() as http:
        for process, inputs, parameter in bad:
            r = http.post(f"/processes/{process}/execution", headers={"Prefer": "respond-async"},
                          json={"inputs": inputs})
            assert r.status_code == 400, (process, r.status_code, r.text)
            assert parameter in r.json()["parameter"], (process, r.json())
        # a good one is still accepted as a job
        r = http.post("/processes/tabulate/execution", headers={"Prefer": "respond-async"},
                      json={"inputs": {"layer_a": "land_use", "layer_b": "planning_zones"}})
        assert r.status_code == 201, r.text
    assert _count(county_shared, "SELECT count(*) FROM catalog.jobs") == before + 1


def test_results_of_a_job_that_refused_its_input_are_that_4xx(county_db):
    """A job can still fail on its input after submission (the data changed in between): its
    results answer the refusal (400 naming the input), not a 500."""
    from geobase.analysis.jobs import owner_of
    from geobase.security import PUBLIC

    token = "t0ken-of-the-anonymous-caller"
    owner = owner_of(PUBLIC, token)  # an anonymous job's owner is the hash of its token
    with psycopg.connect(county_db.database_url, autocommit=True) as conn:
        job = conn.execute(
            "INSERT INTO catalog.jobs (id, kind, status, params, created_by, message, result) VALUES "
            "(gen_random_uuid(), 'analysis:change', 'failed', '{}', %s, 'v2: layer has no version 9', %s) "
            "RETURNING id", (owner, json.dumps({"error": {"status": 400, "code": "InvalidParameterValue",
                                                          "parameter": "v2"}}),)).fetchone()[0]
        other = conn.execute(
            "INSERT INTO catalog.jobs (id, kind, status, params, created_by, message) VALUES "
            "(gen_random_uuid(), 'analysis:change', 'failed', '{}', %s, 'RuntimeError: boom') "
            "RETURNING id", (owner,)).fetchone()[0]
    srv = LiveServer(county_db)
    try:
        with srv.client() as http:
            _refused(http.get(f"/jobs/{job}.{token}/results"), "v2")
            assert http.get(f"/jobs/{other}.{token}/results").status_code == 500  # our failure stays ours
    finally:
        srv.stop()


def test_vary_names_each_header_once(county_server):
    """An answer's Vary lists each request header once, whatever the client accepts (a
    BaseHTTPMiddleware around GZip once made small JSON answers say Accept-Encoding twice)."""
    with county_server.client() as http:
        for url in ("/collections", "/collections/land_use/items?limit=1", "/collections/nosuch", "/api"):
            for enc in ("identity", "gzip"):
                r = http.get(url, headers={"Accept-Encoding": enc})
                tokens = [t.strip().lower() for v in r.headers.get_list("vary") for t in v.split(",") if t.strip()]
                assert len(tokens) == len(set(tokens)), (url, enc, r.headers.get_list("vary"))

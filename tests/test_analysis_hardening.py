"""Issue 13 (items 2, 3, 4, 9, 11, 15 and the flood of its acceptance), tried as an outside
caller would over real HTTP: masked fields through every input that names a field, uploads
of hostile archives on every upload route, anonymous jobs (owner token, bounds, dismissal,
timeouts, re-checked access), hidden layers in listings, malformed geometry input, and a
flood of jobs and uploads that must leave the server alive and within its pool."""

from __future__ import annotations

import io
import shutil
import stat
import threading
import time
import zipfile
from pathlib import Path

import httpx
import psycopg
import pytest

from conftest import REPO, LiveServer, create_database, drop_database, settings_for
from test_security_common import headers_for, make_keys, seed, unique_name

MASKED = ("qsdwmc", "qsdwdm")
MASKED_VALUES = ("qsdwmc-x", "qsdwdm-x")
SITE = {"type": "Polygon", "coordinates": [[[112.899, 28.099], [112.911, 28.099], [112.911, 28.111],
                                            [112.899, 28.111], [112.899, 28.099]]]}
FAST_LIMITS = {"GEOBASE_RATE_LIMIT_PER_S": "10000", "GEOBASE_RATE_LIMIT_BURST": "10000",
               "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000",
               "GEOBASE_KEY_CACHE_S": "1"}


def _layers_masking_departments(tmp: Path) -> Path:
    """The shipped specs with the right-holder fields masked from other departments too
    (hidden_from: [public, internal]): a department without the unmask grant."""
    dest = tmp / "layers"
    shutil.copytree(REPO / "layers", dest, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    lu = dest / "land_use.yaml"
    text = lu.read_text(encoding="utf-8")
    assert text.count("hidden_from: [public]") == 2
    lu.write_text(text.replace("hidden_from: [public]", "hidden_from: [public, internal]"), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def hard(pg_server, template_db, tmp_path_factory):
    """(server, tokens, settings, tmpdir): seeded database, keys, masked fields, private TMPDIR."""
    name = unique_name("gb_hard")
    url = create_database(pg_server, name, template_db)
    tmp = tmp_path_factory.mktemp("hard")
    settings = settings_for(url, tmp, layers_dir=_layers_masking_departments(tmp))
    seed(settings)
    tokens = make_keys(settings)
    server_tmp = tmp / "server-tmp"
    server_tmp.mkdir()
    srv = LiveServer(settings, env={**FAST_LIMITS, "TMPDIR": str(server_tmp), "GEOBASE_JOB_STATEMENT_TIMEOUT_MS": "60000",
                                    "GEOBASE_JOBS_MAX_QUEUED_PER_CALLER": "3"})
    yield srv, tokens, settings, server_tmp
    srv.stop()
    drop_database(pg_server, name)


def _wait_job(c: httpx.Client, url: str, headers=None, until=("successful", "failed", "dismissed"), timeout=90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get(url, headers=headers or {})
        assert r.status_code == 200, r.text
        if r.json()["status"] in until:
            return r.json()
        time.sleep(0.2)
    raise AssertionError(f"job {url} did not reach {until}")


# --- 13.2: masked fields through every input that names one ----------------------------------

def _field_requests(field: str) -> list[tuple[str, str, dict | None]]:
    """(method, path, json) of every endpoint input that names a field of land_use."""
    out = [
        ("GET", f"/collections/land_use/items?properties={field}", None),
        ("GET", f"/collections/land_use/items?sortby={field}", None),
        ("GET", f"/collections/land_use/items?sortby=-{field}", None),
        ("GET", f"/collections/land_use/items?filter={field}%3D%27x%27", None),
        ("GET", f"/collections/land_use/items?download=true&f=csv&properties={field}", None),
    ]
    bodies = {
        "tabulate": [{"layer_a": "land_use", "layer_b": "planning_zones", "class_a": field},
                     {"layer_a": "planning_zones", "layer_b": "land_use", "class_b": field},
                     {"class_a": field, "aoi": "339901"}],
        "change": [{"layer": "land_use", "v1": 1, "v2": 2, "class_field": field}],
        "buffer": [{"layer": "land_use", "distance_m": 50, "filter": {field: ["x"]}}],
    }
    for process, inputs in bodies.items():
        for body in inputs:
            out.append(("POST", f"/analysis/{process}", body))
            out.append(("POST", f"/processes/{process}/execution", {"inputs": body}))
            out.append(("POST-ASYNC", f"/processes/{process}/execution", {"inputs": body}))
    return out


@pytest.mark.parametrize("label", ["public", "planning:analyst", "forestry:viewer"])
def test_masked_fields_are_refused_by_every_input_that_names_a_field(hard, label):
    srv, tokens, _, _ = hard
    headers = headers_for(label, tokens)
    failures = []
    with srv.client() as c:
        for field in MASKED:
            for method, path, body in _field_requests(field):
                if method == "GET":
                    r = c.get(path, headers=headers)
                else:
                    h = {**headers, "Prefer": "respond-async"} if method == "POST-ASYNC" else headers
                    r = c.post(path, json=body, headers=h)
                if r.status_code not in (400, 403) or field not in r.text:
                    failures.append(f"{label} {method} {path} {body}: {r.status_code} {r.text[:200]}")
                for v in MASKED_VALUES:
                    if v in r.text:
                        failures.append(f"{label} {method} {path}: masked value {v} in the body")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("label", ["public", "planning:analyst"])
def test_no_masked_value_in_any_analysis_or_job_result(hard, label):
    srv, tokens, _, _ = hard
    headers = headers_for(label, tokens)
    with srv.client() as c:
        texts = []
        for path, body in [("/analysis/site-check", {"geometry": SITE}),
                           ("/analysis/tabulate", {"layer_a": "land_use", "layer_b": "planning_zones"}),
                           ("/analysis/conflicts", {}),
                           ("/analysis/site-check?f=html", {"geometry": SITE}),
                           ("/analysis/site-check?f=csv", {"geometry": SITE})]:
            r = c.post(path, json=body, headers=headers)
            assert r.status_code == 200, (path, r.text[:300])
            texts.append(r.text)
        r = c.post("/processes/site-check/execution", json={"inputs": {"geometry": SITE}},
                   headers={**headers, "Prefer": "respond-async"})
        assert r.status_code == 201, r.text
        job = _wait_job(c, r.headers["Location"], headers)
        assert job["status"] == "successful", job
        for link in job["links"]:
            texts.append(c.get(link["href"], headers=headers).text)
    for t in texts:
        for v in MASKED_VALUES + MASKED:
            assert v not in t, f"{label}: {v} leaked"


def test_the_owner_department_still_groups_by_its_own_fields(hard):
    srv, tokens, _, _ = hard
    with srv.client() as c:
        r = c.post("/analysis/tabulate", json={"layer_a": "land_use", "layer_b": "planning_zones", "class_a": "qsdwmc"},
                   headers=headers_for("natural_resources:analyst", tokens))
    assert r.status_code == 200, r.text
    assert "qsdwmc-x" in r.text


# --- 13.9: hidden layers are not named in listings ------------------------------------------

def test_rules_and_process_descriptions_do_not_name_hidden_layers(hard):
    srv, tokens, _, _ = hard
    with srv.client() as c:
        for path in ["/analysis/rules", "/processes", *(f"/processes/{p}" for p in
                     ("site-check", "tabulate", "conflicts", "steep-farmland", "change", "buffer"))]:
            r = c.get(path)
            assert r.status_code == 200, (path, r.text[:200])
            for hidden in ("control_lines", "forest\"", "rivers", "water_areas"):
                if path == "/analysis/rules" or hidden == "control_lines":
                    assert hidden not in r.text, f"{path} names hidden layer {hidden}"
        # a department that may see control_lines gets the rules in full
        r = c.get("/analysis/rules", headers=headers_for("planning:viewer", tokens))
        assert "control_lines" in r.text
        # the public's error for a hidden layer says the same as for a layer that does not exist
        a = c.post("/analysis/tabulate", json={"layer_a": "control_lines", "layer_b": "land_use"}).json()
        b = c.post("/analysis/tabulate", json={"layer_a": "no_such", "layer_b": "land_use"}).json()
        assert a["description"].replace("control_lines", "X") == b["description"].replace("no_such", "X")


# --- 13.3: hostile archives on every upload route --------------------------------------------

def _zip(members: dict[str, bytes], *, link: str | None = None, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


HOSTILE = {
    "bomb": (lambda: _zip({"site.geojson": b" " * (300 * 1024 * 1024)}), "zip bomb"),
    "slip": (lambda: _zip({"../../evil.geojson": b"{}"}), "climbs out"),
    "absolute": (lambda: _zip({"/tmp/evil.geojson": b"{}"}), "absolute path"),
    "symlink": (lambda: _zip({"a.geojson": b"{}"}, link="site.geojson"), "link"),
    "nested": (lambda: _zip({"inner.zip": _zip({"x.geojson": b"{}"})}), "itself an archive"),
    "many_members": (lambda: _zip({f"m{i}.txt": b"x" for i in range(25_000)}, compression=zipfile.ZIP_STORED),
                     "members"),
}


def _upload_routes() -> list[str]:
    """Every route of the app that accepts a multipart upload (found from the app, not listed)."""
    from geobase.api.app import create_app
    from geobase.settings import Settings

    app = create_app(Settings(database_url="postgresql://x@127.0.0.1:1/x"))
    out = []
    for path, ops in app.openapi()["paths"].items():
        for op in ops.values():
            if "multipart/form-data" in ((op.get("requestBody") or {}).get("content") or {}):
                out.append(path)
    return sorted(out)


def test_every_upload_route_is_known_here():
    assert _upload_routes() == ["/admin/layers/{layer}/ingest", "/analysis/site-check/upload"]


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("route", ["/analysis/site-check/upload", "/admin/layers/{layer}/ingest"])
def test_hostile_archives_are_refused_on_every_upload_route(hard, case, route):
    srv, tokens, settings, server_tmp = hard
    data, needle = HOSTILE[case][0](), HOSTILE[case][1]
    if case == "many_members" and route.endswith("upload"):
        needle = "members"  # the public limit (100) is reached first
    path = route.replace("{layer}", "land_use")
    headers = headers_for("natural_resources:steward", tokens) if "admin" in path else {}
    if case == "many_members" and "admin" in path:
        pass
    with srv.client() as c:
        r = c.post(path, files={"file": ("site.zip", data, "application/zip")}, headers=headers)
    if len(data) > 5 * 1024 * 1024 and "analysis" in path:
        assert r.status_code == 413, r.text
    else:
        assert r.status_code == 400 and needle in r.text, (case, path, r.status_code, r.text[:300])
    leftovers = [p for p in server_tmp.rglob("*") if p.is_file()]
    assert not leftovers, leftovers
    uploads = settings.data_path / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_the_public_upload_has_a_small_size_limit(hard):
    srv, _, _, _ = hard
    big = b"0" * (6 * 1024 * 1024)
    with srv.client() as c:
        r = c.post("/analysis/site-check/upload", files={"file": ("site.geojson", big, "application/geo+json")})
    assert r.status_code == 413, r.text[:200]


def test_a_good_zip_still_works(hard):
    import json

    srv, _, _, _ = hard
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": SITE}]}
    data = _zip({"site/site.geojson": json.dumps(fc).encode()})
    with srv.client() as c:
        r = c.post("/analysis/site-check/upload", files={"file": ("site.zip", data, "application/zip")})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["analysis"] == "site-check"


# --- 13.15: malformed geometry input ---------------------------------------------------------

@pytest.mark.parametrize("geometry,needle", [
    ({"type": "Polygon", "coordinates": [[[112.9, 28.1], [112.91, 28.1], [112.91, 28.11], [112.9, 28.11]]]},
     "not closed"),
    ({"type": "Polygon", "coordinates": [[["112.9", "28.1"], [112.91, 28.1], [112.91, 28.11], ["112.9", "28.1"]]]},
     "not a number"),
    ({"type": "Polygon", "coordinates": [[[112.9, True], [112.91, 28.1], [112.91, 28.11], [112.9, True]]]},
     "not a number"),
    ({"type": "Polygon", "coordinates": [[[112.9, 28.1], [112.91, 28.1], [112.9, 28.1]]]}, "at least 4"),
    ({"type": "Polygon", "coordinates": "x"}, "must be an array"),
    ({"type": "Nope", "coordinates": []}, "unknown GeoJSON geometry type"),
])
def test_site_check_refuses_malformed_geojson(hard, geometry, needle):
    srv, _, _, _ = hard
    with srv.client() as c:
        bare = [("/analysis/site-check", geometry)] if geometry["type"] == "Polygon" else []
        for path, body in [("/analysis/site-check", {"geometry": geometry}), *bare,
                           ("/processes/site-check/execution", {"inputs": {"geometry": geometry}}),
                           ("/analysis/tabulate", {"geometry": geometry})]:
            r = c.post(path, json=body)
            assert r.status_code == 400 and needle in r.text, (path, r.status_code, r.text[:300])


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
def test_non_utf8_bodies_are_refused(hard, encoding):
    import json

    srv, _, _, _ = hard
    body = json.dumps({"geometry": SITE}).encode(encoding)
    with srv.client() as c:
        for path in ("/analysis/site-check", "/processes/site-check/execution"):
            r = c.post(path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and "UTF-8" in r.text, (path, r.status_code, r.text[:300])


# --- 13.11: anonymous job owners, re-checked access -----------------------------------------

def test_anonymous_jobs_need_their_token_and_results_recheck_access(hard):
    srv, tokens, settings, _ = hard
    with srv.client() as c:
        r = c.post("/processes/site-check/execution", json={"inputs": {"geometry": SITE}},
                   headers={"Prefer": "respond-async"})
        assert r.status_code == 201, r.text
        loc = r.headers["Location"]
        prefix, ext = loc.split("/jobs/")
        uid, token = ext.split(".")
        assert len(token) >= 32 and r.json()["jobID"] == ext
        job = _wait_job(c, loc)
        assert job["status"] == "successful"
        bare = f"{prefix}/jobs/{uid}"
        for suffix in ("", "/results"):  # another anonymous caller who knows only the uuid
            assert c.get(bare + suffix).status_code == 404
            assert c.get(bare + ".wrong" + suffix).status_code == 404
            assert c.get(bare + suffix, headers=headers_for("planning:viewer", tokens)).status_code == 404
            assert c.delete(bare + suffix.replace("/results", "")).status_code == 404
        results = [l["href"] for l in job["links"] if "results" in l["href"]]
        assert results and results[0] == loc + "/results"
        assert c.get(results[0]).status_code == 200
        # an OGC client that builds the URL from the jobID gets there too
        assert c.get(f"/jobs/{job['jobID']}/results").status_code == 200

        # a department's job over an internal layer; then the layer is made private
        h = headers_for("forestry:analyst", tokens)  # control_lines is planning's, shared internally
        r = c.post("/processes/site-check/execution", json={"inputs": {"geometry": SITE}},
                   headers={**h, "Prefer": "respond-async"})
        job = _wait_job(c, r.headers["Location"], h)
        assert job["status"] == "successful", job
        res = r.headers["Location"] + "/results"
        assert c.get(res, headers=h).status_code == 200
        assert "control_lines" in c.get(res, headers=h).text
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute("UPDATE catalog.layers SET sharing = 'private' WHERE name = 'control_lines'")
        try:
            r2 = c.get(res, headers=h)
            assert r2.status_code == 403, r2.text
            assert "control_lines" not in r2.text
            files = [l["href"] for l in job["links"] if l["rel"] == "enclosure"]
            assert files and all(c.get(f, headers=h).status_code == 403 for f in files)
        finally:
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute("UPDATE catalog.layers SET sharing = 'internal' WHERE name = 'control_lines'")


# --- 13.4: bounds, dismissal, timeouts -------------------------------------------------------

class _Lock:
    """Holds an ACCESS EXCLUSIVE lock on data.land_use, so analyses reading it wait."""

    def __init__(self, url: str):
        self.conn = psycopg.connect(url)
        self.conn.execute("LOCK TABLE data.land_use IN ACCESS EXCLUSIVE MODE")

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def _job_backends(url: str, job_id: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (f"geobase-job-{job_id}",)).fetchone()[0]


def test_jobs_are_bounded_per_caller_and_dismissable(hard):
    srv, tokens, settings, _ = hard
    h = headers_for("water_resources:analyst", tokens)
    lock = _Lock(settings.database_url)
    try:
        with srv.client() as c:
            locs = []
            for _ in range(4):  # 1 running + 3 queued for this caller
                r = c.post("/processes/tabulate/execution", json={"inputs": {}}, headers={**h, "Prefer": "respond-async"})
                assert r.status_code == 201, r.text
                locs.append(r.headers["Location"])
            r = c.post("/processes/tabulate/execution", json={"inputs": {}}, headers={**h, "Prefer": "respond-async"})
            assert r.status_code == 429, r.text
            assert int(r.headers["Retry-After"]) >= 1
            running = _wait_job(c, locs[0], h, until=("running",))
            assert [c.get(u, headers=h).json()["status"] for u in locs[1:]] == ["accepted"] * 3
            job_id = running["jobID"]
            deadline = time.monotonic() + 30
            while _job_backends(settings.database_url, job_id) == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _job_backends(settings.database_url, job_id) == 1
            # someone else may not dismiss it; the owner may
            assert c.delete(locs[0], headers=headers_for("planning:analyst", tokens)).status_code == 404
            assert c.delete(locs[0]).status_code == 404
            r = c.delete(locs[0], headers=h)
            assert r.status_code == 200 and r.json()["status"] == "dismissed", r.text
            deadline = time.monotonic() + 30
            while _job_backends(settings.database_url, job_id) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _job_backends(settings.database_url, job_id) == 0, "the job's SQL still runs"
            assert c.get(locs[0], headers=h).json()["status"] == "dismissed"
            # an admin dismisses the rest (queued jobs never start)
            for u in locs[1:]:
                assert c.delete(u, headers=headers_for("admin", tokens)).json()["status"] == "dismissed"
    finally:
        lock.release()
    with srv.client() as c:
        time.sleep(1)
        assert all(c.get(u, headers=h).json()["status"] == "dismissed" for u in locs)


def test_job_statement_timeout_and_the_sync_analysis_timeout(county_db, live_server):
    """A job's query is cancelled at job_statement_timeout_ms; a synchronous analysis runs under
    analysis_statement_timeout_ms, not the ordinary request's statement timeout."""
    url = county_db.database_url
    srv = live_server(county_db, env={**FAST_LIMITS, "GEOBASE_STATEMENT_TIMEOUT_MS": "1000",
                                      "GEOBASE_ANALYSIS_STATEMENT_TIMEOUT_MS": "120000",
                                      "GEOBASE_JOB_STATEMENT_TIMEOUT_MS": "1500"})
    lock = _Lock(url)
    try:
        with srv.client() as c:
            r = c.post("/processes/tabulate/execution", json={"inputs": {}}, headers={"Prefer": "respond-async"})
            assert r.status_code == 201, r.text
            job = _wait_job(c, r.headers["Location"])
            assert job["status"] == "failed" and "statement timeout" in job["message"], job

            def release_later():
                time.sleep(3)  # longer than the ordinary 1 s statement timeout
                lock.release()
            t = threading.Thread(target=release_later)
            t.start()
            r = c.post("/analysis/tabulate", json={"layer_a": "land_use", "layer_b": "planning_zones"})
            t.join()
            assert r.status_code == 200, r.text[:300]
    finally:
        if not lock.conn.closed:
            lock.release()


# --- acceptance: a flood of anonymous jobs and uploads ---------------------------------------

def test_a_flood_of_jobs_and_uploads_leaves_the_server_alive_and_bounded(db_settings, live_server, tmp_path):
    import json

    seed(db_settings)
    server_tmp = tmp_path / "flood-tmp"
    server_tmp.mkdir()
    pool = 6
    srv = live_server(db_settings, env={**FAST_LIMITS, "TMPDIR": str(server_tmp), "GEOBASE_POOL_MAX_SIZE": str(pool),
                                        "GEOBASE_JOBS_MAX_RUNNING": "2", "GEOBASE_JOBS_MAX_QUEUED": "10",
                                        "GEOBASE_ANALYSIS_CONCURRENCY": "2",
                                        "GEOBASE_JOBS_MAX_QUEUED_PER_CALLER": "10"})
    dbname = db_settings.database_url.rsplit("/", 1)[1]
    fc = json.dumps({"type": "FeatureCollection",
                     "features": [{"type": "Feature", "properties": {}, "geometry": SITE}]}).encode()
    uploads = [_zip({"site.geojson": fc}), HOSTILE["bomb"][0](), HOSTILE["nested"][0]()]
    statuses: list[int] = []
    conns: list[int] = []
    # (answer of /health, whether flood requests were still in flight when it was asked)
    health: list[tuple[int | str, bool]] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def watch():
        with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
            while not stop.is_set():
                n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                 "AND application_name LIKE 'geobase-%%' AND application_name <> 'geobase-audit'",
                                 (dbname,)).fetchone()[0]
                conns.append(n)
                in_flight = any(t.is_alive() for t in threads)
                try:  # the timeout only keeps a hung server from hanging the test: no bound on speed
                    answer: int | str = httpx.get(f"{srv.url}/health", timeout=120).status_code
                except httpx.HTTPError as exc:
                    answer = type(exc).__name__
                health.append((answer, in_flight))
                time.sleep(0.2)

    def job(i):
        with httpx.Client(base_url=srv.url, timeout=300) as c:
            process, inputs = [("site-check", {"geometry": SITE}), ("tabulate", {}), ("conflicts", {})][i % 3]
            r = c.post(f"/processes/{process}/execution", json={"inputs": inputs}, headers={"Prefer": "respond-async"})
            statuses.append(r.status_code)

    def upload(i):
        with httpx.Client(base_url=srv.url, timeout=300) as c:
            data = uploads[i % len(uploads)]
            r = c.post("/analysis/site-check/upload", files={"file": ("site.zip", data, "application/zip")})
            statuses.append(r.status_code)

    threads += [threading.Thread(target=job, args=(i,)) for i in range(50)]
    threads += [threading.Thread(target=upload, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in threads:
        t.join(400)
    time.sleep(1)
    stop.set()
    watcher.join()
    assert len(statuses) == 100
    assert not [s for s in statuses if s >= 500 and s != 503], statuses
    assert statuses.count(201) >= 2  # some jobs were admitted, the rest refused with 429/503
    assert set(statuses) <= {200, 201, 400, 413, 429, 503}, sorted(set(statuses))
    # liveness, by behaviour rather than by the clock (a shared machine makes any time bound
    # flaky): /health answered 200 every time it was asked, also while the flood was in flight,
    # and the server still serves afterwards
    assert health and all(answer == 200 for answer, _ in health), health
    assert any(in_flight for _, in_flight in health), "no /health probe was made during the flood"
    assert httpx.get(f"{srv.url}/health", timeout=120).status_code == 200
    assert httpx.get(f"{srv.url}/processes", timeout=120).status_code == 200
    print(f"flood: /health 200 on {len(health)} probes ({sum(f for _, f in health)} during the flood); "
          f"app connections max {max(conns)}")
    assert max(conns) <= pool, f"{max(conns)} app connections > pool {pool}"
    leftovers = [p for p in server_tmp.rglob("*") if p.is_file()]
    assert not leftovers, leftovers[:5]

"""Hostile and malformed input through every parameter: SQL injection attempts, NaN/Infinity,
enormous numbers, deep JSON, invalid UTF-8, oversized bodies, path traversal. Each gets a 4xx
(never a 5xx, never a 2xx), and the database is unchanged (checksum of catalog and data tables)."""

from __future__ import annotations

import json

import psycopg
import pytest

from conftest import LiveServer, create_database, drop_database, settings_for
from test_security_common import make_keys, seed, unique_name

SQLI = "'; DROP TABLE data.land_use; --"


@pytest.fixture(scope="module")
def target(pg_server, template_db, tmp_path_factory):
    name = unique_name("gb_inp")
    url = create_database(pg_server, name, template_db)
    settings = settings_for(url, tmp_path_factory.mktemp("inp"))
    seed(settings)
    tokens = make_keys(settings)
    srv = LiveServer(settings, env={"GEOBASE_RATE_LIMIT_PER_S": "10000", "GEOBASE_RATE_LIMIT_BURST": "10000",
                                    "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000",
                                    "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000",
                                    "GEOBASE_MAX_BODY_BYTES": str(1024 * 1024)})
    before = checksum(settings.database_url)
    yield srv, tokens, settings, before
    srv.stop()
    drop_database(pg_server, name)


def checksum(url: str) -> dict[str, str]:
    """md5 of every row of every catalog and data table (the audit log and jobs excluded: they
    are supposed to grow)."""
    out = {}
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ('catalog', 'data') "
            "AND tablename NOT IN ('audit_log', 'jobs') ORDER BY 1, 2").fetchall()
        for schema, table in tables:
            q = psycopg.sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                                "FROM {} t").format(psycopg.sql.Identifier(schema, table))
            out[f"{schema}.{table}"] = conn.execute(q).fetchone()[0]
    return out


BAD_GETS = [
    # collection ids
    f"/collections/{SQLI}/items",
    "/collections/land_use%27%20OR%20%271%27=%271/items",
    "/collections/..%2F..%2Fetc%2Fpasswd/items",
    "/collections/%00/items",
    "/collections/" + "x" * 5000 + "/items",
    f"/collections/{SQLI}",
    f"/collections/{SQLI}/queryables",
    f"/collections/{SQLI}/tiles",
    # filter (CQL2 text)
    f"/collections/land_use/items?filter=dlbm = 'a'{SQLI}",
    "/collections/land_use/items?filter=dlbm = 'a' OR pg_sleep(5) = 1",
    "/collections/land_use/items?filter=1=1) OR (1=1",
    "/collections/land_use/items?filter=nosuchcolumn = 1",
    "/collections/land_use/items?filter=" + "(" * 2000 + "dlbm = 'a'",
    "/collections/land_use/items?filter-lang=sql&filter=1=1",
    # sortby / properties
    f"/collections/land_use/items?sortby=dlbm;{SQLI}",
    "/collections/land_use/items?sortby=-nosuchcolumn",
    f"/collections/land_use/items?properties=dlbm,{SQLI}",
    "/collections/land_use/items?properties=geom_3857\"",
    # bbox
    "/collections/land_use/items?bbox=nan,nan,nan,nan",
    "/collections/land_use/items?bbox=Infinity,0,1,1",
    "/collections/land_use/items?bbox=-Infinity,-Infinity,Infinity,Infinity",
    "/collections/land_use/items?bbox=1e309,0,1,1",
    "/collections/land_use/items?bbox=1,2,3",
    "/collections/land_use/items?bbox=a,b,c,d",
    f"/collections/land_use/items?bbox=1,2,3,4{SQLI}",
    "/collections/land_use/items?bbox=3,2,1",
    # crs
    f"/collections/land_use/items?crs=EPSG:4326{SQLI}",
    "/collections/land_use/items?crs=http://www.opengis.net/def/crs/EPSG/0/99999999",
    "/collections/land_use/items?bbox-crs=../../etc/passwd&bbox=1,2,3,4",
    # datetime
    "/collections/land_use/items?datetime=2024-13-45",
    f"/collections/land_use/items?datetime={SQLI}",
    "/collections/land_use/items?datetime=99999-01-01T00:00:00Z",
    # limit and paging
    "/collections/land_use/items?limit=-1",
    "/collections/land_use/items?limit=99999999999999999999999",
    "/collections/land_use/items?limit=NaN",
    # feature ids
    "/collections/land_use/items/" + "%27%20OR%201=1--",
    "/collections/land_use/items/..%2F..%2Fetc%2Fpasswd",
    # tiles
    "/collections/land_use/tiles/WebMercatorQuad/99/0/0",
    "/collections/land_use/tiles/WebMercatorQuad/-1/0/0",
    "/collections/land_use/tiles/WebMercatorQuad/3/99999999/0",
    "/collections/land_use/tiles/WebMercatorQuad/3/0/99999999999999999999999",
    f"/collections/land_use/tiles/{SQLI}/3/0/0",
    "/collections/land_use/tiles/..%2F..%2Fetc/3/0/0",
    "/map/tiles/WebMercatorQuad/0/5/5",
    f"/tiles/land_use,{SQLI}/3/0/0.mvt",
    "/tiles/land_use/99/0/0.mvt",
    "/tiles/dem/..%2F..%2F..%2Fetc%2Fpasswd/3/0/0.png",
    "/tiles/dem/hillshade/99/0/0.png",
    f"/tileMatrixSets/{SQLI}",
    # jobs and files
    "/jobs/..%2F..%2Fetc%2Fpasswd",
    f"/jobs/{SQLI}",
    "/jobs/00000000-0000-0000-0000-000000000000/files/..%2F..%2F..%2Fetc%2Fpasswd",
    # admin (as a non-admin: refused before anything)
    f"/admin/audit?since={SQLI}",
]


@pytest.mark.parametrize("who", ["public", "admin"])
def test_bad_query_and_path_parameters_get_4xx(target, who):
    srv, tokens, _, _ = target
    headers = {} if who == "public" else {"Authorization": f"Bearer {tokens['admin']}"}
    failures = []
    with srv.client() as c:
        for path in BAD_GETS:
            r = c.get(path, headers=headers)
            if not 400 <= r.status_code < 500:
                failures.append(f"{r.status_code} GET {path[:150]}: {r.text[:200]}")
            elif "root:" in r.text or "Traceback" in r.text:
                failures.append(f"leak in GET {path[:150]}")
    assert not failures, "\n".join(failures)


POLY = [[[112.9, 28.1], [112.91, 28.1], [112.91, 28.11], [112.9, 28.1]]]


def _deep(n: int) -> str:
    return "[" * n + "]" * n


BAD_BODIES = [
    ("/analysis/site-check", b'{"geometry": {"type": "Polygon", "coordinates": [[[NaN, 28.1], [112.91, 28.1], '
                             b'[112.91, 28.11], [NaN, 28.1]]]}}'),
    ("/analysis/site-check", b'{"geometry": {"type": "Polygon", "coordinates": [[[Infinity, 28.1], [112.91, 28.1], '
                             b'[112.91, 28.11], [Infinity, 28.1]]]}}'),
    ("/analysis/site-check", json.dumps({"geometry": {"type": "Polygon", "coordinates": [[[1e308, 28.1], [112.91, 1e308],
                                                                                        [112.91, 28.11], [1e308, 28.1]]]}}).encode()),
    ("/analysis/site-check", b'{"geometry": {"type": "Polygon", "coordinates": [[[1e400, 2], [3, 4], [5, 6], [1e400, 2]]]}}'),
    ("/analysis/site-check", ('{"geometry": {"type": "Polygon", "coordinates": ' + _deep(5000) + "}}").encode()),
    ("/analysis/site-check", ('{"geometry": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}").encode()),
    ("/analysis/site-check", b'{"geometry": {"type": "Polygon", "coordinates": [[[112.9, 28.1]]]}, "x": "\xff\xfe\xfa"}'),
    ("/analysis/site-check", b"\xff\xfe\x00\x00garbage"),
    ("/analysis/site-check", b"not json at all"),
    ("/analysis/site-check", json.dumps({"geometry": {"type": "Polygon", "coordinates": POLY},
                                         "project_type": SQLI}).encode()),
    ("/analysis/site-check", json.dumps({"geometry": {"type": "Polygon", "coordinates": POLY},
                                         "layers": [SQLI]}).encode()),
    ("/analysis/site-check", json.dumps({"geometry": {"type": "Polygon", "coordinates": POLY},
                                         "crs": f"EPSG:4326{SQLI}"}).encode()),
    ("/analysis/site-check", json.dumps({"geometry": {"type": f"Polygon{SQLI}", "coordinates": POLY}}).encode()),
    ("/analysis/tabulate", json.dumps({"layer_a": SQLI, "layer_b": "planning_zones"}).encode()),
    ("/analysis/tabulate", json.dumps({"layer_a": "land_use", "layer_b": "planning_zones",
                                       "class_a": f"dlbm{SQLI}"}).encode()),
    ("/analysis/buffer", json.dumps({"layer": "land_use", "distance_m": float("1e308")}).encode()),
    ("/analysis/buffer", json.dumps({"layer": "land_use", "distance_m": -5}).encode()),
    ("/analysis/conflicts", json.dumps({"rules": [SQLI]}).encode()),
    ("/analysis/change", json.dumps({"layer": "land_use", "v1": 1, "v2": 99999999999999999999}).encode()),
    ("/processes/site-check/execution", b'{"inputs": ' + _deep(3000).encode() + b"}"),
    (f"/processes/{SQLI}/execution", b"{}"),
    ("/admin/keys", json.dumps({"name": SQLI, "role": "viewer", "department": "forestry"}).encode()),
]


@pytest.mark.parametrize("who", ["public", "forestry:analyst"])
def test_bad_json_bodies_get_4xx(target, who):
    srv, tokens, _, _ = target
    headers = {"content-type": "application/json"}
    if who != "public":
        headers["Authorization"] = f"Bearer {tokens[who]}"
    failures = []
    with srv.client() as c:
        for path, body in BAD_BODIES:
            r = c.post(path, content=body, headers=headers)
            if not 400 <= r.status_code < 500:
                failures.append(f"{r.status_code} POST {path} {body[:80]!r}: {r.text[:200]}")
    assert not failures, "\n".join(failures)


def test_oversized_bodies_get_413_without_reading_them(target):
    srv, tokens, _, _ = target
    big = b'{"geometry": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    with srv.client() as c:
        r = c.post("/analysis/site-check", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json()["code"] == "PayloadTooLarge"

        def chunks():  # no Content-Length: counted while streaming
            for _ in range(40):
                yield b"x" * 65536

        r = c.post("/analysis/site-check", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text


def test_upload_names_and_contents_are_refused(target):
    srv, tokens, _, _ = target
    h = {"Authorization": f"Bearer {tokens['forestry:analyst']}"}
    cases = [("../../../etc/passwd", b"root:x:0:0", "application/octet-stream"),
             ("..\\..\\boot.ini", b"[boot]", "application/octet-stream"),
             ("site.geojson", b'{"type": "Polygon", "coordinates": [[[NaN, 1], [2, 3], [4, 5], [NaN, 1]]]}',
              "application/geo+json"),
             ("site.zip", b"PK\x03\x04 this is not a zip", "application/zip"),
             (f"a{SQLI}.geojson", b"{}", "application/geo+json"),
             ("\x00.geojson", b"{}", "application/geo+json")]
    failures = []
    with srv.client() as c:
        for name, content, ctype in cases:
            r = c.post("/analysis/site-check/upload", headers=h, files={"file": (name, content, ctype)})
            if r.status_code in (404, 405):
                pytest.fail("the site-check upload endpoint is gone (404/405)")
            if not 400 <= r.status_code < 500:
                failures.append(f"{r.status_code} upload {name!r}: {r.text[:200]}")
    assert not failures, "\n".join(failures)


def test_database_unchanged_and_server_healthy_after_the_attacks(target):
    srv, _, settings, before = target
    # runs last in this module (pytest keeps file order)
    after = checksum(settings.database_url)
    assert after == before, {k: (before.get(k), after.get(k)) for k in after if before.get(k) != after.get(k)}
    with srv.client() as c:
        assert c.get("/health").status_code == 200
        assert c.get("/collections/land_use/items?limit=1").status_code == 200

"""Access control end to end: keys of every role and department and the public, over every
endpoint family that exists, see exactly what the sharing rules allow; admin API and CLI;
the append-only audit log; keys' lifecycle (revocation, expiry) over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psycopg
import pytest

from conftest import LiveServer, REPO, create_database, drop_database, settings_for, tile_xy
from test_security_common import (EXPECTED_VISIBLE, FEATURE_KEY, MASKED_FROM_PUBLIC, SHARING, expected_for,
                                  headers_for, make_keys, seed, unique_name)

LABELS = ["public", "admin"] + [f"{d}:{r}" for d in ("natural_resources", "water_resources", "forestry", "planning")
                                for r in ("viewer", "analyst", "steward")]


@pytest.fixture(scope="module")
def sec(pg_server, template_db, tmp_path_factory):
    """(server, tokens, settings): a seeded database with changed sharing and keys of all kinds."""
    name = unique_name("gb_sec")
    url = create_database(pg_server, name, template_db)
    settings = settings_for(url, tmp_path_factory.mktemp("sec"))
    seed(settings)
    tokens = make_keys(settings)
    srv = LiveServer(settings, env={"GEOBASE_RATE_LIMIT_PER_S": "10000", "GEOBASE_RATE_LIMIT_BURST": "10000",
                                    "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000",
                                    "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000", "GEOBASE_KEY_CACHE_S": "1"})
    yield srv, tokens, settings
    srv.stop()
    drop_database(pg_server, name)


def _get(srv, path, label, tokens, **kw):
    with srv.client() as c:
        return c.get(path, headers=headers_for(label, tokens), **kw)


# --- the catalog --------------------------------------------------------------------------------

@pytest.mark.parametrize("label", LABELS)
def test_layer_listing_shows_exactly_the_visible_layers(sec, label):
    srv, tokens, _ = sec
    r = _get(srv, "/layers", label, tokens)
    assert r.status_code == 200, r.text
    assert {l["name"] for l in r.json()["layers"]} == expected_for(label)


# --- every per-layer endpoint family that exists -------------------------------------------------
# (path template, family). A family whose endpoint does not exist yet (admin gets 404/405 on a
# public layer) is skipped; add rows here as routers land.
LAYER_ENDPOINTS = [
    ("/collections/{layer}", "catalog"),
    ("/collections/{layer}/queryables", "catalog"),
    ("/collections/{layer}/items?limit=5", "items"),
    ("/collections/{layer}/items/" + FEATURE_KEY, "items"),
    ("/collections/{layer}/tiles", "tiles"),
    ("/collections/{layer}/tiles/WebMercatorQuad/12/3332/1700", "tiles"),
    ("/collections/{layer}/items?download=true&f=geojson", "downloads"),
    ("/collections/{layer}/items?download=true&f=csv", "downloads"),
    ("/collections/{layer}/changes?from=0", "items"),
    ("/tiles/{layer}.json", "tiles"),
]

# Endpoints about all layers: they must not mention a layer the caller may not see.
GLOBAL_ENDPOINTS = ["/collections", "/layers", "/map/style.json", "/styles/onemap.json", "/legend",
                    "/map/config", "/map/tiles", "/map/tiles/WebMercatorQuad", "/tiles/onemap.json", "/map"]


@pytest.mark.parametrize("label", ["public", "forestry:viewer", "planning:analyst", "natural_resources:steward"])
def test_global_documents_never_mention_hidden_layers(sec, label):
    srv, tokens, _ = sec
    hidden = set(SHARING) - expected_for(label)
    failures, checked = [], 0
    for path in GLOBAL_ENDPOINTS:
        r = _get(srv, path, label, tokens)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        checked += 1
        for layer in hidden:
            for pattern in (f'"{layer}"', f"/{layer}/", f"'{layer}'", f"/collections/{layer}"):
                if pattern in r.text:
                    failures.append(f"{label} {path}: mentions hidden layer {layer} ({pattern})")
                    break
    assert checked, "no global endpoint present"
    assert not failures, "\n".join(failures)
VECTOR = {"admin_divisions", "control_lines", "forest", "land_use", "planning_zones", "rivers", "water_areas"}


def _exists(srv, tokens, template) -> bool:
    r = _get(srv, template.format(layer="land_use"), "admin", tokens)
    return r.status_code not in (404, 405)


@pytest.mark.parametrize("template,family", LAYER_ENDPOINTS)
def test_each_principal_sees_exactly_the_shared_layers(sec, template, family):
    srv, tokens, _ = sec
    assert _exists(srv, tokens, template), f"{family} endpoint {template} is missing"
    failures = []
    # every sharing outcome: none, all, owner-only (private), restricted-to-us, internal-only
    for label in ("public", "admin", "water_resources:analyst", "forestry:viewer", "planning:steward"):
        for layer in sorted(VECTOR):
            r = _get(srv, template.format(layer=layer), label, tokens)
            visible = layer in expected_for(label)
            if visible and r.status_code >= 400:
                failures.append(f"{label} {layer}: {r.status_code} but should see it: {r.text[:200]}")
            if not visible and r.status_code != 404:
                failures.append(f"{label} {layer}: {r.status_code}, expected 404 (hidden)")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("label,masked", [("public", True), ("planning:viewer", False),
                                          ("natural_resources:viewer", False), ("admin", False)])
def test_masked_attributes_absent_for_the_public_everywhere(sec, label, masked):
    srv, tokens, _ = sec
    checked = 0
    for path in ("/collections/land_use/items?limit=5", f"/collections/land_use/items/{FEATURE_KEY}",
                 "/collections/land_use/queryables"):
        r = _get(srv, path, label, tokens)
        if r.status_code in (404, 405):
            continue
        assert r.status_code == 200, r.text
        checked += 1
        text = r.text
        for attr in MASKED_FROM_PUBLIC["land_use"]:
            # the attribute name must not appear, nor its value
            assert (attr in text) is not masked, f"{path} as {label}: {attr} masked={masked}"
            if masked:
                assert f"{attr}-x" not in text
        if "/items" in path:  # feature values too
            assert ("qsdwmc-x" in text) is not masked
    if checked == 0:
        pytest.fail("no land_use feature endpoint answered: the masking check exercised nothing")


# --- keys ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer gb_000000000000_notarealkeynotarealkeynotarealkey"},
    {"X-API-Key": "gb_000000000000_notarealkeynotarealkeynotarealkey"},
    {"Authorization": "Bearer garbage"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
    {"X-API-Key": "' OR 1=1 --"},
])
def test_invalid_keys_get_401_not_public(sec, headers):
    srv, _, _ = sec
    with srv.client() as c:
        for path in ("/layers", "/health", "/collections"):
            r = c.get(path, headers=headers)
            assert r.status_code == 401, (path, r.status_code, r.text)
            assert r.json()["code"] == "Unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")


def test_wrong_secret_for_a_real_key_id_is_401(sec):
    srv, tokens, _ = sec
    key_id = tokens["admin"].split("_")[1]
    with srv.client() as c:
        r = c.get("/layers", headers={"X-API-Key": f"gb_{key_id}_{'A' * 43}"})
    assert r.status_code == 401


def test_x_api_key_header_works_like_bearer(sec):
    srv, tokens, _ = sec
    with srv.client() as c:
        r = c.get("/layers", headers={"X-API-Key": tokens["water_resources:viewer"]})
    assert r.status_code == 200
    assert {l["name"] for l in r.json()["layers"]} == EXPECTED_VISIBLE["water_resources"]


def test_revocation_takes_effect_within_the_cache_bound(sec):
    srv, tokens, settings = sec
    from geobase import keys

    with psycopg.connect(settings.database_url) as conn:
        k = keys.create_key(conn, name="short-lived", role="viewer", department="forestry")
        conn.commit()
    h = {"Authorization": f"Bearer {k.token}"}
    with srv.client() as c:
        assert c.get("/layers", headers=h).status_code == 200
        with psycopg.connect(settings.database_url) as conn:
            keys.revoke_key(conn, k.id)
            conn.commit()
        deadline = time.monotonic() + 5  # GEOBASE_KEY_CACHE_S=1 on this server
        while time.monotonic() < deadline and c.get("/layers", headers=h).status_code == 200:
            time.sleep(0.2)
        assert c.get("/layers", headers=h).status_code == 401


def test_expired_key_is_401(sec):
    srv, _, settings = sec
    from geobase import keys

    with psycopg.connect(settings.database_url) as conn:
        k = keys.create_key(conn, name="expired", role="viewer", department="forestry", expires_days=1)
        conn.execute("UPDATE catalog.api_keys SET expires_at = now() - interval '1 second' WHERE id = %s", (k.id,))
        conn.commit()
    with srv.client() as c:
        assert c.get("/layers", headers={"X-API-Key": k.token}).status_code == 401


def test_keys_are_stored_hashed(sec):
    _, tokens, settings = sec
    with psycopg.connect(settings.database_url) as conn:
        dump = json.dumps(conn.execute("SELECT row_to_json(k) FROM catalog.api_keys k").fetchall())
    for token in tokens.values():
        secret = token.split("_", 2)[2]
        assert secret not in dump


# --- the admin API ------------------------------------------------------------------------------

ADMIN_ENDPOINTS = [("GET", "/admin/departments"), ("GET", "/admin/keys"), ("GET", "/admin/audit"),
                   ("POST", "/admin/keys"), ("PUT", "/admin/layers/forest/sharing"),
                   ("DELETE", "/admin/keys/0123456789ab"), ("POST", "/admin/departments")]


@pytest.mark.parametrize("method,path", ADMIN_ENDPOINTS)
@pytest.mark.parametrize("label,status", [("public", 401), ("forestry:steward", 403), ("planning:viewer", 403)])
def test_admin_endpoints_refuse_non_admins(sec, method, path, label, status):
    srv, tokens, _ = sec
    with srv.client() as c:
        r = c.request(method, path, headers=headers_for(label, tokens),
                      json={"name": "x", "role": "viewer", "department": "forestry"} if method == "POST" else None)
    assert r.status_code == status, r.text


def test_admin_creates_a_key_which_then_works_and_is_listed_and_revoked(sec):
    srv, tokens, _ = sec
    h = headers_for("admin", tokens)
    with srv.client() as c:
        r = c.post("/admin/keys", headers=h, json={"name": "gis-analyst", "role": "analyst",
                                                   "department": "planning", "expires_days": 30})
        assert r.status_code == 201, r.text
        new = r.json()
        assert new["key"].startswith(f"gb_{new['id']}_")
        r = c.get("/layers", headers={"Authorization": f"Bearer {new['key']}"})
        assert {l["name"] for l in r.json()["layers"]} == EXPECTED_VISIBLE["planning"]
        listed = c.get("/admin/keys", headers=h).json()["keys"]
        assert new["id"] in {k["id"] for k in listed}
        assert "key" not in json.dumps(listed).replace('"key_', "")  # no secrets in listings
        assert new["key"].split("_", 2)[2] not in json.dumps(listed)
        assert c.delete(f"/admin/keys/{new['id']}", headers=h).status_code == 200
        assert c.delete("/admin/keys/0123456789ab", headers=h).status_code == 404
        bad = c.post("/admin/keys", headers=h, json={"name": "x", "role": "viewer"})
        assert bad.status_code == 400 and "department" in bad.text
        bad = c.post("/admin/keys", headers=h, json={"name": "x", "role": "emperor", "department": "forestry"})
        assert bad.status_code == 400


def test_admin_changes_sharing_and_visibility_follows(sec, pg_server):
    srv, tokens, settings = sec
    h = headers_for("admin", tokens)
    with srv.client() as c:
        try:
            r = c.put("/admin/layers/forest/sharing", headers=h,
                      json={"sharing": "restricted", "shared_with": ["planning"]})
            assert r.status_code == 200, r.text
            names = lambda label: {l["name"] for l in c.get("/layers", headers=headers_for(label, tokens)).json()["layers"]}
            assert "forest" in names("planning:viewer")
            assert "forest" in names("forestry:viewer")  # the owner
            assert "forest" not in names("water_resources:viewer")
            assert "forest" not in names("public")
            r = c.put("/admin/layers/forest/sharing", headers=h, json={"sharing": "restricted", "shared_with": []})
            assert r.status_code == 400
            r = c.put("/admin/layers/forest/sharing", headers=h,
                      json={"sharing": "restricted", "shared_with": ["nobody"]})
            assert r.status_code == 400
            assert c.put("/admin/layers/nolayer/sharing", headers=h, json={"sharing": "public"}).status_code == 404
        finally:
            c.put("/admin/layers/forest/sharing", headers=h, json={"sharing": "internal"})
        # a catalog sync keeps the admin's change
        r = c.put("/admin/layers/forest/sharing", headers=h, json={"sharing": "private"})
        from geobase.catalog import sync_catalog

        with psycopg.connect(settings.database_url) as conn:
            sync_catalog(conn, settings)
            conn.commit()
            assert conn.execute("SELECT sharing FROM catalog.layers WHERE name='forest'").fetchone()[0] == "private"
        c.put("/admin/layers/forest/sharing", headers=h, json={"sharing": "internal"})


# --- audit --------------------------------------------------------------------------------------

def _audit_rows(settings, **where):
    from geobase import audit

    with psycopg.connect(settings.database_url) as conn:
        return audit.query(conn, **where)


def _db_now(settings):
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def test_reads_of_non_public_data_and_writes_are_audited_with_who_and_where(sec):
    srv, tokens, settings = sec
    key_id = tokens["forestry:viewer"].split("_")[1]
    start = _db_now(settings)  # rows are told apart by time (unknown query parameters are refused)
    with srv.client() as c:
        r = c.get("/layers", headers={**headers_for("forestry:viewer", tokens), "X-Forwarded-For": "203.0.113.7"})
        assert r.status_code == 200
        c.get("/layers")  # public read of public data: not audited
    rows = []
    for _ in range(50):
        rows = [r for r in _audit_rows(settings, who=key_id, since=start) if r["path"] == "/layers"]
        if rows:
            break
        time.sleep(0.1)
    assert rows, "the keyed read of internal layers was not audited"
    row = rows[0]
    assert row["department"] == "forestry" and row["role"] == "viewer" and row["status"] == 200
    assert "forest" in row["layers"] and "water_areas" in row["layers"]
    # no proxy is trusted by default: the peer is the client, the header is kept only as a claim
    assert row["client_ip"] == "127.0.0.1" and row["params"]["forwarded_for_ignored"] == "203.0.113.7"
    assert not [r for r in _audit_rows(settings, limit=1000, since=start)
                if r["path"] == "/layers" and r["key_id"] is None]
    # writes are audited with their action
    h = headers_for("admin", tokens)
    with srv.client() as c:
        c.put("/admin/layers/control_lines/sharing", headers=h, json={"sharing": "internal"})
    for _ in range(50):
        rows = _audit_rows(settings, layer="control_lines", action="layer.share")
        if rows:
            break
        time.sleep(0.1)
    assert rows and rows[0]["params"]["sharing"] == "internal"
    # the admin can read the audit log over HTTP
    with srv.client() as c:
        r = c.get("/admin/audit", headers=h, params={"who": key_id})
        assert r.status_code == 200 and r.json()["entries"]
        assert c.get("/admin/audit", headers=h, params={"since": "not-a-date"}).status_code == 400


def test_audit_log_is_append_only_even_for_the_owner(sec):
    _, _, settings = sec
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO catalog.audit_log (principal, action) VALUES ('test', 'probe')")
        for stmt in ("UPDATE catalog.audit_log SET principal = 'forged'", "DELETE FROM catalog.audit_log",
                     "TRUNCATE catalog.audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
        assert conn.execute("SELECT count(*) FROM catalog.audit_log WHERE principal='forged'").fetchone()[0] == 0


def test_app_role_may_insert_and_select_audit_but_not_update_or_delete(sec):
    _, _, settings = sec
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET ROLE geobase_app")
        conn.execute("INSERT INTO catalog.audit_log (principal, action) VALUES ('app', 'probe')")
        assert conn.execute("SELECT count(*) FROM catalog.audit_log WHERE principal='app'").fetchone()[0] >= 1
        assert conn.execute("SELECT count(*) FROM data.land_use").fetchone()[0] == 1  # it can do its job
        for stmt in ("UPDATE catalog.audit_log SET principal = 'forged'", "DELETE FROM catalog.audit_log",
                     "TRUNCATE catalog.audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
            # even with the maintenance switch, the app role lacks the privilege
        conn.execute("SET geobase.audit_maintenance = 'on'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM catalog.audit_log")


# --- the CLI ------------------------------------------------------------------------------------

def _cli(settings, *args):
    env = dict(os.environ, GEOBASE_DATABASE_URL=settings.database_url, GEOBASE_DATA_DIR=str(settings.data_dir))
    return subprocess.run([sys.executable, "-m", "geobase.cli", *args], env=env, capture_output=True, text=True,
                          cwd=str(REPO), timeout=60)


def test_cli_departments_keys_share_and_audit(sec):
    srv, _, settings = sec
    r = _cli(settings, "departments", "add", "agriculture", "--zh", "农业农村局", "--en", "Agriculture Bureau")
    assert r.returncode == 0, r.stderr
    r = _cli(settings, "departments", "add", "agriculture", "--zh", "农业农村局", "--en", "Agriculture Bureau")
    assert r.returncode != 0 and "exists" in r.stderr
    r = _cli(settings, "departments", "list", "--json")
    assert "agriculture" in {d["code"] for d in json.loads(r.stdout)}
    r = _cli(settings, "keys", "create", "--name", "farm-gis", "--role", "viewer", "-d", "agriculture", "--json")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    with srv.client() as c:
        names = {l["name"] for l in c.get("/layers", headers={"X-API-Key": created["key"]}).json()["layers"]}
    assert names == EXPECTED_VISIBLE["planning"]  # internal layers, nothing restricted
    r = _cli(settings, "keys", "list", "--json")
    assert created["id"] in {k["id"] for k in json.loads(r.stdout)}
    assert created["key"].split("_", 2)[2] not in r.stdout
    r = _cli(settings, "layers", "share", "planning_zones", "restricted", "--with", "agriculture")
    assert r.returncode == 0, r.stderr
    try:
        with srv.client() as c:
            names = {l["name"] for l in c.get("/layers", headers={"X-API-Key": created["key"]}).json()["layers"]}
            assert "planning_zones" in names
            assert "planning_zones" not in {l["name"] for l in c.get("/layers").json()["layers"]}
    finally:
        assert _cli(settings, "layers", "share", "planning_zones", "public").returncode == 0
    r = _cli(settings, "layers", "share", "planning_zones", "secret")
    assert r.returncode == 2 and "sharing" in r.stderr
    r = _cli(settings, "keys", "revoke", created["id"])
    assert r.returncode == 0
    assert _cli(settings, "keys", "revoke", "ffffffffffff").returncode == 3
    r = _cli(settings, "audit", "--layer", "planning_zones", "--json")
    actions = [e["action"] for e in json.loads(r.stdout)]
    assert actions.count("layer.share") >= 2
    r = _cli(settings, "audit", "--who", created["id"], "--since", "2000-01-01", "--json")
    assert r.returncode == 0
    assert _cli(settings, "audit", "--since", "yesterday").returncode == 2


# --- composite tiles and the tile cache ---------------------------------------------------------


def _mvt_layers(content: bytes) -> dict:
    import gzip

    import mapbox_vector_tile

    if content[:2] == b"\x1f\x8b":
        content = gzip.decompress(content)
    return mapbox_vector_tile.decode(content) if content else {}


COMPOSITE_TILES = ["/map/tiles/WebMercatorQuad/{z}/{y}/{x}",
                   "/tiles/land_use,forest,rivers,water_areas,control_lines,planning_zones/{z}/{x}/{y}.mvt"]


@pytest.mark.parametrize("template", COMPOSITE_TILES)
def test_composite_tiles_omit_hidden_layers_and_cache_never_leaks(sec, template):
    srv, tokens, _ = sec
    x, y = tile_xy(112.905, 28.105, 12)
    path = template.format(z=12, x=x, y=y)
    if _get(srv, path, "admin", tokens).status_code in (404, 405):
        pytest.fail(f"{template} is gone (404/405): the tile route this test covers must exist")
    # the most privileged caller first, so a cache keyed wrongly would hand its tile to the others
    order = ["admin", "water_resources:viewer", "forestry:viewer", "planning:viewer", "public",
             "water_resources:analyst", "public"]
    for label in order:
        r = _get(srv, path, label, tokens)
        expected = expected_for(label) & {"land_use", "forest", "rivers", "water_areas", "control_lines",
                                          "planning_zones", "admin_divisions", "parcel_imagery", "parcel_flags"}
        if "/tiles/land_use" in template:
            named = {"land_use", "forest", "rivers", "water_areas", "control_lines", "planning_zones"}
            if not named <= expected:  # naming a hidden layer is "not found", like any hidden layer
                assert r.status_code == 404, (label, r.status_code)
                continue
            expected &= named
        assert r.status_code in (200, 204), (label, r.status_code, r.text[:300])
        layers = _mvt_layers(r.content)
        assert set(layers) <= expected, f"{label} got hidden layers {set(layers) - expected}"
        assert set(layers) == expected, f"{label}: tile lacks visible layers {expected - set(layers)}"
        if "land_use" in layers:
            props = layers["land_use"]["features"][0]["properties"]
            if label == "public":  # tiles carry only the spec's tile attributes; never a masked one
                assert not {"qsdwmc", "qsdwdm"} & set(props), (label, props)


# --- analyses -----------------------------------------------------------------------------------

SITE = {"type": "Polygon", "coordinates": [[[112.899, 28.099], [112.912, 28.099], [112.912, 28.112],
                                            [112.899, 28.112], [112.899, 28.099]]]}


@pytest.mark.parametrize("label", ["public", "forestry:analyst", "water_resources:analyst", "admin"])
def test_site_check_reports_only_visible_layers(sec, label):
    srv, tokens, _ = sec
    with srv.client() as c:
        r = c.post("/analysis/site-check", headers=headers_for(label, tokens), json={"geometry": SITE})
    if r.status_code in (404, 405):
        pytest.fail("the site check endpoint is gone (404/405)")
    if r.status_code in (401, 403):
        assert label == "public", r.text  # analyses may require a key; then only the public is refused
        return
    assert r.status_code == 200, r.text
    text = r.text
    hidden = set(SHARING) - expected_for(label)
    for layer in hidden:
        assert f'"{layer}"' not in text, f"{label}: site check mentions hidden layer {layer}"
    assert '"land_use"' in text  # public and overlapping: reported
    if label == "public":
        assert "qsdwmc-x" not in text
    # asking for a hidden layer by name does not reveal it either
    with srv.client() as c:
        for layer in hidden:
            r = c.post("/analysis/site-check", headers=headers_for(label, tokens),
                       json={"geometry": SITE, "layers": [layer]})
            assert r.status_code in (400, 404) or f'"{layer}"' not in r.text, (layer, r.status_code, r.text[:300])


# --- rate limits --------------------------------------------------------------------------------

def test_rate_limits_answer_429_with_retry_after_per_key_and_per_ip(sec, live_server):
    _, tokens, settings = sec
    srv = live_server(settings, env={"GEOBASE_RATE_LIMIT_PER_S": "1", "GEOBASE_RATE_LIMIT_BURST": "5",
                                     "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "1", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "3"})
    time.sleep(3.2)  # the start-up probe spent public tokens; let the bucket refill to its burst
    with srv.client() as c:
        public = [c.get("/health").status_code for _ in range(6)]
        assert public[:3] == [200, 200, 200] and public[-1] == 429, public
        r = c.get("/health")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["code"] == "TooManyRequests"
        # a key has its own bucket: the public's exhaustion does not affect it, and vice versa
        h = headers_for("forestry:viewer", tokens)
        keyed = [c.get("/health", headers=h).status_code for _ in range(7)]
        assert keyed[:5] == [200] * 5 and keyed[-1] == 429, keyed
        other = c.get("/health", headers=headers_for("planning:viewer", tokens))
        assert other.status_code == 200
        time.sleep(2.2)  # refills at 1/s
        assert c.get("/health", headers=h).status_code == 200


# --- pure functions -----------------------------------------------------------------------------

@pytest.mark.parametrize("peer,xff,expected", [
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),              # behind the trusted local proxy
    ("127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # right-most untrusted hop is the client
    ("127.0.0.1", "203.0.113.7, 10.0.0.5", "203.0.113.7"),      # 10.0.0.5 is a trusted inner proxy
    ("198.51.100.9", "1.2.3.4", "198.51.100.9"),                # untrusted peer: its header is ignored
    ("127.0.0.1", "not-an-ip", "127.0.0.1"),                    # garbage: fall back to the peer
    ("127.0.0.1", None, "127.0.0.1"),
])
def test_client_ip_believes_forwarded_for_only_from_trusted_proxies(peer, xff, expected):
    from geobase.audit import client_ip

    assert client_ip(peer, xff, "127.0.0.1,::1,10.0.0.0/8") == expected


def test_key_format_and_parsing():
    from geobase.keys import parse_key

    assert parse_key("gb_0123456789ab_" + "A" * 43) == ("0123456789ab", "A" * 43)
    for bad in ("", "gb_", "gb_0123456789ab_short", "xx_0123456789ab_" + "A" * 43, "gb_0123456789AB_" + "A" * 43,
                "gb_0123456789ab_" + "A" * 43 + "'--"):
        assert parse_key(bad) is None, bad


def test_feature_reads_and_composite_tiles_are_audited_with_counts(sec):
    srv, tokens, settings = sec
    key_id = tokens["water_resources:viewer"].split("_")[1]
    h = headers_for("water_resources:viewer", tokens)
    x, y = tile_xy(112.905, 28.105, 12)
    start = _db_now(settings)
    with srv.client() as c:
        r = c.get("/collections/rivers/items?limit=5", headers=h)
        if r.status_code == 404:
            pytest.fail("the items endpoint is gone (404)")
        assert r.status_code == 200
        assert c.get(f"/map/tiles/WebMercatorQuad/12/{y}/{x}", headers=h).status_code in (200, 204)
    found = {}
    for _ in range(50):
        for row in _audit_rows(settings, who=key_id, limit=50, since=start):
            if row["path"] == "/collections/rivers/items":
                found["items"] = row
            if row["path"].startswith("/map/tiles/"):
                found["tile"] = row
        if len(found) == 2:
            break
        time.sleep(0.1)
    assert found.get("items"), "keyed read of a private layer not audited"
    assert found["items"]["layers"] == ["rivers"] and found["items"]["feature_count"] == 1
    assert found.get("tile"), "composite tile with non-public layers not audited"
    assert {"rivers", "water_areas", "forest"} <= set(found["tile"]["layers"])


def test_analyses_can_be_restricted_to_analysts(sec, live_server):
    _, tokens, settings = sec
    srv = live_server(settings, env={"GEOBASE_ANALYSIS_ROLE": "analyst"})
    with srv.client() as c:
        post = lambda label: c.post("/analysis/site-check", headers=headers_for(label, tokens), json={"geometry": SITE})
        if post("admin").status_code in (404, 405):
            pytest.fail("the site check endpoint is gone (404/405)")
        assert post("public").status_code == 401
        assert post("forestry:viewer").status_code == 403
        assert post("forestry:analyst").status_code == 200
        assert post("planning:steward").status_code == 200  # roles are ordered: steward includes analyst


def test_failed_authentication_is_audited(sec):
    srv, _, settings = sec
    start = _db_now(settings)
    with srv.client() as c:
        assert c.get("/layers", headers={"X-API-Key": "gb_0123456789ab_" + "B" * 43}).status_code == 401
    for _ in range(50):
        rows = [r for r in _audit_rows(settings, action="auth.failed", since=start) if r["path"] == "/layers"]
        if rows:
            break
        time.sleep(0.1)
    assert rows and rows[0]["status"] == 401 and rows[0]["key_id"] is None

"""Every rule of the request gate and of layer security holds for a cached tile answered by the
fast path in front of FastAPI (api/tile_fast.py, api/app.py ``GeobaseApp``).

Each test first makes the tile a cache hit for someone (so that the fast path is the one that
would answer), then asks in a way one rule must refuse or change: the answer must be the rule's,
never the cached bytes. Each would fail if the fast path skipped that rule: a tile cached for an
admin or an unscoped key served to the public or to a key limited to a box; a layer made private
or graded out of the network zone still served; a rate limit or a declared body not enforced, or
a token taken twice for a request the fast path left to the routers; a bad key not refused and
audited; an unknown parameter answered. tests/test_tiles_fast.py compares whole answers of the
fast and the ordinary path (hits, 304, HEAD, Vary/Cache-Control, refusals, sharing changes)."""

from __future__ import annotations

import socket
import time

import psycopg
import pytest

from conftest import LiveServer, create_database, drop_database, settings_for
from test_security_common import headers_for, make_keys, seed, unique_name
from test_tiles_fast import X, Y, Z, _audit, _mvt_layers

GZ = {"Accept-Encoding": "gzip"}
TILE = f"/tiles/land_use/{Z}/{X}/{Y}.mvt"
HIGH = {"GEOBASE_RATE_LIMIT_PER_S": "10000", "GEOBASE_RATE_LIMIT_BURST": "10000",
        "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000",
        "GEOBASE_KEY_CACHE_S": "1"}


@pytest.fixture(scope="module")
def db(pg_server, template_db, tmp_path_factory):
    """(settings, tokens) of a seeded database with keys of every role."""
    name = unique_name("gb_fastrules")
    url = create_database(pg_server, name, template_db)
    settings = settings_for(url, tmp_path_factory.mktemp("fastrules"))
    seed(settings)
    yield settings, make_keys(settings)
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def srv(db):
    server = LiveServer(db[0], env=HIGH)
    yield server
    server.stop()


def _get(server: LiveServer, path: str, headers: dict | None = None):
    with server.client() as c:
        return c.get(path, headers={**GZ, **(headers or {})})


def _fast(r) -> bool:
    return "desc=fast" in r.headers.get("server-timing", "")


def _cached(server: LiveServer, path: str, headers: dict | None = None):
    """Ask twice: the second answer is the fast path's cache hit."""
    _get(server, path, headers)
    r = _get(server, path, headers)
    assert r.status_code == 200 and r.headers["x-tile-cache"] == "hit" and _fast(r), (path, r.status_code)
    return r


def _sql(settings, statement: str, params=()) -> None:
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(statement, params)


def test_a_tile_cached_for_a_department_is_not_served_to_the_public_or_other_departments(db, srv):
    settings, tokens = db
    rivers = f"/tiles/rivers/{Z}/{X}/{Y}.mvt"  # private to water_resources
    for label in ("admin", "water_resources:viewer"):
        assert _mvt_layers(_cached(srv, rivers, headers_for(label, tokens)).content)
    for label in ("public", "forestry:viewer"):
        r = _get(srv, rivers, headers_for(label, tokens))
        assert r.status_code == 404 and r.json()["parameter"] == "layers" and not _fast(r)


def test_a_layer_made_private_or_graded_out_of_the_zone_is_refused_at_once(db, srv):
    settings, tokens = db
    _cached(srv, TILE)
    admin = headers_for("admin", tokens)
    _cached(srv, TILE, admin)
    with psycopg.connect(settings.database_url) as conn:
        grade = conn.execute("SELECT grade FROM catalog.layers WHERE name = 'land_use'").fetchone()[0]
    try:
        _sql(settings, "UPDATE catalog.layers SET sharing = 'private' WHERE name = 'land_use'")
        r = _get(srv, TILE)
        assert r.status_code == 404 and not _fast(r)
        # graded core: not allowed in the government zone, invisible to everyone, admin included
        _sql(settings, "UPDATE catalog.layers SET sharing = 'public', grade = 'core' WHERE name = 'land_use'")
        for h in ({}, admin):
            r = _get(srv, TILE, h)
            assert r.status_code == 404 and not _fast(r)
    finally:
        _sql(settings, "UPDATE catalog.layers SET sharing = 'public', grade = %s WHERE name = 'land_use'", (grade,))
    # the first ask after the change goes to the routers (refused last time), and has the fast
    # path read the states again in the background: then it answers again
    assert _get(srv, TILE).status_code == 200
    _cached(srv, TILE)


def test_a_key_limited_to_a_box_never_gets_the_tile_cached_for_an_unscoped_caller(db, srv):
    settings, tokens = db
    from geobase import keys

    assert _mvt_layers(_cached(srv, TILE, headers_for("admin", tokens)).content)
    assert _mvt_layers(_cached(srv, TILE).content)
    with psycopg.connect(settings.database_url) as conn:
        far = keys.create_scoped_key(conn, name="far-box", department="planning", expires_days=1,
                                     created_by="test", scope={"datasets": ["land_use"],
                                                               "bbox": [113.5, 29.5, 113.6, 29.6]}).token
        near = keys.create_scoped_key(conn, name="near-box", department="planning", expires_days=1,
                                      created_by="test", scope={"datasets": ["land_use"],
                                                                "bbox": [112.80, 28.00, 113.00, 28.20]}).token
        conn.commit()
    for _ in range(2):  # the second time from the cache, still nothing outside the box
        r = _get(srv, TILE, {"Authorization": f"Bearer {far}"})
        assert r.status_code in (200, 204) and not _mvt_layers(r.content)
    assert _mvt_layers(_cached(srv, TILE, {"Authorization": f"Bearer {near}"}).content)
    # a scoped key reads only its datasets, cached tile or not
    r = _get(srv, f"/tiles/planning_zones/{Z}/{X}/{Y}.mvt", {"Authorization": f"Bearer {near}"})
    assert r.status_code == 404


def test_an_unknown_parameter_on_a_cached_tile_is_refused_naming_it(db, srv):
    _cached(srv, TILE)
    for query, parameter in (("?foo=1", "foo"), ("?v=abc&bar=2", "bar"), ("?V=1", "V")):
        r = _get(srv, TILE + query)
        assert r.status_code == 400 and r.json()["parameter"] == parameter and not _fast(r)


def test_a_bad_key_on_a_cached_tile_is_refused_and_audited(db, srv):
    settings, tokens = db
    _cached(srv, TILE)
    with psycopg.connect(settings.database_url) as conn:
        since = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    bad = tokens["admin"][:-3] + "xyz"
    r = _get(srv, TILE, {"Authorization": f"Bearer {bad}"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    # (a refusal's row is queued as the gate queues it, after the answer: waited for, bounded)
    deadline = time.monotonic() + 30
    while not (rows := [x for x in _audit(settings, since, action="auth.failed") if x["path"] == TILE]):
        assert time.monotonic() < deadline, "no auth.failed audit row"
        time.sleep(0.1)
    assert rows[0]["status"] == 401


def test_a_declared_body_over_the_limit_is_refused_on_a_cached_tile(db, srv):
    _cached(srv, TILE)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(f"GET {TILE} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n"
                  f"Content-Length: {11 * 1024**2}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(65536)
            assert chunk, head
            head += chunk
    assert head.startswith(b"HTTP/1.1 413"), head[:200]


def test_rate_limits_hold_for_cached_tiles_and_a_token_is_taken_once(db):
    """A key's bucket of 6 with no refill to speak of: exactly 6 requests pass, misses (admitted
    by the fast path, then answered by the routers) and hits alike; the 7th is 429."""
    settings, tokens = db
    server = LiveServer(settings, env={**HIGH, "GEOBASE_RATE_LIMIT_PER_S": "0.0001", "GEOBASE_RATE_LIMIT_BURST": "6"})
    key = headers_for("planning:viewer", tokens)
    try:
        other = f"/tiles/land_use/{Z}/{X + 3}/{Y}.mvt"  # not cached yet: its first ask is a miss
        answers = [_get(server, p, key) for p in (TILE, TILE, other, other, TILE, TILE)]
        assert [r.status_code for r in answers] in ([200, 200, 204, 204, 200, 200], [200] * 6), answers
        assert answers[0].headers["x-tile-cache"] == "miss" and _fast(answers[-1])
        r = _get(server, TILE, key)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # another key, and the public, have buckets of their own
        assert _fast(_get(server, TILE, headers_for("planning:analyst", tokens)) or _get(server, TILE))
        assert _get(server, TILE).status_code == 200
    finally:
        server.stop()


def test_states_max_age_bounds_how_long_a_sharing_change_takes(db):
    """``GEOBASE_TILE_STATES_MAX_AGE_MS``: a cached tile may be answered from states read up to
    that long before; once they are older, the change holds."""
    settings, _ = db
    server = LiveServer(settings, env={**HIGH, "GEOBASE_TILE_STATES_MAX_AGE_MS": "300"})
    try:
        _cached(server, TILE)
        _sql(settings, "UPDATE catalog.layers SET sharing = 'private' WHERE name = 'land_use'")
        try:
            time.sleep(0.7)  # past the bound: the next request waits for a read of its own
            r = _get(server, TILE)
            assert r.status_code == 404 and not _fast(r)
        finally:
            _sql(settings, "UPDATE catalog.layers SET sharing = 'public' WHERE name = 'land_use'")
    finally:
        server.stop()


def test_the_app_refuses_to_start_when_the_fast_path_admits_with_other_buckets(db):
    from geobase.api.app import create_app, require_security
    from geobase.api.gate import Admission

    app = create_app(db[0])
    fast = app.state.tile_fast_path
    fast.admission = Admission(settings=fast.admission.settings, resolver=fast.admission.resolver,
                               pool_getter=fast.admission.pool_getter, audit_writer=fast.admission.audit_writer)
    with pytest.raises(RuntimeError, match="admission in the tile fast path"):
        require_security(app)

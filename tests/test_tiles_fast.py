"""The fast path of cached tiles (api/tile_fast.py) answers exactly as the ordinary path.

Two real servers over one database: the default one (fast path on) and one with
``GEOBASE_TILE_FAST_PATH=false`` (every tile through FastAPI). Every request goes to both, twice
(the second time the tile is cached, so the fast path is the one answering on the first
server), and status, headers and body must agree: hits and 304s, and every refusal — a private
layer, a bad key, NUL bytes, unknown parameters (400 naming them), an unacceptable ``Accept``,
an impossible tile. Audit rows and a sharing change are checked on the fast server."""

from __future__ import annotations

import time

import psycopg
import pytest

from conftest import LiveServer, create_database, drop_database, settings_for, tile_xy
from test_security_common import headers_for, make_keys, seed, unique_name

Z = 14
IGNORED = {"date", "server-timing"}  # the time of day and the handler's own duration


def _mvt_layers(content: bytes) -> dict:
    import mapbox_vector_tile

    return mapbox_vector_tile.decode(content) if content else {}



X, Y = tile_xy(112.905, 28.105, Z)


@pytest.fixture(scope="module")
def pair(pg_server, template_db, tmp_path_factory):
    """(fast server, ordinary server, tokens, settings) over one seeded database."""
    name = unique_name("gb_fast")
    url = create_database(pg_server, name, template_db)
    settings = settings_for(url, tmp_path_factory.mktemp("fast"))
    seed(settings)
    tokens = make_keys(settings)
    env = {"GEOBASE_RATE_LIMIT_PER_S": "10000", "GEOBASE_RATE_LIMIT_BURST": "10000",
           "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000",
           "GEOBASE_KEY_CACHE_S": "1"}
    fast = LiveServer(settings, env=env)
    plain = LiveServer(settings, env={**env, "GEOBASE_TILE_FAST_PATH": "false"})
    yield fast, plain, tokens, settings
    fast.stop()
    plain.stop()
    drop_database(pg_server, name)


def _get(srv: LiveServer, path: str, headers: dict):
    with srv.client() as c:
        return c.get(path, headers=headers)


def _same(fast: LiveServer, plain: LiveServer, path: str, headers: dict):
    """The answers of both servers to ``path``, asked twice each, compared; the second of the fast server."""
    for rnd in range(2):
        a, b = _get(fast, path, headers), _get(plain, path, headers)
        assert a.status_code == b.status_code, (path, headers, a.status_code, b.status_code, a.text[:300])
        # (the servers share the cache: the first answer of either may be a miss or a hit)
        ignored = IGNORED | ({"x-tile-cache"} if rnd == 0 else set())
        ha = {k: v for k, v in a.headers.items() if k not in ignored}
        hb = {k: v for k, v in b.headers.items() if k not in ignored}
        assert ha == hb, (path, headers)
        assert a.content == b.content, path
    return a



def wait_for_a_render_on_the_lock(database_url: str) -> None:
    """Return once a server's render holds its slot, waiting for a table lock the test holds."""
    with psycopg.connect(database_url, autocommit=True) as watch:
        deadline = time.monotonic() + 60
        while not watch.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                "AND application_name = 'geobase-api'").fetchone()[0]:
            assert time.monotonic() < deadline, "the first render never reached the lock"
            time.sleep(0.05)


def test_cached_tiles_are_answered_by_the_fast_path_exactly_as_by_the_routers(pair):
    fast, plain, tokens, _ = pair
    tile = f"/tiles/land_use/{Z}/{X}/{Y}.mvt"
    gz = {"Accept-Encoding": "gzip"}
    r = _same(fast, plain, tile, gz)
    assert r.status_code == 200 and r.headers["x-tile-cache"] == "hit" and "fast" in r.headers["server-timing"]
    assert r.headers["content-encoding"] == "gzip" and r.headers["cache-control"] == "public, no-cache"
    # identity, a 304, the version tag of the style (immutable), HEAD, a composite tile, a keyed caller
    r = _same(fast, plain, tile, {"Accept-Encoding": "identity"})  # left to the routers (decompressed there)
    assert r.status_code == 200 and "content-encoding" not in r.headers and _mvt_layers(r.content)
    assert _same(fast, plain, tile, {**gz, "If-None-Match": r.headers["etag"]}).status_code == 304
    # a header given twice: the first counts, on both paths
    twice = _same(fast, plain, tile, [("Accept-Encoding", "identity"), ("Accept-Encoding", "gzip")])
    assert "content-encoding" not in twice.headers
    tag = _get(fast, "/tiles/land_use.json", {}).json()["tiles"][0].split("?v=")[1]
    r = _same(fast, plain, f"{tile}?v={tag}", gz)
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable" and "fast" in r.headers["server-timing"]
    assert _same(fast, plain, f"{tile}?v=stale", gz).headers["cache-control"] == "public, no-cache"
    with fast.client() as c:
        h = c.head(tile, headers=gz)
        assert h.status_code == 200 and h.content == b"" and h.headers["etag"] == r.headers["etag"]
    for label in ("public", "water_resources:viewer", "admin"):
        r = _same(fast, plain, f"/tiles/onemap/{Z}/{X}/{Y}.mvt", {**gz, **headers_for(label, tokens)})
        assert r.status_code == 200 and "fast" in r.headers["server-timing"]
        if label != "public":
            assert r.headers["cache-control"].startswith("private")
            assert "X-API-Key" in r.headers["vary"]


def test_the_fast_path_refuses_what_the_routers_refuse(pair):
    fast, plain, tokens, _ = pair
    gz = {"Accept-Encoding": "gzip"}
    rivers = f"/tiles/rivers/{Z}/{X}/{Y}.mvt"  # a private layer (water_resources only)
    # cached for its owner first: a key that ignored the view would hand this tile to the others
    owner = _same(fast, plain, rivers, {**gz, **headers_for("water_resources:viewer", tokens)})
    assert owner.status_code == 200 and "fast" in owner.headers["server-timing"]
    for label in ("public", "forestry:viewer", "planning:analyst"):
        r = _same(fast, plain, rivers, {**gz, **headers_for(label, tokens)})
        assert r.status_code == 404 and r.json()["parameter"] == "layers" and "fast" not in r.headers.get("server-timing", "")
        r = _same(fast, plain, f"/tiles/land_use,rivers/{Z}/{X}/{Y}.mvt", {**gz, **headers_for(label, tokens)})
        assert r.status_code == 404
    tile = f"/tiles/land_use/{Z}/{X}/{Y}.mvt"
    bad_keys = [{"Authorization": "Bearer gb_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
                {"Authorization": "Basic dXNlcjpwYXNz"}, {"X-API-Key": "nonsense"},
                {"Authorization": f"Bearer {tokens['admin'][:-3]}xyz"}]
    for h in bad_keys:
        assert _same(fast, plain, tile, {**gz, **h}).status_code == 401
    for path, parameter in ((f"{tile}?foo=1", "foo"), (f"{tile}?v=abc&foo=1", "foo"), (f"{tile}?V=1", "V"),
                            (f"{tile}?v=a%00b&x=1", "v")):  # (a NUL byte is refused first, under its name)
        r = _same(fast, plain, path, gz)
        assert r.status_code == 400 and r.json()["parameter"] == parameter, (path, r.text)
    for path in (f"/tiles/land%00use/{Z}/{X}/{Y}.mvt", f"{tile}?v=%00", f"/tiles/land_use/{Z}/{X}/{Y}%00.mvt",
                 "/tiles/land_use/25/0/0.mvt", f"/tiles/land_use/{Z}/-1/{Y}.mvt", f"/tiles/land_use/{Z}/0{X}/{Y}.mvt",
                 f"/tiles/dem/{Z}/{X}/{Y}.mvt", f"/tiles/nope/{Z}/{X}/{Y}.mvt", f"/tiles/land_use,land_use/{Z}/{X}/{Y}.mvt",
                 f"{tile}?version=1", f"{tile}?datetime=2020-01-01T00:00:00Z", f"{tile}?tms=WebMercatorQuad"):
        r = _same(fast, plain, path, gz)
        assert "fast" not in r.headers.get("server-timing", ""), path
    assert _same(fast, plain, tile, {**gz, "Accept": "text/html"}).status_code == 406


def _audit(settings, since, **where):
    from geobase import audit

    with psycopg.connect(settings.database_url) as conn:
        return [r for r in audit.query(conn, limit=1000, since=since, **where)]


def test_fast_answers_are_audited_and_follow_a_sharing_change_at_once(pair):
    fast, plain, tokens, settings = pair
    gz = {"Accept-Encoding": "gzip"}
    with psycopg.connect(settings.database_url) as conn:
        start = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    rivers = f"/tiles/rivers/{Z}/{X}/{Y}.mvt"
    key_id = tokens["water_resources:viewer"].split("_")[1]
    for _ in range(2):
        r = _get(fast, rivers, {**gz, **headers_for("water_resources:viewer", tokens)})
    assert r.status_code == 200 and "fast" in r.headers["server-timing"]
    assert _get(fast, rivers, gz).status_code == 404
    rows = _audit(settings, start, who=key_id)
    # the reply is sent only after its row is committed (the gate), fast path or not
    assert len([x for x in rows if x["path"] == rivers and x["status"] == 200 and "rivers" in x["layers"]]) == 2
    denied = [x for x in _audit(settings, start, action="read.denied") if x["path"] == rivers]
    assert denied and denied[0]["key_id"] is None
    # land_use made private: a cached public tile is refused on the very next request
    tile = f"/tiles/land_use/{Z}/{X}/{Y}.mvt"
    for _ in range(2):
        assert "fast" in _get(fast, tile, gz).headers["server-timing"]
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("UPDATE catalog.layers SET sharing = 'private' WHERE name = 'land_use'")
    try:
        assert _get(fast, tile, gz).status_code == 404
        r = _get(fast, tile, {**gz, **headers_for("natural_resources:viewer", tokens)})
        assert r.status_code == 200  # the owner department still sees it
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("UPDATE catalog.layers SET sharing = 'public' WHERE name = 'land_use'")
    assert _get(fast, tile, gz).status_code == 200


def test_renders_keep_their_concurrency_bound_while_cached_tiles_are_answered(pair, tmp_path):
    """One render slot: a render blocked on a locked table holds it, a second render waits and
    gets 503, and a cached tile is answered meanwhile (it renders nothing, so takes no slot)."""
    import threading

    _, _, _, settings = pair
    srv = LiveServer(settings, env={"GEOBASE_TILE_CONCURRENCY": "1", "GEOBASE_POOL_TIMEOUT_S": "1",
                                    "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000",
                                    "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000"})
    gz = {"Accept-Encoding": "gzip"}
    cached = f"/tiles/land_use/{Z}/{X}/{Y}.mvt"
    try:
        for _ in range(2):
            r = _get(srv, cached, gz)
        assert r.status_code == 200 and r.headers["x-tile-cache"] == "hit"
        lock = psycopg.connect(settings.database_url)
        lock.execute("LOCK TABLE data.land_use IN ACCESS EXCLUSIVE MODE")
        blocked: list = []
        t = threading.Thread(target=lambda: blocked.append(_get(srv, f"/tiles/land_use/{Z}/{X + 1}/{Y}.mvt", gz)))
        t.start()
        try:
            wait_for_a_render_on_the_lock(settings.database_url)
            r = _get(srv, cached, gz)
            assert r.status_code == 200 and "fast" in r.headers["server-timing"]
            r = _get(srv, f"/tiles/land_use/{Z}/{X + 2}/{Y}.mvt", gz)
            assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
            assert "too many tile requests" in r.json()["description"]
        finally:
            lock.rollback()
            lock.close()
            t.join(60)
        assert blocked and blocked[0].status_code in (200, 204)
    finally:
        srv.stop()

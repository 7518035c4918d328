"""Cold vector tiles rendered by the fast path in front of FastAPI (api/tile_fast.py,
api/tile_cold.py) answer exactly as the routers render them, and every rule holds on a miss.

Two real servers over one seeded database, both with the tile cache off so that every tile is a
miss: the default one (fast path on) and one with ``GEOBASE_TILE_FAST_PATH=false`` (every tile
through FastAPI's routers). land_use carries a desensitisation rule (``zldwmc`` masked for
outside callers) and a class hidden below z17 (code 0101, the seeded parcel's class after the
fixture sets it). Each answer is compared whole: status, every header in order (but the date and
Server-Timing) and the body's bytes — for the public (masked), an admin, a department, keys with a
box inside and outside the parcel, gzip and identity clients, an empty tile, a composite tile,
a revalidation and a statement timeout answered by the app's exception handler."""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for, tile_xy
from test_security_common import headers_for, make_keys, seed, unique_name
from test_tiles_fast import X, Y, Z, _audit, _mvt_layers, wait_for_a_render_on_the_lock

REPO = Path(__file__).resolve().parents[1]
GZ = {"Accept-Encoding": "gzip"}
ID = {"Accept-Encoding": "identity"}
IGNORED = {b"date", b"server-timing"}
LIMITS = {"GEOBASE_RATE_LIMIT_PER_S": "10000", "GEOBASE_RATE_LIMIT_BURST": "10000",
          "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000",
          "GEOBASE_KEY_CACHE_S": "1", "GEOBASE_TILE_CACHE_MAX_BYTES": "0"}
MASK = "\ndesensitise:\n  open:\n    - {attribute: zldwmc, action: mask}\n"
TILE = f"/tiles/land_use/{Z}/{X}/{Y}.mvt"
X17, Y17 = tile_xy(112.905, 28.105, 17)
EMPTY = f"/tiles/land_use/{Z}/{X + 40}/{Y}.mvt"  # far from the one seeded parcel


def _layers_dir(root: Path) -> Path:
    """The shipped specs, land_use masked for outside callers and class 0101 drawn from z17 only."""
    out = root / f"layers-{uuid.uuid4().hex[:6]}"
    shutil.copytree(REPO / "layers", out)
    spec = out / "land_use.yaml"
    spec.write_text(spec.read_text(encoding="utf-8") + MASK, encoding="utf-8")
    codes = out / "codelists" / "gbt21010_2017.yaml"
    text = codes.read_text(encoding="utf-8")
    assert "- code: '0101'\n" in text
    codes.write_text(text.replace("- code: '0101'\n", "- code: '0101'\n  minzoom: 17\n", 1), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def cold(pg_server, template_db, tmp_path_factory):
    """(fast server, router-only server, tokens, settings, scoped tokens) over one database."""
    from geobase import keys

    name = unique_name("gb_cold")
    url = create_database(pg_server, name, template_db)
    tmp = tmp_path_factory.mktemp("cold")
    settings = settings_for(url, tmp)
    seed(settings)
    tokens = make_keys(settings)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE data.land_use SET dlbm = '0101', zldwmc = 'Green Valley'")
        scoped = {label: keys.create_scoped_key(conn, name=label, department="planning", expires_days=1,
                                                created_by="test", scope={"datasets": ["land_use"], "bbox": box}).token
                  for label, box in (("far", [113.5, 29.5, 113.6, 29.6]), ("near", [112.80, 28.00, 113.00, 28.20]))}
        scoped["no_mvt"] = keys.create_scoped_key(conn, name="no-mvt", department="planning", expires_days=1,
                                                  created_by="test", scope={"datasets": ["land_use"],
                                                                            "formats": ["json"]}).token
        conn.commit()
    env = {**LIMITS, "GEOBASE_LAYERS_DIR": str(_layers_dir(tmp))}
    fast = LiveServer(settings, env=env)
    plain = LiveServer(settings, env={**env, "GEOBASE_TILE_FAST_PATH": "false"})
    yield fast, plain, tokens, settings, scoped
    fast.stop()
    plain.stop()
    drop_database(pg_server, name)


def _get(srv: LiveServer, path: str, headers: dict):
    with srv.client() as c:
        return c.get(path, headers=headers)


def _fast(r) -> bool:
    return "desc=fast" in r.headers.get("server-timing", "")


def _head(r) -> list[tuple[bytes, bytes]]:
    """Every header as sent, in order, but the date and Server-Timing (the handler's own time)."""
    return [(k, v) for k, v in r.headers.raw if k.lower() not in IGNORED]


def _both(cold, path: str, headers: dict, *, fast_answers: bool | None = True):
    """The fast server's and the router server's answers to one cold request: the same to the
    byte; ``fast_answers``: whether the fast path answered (None: either may)."""
    fast, plain = cold[0], cold[1]
    a, b = _get(fast, path, headers), _get(plain, path, headers)
    assert (a.status_code, _head(a), a.content) == (b.status_code, _head(b), b.content), (path, headers)
    assert fast_answers is None or _fast(a) is fast_answers, (path, a.headers.get("server-timing"))
    assert not _fast(b)
    return a


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_cold_tiles_through_the_fast_path_are_the_routers_answers_to_the_byte(cold):
    _, _, tokens, _, scoped = cold
    callers = {"public": {}, "admin": headers_for("admin", tokens),
               "planning:viewer": headers_for("planning:viewer", tokens),
               "near box": _bearer(scoped["near"]), "far box": _bearer(scoped["far"])}
    tile17 = f"/tiles/land_use/17/{X17}/{Y17}.mvt"
    for who, h in callers.items():
        for enc in (GZ, ID):
            for path in (tile17, EMPTY, f"/tiles/onemap/17/{X17}/{Y17}.mvt", f"/tiles/land_use,admin_divisions/17/{X17}/{Y17}.mvt"):
                if who.endswith("box") and "land_use/" not in path:
                    continue  # (a scoped key reads land_use only: 404 by the routers)
                r = _both(cold, path, {**enc, **h})
                assert r.headers["x-tile-cache"] == "miss", (who, path)
                assert r.status_code == (204 if path == EMPTY or who == "far box" else 200), (who, path, r.status_code)
            # a revalidation of a tile rendered just now: 304 without a body, from the fast path too
            etag = _get(cold[0], tile17, {**enc, **h}).headers["etag"]
            assert _both(cold, tile17, {**enc, **h, "If-None-Match": etag}).status_code == 304
    # what the answers hold: the public's zldwmc masked, the admin's clear; a keyed answer private
    public = _mvt_layers(_get(cold[0], tile17, GZ).content)["land_use"]["features"]
    admin = _both(cold, tile17, {**GZ, **headers_for("admin", tokens)})
    assert [f["properties"]["zldwmc"] for f in public] == ["G**"]
    assert [f["properties"]["zldwmc"] for f in _mvt_layers(admin.content)["land_use"]["features"]] == ["Green Valley"]
    assert admin.headers["cache-control"] == "private, no-cache" and "X-API-Key" in admin.headers["vary"]
    # a client without gzip gets the MVT itself (Content-Length of the raw bytes)
    raw = _both(cold, tile17, ID)
    assert "content-encoding" not in raw.headers and _mvt_layers(raw.content)["land_use"]


def test_each_rule_holds_on_a_miss_answered_by_the_fast_path(cold):
    fast, _, tokens, settings, scoped = cold
    tile17 = f"/tiles/land_use/17/{X17}/{Y17}.mvt"
    # a class drawn from z17 only: not at z14 (the parcel is there, its class hidden)
    assert _both(cold, TILE, GZ).status_code == 204
    assert _mvt_layers(_both(cold, tile17, GZ).content)["land_use"]
    # a key's box: nothing outside it, the parcel inside it
    assert not _get(fast, tile17, {**GZ, **_bearer(scoped["far"])}).content
    assert _mvt_layers(_get(fast, tile17, {**GZ, **_bearer(scoped["near"])}).content)["land_use"]
    # a key not granted vector tiles: refused by the routers (403), as without the fast path
    r = _both(cold, tile17, {**GZ, **_bearer(scoped["no_mvt"])}, fast_answers=False)
    assert r.status_code == 403
    # a private layer: the owner's tile rendered by the fast path, every other caller 404 by the routers
    rivers = f"/tiles/rivers/17/{X17}/{Y17}.mvt"
    owner = {**GZ, **headers_for("water_resources:viewer", tokens)}
    assert _both(cold, rivers, owner).status_code in (200, 204)
    for label in ("public", "forestry:viewer"):
        assert _both(cold, rivers, {**GZ, **headers_for(label, tokens)}, fast_answers=False).status_code == 404
    # a layer graded core: out of the government zone, for everyone, at once (the fast path's
    # guess still has it visible: the render finds it hidden and the app's handler answers 404, as
    # the routers do)
    with psycopg.connect(settings.database_url) as conn:
        grade = conn.execute("SELECT grade FROM catalog.layers WHERE name = 'land_use'").fetchone()[0]
        conn.execute("UPDATE catalog.layers SET grade = 'core' WHERE name = 'land_use'")
    try:
        for h in ({}, headers_for("admin", tokens)):
            r = _both(cold, tile17, {**GZ, **h}, fast_answers=None)
            assert r.status_code == 404 and r.json()["parameter"] == "layers"
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("UPDATE catalog.layers SET grade = %s WHERE name = 'land_use'", (grade,))
    assert _get(fast, tile17, GZ).status_code == 200  # (the next one again from the fast path)
    assert _fast(_get(fast, tile17, GZ))


def test_a_miss_of_non_public_data_is_audited_before_the_answer(cold):
    fast, _, tokens, settings, _ = cold
    with psycopg.connect(settings.database_url) as conn:
        since = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    rivers = f"/tiles/rivers/16/{X * 4}/{Y * 4}.mvt"
    key = headers_for("water_resources:viewer", tokens)
    r = _get(fast, rivers, {**GZ, **key})
    assert _fast(r) and r.headers["x-tile-cache"] == "miss"
    # the reply is sent only after its row is committed: no waiting here
    rows = [x for x in _audit(settings, since, who=tokens["water_resources:viewer"].split("_")[1]) if x["path"] == rivers]
    assert len(rows) == 1 and rows[0]["status"] == r.status_code and "rivers" in rows[0]["layers"]
    # a public read of a public layer leaves no row
    public = f"/tiles/land_use/16/{X * 4}/{Y * 4}.mvt"
    assert _fast(_get(fast, public, GZ))
    assert not [x for x in _audit(settings, since) if x["path"] == public]


def test_bodiless_router_answers_are_audited_before_their_head(cold):
    """The routers' 304 (If-None-Match) and HEAD answers are whole once their head is written:
    the gate commits their audit row before the head, not before the empty body that follows it
    (the client already has the answer then). Shown by holding the audit table's lock: the answer
    must not arrive while its row cannot be committed, and must arrive once it can."""
    import concurrent.futures

    _, plain, tokens, settings, _ = cold
    key = headers_for("water_resources:viewer", tokens)
    rivers = f"/tiles/rivers/16/{X * 4}/{Y * 4 + 1}.mvt"
    first = _get(plain, rivers, {**GZ, **key})
    assert first.status_code in (200, 204) and "etag" in first.headers
    asks = {"304": lambda c: c.get(rivers, headers={**GZ, **key, "If-None-Match": first.headers["etag"]}),
            "HEAD": lambda c: c.head(rivers, headers={**GZ, **key})}
    with plain.client() as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        for what, ask in asks.items():
            with psycopg.connect(settings.database_url) as lock:
                lock.execute("LOCK TABLE catalog.audit_log IN EXCLUSIVE MODE")  # inserts wait
                answer = pool.submit(ask, c)
                done, _ = concurrent.futures.wait([answer], timeout=0.5)
                assert not done, f"the {what} answer arrived while its audit row could not be committed"
            r = answer.result(timeout=30)  # the lock is released: the row commits, the answer goes
            assert r.status_code == (304 if what == "304" else first.status_code)


def test_requests_the_fast_path_does_not_take_get_the_routers_answer(cold):
    tile17 = f"/tiles/land_use/17/{X17}/{Y17}.mvt"
    for path in (f"{tile17}?division=430100", f"{tile17}?version=1", f"{tile17}?datetime=2020-01-01T00:00:00Z",
                 f"{tile17}?tms=WebMercatorQuad", f"{tile17}?v=abc&foo=1", "/tiles/land_use/25/0/0.mvt",
                 f"/tiles/land_use/17/{2 ** 17}/0.mvt", f"/tiles/nope/17/{X17}/{Y17}.mvt"):
        _both(cold, path, GZ, fast_answers=False)
    assert _both(cold, tile17, {**GZ, "Accept": "text/html"}, fast_answers=False).status_code == 406
    with cold[0].client() as c, cold[1].client() as d:
        a, b = c.head(tile17, headers=GZ), d.head(tile17, headers=GZ)
    assert (a.status_code, _head(a)) == (b.status_code, _head(b)) and not _fast(a)


def test_a_statement_timeout_on_a_miss_is_the_routers_answer(cold):
    """A render that runs past ``GEOBASE_TILE_STATEMENT_TIMEOUT_MS`` (here: waiting for a lock) is
    answered by the app's exception handler for it, on the fast path as on the routers'."""
    _, _, _, settings, _ = cold
    # (the session's timeout too: a connection's first tile prepares its statement before the
    # transaction that sets the tile timeout, and that waits for the lock as well)
    env = {**LIMITS, "GEOBASE_TILE_STATEMENT_TIMEOUT_MS": "300", "GEOBASE_STATEMENT_TIMEOUT_MS": "300"}
    servers = (LiveServer(settings, env=env), LiveServer(settings, env={**env, "GEOBASE_TILE_FAST_PATH": "false"}))
    lock = psycopg.connect(settings.database_url)
    try:
        lock.execute("LOCK TABLE data.land_use IN ACCESS EXCLUSIVE MODE")
        answers = [_get(s, TILE, h) for s in servers for h in (GZ, ID)]
        for a, b in ((answers[0], answers[2]), (answers[1], answers[3])):
            assert (a.status_code, _head(a), a.content) == (b.status_code, _head(b), b.content)
            assert a.status_code == 503 and _fast(a) and not _fast(b), a.text
            assert "statement timeout" in a.json()["description"]
    finally:
        lock.rollback()
        lock.close()
        for s in servers:
            s.stop()


def test_a_miss_is_cached_where_the_routers_find_it_and_renders_keep_their_bound(cold, tmp_path):
    """With the cache on: the fast path's miss is the routers' hit (same key, same ETag, same
    bytes); one render slot: a render blocked on a lock holds it and the next miss gets the
    gate's 503 from the fast path."""
    _, _, _, settings, _ = cold
    own = settings.model_copy(update={"data_dir": tmp_path})
    env = {**LIMITS, "GEOBASE_TILE_CACHE_MAX_BYTES": str(10**8), "GEOBASE_TILE_CONCURRENCY": "1",
           "GEOBASE_POOL_TIMEOUT_S": "1"}
    fast, plain = LiveServer(own, env=env), LiveServer(own, env={**env, "GEOBASE_TILE_FAST_PATH": "false"})
    tile = f"/tiles/land_use/17/{X17 + 1}/{Y17}.mvt"
    try:
        a = _get(fast, tile, GZ)
        assert a.status_code == 200 and _fast(a) and a.headers["x-tile-cache"] == "miss"
        b = _get(plain, tile, GZ)
        assert b.headers["x-tile-cache"] == "hit" and (b.headers["etag"], b.content) == (a.headers["etag"], a.content)
        lock = psycopg.connect(settings.database_url)
        lock.execute("LOCK TABLE data.land_use IN ACCESS EXCLUSIVE MODE")
        blocked: list = []
        t = threading.Thread(target=lambda: blocked.append(_get(fast, f"/tiles/land_use/17/{X17 + 2}/{Y17}.mvt", GZ)))
        t.start()
        try:
            wait_for_a_render_on_the_lock(settings.database_url)
            assert _fast(_get(fast, tile, GZ))  # a hit takes no slot
            r = _get(fast, f"/tiles/land_use/17/{X17 + 3}/{Y17}.mvt", GZ)
            assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
            assert "too many tile requests" in r.json()["description"]
        finally:
            lock.rollback()
            lock.close()
            t.join(60)
        assert blocked and blocked[0].status_code in (200, 204) and _fast(blocked[0])
    finally:
        fast.stop()
        plain.stop()

"""Editing (OGC API - Features Part 4) at bench scale: round trips, a 1,000-change session,
notification latency, and 16 editors on overlapping parcels.

Data: a land-use coverage of ``ctx.parcels`` grid parcels (~50 m cells, 20-vertex rings, valid
GB/T 21010 codes) loaded with SQL into this benchmark's own database as version 1; every run
starts from it again (the versions an earlier run added are removed, untimed).

No other server edits through OGC API - Features Part 4 on PostGIS with versions (GeoServer and
pg_featureserv do not; pygeoapi's PostgreSQL provider writes rows without preconditions or
versions), so there is no baseline to interleave: every figure is absolute, measured in
``ctx.rounds`` rounds (quick: 1) and printed with its spread (min/median/max of the rounds).
  * a single-feature PATCH with If-Match, committed at once as a version: p50/p95 (ms);
  * an edit session of 1,000 PATCHes: staging rate and the commit's time;
  * commit -> Server-Sent Events client, and commit -> signed webhook receiver: p95 (target < 1 s);
  * 16 clients for 30 s (quick: 10 s) on a block of 100 parcels: 12 change an attribute (GET the
    ETag, PATCH with If-Match; 412 on a race is the expected answer), 4 split parcels by a line;
    checked afterwards: 0 lost updates (each successful write is the row of its version, and each
    parcel's current value is its last successful write), 0 5xx, the coverage's total ellipsoidal
    area unchanged (relative difference printed) and no two current parcels of the block overlapping.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psycopg
from common import Context, Result, percentile

DB = "geobase_bench_editing"
CELL = 0.0005
LON0, LAT0 = 119.0, 30.0
CODES = ["0101", "0102", "0103", "0201", "0301", "0305", "0404", "0702", "1001", "1101"]


def _key(i: int) -> str:
    return f"{i:018d}"


def _load(url: str, parcels: int) -> int:
    """The grid (once per scale), then back to its version 1. Returns the grid's side."""
    side = math.ceil(math.sqrt(parcels))
    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("SELECT rows_total FROM catalog.layer_versions WHERE layer = 'land_use' AND version = 1").fetchone()
        if not (have and have[0] == parcels):
            print(f"bench editing: loading {parcels:,} parcels ...", flush=True)
            conn.execute("DELETE FROM catalog.layer_versions WHERE layer = 'land_use'")
            conn.execute("TRUNCATE data.land_use")
            for lo in range(0, parcels, 200_000):
                conn.execute("""
                    INSERT INTO data.land_use (_key, _hash, _vfrom, bsm, dlbm, sjnf, _area_m2, geom, geom_3857)
                    SELECT k, md5(k), 1, k, c, 2025, ST_Area(g::geography), g, ST_Transform(g, 3857)
                    FROM (SELECT lpad(i::text, 18, '0') AS k, (%(codes)s::text[])[i %% 10 + 1] AS c,
                                 ST_Multi(ST_Segmentize(ST_MakeEnvelope(
                                     %(x0)s + (i %% %(side)s) * %(d)s, %(y0)s + (i / %(side)s) * %(d)s,
                                     %(x0)s + (i %% %(side)s + 1) * %(d)s, %(y0)s + (i / %(side)s + 1) * %(d)s, 4490),
                                     %(d)s / 5)) AS g
                          FROM generate_series(%(lo)s::int, %(hi)s::int) i) s""",
                             {"codes": CODES, "x0": LON0, "y0": LAT0, "d": CELL, "side": side, "lo": lo,
                              "hi": min(parcels, lo + 200_000) - 1})
            conn.execute("INSERT INTO catalog.layer_versions (layer, version, mode, rows_total) "
                         "VALUES ('land_use', 1, 'replace', %s)", (parcels,))
            conn.execute("VACUUM ANALYZE data.land_use")
        conn.execute("DELETE FROM data.land_use WHERE _vfrom > 1")
        conn.execute("UPDATE data.land_use SET _vto = NULL WHERE _vto IS NOT NULL")
        conn.execute("DELETE FROM catalog.layer_versions WHERE layer = 'land_use' AND version > 1")
        conn.execute("UPDATE catalog.layers SET current_version = 1 WHERE name = 'land_use'")
        conn.execute("DELETE FROM catalog.edit_sessions")
        conn.execute("DELETE FROM catalog.webhooks")
    return side


def _token(url: str) -> str:
    from geobase import keys

    with psycopg.connect(url) as conn:
        token = keys.create_key(conn, name="bench-editor", role="editor", department="natural_resources").token
        conn.commit()
    return token


def _patch(c: httpx.Client, key: str, props: dict, reason: str | None, session: str | None = None) -> httpx.Response:
    etag = c.get(f"/collections/land_use/items/{key}").headers.get("etag")
    h = {"If-Match": etag or "", "Content-Type": "application/merge-patch+json"}
    if session:
        h["Edit-Session"] = session
    return c.patch(f"/collections/land_use/items/{key}", params={"reason": reason} if reason else None,
                   content=json.dumps({"properties": props}), headers=h)


def _spread(name: str, rounds: list[float], unit: str, **extra) -> Result:
    r = Result(name, statistics.median(rounds), None, None, unit)
    r.extra = {"rounds": [round(v, 3) for v in rounds], "min/median/max": [round(min(rounds), 3),
               round(statistics.median(rounds), 3), round(max(rounds), 3)], "baseline": "none (absolute)", **extra}
    return r


def _round_trips(ctx: Context, c: httpx.Client, parcels: int, rounds: int) -> None:
    n = 30 if ctx.quick else 100
    p50s, p95s = [], []
    for r in range(rounds):
        times = []
        for i in range(n):
            key = _key(random.randrange(parcels))
            etag = c.get(f"/collections/land_use/items/{key}").headers["etag"]
            t0 = time.perf_counter()
            resp = c.patch(f"/collections/land_use/items/{key}", params={"reason": f"rtt {r}.{i}"},
                           content=json.dumps({"properties": {"bz": f"rtt {r}.{i}"}}),
                           headers={"If-Match": etag, "Content-Type": "application/merge-patch+json"})
            times.append((time.perf_counter() - t0) * 1000)
            assert resp.status_code == 200, resp.text
        p50s.append(percentile(times, 50))
        p95s.append(percentile(times, 95))
    ctx.report(_spread("editing: single-feature PATCH with If-Match, committed (p50)", p50s, "ms", n=n))
    ctx.report(_spread("editing: single-feature PATCH with If-Match, committed (p95)", p95s, "ms", n=n))


def _session(ctx: Context, c: httpx.Client, parcels: int, rounds: int) -> None:
    stage_rates, commits = [], []
    for r in range(rounds):
        sid = c.post("/collections/land_use/sessions").json()["id"]
        keys = random.sample(range(parcels), 1000)
        t0 = time.perf_counter()
        for i in keys:
            resp = _patch(c, _key(i), {"dlbm": CODES[(i + r + 1) % 10]}, None, sid)
            assert resp.status_code == 200, resp.text
        staged = time.perf_counter() - t0
        t0 = time.perf_counter()
        resp = c.post(f"/collections/land_use/sessions/{sid}/commit", json={"message": f"bench session {r}"})
        commits.append(time.perf_counter() - t0)
        assert resp.status_code == 200 and resp.json()["changed"] == 1000, resp.text
        stage_rates.append(1000 / staged)
    ctx.report(_spread("editing: session of 1,000 changes, staging (GET + PATCH each)", stage_rates, "changes/s"))
    ctx.report(_spread("editing: session of 1,000 changes, commit", commits, "s"))


class _Receiver:
    def __init__(self) -> None:
        self.got: dict[int, float] = {}
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # a webhook delivery
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.got.setdefault(body["version"], time.perf_counter())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _listen(base: str, token: str, got: dict, stop: threading.Event, ready: threading.Event) -> None:
    last = None
    while not stop.is_set():
        h = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last is not None:
            h["Last-Event-ID"] = str(last)
        try:
            with httpx.stream("GET", f"{base}/collections/land_use/changes/stream", headers=h, timeout=120) as resp:
                for line in resp.iter_lines():
                    ready.set()
                    if line.startswith("id: "):
                        last = int(line[4:])
                        got.setdefault(last, time.perf_counter())
                    if stop.is_set():
                        return
        except httpx.HTTPError:
            time.sleep(0.2)


def _notifications(ctx: Context, c: httpx.Client, base: str, token: str, parcels: int, rounds: int) -> None:
    recv = _Receiver()
    assert c.post("/collections/land_use/webhooks", json={"url": recv.url}).status_code == 201
    sse_p95, hook_p95 = [], []
    got: dict[int, float] = {}
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=_listen, args=(base, token, got, stop, ready), daemon=True)
    t.start()
    ready.wait(60)
    n = 10 if ctx.quick else 30
    for r in range(rounds):
        sent: dict[int, float] = {}
        for i in range(n):
            resp = _patch(c, _key(random.randrange(parcels)), {"bz": f"notify {r}.{i}"}, f"notify {r}.{i}")
            assert resp.status_code == 200, resp.text
            sent[resp.json()["version"]] = time.perf_counter()
            time.sleep(0.2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (set(sent) <= set(got) and set(sent) <= set(recv.got)):
            time.sleep(0.05)
        sse_p95.append(percentile([max(0.0, got.get(v, math.inf) - s) * 1000 for v, s in sent.items()], 95))
        hook_p95.append(percentile([max(0.0, recv.got.get(v, math.inf) - s) * 1000 for v, s in sent.items()], 95))
    stop.set()
    recv.server.shutdown()
    ctx.report(_spread("editing: commit -> SSE client (p95; target < 1000)", sse_p95, "ms", n=n))
    ctx.report(_spread("editing: commit -> signed webhook received (p95)", hook_p95, "ms", n=n))


class _Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: dict[int, int] = {}
        self.writes: list[tuple[str, str, int]] = []  # (key, value, version) of each successful attribute write
        self.splits = 0

    def count(self, status: int) -> None:
        with self.lock:
            self.status[status] = self.status.get(status, 0) + 1


def _hot_keys(c: httpx.Client, box: list[float]) -> list[str]:
    r = c.get("/collections/land_use/items", params={"bbox": ",".join(f"{v:.9f}" for v in box), "limit": 2000,
                                                    "properties": "bsm"})
    return [f["id"] for f in r.json().get("features", [])] if r.status_code == 200 else []


def _attribute_client(base: str, token: str, box: list[float], cid: int, until: float, tally: _Tally) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        keys, n = [], 0
        while time.monotonic() < until:
            if n % 20 == 0 or not keys:
                keys = _hot_keys(c, box) or keys
            n += 1
            key, value = random.choice(keys), f"c{cid}-{n}"
            g = c.get(f"/collections/land_use/items/{key}")
            tally.count(g.status_code)
            if g.status_code != 200:
                continue
            r = c.patch(f"/collections/land_use/items/{key}", params={"reason": value},
                        content=json.dumps({"properties": {"bz": value}}),
                        headers={"If-Match": g.headers["etag"], "Content-Type": "application/merge-patch+json"})
            tally.count(r.status_code)
            if r.status_code == 200:
                with tally.lock:
                    tally.writes.append((key, value, r.json()["version"]))


def _split_client(base: str, token: str, box: list[float], cid: int, until: float, tally: _Tally) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        n = 0
        while time.monotonic() < until:
            keys = _hot_keys(c, box)
            if not keys:
                continue
            n += 1
            key = random.choice(keys)
            g = c.get(f"/collections/land_use/items/{key}")
            tally.count(g.status_code)
            if g.status_code != 200:
                continue
            xs = [p[0] for poly in g.json()["geometry"]["coordinates"] for ring in poly for p in ring]
            ys = [p[1] for poly in g.json()["geometry"]["coordinates"] for ring in poly for p in ring]
            if max(xs) - min(xs) < 2e-5:
                continue  # thin enough
            x, dy = (min(xs) + max(xs)) / 2, (max(ys) - min(ys)) * 0.1
            line = {"type": "LineString", "coordinates": [[x, min(ys) - dy], [x, max(ys) + dy]]}
            r = c.post(f"/collections/land_use/items/{key}/split", params={"reason": f"split s{cid}-{n}"},
                       json={"line": line, "ids": [f"{key[:18]}s{cid}x{n}a", f"{key[:18]}s{cid}x{n}b"]},
                       headers={"If-Match": g.headers["etag"]})
            tally.count(r.status_code)
            if r.status_code == 200:
                with tally.lock:
                    tally.splits += 1


def _coverage(conn: psycopg.Connection, box: list[float]) -> tuple[float, int]:
    total = conn.execute("SELECT sum(ST_Area(geom::geography)) FROM data.land_use WHERE _vto IS NULL").fetchone()[0]
    overlaps = conn.execute("""
        WITH h AS (SELECT _key, geom FROM data.land_use WHERE _vto IS NULL
                   AND geom && ST_MakeEnvelope(%s, %s, %s, %s, 4490))
        SELECT count(*) FROM h a JOIN h b ON a._key < b._key AND ST_Intersects(a.geom, b.geom)
        WHERE ST_Area(ST_Intersection(a.geom, b.geom)) > 1e-14""", box).fetchone()[0]
    return total, overlaps


def _lost_updates(conn: psycopg.Connection, writes: list[tuple[str, str, int]]) -> int:
    """Successful writes not kept: the row of the write's version lacks its value, or a parcel's
    current value is not its last successful write (a later write lost an earlier one's winner)."""
    lost = 0
    last: dict[str, tuple[int, str]] = {}
    for key, value, v in writes:
        row = conn.execute("SELECT bz FROM data.land_use WHERE _key = %s AND _vfrom = %s", (key, v)).fetchone()
        lost += row is None or row[0] != value
        if key not in last or v > last[key][0]:
            last[key] = (v, value)
    for key, (_, value) in last.items():
        cur = conn.execute("SELECT bz FROM data.land_use WHERE _key = %s AND _vto IS NULL", (key,)).fetchone()
        lost += cur is not None and cur[0] != value  # (a split may have retired the parcel since)
    return lost


def _concurrency(ctx: Context, url: str, base: str, token: str, side: int) -> None:
    seconds = 10 if ctx.quick else 30
    o = min(100, side - 10)
    box = [LON0 + o * CELL + 1e-7, LAT0 + o * CELL + 1e-7, LON0 + (o + 10) * CELL - 1e-7, LAT0 + (o + 10) * CELL - 1e-7]
    with psycopg.connect(url) as conn:
        before = _coverage(conn, box)
    tally, until = _Tally(), time.monotonic() + seconds
    threads = [threading.Thread(target=_attribute_client, args=(base, token, box, i, until, tally)) for i in range(12)]
    threads += [threading.Thread(target=_split_client, args=(base, token, box, i, until, tally)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(url) as conn:
        after = _coverage(conn, box)
        lost = _lost_updates(conn, tally.writes)
    fivexx = sum(n for s, n in tally.status.items() if s >= 500)
    rel = abs(after[0] - before[0]) / before[0]
    r = Result(f"editing: 16 clients x {seconds} s on 100 overlapping parcels, successful writes", len(tally.writes)
               + tally.splits, None, None, "writes")
    r.extra = {"lost_updates": lost, "5xx": fivexx, "statuses": dict(sorted(tally.status.items())),
               "attribute_writes": len(tally.writes), "splits": tally.splits,
               "coverage_total_rel_diff": rel, "overlapping_pairs": after[1], "baseline": "none (absolute)"}
    ctx.report(r)
    if lost or fivexx or rel > 1e-9 or after[1]:
        print(f"bench editing: FAILED invariants: lost={lost} 5xx={fivexx} rel={rel:.3g} overlaps={after[1]}", flush=True)


def run(ctx: Context) -> None:
    from bench_features import _ours

    url = ctx.named_database(DB)
    side = _load(url, ctx.parcels)
    token = _token(url)
    data_dir = ctx.settings.data_path / f"bench-editing-{ctx.parcels}"
    data_dir.mkdir(parents=True, exist_ok=True)
    server = _ours(url, data_dir)
    rounds = 1 if ctx.quick else ctx.rounds
    random.seed(ctx.seed)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as c:
            _round_trips(ctx, c, ctx.parcels, rounds)
            _session(ctx, c, ctx.parcels, rounds)
            _notifications(ctx, c, server.url, token, ctx.parcels, rounds)
        _concurrency(ctx, url, server.url, token, side)
    finally:
        server.stop()

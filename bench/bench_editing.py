"""Editing (OGC API - Features Part 4) at bench scale: round trips, a 1,000-change session,
notification latency, and 16 editors on overlapping parcels (bench/editing_race.py).

Data: a land-use coverage of ``ctx.parcels`` grid parcels (~50 m cells, 20-vertex rings, valid
GB/T 21010 codes) loaded with SQL into this benchmark's own database as version 1, once per
scale; every run puts it back to version 1 (untimed; bench/editing_sql.py).

Baseline: the same versioned write as bare SQL over a kept psycopg connection
(bench/editing_sql.py: one transaction locking the layer, comparing the row's hash as If-Match
does, adding a version row, retiring the row and inserting its new state), interleaved with ours
request by request in each of ``ctx.rounds`` rounds (quick: 1); ratios are ours / baseline with
the spread of the per-round ratios. The single-feature write is also interleaved with pygeoapi's
PostgreSQL provider (a PUT; bench/editing_pygeoapi.py, from its own virtualenv when present): the
one open-source OGC API server that writes to PostGIS, without preconditions, versions or
authorisation (GeoServer and pg_featureserv do not write), so a floor for an OGC API write.
  * a single-feature PATCH with If-Match, committed at once as a version: p50/p95 (ms);
  * an edit session of 1,000 PATCHes (staged one request each, then committed) against the same
    1,000 changes in one bare-SQL transaction; the commit alone is printed too;
  * commit -> Server-Sent Events client, and commit -> signed webhook receiver: p95 (target < 1 s;
    absolute, no baseline);
  * the race of 16 clients (absolute: its figures are invariants, 0 lost / 0 5xx / exact coverage).
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
import editing_pygeoapi
from editing_race import concurrency
from editing_sql import CODES, BareSql, key_of, load

DB = "geobase_bench_editing"
BARE = "bare SQL UPDATE + version row, one transaction, kept psycopg connection"


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


def _one_patch(c: httpx.Client, key: str, value: str) -> float:
    etag = c.get(f"/collections/land_use/items/{key}").headers["etag"]
    t0 = time.perf_counter()
    resp = c.patch(f"/collections/land_use/items/{key}", params={"reason": value},
                   content=json.dumps({"properties": {"bz": value}}),
                   headers={"If-Match": etag, "Content-Type": "application/merge-patch+json"})
    dt = (time.perf_counter() - t0) * 1000
    assert resp.status_code == 200, resp.text
    return dt


def _one_sql(bare: BareSql, key: str, value: str) -> float:
    h = bare.current_hash(key)
    t0 = time.perf_counter()
    bare.patch(key, h, value)
    return (time.perf_counter() - t0) * 1000


def _one_pga(pga: httpx.Client, i: int, side: int, value: str) -> float:
    assert pga.get(f"/collections/parcels/items/{i:018d}", params={"f": "json"}).status_code == 200
    t0 = time.perf_counter()
    resp = editing_pygeoapi.put(pga, i, side, CODES[i % 10], value)
    dt = (time.perf_counter() - t0) * 1000
    assert resp.status_code in (200, 204), resp.text[:300]
    return dt


def _round_trips(ctx: Context, c: httpx.Client, bare: BareSql, pga: httpx.Client | None, side: int,
                 parcels: int, rounds: int) -> None:
    """Ours, bare SQL and pygeoapi (when installed) alternate request by request (different
    parcels, same distribution); each writes after an untimed read of the feature."""
    n = 30 if ctx.quick else 200
    t: dict[str, dict[int, list[float]]] = {s: {50: [], 95: []} for s in ("ours", "sql", "pga")}
    for r in range(rounds):
        got: dict[str, list[float]] = {"ours": [], "sql": [], "pga": []}
        for i in range(n):
            got["ours"].append(_one_patch(c, key_of(random.randrange(parcels)), f"rtt {r}.{i}"))
            got["sql"].append(_one_sql(bare, key_of(random.randrange(parcels)), f"sql {r}.{i}"))
            if pga is not None:
                got["pga"].append(_one_pga(pga, random.randrange(parcels), side, f"pga {r}.{i}"))
        for side_name, times in got.items():
            for p in (50, 95):
                if times:
                    t[side_name][p].append(percentile(times, p))
    for p in (50, 95):
        name = f"editing: single-feature PATCH with If-Match, committed as a version (p{p})"
        for other, label in (("sql", BARE), ("pga", editing_pygeoapi.NAME)):
            if t[other][p]:
                res = Result.rounds(name, t["ours"][p], t[other][p], label, "ms")
                res.extra = {"n_per_round": n}
                ctx.report(res)


def _our_session(c: httpx.Client, keys: list[int], r: int) -> tuple[float, float]:
    """(seconds staging 1,000 changes, seconds committing them) through the API."""
    sid = c.post("/collections/land_use/sessions").json()["id"]
    t0 = time.perf_counter()
    for i in keys:
        resp = _patch(c, key_of(i), {"dlbm": CODES[(i + r + 1) % 10]}, None, sid)
        assert resp.status_code == 200, resp.text
    staged = time.perf_counter() - t0
    t0 = time.perf_counter()
    resp = c.post(f"/collections/land_use/sessions/{sid}/commit", json={"message": f"bench session {r}"})
    assert resp.status_code == 200 and resp.json()["changed"] == 1000, resp.text
    return staged, time.perf_counter() - t0


def _sql_session(bare: BareSql, keys: list[int], r: int) -> float:
    changes = [(key_of(i), bare.current_hash(key_of(i)), CODES[(i + r + 1) % 10]) for i in keys]
    t0 = time.perf_counter()
    bare.session(changes)
    return time.perf_counter() - t0


def _session(ctx: Context, c: httpx.Client, bare: BareSql, parcels: int, rounds: int) -> None:
    totals, commits, sql_totals = [], [], []
    for r in range(rounds):
        picked = random.sample(range(parcels), 2000)
        staged, commit = _our_session(c, picked[:1000], r)
        totals.append(staged + commit)
        commits.append(commit)
        sql_totals.append(_sql_session(bare, picked[1000:], r))
    ctx.report(Result.rounds("editing: session of 1,000 changes, staged (GET + PATCH each) and committed",
                             totals, sql_totals, BARE + " (1,000 changes, one version)", "s"))
    ctx.report(_spread("editing: session of 1,000 changes, the commit alone", commits, "s"))


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
            resp = _patch(c, key_of(random.randrange(parcels)), {"bz": f"notify {r}.{i}"}, f"notify {r}.{i}")
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


def run(ctx: Context) -> None:
    from bench_features import _ours

    url = ctx.named_database(DB)
    side = load(url, ctx.parcels)
    token = _token(url)
    data_dir = ctx.settings.data_path / f"bench-editing-{ctx.parcels}"
    data_dir.mkdir(parents=True, exist_ok=True)
    server = _ours(url, data_dir)
    bare = BareSql(url)
    pga_server = pga = None
    if editing_pygeoapi.venv() is not None:
        from bench_features import Server, _free_port

        editing_pygeoapi.prepare(url, ctx.parcels)
        pga_server = editing_pygeoapi.start(url, data_dir, _free_port(), Server)
        pga = httpx.Client(base_url=pga_server.url, timeout=600)
    else:
        print("bench editing: pygeoapi baseline left out (no virtualenv; see bench/editing_pygeoapi.py)", flush=True)
    rounds = 1 if ctx.quick else ctx.rounds
    random.seed(ctx.seed)
    print(f"bench editing: {ctx.parcels:,} parcels, {rounds} round(s); the machine is shared (loaded): "
          "only the ratios of one run mean anything", flush=True)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as c:
            _round_trips(ctx, c, bare, pga, side, ctx.parcels, rounds)
            _session(ctx, c, bare, ctx.parcels, rounds)
            _notifications(ctx, c, server.url, token, ctx.parcels, rounds)
        concurrency(ctx, url, server.url, token, side)
    finally:
        bare.close()
        server.stop()
        if pga_server is not None:
            pga.close()
            pga_server.stop()

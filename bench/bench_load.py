"""Mixed load: many concurrent clients on loopback for a fixed duration against one server.

Workload (weights): vector tiles of the land-use layer around the data (50%), items pages of
100 features by bbox (35%), a site check of a ~1 km² polygon (15%). Half of the clients carry
an API key (exercising key resolution, per-key buckets and audit rows), half are the public.
Rate limits are raised far above the offered load so that only the server's capacity is
measured; any 429 is counted separately from errors.

Figures: requests served per second, error rate (target: 0 non-429 errors), p50/p95/p99
latency under load, against the baseline "the same mix from one sequential client" on the same
server and data in the same run (ratio = how much latency grows under load; throughput ratio =
how much concurrency buys on this machine).

Data: the land-use layer of ``bench_features`` (``ctx.parcels`` parcels) — loaded once and
shared."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time

import httpx
import psycopg

from common import REPO, Context, Result, percentile
from common import web_mercator_tile as _tile

CLIENTS = int(os.environ.get("GEOBASE_BENCH_LOAD_CLIENTS", "32"))
DURATION_S = float(os.environ.get("GEOBASE_BENCH_LOAD_SECONDS", "20"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _requests(extent: list[float]):
    """Yields (kind, method, path, json) forever, drawn from the mix around the data extent."""
    x0, y0, x1, y1 = extent
    rnd = random.Random(7)
    while True:
        lon = rnd.uniform(x0, x0 + (x1 - x0) * 0.5)
        lat = rnd.uniform(y0, y0 + (y1 - y0) * 0.5)
        u = rnd.random()
        if u < 0.5:
            z = rnd.choice([13, 14, 15])
            tx, ty = _tile(lon, lat, z)
            yield "tile", "GET", f"/collections/land_use/tiles/WebMercatorQuad/{z}/{ty}/{tx}", None
        elif u < 0.85:
            d = 0.004
            yield "items", "GET", f"/collections/land_use/items?limit=100&bbox={lon},{lat},{lon + d},{lat + d}", None
        else:
            d = 0.01
            ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
            yield "site", "POST", "/analysis/site-check", {"geometry": {"type": "Polygon", "coordinates": [ring]}}


async def _client(base: str, headers: dict, gen, until: float, out: list):
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
        while time.perf_counter() < until:
            kind, method, path, body = next(gen)
            t = time.perf_counter()
            try:
                r = await c.request(method, path, json=body)
                status = r.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            out.append((kind, status, time.perf_counter() - t))


async def _load(base: str, key: str, extent, clients: int, seconds: float) -> tuple[list, float]:
    out: list = []
    until = time.perf_counter() + seconds
    t0 = time.perf_counter()
    tasks = []
    for i in range(clients):
        headers = {"Authorization": f"Bearer {key}"} if i % 2 else {}
        gen = _requests(extent)
        for _ in range(i * 3):  # different clients, different requests
            next(gen)
        tasks.append(_client(base, headers, gen, until, out))
    await asyncio.gather(*tasks)
    return out, time.perf_counter() - t0


def _summary(samples: list, wall: float) -> dict:
    ok = [s for s in samples if s[1] == 200 or s[1] == 204]
    throttled = [s for s in samples if s[1] == 429]
    errors = [s for s in samples if s not in ok and s[1] != 429]
    lat = [s[2] * 1000 for s in ok]
    by_kind = {}
    for kind in ("tile", "items", "site"):
        k = [s[2] * 1000 for s in ok if s[0] == kind]
        by_kind[kind] = {"n": len(k), "p50_ms": round(percentile(k, 50), 1), "p95_ms": round(percentile(k, 95), 1)}
    return {"requests": len(samples), "rps": len(ok) / wall, "errors": len(errors), "throttled": len(throttled),
            "error_rate": len(errors) / max(1, len(samples)), "p50": percentile(lat, 50),
            "p95": percentile(lat, 95), "p99": percentile(lat, 99), "by_kind": by_kind,
            "error_examples": sorted({str(s[1]) for s in errors})[:5]}


def run(ctx: Context) -> None:
    import bench_features  # the land-use bench data, in a database of our own

    bench_features.DB = "geobase_bench_load"
    from bench_features import _database, _load as load_parcels

    url = _database(ctx)
    load_parcels(url, ctx.parcels)
    from geobase import keys

    with psycopg.connect(url) as conn:
        key = keys.create_key(conn, name="bench-load", role="analyst", department="planning").token
        extent = conn.execute("SELECT extent FROM catalog.layer_versions WHERE layer='land_use' "
                              "ORDER BY version DESC LIMIT 1").fetchone()[0]
        conn.commit()
    port = _free_port()
    data_dir = REPO / ".geobase-bench" / "load"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(data_dir), GEOBASE_LOG_LEVEL="warning",
               GEOBASE_RATE_LIMIT_PER_S="100000", GEOBASE_RATE_LIMIT_BURST="100000",
               GEOBASE_RATE_LIMIT_PUBLIC_PER_S="100000", GEOBASE_RATE_LIMIT_PUBLIC_BURST="100000")
    log = open(data_dir / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "geobase.cli", "serve", "--no-prepare", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        asyncio.run(_load(base, key, extent, 4, 3))  # warm-up (pool, caches)
        seq, seq_wall = asyncio.run(_load(base, key, extent, 1, max(5.0, DURATION_S / 3)))
        loaded, wall = asyncio.run(_load(base, key, extent, CLIENTS, DURATION_S))
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    s1, sn = _summary(seq, seq_wall), _summary(loaded, wall)
    extra = {"clients": CLIENTS, "seconds": DURATION_S, "parcels": ctx.parcels, "requests": sn["requests"],
             "errors": sn["errors"], "throttled_429": sn["throttled"], "error_rate": round(sn["error_rate"], 5),
             "by_kind": sn["by_kind"], "error_examples": sn["error_examples"]}
    ctx.report(Result("load: requests served per second", sn["rps"], s1["rps"], "one sequential client", "req/s",
                      higher_is_better=True, extra=extra))
    for p in ("p50", "p95", "p99"):
        ctx.report(Result(f"load: {p} latency under {CLIENTS} clients", sn[p], s1[p], "one sequential client", "ms"))
    ctx.report(Result("load: non-429 error rate", sn["error_rate"], None, None, "fraction"))

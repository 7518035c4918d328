"""Mixed load: many concurrent clients on loopback for a fixed duration against one server,
and against tipg on the part of the mix tipg serves.

Workload (weights): vector tiles of the land-use layer around the data (50%), items pages of
100 features by bbox (35%), a site check of a ~1 km² polygon (15%). Half of the clients carry
an API key (exercising key resolution, per-key buckets and audit rows), half are the public.
Rate limits are raised far above the offered load so that only the server's capacity is
measured; any 429 is counted separately from errors. Clients accept gzip, as browsers do.

Figures, each over ``ctx.rounds`` interleaved rounds (one round: ours with one sequential
client, ours with ``CLIENTS`` clients on the full mix, ours and tipg with ``CLIENTS`` clients
on the tiles + items mix, each for the same duration):
  * requests per second and p50/p95/p99 under load against "the same mix from one sequential
    client" on the same server (how much concurrency buys, how much latency grows);
  * requests per second and p99 against tipg (one uvicorn worker, like ours; tiles from the
    view ``bench_tipg.land_use_tiles`` with buffer 64 / extent 4096 / no feature cap, items from
    ``bench_tipg.land_use``; same database, same requests in the same order). The site check
    has no tipg counterpart, so this comparison runs the tiles + items mix only
    (tiles 50/85, items 35/85) on both.

Data: the land-use layer of ``bench_features`` (``ctx.parcels`` parcels) in its own database
per scale, loaded once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time

import httpx
import psycopg
from common import REPO, Context, Result, free_port, percentile, tipg_tile_view
from common import web_mercator_tile as _tile

DB = "geobase_bench_load"  # not bench_features' database: load writes keys and audit rows
CLIENTS = int(os.environ.get("GEOBASE_BENCH_LOAD_CLIENTS", "32"))
DURATION_S = float(os.environ.get("GEOBASE_BENCH_LOAD_SECONDS", "15"))


def _requests(extent: list[float], target: str = "ours", site: bool = True):
    """Yields (kind, method, path, json) forever, drawn from the mix around the data extent;
    ``target`` "tipg" spells the same requests in tipg's paths; ``site`` False leaves the
    site checks out (tipg has none)."""
    x0, y0, x1, y1 = extent
    rnd = random.Random(7)
    while True:
        lon = rnd.uniform(x0, x0 + (x1 - x0) * 0.5)
        lat = rnd.uniform(y0, y0 + (y1 - y0) * 0.5)
        u = rnd.random() * (1.0 if site else 0.85)
        if u < 0.5:
            z = rnd.choice([13, 14, 15])
            tx, ty = _tile(lon, lat, z)
            if target == "tipg":
                yield "tile", "GET", f"/collections/bench_tipg.land_use_tiles/tiles/WebMercatorQuad/{z}/{tx}/{ty}", None
            else:
                yield "tile", "GET", f"/collections/land_use/tiles/WebMercatorQuad/{z}/{ty}/{tx}", None
        elif u < 0.85:
            d = 0.004
            coll = "bench_tipg.land_use" if target == "tipg" else "land_use"
            yield "items", "GET", f"/collections/{coll}/items?limit=100&bbox={lon},{lat},{lon + d},{lat + d}", None
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


async def _load(base: str, key: str, extent, clients: int, seconds: float, target: str = "ours",
                site: bool = True) -> tuple[list, float]:
    out: list = []
    until = time.perf_counter() + seconds
    t0 = time.perf_counter()
    tasks = []
    for i in range(clients):
        headers = {"Authorization": f"Bearer {key}"} if i % 2 and target == "ours" else {}
        gen = _requests(extent, target, site)
        for _ in range(i * 3):  # different clients, different requests
            next(gen)
        tasks.append(_client(base, headers, gen, until, out))
    await asyncio.gather(*tasks)
    return out, time.perf_counter() - t0


def _summary(samples: list, wall: float) -> dict:
    """Throughput, errors and latency percentiles (ms) of one load phase."""
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
    from bench_features import _load as load_parcels  # the land-use bench data, in a database of our own
    from bench_tiles import _tipg_tiles

    url = ctx.named_database(DB)
    load_parcels(url, ctx.parcels)
    data_dir = REPO / ".geobase-bench" / f"load-{ctx.parcels}"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(data_dir), GEOBASE_LOG_LEVEL="warning",
               GEOBASE_RATE_LIMIT_PER_S="100000", GEOBASE_RATE_LIMIT_BURST="100000",
               GEOBASE_RATE_LIMIT_PUBLIC_PER_S="100000", GEOBASE_RATE_LIMIT_PUBLIC_BURST="100000")
    made = subprocess.run([sys.executable, "-m", "geobase.cli", "keys", "create", "--name", "bench-load", "--role",
                           "analyst", "--department", "planning", "--json"], env=env, check=True,
                          capture_output=True, text=True)
    key = json.loads(made.stdout.strip().splitlines()[-1])["key"]
    with psycopg.connect(url, autocommit=True) as conn:
        extent = conn.execute("SELECT extent FROM catalog.layer_versions WHERE layer='land_use' "
                              "ORDER BY version DESC LIMIT 1").fetchone()[0]
        tipg_tile_view(conn)
    seconds = 4.0 if ctx.quick else DURATION_S
    port = free_port()
    log = open(data_dir / "server.log", "w")  # noqa: SIM115 — closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "geobase.cli", "serve", "--no-prepare", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    tipg = _tipg_tiles(url, data_dir, max(100_000, ctx.parcels))
    base = f"http://127.0.0.1:{port}"
    runs: dict[str, list] = {"seq": [], "loaded": [], "mix2_ours": [], "mix2_tipg": []}
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        asyncio.run(_load(base, key, extent, 4, 3))  # warm-up (pool, caches)
        asyncio.run(_load(tipg.url, key, extent, 4, 3, "tipg", site=False))
        for _ in range(ctx.rounds):
            runs["seq"].append(_summary(*asyncio.run(_load(base, key, extent, 1, seconds))))
            runs["loaded"].append(_summary(*asyncio.run(_load(base, key, extent, CLIENTS, seconds))))
            runs["mix2_ours"].append(_summary(*asyncio.run(_load(base, key, extent, CLIENTS, seconds, site=False))))
            runs["mix2_tipg"].append(_summary(*asyncio.run(_load(tipg.url, key, extent, CLIENTS, seconds, "tipg",
                                                                 site=False))))
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        tipg.stop()
    _report(ctx, runs, seconds)


def _report(ctx: Context, runs: dict, seconds: float) -> None:
    def col(run: str, k: str) -> list[float]:
        return [r[k] for r in runs[run]]

    last = runs["loaded"][-1]
    extra = {"clients": CLIENTS, "seconds": seconds, "parcels": ctx.parcels,
             "requests": sum(col("loaded", "requests")), "errors": sum(col("loaded", "errors")),
             "throttled_429": sum(col("loaded", "throttled")), "by_kind_last_round": last["by_kind"],
             "error_examples": sorted({e for r in runs["loaded"] for e in r["error_examples"]})[:5]}
    ctx.report(Result.rounds("load: requests served per second (full mix)", col("loaded", "rps"), col("seq", "rps"),
                             "one sequential client", "req/s", higher_is_better=True, extra=extra))
    for p in ("p50", "p95", "p99"):
        ctx.report(Result.rounds(f"load: {p} latency under {CLIENTS} clients (full mix)", col("loaded", p),
                                 col("seq", p), "one sequential client", "ms"))
    tipg_errors = sum(col("mix2_tipg", "errors"))
    ctx.report(Result.rounds(f"load: requests per second, tiles + items mix, {CLIENTS} clients, vs tipg",
                             col("mix2_ours", "rps"), col("mix2_tipg", "rps"),
                             "tipg 1 worker, same requests (tiles buffer 64/extent 4096, items)", "req/s",
                             higher_is_better=True,
                             extra={"errors_ours": sum(col("mix2_ours", "errors")), "errors_tipg": tipg_errors,
                                    "error_examples_tipg": sorted({e for r in runs["mix2_tipg"]
                                                                   for e in r["error_examples"]})[:5],
                                    "by_kind_ours": runs["mix2_ours"][-1]["by_kind"],
                                    "by_kind_tipg": runs["mix2_tipg"][-1]["by_kind"]}))
    ctx.report(Result.rounds(f"load: p99 latency, tiles + items mix, {CLIENTS} clients, vs tipg",
                             col("mix2_ours", "p99"), col("mix2_tipg", "p99"), "tipg 1 worker, same requests", "ms"))
    ctx.report(Result("load: non-429 error rate (full mix, all rounds)",
                      sum(col("loaded", "errors")) / max(1, sum(col("loaded", "requests"))), None, None, "fraction"))

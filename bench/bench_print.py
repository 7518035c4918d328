"""Map sheets and WMTS picture tiles (issue 18 items 5 and 6).

Data: the analysis benchmark's county (bench/bench_analysis.py ``_load``: ``ctx.parcels`` land-use
parcels of ~50 m with 20-vertex rings, ~2 km planning zones, control-line patches), in its own
database on the bench cluster; one uvicorn worker of ours.

Measured in the same run:
  (a) a site check answered as its PDF map sheet (``POST /analysis/site-check?f=pdf``: the check,
      then the sheet of its pieces drawn by matplotlib) for 5 km² sites (~2,000 parcels each),
      p95 against the target of 2 s; interleaved with the same check answered as JSON (no
      sheet), so the ratio is the price of the sheet. No other map server runs this check.
  (b) WMTS PNG tiles (WebMercatorQuad z15 and z13, RESTful, and z11, below land use's detail
      zoom: drawn from the class cells of the tile pyramid, built once before the z11 rounds as
      a server builds it after its first low-zoom tile): a cold tile (never asked for: the
      rows read and drawn) and a cached one (the same URL again), p50 per round. Baseline:
      no WMTS server is installed here (no QGIS Server, GeoServer or MapProxy), so the honest
      reference is our own MVT tile of the same z/x/y, cold and cached, interleaved round by
      round: what a picture tile costs over the vector tile of the same data.
"""

from __future__ import annotations

import math
import random
import shutil
import statistics
import time

import httpx
from bench_analysis import LAT0, _database, _load
from common import Context, Result, interleaved, percentile, web_mercator_tile


def _sites(ctx: Context, extent, n: int = 20) -> list[dict]:
    rng = random.Random(ctx.seed)
    lat_side = math.sqrt(5e6) / 110_900
    lon_side = lat_side / math.cos(math.radians(LAT0 + (extent[3] - extent[1]) / 2))
    out = []
    for _ in range(n):
        x = rng.uniform(extent[0], max(extent[0], extent[2] - lon_side))
        y = rng.uniform(extent[1], max(extent[1], extent[3] - lat_side))
        out.append({"type": "Polygon", "coordinates": [[[x, y], [x + lon_side, y], [x + lon_side, y + lat_side],
                                                         [x, y + lat_side], [x, y]]]})
    return out


def _post(client: httpx.Client, f: str, site: dict) -> float:
    t0 = time.perf_counter()
    r = client.post("/analysis/site-check", params={"f": f}, json={"geometry": site})
    dt = time.perf_counter() - t0
    if r.status_code != 200 or (f == "pdf" and not r.content.startswith(b"%PDF")):
        raise RuntimeError(f"site-check f={f}: HTTP {r.status_code} {r.text[:300]}")
    return dt


def _site_sheets(ctx: Context, client: httpx.Client, extent) -> None:
    sites = _sites(ctx, extent, 6 if ctx.quick else 20)
    _post(client, "pdf", sites[-1])  # untimed: matplotlib, the font and PROJ loaded once
    per_round = max(2, len(sites) // ctx.rounds)
    it = iter(range(10**9))
    pdf_all: list[float] = []

    def pdf() -> float:
        times = [_post(client, "pdf", sites[next(it) % len(sites)]) for _ in range(per_round)]
        pdf_all.extend(times)
        return statistics.median(times)

    def js() -> float:
        return statistics.median([_post(client, "json", s) for s in sites[:per_round]])

    t = interleaved(ctx.rounds, {"pdf": pdf, "json": js})
    ctx.report(Result.rounds(f"site check 5 km² as its PDF map sheet ({ctx.parcels:,} parcels), median per round",
                             t["pdf"], t["json"], "the same site check as JSON (no sheet)", "s"))
    ctx.report(Result("site check 5 km² as its PDF map sheet (p95)", percentile(pdf_all, 95), None, None, "s",
                      extra={"target_s": 2.0, "runs": len(pdf_all), "median_s": round(percentile(pdf_all, 50), 3)}))


def _tile_paths(ctx: Context, extent, z: int, n: int) -> list[tuple[int, int]]:
    """Up to ``n`` distinct tiles of the county at ``z``, in a seeded random order."""
    x0, y1 = web_mercator_tile(extent[0], extent[1], z)
    x1, y0 = web_mercator_tile(extent[2], extent[3], z)
    every = [(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
    random.Random(ctx.seed + z).shuffle(every)
    return every[:n]


def _get(client: httpx.Client, path: str, cached: bool) -> float:
    t0 = time.perf_counter()
    r = client.get(path, headers={"Accept-Encoding": "gzip"})
    dt = time.perf_counter() - t0
    if r.status_code not in (200, 204):
        raise RuntimeError(f"{path}: HTTP {r.status_code} {r.text[:300]}")
    state = r.headers.get("x-tile-cache")
    if state != ("hit" if cached else "miss"):
        raise RuntimeError(f"{path}: expected a cache {'hit' if cached else 'miss'}, got {state}")
    return dt


def _tiles(ctx: Context, client: httpx.Client, extent, z: int) -> None:
    per_round = 5 if ctx.quick else 15
    paths = _tile_paths(ctx, extent, z, per_round * ctx.rounds)
    per_round = max(1, min(per_round, len(paths) // ctx.rounds))
    tiles = iter(paths)

    def png_path(x, y):
        return f"/wmts/1.0.0/land_use/default/WebMercatorQuad/{z}/{y}/{x}.png"

    def mvt_path(x, y):
        return f"/tiles/land_use/{z}/{x}/{y}.mvt"

    done: list[tuple[int, int]] = []

    def batch() -> list[tuple[int, int]]:
        b = [next(tiles) for _ in range(per_round)]
        done.extend(b)
        return b

    current: list[list[tuple[int, int]]] = []

    def png_cold() -> float:
        current.append(batch())
        return statistics.median([_get(client, png_path(x, y), False) for x, y in current[-1]])

    def mvt_cold() -> float:
        return statistics.median([_get(client, mvt_path(x, y), False) for x, y in current[-1]])

    def png_hit() -> float:
        return statistics.median([_get(client, png_path(x, y), True) for x, y in current[-1]])

    def mvt_hit() -> float:
        return statistics.median([_get(client, mvt_path(x, y), True) for x, y in current[-1]])

    t = interleaved(ctx.rounds, {"png_cold": png_cold, "mvt_cold": mvt_cold, "png_hit": png_hit, "mvt_hit": mvt_hit})

    def conv(v: float) -> float:
        return v * 1000
    ctx.report(Result.rounds(f"WMTS PNG tile z{z}, cold (p50 per round)", [conv(v) for v in t["png_cold"]],
                             [conv(v) for v in t["mvt_cold"]], "our MVT tile of the same z/x/y, cold "
                             "(no WMTS server installed to compare with)", "ms"))
    ctx.report(Result.rounds(f"WMTS PNG tile z{z}, cached (p50 per round)", [conv(v) for v in t["png_hit"]],
                             [conv(v) for v in t["mvt_hit"]], "our MVT tile of the same z/x/y, cached", "ms"))


def run(ctx: Context) -> None:
    from bench_analysis import _Ours

    url = _database(ctx)
    extent = _load(url, ctx.parcels)
    data_dir = ctx.settings.data_path / f"bench-print-{ctx.parcels}"
    shutil.rmtree(data_dir / "tiles", ignore_errors=True)  # every tile of this run starts cold
    data_dir.mkdir(parents=True, exist_ok=True)
    ours = _Ours(url, data_dir)
    try:
        _site_sheets(ctx, ours.client, extent)
        for z in (15, 13):
            _tiles(ctx, ours.client, extent, z)
        _pyramid_built(ctx, ours.client, url, extent)
        _tiles(ctx, ours.client, extent, 11)
    finally:
        ours.stop()


def _pyramid_built(ctx: Context, client: httpx.Client, url: str, extent) -> None:
    """Ask one z10 tile (untimed: it starts the land-use pyramid's build in the server) and wait
    for the pyramid, so the z11 rounds read cells as a warmed-up server does."""
    import psycopg

    x, y = web_mercator_tile((extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2, 10)
    client.get(f"/wmts/1.0.0/land_use/default/WebMercatorQuad/10/{y}/{x}.png")
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while not conn.execute("SELECT 1 FROM tiles.pyramids WHERE layer = 'land_use'").fetchone():
            if time.perf_counter() - t0 > 1800:
                raise RuntimeError("the land-use tile pyramid was not built in 30 minutes")
            time.sleep(1)
    print(f"bench print: land-use tile pyramid ready after {time.perf_counter() - t0:.0f} s", flush=True)

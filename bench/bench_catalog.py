"""The open catalog (issue 19): search latency over 10,000 records, CSW paging by OWSLib, and the
full download of land use as GeoParquet against GeoJSON.

Data: the land-use grid of bench_features (``ctx.parcels`` parcels, loaded with SQL into this
area's own database) and 10,000 metadata-only catalog records (written into
``catalog.record_meta`` with SQL, as an admin registering resources would), with themes,
classes, levels, grades, openness classes and boxes spread over them.

Measured on our server (one uvicorn worker):
  (a) catalog search: requests of ``/catalog/items`` mixing free text, facets, a bbox and a
      datetime, sequential, in interleaved rounds against a small JSON route of the same server
      (its floor under the machine's load): p95 per round (the target: p95 < 100 ms). Every
      search differs (a random box, time window, record number or tag in each), so the index
      keeps no answer for it: the figure is the search's, not a lookup of a kept answer; the
      same 8 searches repeated (kept answers, as a portal's facet clicks are) are a second
      figure. The first request, which builds the records, is reported apart; and the search
      itself in process, the index against the record-by-record scan it replaced, interleaved;
  (b) CSW: OWSLib's CatalogueServiceWeb pages through every record with GetRecords, 100 a page:
      total time and records seen (must equal the catalog's count);
  (c) full download of land use: ``/catalog/items/land_use/download?f=parquet`` (prepared once:
      the first request writes it, the next are served from the file) against the GeoJSON of
      ``/collections/land_use/items?f=json`` streamed without a limit (today's format), in
      interleaved rounds: seconds until the whole body is in, and bytes.

``GEOBASE_BENCH_CATALOG_PARTS=search,csw`` (among search, csw, download) runs only those parts.
"""

from __future__ import annotations

import os
import random
import time

import httpx
import psycopg
from bench_features import _load, _ours
from common import Context, Result, percentile

DB = "geobase_bench_catalog"
RECORDS = 10_000
THEMES = ["土地", "森林", "水资源", "规划", "矿产", "海洋", "地质", "测绘", "生态", "耕地"]


def _records(url: str, n: int, seed: int) -> None:
    rnd = random.Random(seed)
    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("SELECT count(*) FROM catalog.record_meta WHERE dataset LIKE 'bench_%'").fetchone()[0]
        if have == n:
            return
        conn.execute("DELETE FROM catalog.record_meta WHERE dataset LIKE 'bench_%'")
        rows = []
        for i in range(n):
            x, y = 73 + rnd.random() * 60, 18 + rnd.random() * 35
            rows.append((f"bench_{i:05d}", psycopg.types.json.Jsonb({
                "title_zh": f"{rnd.choice(THEMES)}资源数据 {i}", "title_en": f"Resource dataset {i}",
                "abstract_zh": f"第 {i} 号数据资源，{rnd.choice(THEMES)}专题", "department": "natural_resources",
                "grade": rnd.choice(["general", "general", "important"]),
                "openness": rnd.choice(["open", "conditional", "closed"]),
                "data_class": rnd.choice(["status", "planning", "management", "socioeconomic"]),
                "level": rnd.choice(["national", "provincial", "municipal", "county"]),
                "themes": [rnd.choice(THEMES)], "tags": [f"tag{i % 50}"], "keywords": [f"kw{i % 200}"],
                "bbox": [x, y, x + rnd.random(), y + rnd.random()],
                "interval": [f"{2000 + i % 20}-01-01T00:00:00Z", f"{2010 + i % 15}-12-31T00:00:00Z"]})))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO catalog.record_meta (dataset, meta) VALUES (%s, %s)", rows)


def _timed(client: httpx.Client, path: str, params: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    with client.stream("GET", path, params=params) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            n += len(chunk)
    return time.perf_counter() - t0, n


def run(ctx: Context) -> None:
    url = ctx.named_database(DB)
    _load(url, ctx.parcels)
    n_records = 1_000 if ctx.quick else RECORDS
    _records(url, n_records, ctx.seed)
    data_dir = ctx.settings.data_path / "bench-catalog"
    data_dir.mkdir(parents=True, exist_ok=True)
    srv = _ours(url, data_dir)
    rnd = random.Random(ctx.seed)
    parts = set(os.environ.get("GEOBASE_BENCH_CATALOG_PARTS", "search,csw,download").split(","))
    try:
        with httpx.Client(base_url=srv.url, timeout=900) as c:
            t0 = time.perf_counter()
            total = c.get("/catalog/items", params={"limit": 1}).json()["numberMatched"]
            first = time.perf_counter() - t0
            queries = [{"q": "森林"}, {"theme": "耕地"}, {"class": "planning", "level": "county"},
                       {"grade": "general", "openness": "open"}, {"bbox": "100,25,110,35"},
                       {"datetime": "2005-01-01T00:00:00Z/2006-01-01T00:00:00Z"}, {"q": "资源数据 12"},
                       {"tag": "tag7", "limit": 50}]
            if "search" in parts:
                _search(ctx, c, lambda: _varied_query(rnd), total, first, "catalog search p95 (HTTP)")
                _search(ctx, c, lambda: dict(rnd.choice(queries)), total, first,
                        "catalog search p95 (HTTP), the same 8 searches repeated (kept answers)")
                _index_vs_scan(ctx, url, queries, rnd)

            if "csw" in parts:
                _csw(ctx, srv.url, total)
            if "download" in parts:
                _download(ctx, c)
    finally:
        srv.stop()


def _varied_query(rnd: random.Random) -> dict:
    """A search no earlier request asked: one of the portal's kinds of search, each with a random
    box, time window, record number or tag (so the index's kept answers never serve it)."""
    x, y = round(73 + rnd.random() * 55, 3), round(18 + rnd.random() * 30, 3)
    box = f"{x},{y},{round(x + 2 + rnd.random() * 10, 3)},{round(y + 2 + rnd.random() * 8, 3)}"
    start = 2000 + rnd.randrange(25)
    window = f"{start}-{rnd.randrange(1, 13):02d}-01T00:00:00Z/{start + 1 + rnd.randrange(5)}-01-01T00:00:00Z"
    kinds = [{"q": f"资源数据 {rnd.randrange(10_000)}"}, {"q": rnd.choice(THEMES), "bbox": box},
             {"theme": rnd.choice(THEMES), "bbox": box},
             {"class": rnd.choice(["status", "planning", "management", "socioeconomic"]),
              "level": rnd.choice(["national", "provincial", "municipal", "county"]), "bbox": box},
             {"grade": "general", "openness": "open", "datetime": window}, {"bbox": box},
             {"datetime": window, "bbox": box}, {"tag": f"tag{rnd.randrange(50)}", "limit": 50, "bbox": box}]
    return rnd.choice(kinds)


def _search(ctx: Context, c: httpx.Client, next_query, total: int, first: float, figure: str) -> None:
    """(a) in interleaved rounds: each round sends ``n`` searches, each followed by a request of
    ``/catalog/zones`` (a small JSON route through the same gate, key check and audit: the
    server's floor on this machine now), and reports both p95s (and p50, p99 per round); the
    ratio, and the difference of the p95s, say what the search itself adds, whatever the
    machine's load."""
    n = 40 if ctx.quick else 300
    p95s, floors = [], []
    stats: dict[str, list] = {"search_p50": [], "search_p99": [], "zones_p50": [], "zones_p99": [],
                              "p95_difference_ms": []}
    for _ in range(ctx.rounds):
        lat, floor = [], []
        for _ in range(n):
            params = next_query()
            t0 = time.perf_counter()
            c.get("/catalog/items", params=params).raise_for_status()
            lat.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            c.get("/catalog/zones").raise_for_status()
            floor.append((time.perf_counter() - t0) * 1000)
        p95s.append(percentile(lat, 95))
        floors.append(percentile(floor, 95))
        for name, values in (("search", lat), ("zones", floor)):
            stats[f"{name}_p50"].append(round(percentile(values, 50), 1))
            stats[f"{name}_p99"].append(round(percentile(values, 99), 1))
        stats["p95_difference_ms"].append(round(p95s[-1] - floors[-1], 1))
    ctx.report(Result.rounds(figure, p95s, floors, "/catalog/zones p95, same rounds", "ms",
                             extra={"search_p95": [round(v, 1) for v in p95s],
                                    "zones_p95": [round(v, 1) for v in floors], **stats,
                                    "records": total, "requests_per_round": n,
                                    "first_request_s": round(first, 2)}))


def _index_vs_scan(ctx: Context, url: str, queries: list[dict], rnd: random.Random) -> None:
    """The search itself in this process over the same records (the server's view of the
    public): the index (bit sets, geobase/opendata/search_index.py; its per-query kept answers
    left out) against the record-by-record match it replaced, query by query interleaved, in
    rounds."""
    import asyncio

    from geobase.catalog.records import build_records
    from geobase.opendata import encode
    from geobase.specs import get_registry

    async def load() -> list[dict]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await build_records(conn, get_registry())

    records = asyncio.run(load())
    ours, base = [], []
    for _ in range(ctx.rounds):
        a = b = 0.0
        for _ in range(50):
            p = dict(rnd.choice(queries))
            facets = {name: p.get(name) for name in encode.FACETS}
            query = encode.parse_query(p.get("q"), p.get("bbox"), p.get("datetime"), p.get("type"), facets)
            idx = encode.index_of(records)   # built once, as the server keeps it
            t0 = time.perf_counter()
            mask = idx.select(query)   # the index itself, not a kept answer of a repeated query
            hits, _ = idx.hits(mask), idx.counts(mask)
            hits[:10], len(hits)
            a += time.perf_counter() - t0
            t0 = time.perf_counter()
            ref, _ = encode.search_by_scan(records, query)
            b += time.perf_counter() - t0
            assert len(hits) == len(ref)
        ours.append(a / 50 * 1000)
        base.append(b / 50 * 1000)
    ctx.report(Result.rounds("catalog search in process: index vs record-by-record scan", ours, base,
                             "record-by-record scan (before)", "ms", extra={"records": len(records)}))


def _csw(ctx: Context, url: str, total: int) -> None:
    """(b): the first GetRecords builds pycsw's table of the view (reported apart), then every page."""
    from owslib.csw import CatalogueServiceWeb

    t0 = time.perf_counter()
    csw = CatalogueServiceWeb(f"{url}/csw", version="2.0.2", timeout=900)
    csw.getrecords2(startposition=1, maxrecords=1, esn="brief")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    seen, start, pages = 0, 1, 0
    while True:
        csw.getrecords2(startposition=start, maxrecords=100, esn="brief")
        seen += len(csw.records)
        pages += 1
        nxt = csw.results["nextrecord"]
        if not nxt or nxt > csw.results["matches"]:
            break
        start = nxt
    dt = time.perf_counter() - t0
    assert seen == total, (seen, total)
    ctx.report(Result("CSW GetRecords paged through all records (OWSLib, 100 a page)", dt, None, None, "s",
                      extra={"records": seen, "pages": pages, "first_request_builds_table_s": round(build, 1)}))


def _download(ctx: Context, c: httpx.Client) -> None:

    t0 = time.perf_counter()
    _, size_pq = _timed(c, "/catalog/items/land_use/download", {"f": "parquet"})
    prepare_s = time.perf_counter() - t0
    pq_s, gj_s, size_gj = [], [], 0
    for _ in range(ctx.rounds):
        dt, size_pq = _timed(c, "/catalog/items/land_use/download", {"f": "parquet"})
        pq_s.append(dt)
        dt, size_gj = _timed(c, "/collections/land_use/items", {"f": "json", "download": "true"})
        gj_s.append(dt)
    ctx.report(Result.rounds("land use full download: GeoParquet (prepared) vs GeoJSON (streamed)", pq_s,
                             gj_s, "GeoJSON", "s", extra={
                                 "parcels": ctx.parcels, "parquet_bytes": size_pq, "geojson_bytes": size_gj,
                                 "parquet_first_request_incl_prepare_s": round(prepare_s, 1)}))

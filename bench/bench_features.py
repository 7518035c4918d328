"""Features API throughput vs tipg on the same database, and a whole-layer export.

Data: a land-use layer of ``ctx.parcels`` parcels (a grid of ~50 m cells with 20-vertex
rings, attributes like a DLTB delivery) loaded with SQL into its own database on the bench
cluster, as a current version (``_vto IS NULL``) with the storage layout of geobase.
tipg (the reference OGC API Features server on PostGIS) reads the same rows through a view
``bench_tipg.land_use`` (current rows, one geometry column).

Measured (sequential requests, both servers one uvicorn worker, interleaved request by request:
ours, tipg, ours, tipg, ... for at least ``ctx.rounds`` rounds; the ratio is printed with the
spread of its per-round ratios; tipg gzips at level 6 and we at a fast level: both bodies are
requested with gzip accepted, as a browser or QGIS does, and timed until decoded):
  * items pages of 1,000 and 10,000 features selected by bbox,
  * a CQL2-filtered page (attribute + bbox),
  -> features/second ours vs tipg (target >= 2x),
  * a whole-layer GeoJSON export (``download=true``): time to first byte, total time and the
    server's peak RSS (target < 300 MiB).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
from common import REPO, Context, Result, free_port, peak_rss_mib

DB = "geobase_bench_features"
CELL = 0.0005  # degrees (~50 m)
LON0, LAT0 = 117.0, 31.0


def _free_port() -> int:
    return free_port()


def _database(ctx: Context) -> str:
    """URL of this benchmark's own database on the bench server."""
    return ctx.named_database(DB)


def _load(url: str, parcels: int) -> None:
    side = math.ceil(math.sqrt(parcels))
    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("SELECT rows_total FROM catalog.layer_versions WHERE layer = 'land_use' AND version = 1").fetchone()
        if have and have[0] == parcels:
            return
        print(f"bench features: loading {parcels:,} parcels ...", flush=True)
        t0 = time.perf_counter()
        conn.execute("DELETE FROM catalog.layer_versions WHERE layer = 'land_use'")
        conn.execute("TRUNCATE data.land_use")
        conn.execute("UPDATE catalog.layers SET current_version = NULL WHERE name = 'land_use'")
        step = 200_000
        for lo in range(0, parcels, step):
            hi = min(parcels, lo + step) - 1
            conn.execute(
                """
                INSERT INTO data.land_use (_key, _hash, _vfrom, bsm, ysdm, tbbh, dlbm, dlmc, qsxz, qsdwdm, qsdwmc,
                                           zldwdm, zldwmc, tbmj, kcxs, kcmj, tbdlmj, sjnf, _area_m2, geom, geom_3857)
                SELECT k, md5(k), 1, k, '2001010100', (i %% 9999)::text,
                       (ARRAY['0101','0102','0103','0201','0301','0305','0404','0702','1001','1101'])[i %% 10 + 1],
                       '地类' || (i %% 10), (ARRAY['10','30','31','32'])[i %% 4 + 1], '3401' || lpad((i %% 977)::text, 8, '0'),
                       '权属单位' || (i %% 977), '3401' || lpad((i %% 311)::text, 8, '0'), '坐落单位' || (i %% 311),
                       ST_Area(g::geography), 0.05, 0, ST_Area(g::geography), 2023, ST_Area(g::geography),
                       g, ST_Transform(g, 3857)
                FROM (SELECT i, lpad(i::text, 10, '0') AS k,
                             ST_Multi(ST_Segmentize(ST_MakeEnvelope(%(x0)s + (i %% %(side)s) * %(c)s,
                                 %(y0)s + (i / %(side)s) * %(c)s, %(x0)s + (i %% %(side)s + 1) * %(c)s,
                                 %(y0)s + (i / %(side)s + 1) * %(c)s, 4490), %(c)s / 5)) AS g
                      FROM generate_series(%(lo)s::int, %(hi)s::int) i) s
                """,
                {"x0": LON0, "y0": LAT0, "side": side, "c": CELL, "lo": lo, "hi": hi},
            )
        ext = [LON0, LAT0, LON0 + side * CELL, LAT0 + math.ceil(parcels / side) * CELL]
        conn.execute("""INSERT INTO catalog.layer_versions (layer, version, mode, rows_total, rows_added, extent)
                        VALUES ('land_use', 1, 'replace', %s, %s, %s)""", (parcels, parcels, ext))
        conn.execute("UPDATE catalog.layers SET current_version = 1 WHERE name = 'land_use'")
        conn.execute("VACUUM ANALYZE data.land_use")
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench_tipg")
        conn.execute("""CREATE OR REPLACE VIEW bench_tipg.land_use AS
                        SELECT _key AS id, bsm, ysdm, tbbh, dlbm, dlmc, qsxz, zldwdm, zldwmc, tbmj, kcxs, kcmj,
                               tbdlmj, gdlx, gdpdjb, czcsxm, sjnf, bz, _area_m2 AS area_m2, geom
                        FROM data.land_use WHERE _vto IS NULL""")
        print(f"bench features: loaded in {time.perf_counter() - t0:.0f} s", flush=True)


class Server:
    def __init__(self, cmd: list[str], env: dict, health: str, log: Path):
        self.port = int(env["PORT_FOR_BENCH"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w")  # noqa: SIM115 — closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(REPO))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[:3]} exited: {Path(log).read_text()[-2000:]}")
            try:
                if httpx.get(self.url + health, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{cmd[:3]} did not come up: {Path(log).read_text()[-2000:]}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _ours(url: str, data_dir: Path) -> Server:
    port = _free_port()
    env = dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(data_dir), GEOBASE_LOG_LEVEL="warning",
               GEOBASE_RATE_LIMIT_PUBLIC_PER_S="1000000", GEOBASE_RATE_LIMIT_PUBLIC_BURST="1000000",
               GEOBASE_RATE_LIMIT_PER_S="1000000", GEOBASE_RATE_LIMIT_BURST="1000000",
               GEOBASE_STATEMENT_TIMEOUT_MS="300000", GEOBASE_ANALYSIS_STATEMENT_TIMEOUT_MS="900000",
               PORT_FOR_BENCH=str(port))
    return Server([sys.executable, "-m", "geobase.cli", "serve", "--no-prepare", "--port", str(port)], env,
                  "/health", data_dir / "ours.log")


def _tipg(url: str, data_dir: Path) -> Server:
    port = _free_port()
    env = dict(os.environ, DATABASE_URL=url, TIPG_DB_SCHEMAS='["bench_tipg"]', TIPG_MAX_FEATURES_PER_QUERY="10000",
               TIPG_DB_EXCLUDE_FUNCTION_SCHEMAS='["public"]', PORT_FOR_BENCH=str(port))
    return Server([sys.executable, "-m", "uvicorn", "tipg.main:app", "--port", str(port), "--log-level", "warning"],
                  env, "/collections", data_dir / "tipg.log")


def _timed(client: httpx.Client, path: str, params: dict) -> tuple[float, int]:
    """(seconds until the whole gzip-accepted, decoded body is in, features in it); parsing
    the body to count them is not timed."""
    import orjson

    t0 = time.perf_counter()
    r = client.get(path, params=params)
    r.raise_for_status()
    body = r.content
    dt = time.perf_counter() - t0
    return dt, len(orjson.loads(body)["features"])


def run(ctx: Context) -> None:
    url = _database(ctx)
    _load(url, ctx.parcels)
    data_dir = ctx.settings.data_path / "bench-features"
    data_dir.mkdir(parents=True, exist_ok=True)
    side = math.ceil(math.sqrt(ctx.parcels))
    rows = math.ceil(ctx.parcels / side)
    cx, cy = LON0 + side * CELL / 2, LAT0 + rows * CELL / 2

    def bbox(n_cells_side: float) -> str:
        h = n_cells_side * CELL / 2
        return f"{cx - h:.6f},{cy - h:.6f},{cx + h:.6f},{cy + h:.6f}"

    cases = [
        ("items 1,000 by bbox", {"bbox": bbox(32.2), "limit": 1000}, 7),
        ("items 10,000 by bbox", {"bbox": bbox(100.5), "limit": 10000}, 3),
        ("items CQL2 filter (dlbm IN + tbmj) in bbox", {"bbox": bbox(150), "limit": 1000,
                                                       "filter": "dlbm IN ('0101','0102','0103') AND tbmj > 2000"}, 5),
    ]
    ours, tipg = _ours(url, data_dir), _tipg(url, data_dir)
    try:
        with httpx.Client(base_url=ours.url, timeout=600) as a, httpx.Client(base_url=tipg.url, timeout=600) as b:
            for name, params, rep in cases:
                # interleaved request by request (ours, tipg, ours, tipg, ...) after one warm-up each
                ours_path, tipg_path = "/collections/land_use/items", "/collections/bench_tipg.land_use/items"
                _timed(a, ours_path, params)
                _timed(b, tipg_path, params)
                fo, ft, no, nt = [], [], 0, 0
                for _ in range(max(ctx.rounds, rep)):
                    dt, no = _timed(a, ours_path, params)
                    fo.append(no / dt)
                    dt, nt = _timed(b, tipg_path, params)
                    ft.append(nt / dt)
                ctx.report(Result.rounds(f"features {name}", fo, ft, "tipg", "features/s", higher_is_better=True,
                                         extra={"features_ours": no, "features_tipg": nt, "parcels": ctx.parcels}))
            # whole-layer export: time to first byte, total, peak RSS of our server (and its peak
            # before the export, after the pages above, to show what the export itself adds)
            rss_before = peak_rss_mib(ours.proc.pid)
            t0 = time.perf_counter()
            ttfb, total_bytes = None, 0
            with a.stream("GET", "/collections/land_use/items", params={"download": "true"}) as r:
                r.raise_for_status()
                for chunk in r.iter_raw(1 << 16):
                    if ttfb is None:
                        ttfb = time.perf_counter() - t0
                    total_bytes += len(chunk)
            total = time.perf_counter() - t0
            rss = peak_rss_mib(ours.proc.pid)
            ctx.report(Result(f"features export {ctx.parcels:,} as GeoJSON: time to first byte", ttfb or total, None,
                              None, "s", extra={"total_s": round(total, 1), "MiB": round(total_bytes / 2**20)}))
            ctx.report(Result("features export: server peak RSS", rss, None, None, "MiB",
                              extra={"target_mib": 300, "features_per_s": round(ctx.parcels / total),
                                     "peak_before_export_MiB": round(rss_before)}))
    finally:
        ours.stop()
        tipg.stop()

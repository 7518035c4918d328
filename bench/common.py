"""Shared benchmark plumbing: a cached scaled county, a benchmark database, and one way to
print results (``name: ours X, baseline Y, ratio Z``) measured in the same run.

Benchmarks run on their own cluster (``.geobase-bench``, port 55434 or ``GEOBASE_BENCH_PG_PORT``)
so that they never touch the demo's or the tests' data; each area at each scale has its own
database there (``<area>_<parcels>``).

geobase is imported here only through its stable entry points: ``geobase.settings.Settings``,
``geobase.db.prepare_database`` / ``database_url`` and the sample generator
``geobase.sample_data.generate.generate``; the servers run as ``python -m geobase.cli ...``."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache"
RESULTS = REPO / "bench" / "results"


@dataclass
class Result:
    name: str
    ours: float
    baseline: float | None
    baseline_name: str | None
    unit: str
    higher_is_better: bool = False
    extra: dict = field(default_factory=dict)
    # per-round figures of an interleaved measurement: ``ours`` and ``baseline`` are then their
    # medians and the printed spread is that of the per-round ratios (one round = ours and the
    # baseline measured right after each other, so a busy machine slows both sides alike)
    rounds_ours: list[float] | None = None
    rounds_baseline: list[float] | None = None

    @classmethod
    def rounds(cls, name: str, ours: list[float], baseline: list[float] | None, baseline_name: str | None,
               unit: str, **kw) -> Result:
        """A figure measured in interleaved rounds (at least 3 for a ratio a reader can trust)."""
        if baseline is not None and len(baseline) != len(ours):
            raise ValueError(f"{name}: {len(ours)} rounds of ours against {len(baseline)} of the baseline")
        return cls(name, statistics.median(ours), statistics.median(baseline) if baseline else None,
                   baseline_name, unit, rounds_ours=list(ours), rounds_baseline=list(baseline) if baseline else None,
                   **kw)

    @property
    def ratio_spread(self) -> tuple[float, float, float] | None:
        """(min, median, max) of the per-round ratios ours/baseline."""
        if not self.rounds_ours or not self.rounds_baseline:
            return None
        r = sorted(o / b for o, b in zip(self.rounds_ours, self.rounds_baseline) if b)
        return (r[0], statistics.median(r), r[-1]) if r else None

    @property
    def ratio(self) -> float | None:
        """ours / baseline; for interleaved rounds the median of the per-round ratios."""
        spread = self.ratio_spread
        if spread:
            return spread[1]
        if not self.baseline:
            return None
        return self.ours / self.baseline

    def line(self) -> str:
        fmt = lambda v: f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
        s = f"{self.name}: ours {fmt(self.ours)} {self.unit}"
        if self.baseline is not None:
            s += f", baseline ({self.baseline_name}) {fmt(self.baseline)} {self.unit}, ratio {_ratio(self.ratio)}"
            if spread := self.ratio_spread:
                s += f" [per-round ratio min/median/max {'/'.join(_ratio(v) for v in spread)}" \
                     f" over {len(self.rounds_ours)} interleaved rounds]"
            else:
                s += " [single measurement, no spread]"
            s += " (higher is better)" if self.higher_is_better else " (lower is better)"
        if self.extra:
            s += "  " + json.dumps(self.extra, ensure_ascii=False)
        return s


def _ratio(v: float) -> str:
    """A ratio with two decimals, or two significant digits below 0.1 (a kept answer's 0.003
    must not print as 0.00)."""
    return f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"


class Context:
    """What every benchmark gets: parameters, the scaled county files, a database, a report."""

    def __init__(self, parcels: int, seed: int = 20261122, rounds: int = 3, quick: bool = False):
        self.parcels = parcels
        self.seed = seed
        self.rounds = max(3, rounds)  # every printed ratio: spread over at least 3 interleaved rounds
        self.quick = quick  # shorter load phases and fewer tiles: a check that every area runs end to end
        self.started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.results: list[Result] = []
        self.settings = self._settings()

    def _settings(self):
        from geobase.settings import Settings

        url = os.environ.get("GEOBASE_BENCH_DATABASE_URL")
        port = int(os.environ.get("GEOBASE_BENCH_PG_PORT", "55434"))
        return Settings(database_url=url, data_dir=REPO / ".geobase-bench", pg_port=port)

    def county(self) -> Path:
        """The county at ``parcels`` scale, generated once and cached by its parameters."""
        import fcntl
        import shutil

        out = CACHE / f"county-{self.parcels}-{self.seed}"
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / f"{out.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent benchmark runs wait for one generator
            if not (out / "manifest.json").exists():
                from geobase.sample_data.generate import generate

                print(f"bench: generating county with {self.parcels:,} parcels into {out} ...", flush=True)
                tmp = out.with_suffix(".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                generate(tmp, parcels=self.parcels, seed=self.seed, zip_dltb=False)
                tmp.rename(out)
        return out

    def database(self):
        """Settings of the benchmark database (local bench cluster started and migrated)."""
        from geobase.db import prepare_database

        prepare_database(self.settings)
        return self.settings

    def db_name(self, name: str) -> str:
        """The database of benchmark area ``name`` at this scale: one database per (area, parcels),
        so nothing built from the data of one scale (a tile pyramid keyed by layer version, which
        the bench loaders always write as version 1) is ever read at another scale."""
        return f"{name}_{self.parcels}"

    def named_database(self, name: str) -> str:
        """URL of the benchmark database ``name`` (at this scale, see :meth:`db_name`) on the
        bench server, created, migrated and catalog-synced on first use (each benchmark area keeps
        its data in its own database)."""
        name = self.db_name(name)
        import psycopg
        from psycopg import sql

        from geobase.db import database_url, prepare_database

        base = self.database()
        root = database_url(base).rsplit("/", 1)[0]
        with psycopg.connect(f"{root}/postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = f"{root}/{name}"
        prepare_database(base.model_copy(update={"database_url": url}), start_local=False)
        return url

    def report(self, result: Result) -> None:
        self.results.append(result)
        print(result.line(), flush=True)

    def save(self) -> Path:
        """Write this run's results to ``results/<parcels>/<UTC start>.json`` and copy them to
        ``results/latest-<parcels>.json``: one file per scale and run, never merged with another
        run (a figure at 20,000 parcels must not sit beside one at 1M as if measured together)."""
        out = RESULTS / str(self.parcels)
        out.mkdir(parents=True, exist_ok=True)
        doc = {"parcels": self.parcels, "seed": self.seed, "rounds": self.rounds, "quick": self.quick,
               "started_utc": self.started, "finished_utc": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
               "results": [r.__dict__ | {"ratio": r.ratio, "ratio_spread": r.ratio_spread} for r in self.results]}
        text = json.dumps(_no_nan(doc), indent=2, ensure_ascii=False, allow_nan=False)
        path = out / f"{self.started}.json"
        path.write_text(text)
        (RESULTS / f"latest-{self.parcels}.json").write_text(text)
        return path


@contextmanager
def timer():
    t = {"s": None}
    start = time.perf_counter()
    yield t
    t["s"] = time.perf_counter() - start


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values)


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a running process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS MiB) via /usr/bin/time-free polling."""
    import resource

    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed with exit {proc.returncode}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak


PY = sys.executable


def web_mercator_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """(x, y) of the WebMercatorQuad / XYZ tile holding a lon/lat point at zoom ``z``."""
    import math

    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.log(math.tan(math.radians(lat)) + 1 / math.cos(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def interleaved(rounds: int, sides: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each side once per round, in the given order, round after round (A, B, C, A, B, C,
    ...) and return each side's list of seconds: never one side in a block before the other."""
    out: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            out[name].append(fn())
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_nan(v):
    """NaN (a percentile of no samples) as null: results files are strict JSON."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _no_nan(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_no_nan(x) for x in v]
    return v


def tipg_tile_view(conn) -> None:
    """The view tipg serves land-use tiles from, the same for the tiles and the load benchmark:
    our stored Web Mercator geometry and the attributes our tile carries. tipg filters the
    view's geom (our geom_3857), so it gets the GiST index it needs (ours read through the geom
    index, see tiles.mvt.filter_envelope, and have no use for this one)."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench_tipg")
    conn.execute("""CREATE OR REPLACE VIEW bench_tipg.land_use_tiles AS
                    SELECT _key AS id, bsm, dlbm, dlmc, zldwmc, tbmj, geom_3857 AS geom
                    FROM data.land_use WHERE _vto IS NULL""")
    conn.execute("CREATE INDEX IF NOT EXISTS bench_tipg_geom3857 ON data.land_use USING gist (geom_3857) "
                 "WHERE _vto IS NULL")

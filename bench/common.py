"""Shared benchmark plumbing: a cached scaled county, a benchmark database, and one way to
print results (``name: ours X, baseline Y, ratio Z``) measured in the same run.

Benchmarks run on their own cluster (``.geobase-bench``, port 55434 or ``GEOBASE_BENCH_PG_PORT``)
so that they never touch the demo's or the tests' data."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
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

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        return self.ours / self.baseline

    def line(self) -> str:
        fmt = lambda v: f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
        s = f"{self.name}: ours {fmt(self.ours)} {self.unit}"
        if self.baseline is not None:
            s += f", baseline ({self.baseline_name}) {fmt(self.baseline)} {self.unit}, ratio {self.ratio:.2f}"
            s += " (higher is better)" if self.higher_is_better else " (lower is better)"
        if self.extra:
            s += "  " + json.dumps(self.extra, ensure_ascii=False)
        return s


class Context:
    """What every benchmark gets: parameters, the scaled county files, a database, a report."""

    def __init__(self, parcels: int, seed: int = 20261122):
        self.parcels = parcels
        self.seed = seed
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

    def named_database(self, name: str) -> str:
        """URL of the benchmark database ``name`` on the bench server, created, migrated and
        catalog-synced on first use (each benchmark area keeps its data in its own database)."""
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
        """Merge this run's results into results/latest.json by name (areas run separately)."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / "latest.json"
        merged: dict[str, dict] = {}
        if path.exists():
            try:
                merged = {r["name"]: r for r in json.loads(path.read_text())}
            except (ValueError, KeyError, TypeError):
                merged = {}
        for r in self.results:
            merged[r.name] = r.__dict__ | {"ratio": r.ratio, "parcels": self.parcels}
        path.write_text(json.dumps(list(merged.values()), indent=2, ensure_ascii=False))
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
    proc = subprocess.run(cmd, env=env)
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

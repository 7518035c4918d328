"""The synthetic province the province benchmarks share (bench_province.py, bench_replicas.py,
bench_province_tabulate.py): generated once per (scale, seed) into ``bench/.cache``, loaded into
template databases by the product's own CLI ingest, copied per round; and the wall time of each
preparation phase, so a run can say where its time went.

Nothing here is measured: a benchmark times only its ingests and reads."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
from common import CACHE, PY, REPO, Context
from psycopg import sql

FIRST, N_COUNTIES = 339901, 10
DELIVERED = str(FIRST + N_COUNTIES - 1)  # the county whose delivery is measured
SEED = 20261206
PHASES: dict[str, float] = {}  # wall seconds of each harness phase of this run (printed, reported)


@contextmanager
def timed_phase(name: str):
    """Time a harness phase (summed over rounds under the same name) and print it."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        took = time.perf_counter() - t0
        PHASES[name] = PHASES.get(name, 0.0) + took
        print(f"  [phase] {name}: {took:.1f} s", flush=True)


def province(ctx: Context) -> Path:
    """The generated province at this scale (cached by its parameters)."""
    per = max(1000, ctx.parcels // N_COUNTIES)
    out = CACHE / f"province-{N_COUNTIES}x{per}-{SEED}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "manifest.json").exists():
            print(f"bench: generating a province of {N_COUNTIES} x {per:,} parcels into {out} ...", flush=True)
            tmp = out.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run([PY, "-m", "geobase.cli", "sample", "generate", "--counties", str(N_COUNTIES),
                            "--parcels-per-county", str(per), "--seed", str(SEED), "--out", str(tmp)],
                           cwd=str(REPO), check=True, stdout=subprocess.DEVNULL)
            tmp.rename(out)
    return out


def cli_env(ctx: Context, url: str) -> dict:
    return dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(ctx.settings.data_path),
                GEOBASE_LOG_LEVEL="warning")


def ingest(ctx: Context, url: str, layer: str, path: Path, source_layer: str | None = None) -> float:
    """Wall seconds of one CLI ingest (``--mode replace``: the county's partition only)."""
    cmd = [PY, "-m", "geobase.cli", "ingest", layer, str(path), "--on-error", "skip"]
    if source_layer:
        cmd += ["--layer", source_layer]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=cli_env(ctx, url), cwd=str(REPO), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def load_jobs() -> int:
    """How many CLI ingests of different counties a template build runs at a time: an ingest
    holds its layer's advisory lock only while it switches its version (geobase/catalog/versions.py),
    so counties stage and COPY side by side."""
    return max(1, int(os.environ.get("GEOBASE_BENCH_PROVINCE_LOAD_JOBS", "2")))


def ingest_all(env: dict, todo: list[tuple[str, Path, str | None]], label: str) -> None:
    """CLI ingests of ``(layer, path, source layer)``, :func:`load_jobs` at a time (untimed)."""
    running: list[tuple[subprocess.Popen, str]] = []

    def reap(block: bool) -> None:
        for proc, what in list(running):
            if block or proc.poll() is not None:
                if proc.wait() != 0:
                    raise RuntimeError(f"{label}: the ingest of {what} failed (exit {proc.returncode})")
                running.remove((proc, what))

    for layer, path, source_layer in todo:
        while len(running) >= load_jobs():
            reap(False)
            time.sleep(0.5)
        cmd = [PY, "-m", "geobase.cli", "ingest", layer, str(path), "--on-error", "skip"]
        if source_layer:
            cmd += ["--layer", source_layer]
        print(f"bench: {label}: ingesting {layer} of {path.parent.name} ...", flush=True)
        running.append((subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=subprocess.DEVNULL),
                        f"{layer} of {path.parent.name}"))
    reap(True)


def template(ctx: Context, name: str, counties: list[str], layers: list[tuple[str, str, str | None]]) -> str:
    """A database holding ``layers`` of ``counties`` (ingested once through the CLI; a run finds
    the counties an earlier run loaded and ingests only the missing ones)."""
    url = ctx.named_database(name)
    root = province(ctx)
    with psycopg.connect(url) as conn:
        have = {(r[0], d) for r in conn.execute("SELECT layer, touched FROM catalog.layer_versions").fetchall()
                for d in (r[1] or [])}
    todo = [(layer, root / county / file, source_layer) for county in counties
            for layer, file, source_layer in layers if (layer, county) not in have]
    if todo:
        ingest_all(cli_env(ctx, url), todo, name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
    return url


def copy_of(ctx: Context, template_url: str, name: str) -> str:
    """A fresh database made from the template (its previous copy dropped)."""
    root, tpl = template_url.rsplit("/", 1)
    with timed_phase("copies and drops"), psycopg.connect(f"{root}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY")
                     .format(sql.Identifier(name), sql.Identifier(tpl)))
    return f"{root}/{name}"


def drop(url: str) -> None:
    root, name = url.rsplit("/", 1)
    with timed_phase("copies and drops"), psycopg.connect(f"{root}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

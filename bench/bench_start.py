"""Server start: seconds from process start to the first 200 on ``/health`` and on
``/collections``, and the idle resident memory after a warm-up; ours against tipg.

Ours: ``python -m geobase.cli serve --no-prepare`` (one uvicorn worker in the same process,
log level warning, rate limits raised so that polling is never throttled).

Baseline, tipg: ``python -m uvicorn tipg.main:app`` (one worker, log level warning) with
``DATABASE_URL`` pointing at the same database, ``TIPG_DB_SCHEMAS=["bench_tipg"]`` (the views
of the land-use layer that the other benchmarks compare against) and
``TIPG_DB_EXCLUDE_FUNCTION_SCHEMAS=["public"]`` (so that it does not register PostGIS's own
functions as collections): the way bench_features and bench_tiles run it, i.e. what a user
serving those tables with tipg runs. tipg's health route is ``/healthz``; its ``/collections``
is the same OGC API Features route as ours. Both start from the same interpreter and venv.

Each round starts a fresh process of each server, one after the other (ours, tipg, ours, tipg
...): once polling the health route until the first 200, once polling ``/collections``; the
second process then gets a warm-up (20 requests of each route) and a second of quiet, and its
VmRSS is read from /proc. Polling is every 5 ms, so the figures carry up to 5 ms of slack.
Wall seconds depend on how busy the machine is (on 2 shared cores a start can wait for a core
for seconds), so the CPU seconds the server process used until its first health answer
(/proc/<pid>/stat, user + system) are reported too: they are what the process itself costs.

Bytecode: both servers start from compiled modules, as an installed package does (pip compiles
site-packages at install, and a server that has run once has written its ``__pycache__``). Our
editable checkout is compiled here first (``compileall``) because an environment with
``PYTHONDONTWRITEBYTECODE`` set (CI, some containers) would otherwise make every start of ours
compile its ~100 modules from source (~0.2 CPU-s) while tipg's come compiled from its wheel.

Data: the synthetic land-use layer of bench_features, 20,000 parcels in this benchmark's own
database (start time reads the catalog, not the rows, so the scale does not matter here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from common import REPO, Context, Result, free_port

DB = "geobase_bench_start"
PARCELS = 20_000
POLL_S = 0.005


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _command(side: str, url: str, data_dir: Path, port: int) -> tuple[list[str], dict, str]:
    """(argv, environment, health route) of one server start."""
    if side == "ours":
        env = dict(os.environ, GEOBASE_DATABASE_URL=url, GEOBASE_DATA_DIR=str(data_dir), GEOBASE_LOG_LEVEL="warning",
                   GEOBASE_RATE_LIMIT_PUBLIC_PER_S="1000000", GEOBASE_RATE_LIMIT_PUBLIC_BURST="1000000",
                   GEOBASE_RATE_LIMIT_PER_S="1000000", GEOBASE_RATE_LIMIT_BURST="1000000")
        return [sys.executable, "-m", "geobase.cli", "serve", "--no-prepare", "--port", str(port)], env, "/health"
    env = dict(os.environ, DATABASE_URL=url, TIPG_DB_SCHEMAS='["bench_tipg"]',
               TIPG_DB_EXCLUDE_FUNCTION_SCHEMAS='["public"]')
    return ([sys.executable, "-m", "uvicorn", "tipg.main:app", "--port", str(port), "--log-level", "warning"], env,
            "/healthz")


def _start(side: str, url: str, data_dir: Path, route: str, rss: bool) -> tuple[float, float, float | None]:
    """Start one server, poll ``route`` ("health" or "collections") until the first 200;
    return (seconds since the process was started, CPU seconds the server used until then,
    idle RSS in MiB after warm-up or None)."""
    port = free_port()
    argv, env, health = _command(side, url, data_dir, port)
    path = health if route == "health" else "/collections"
    base = f"http://127.0.0.1:{port}"
    with open(data_dir / f"{side}-start.log", "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{side} exited: {(data_dir / f'{side}-start.log').read_text()[-2000:]}")
                    try:
                        if client.get(path).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.perf_counter() - t0 > 120:
                        raise RuntimeError(f"{side} gave no 200 on {path} within 120 s")
                    time.sleep(POLL_S)
                seconds = time.perf_counter() - t0
                cpu = _cpu_s(proc.pid)
                if not rss:
                    return seconds, cpu, None
                for _ in range(20):
                    for p in (health, "/collections"):
                        client.get(p).raise_for_status()
                time.sleep(1.0)
                return seconds, cpu, _rss_mib(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _compile_ours() -> None:
    """Compile our package's modules to bytecode, as an install does (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    dirs = [str(REPO / d) for d in ("geobase", "api", "tiles", "ingest", "layers", "sample_data")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def run(ctx: Context) -> None:
    from bench_features import _load as load_parcels

    _compile_ours()
    url = ctx.named_database(DB)
    load_parcels(url, PARCELS)
    data_dir = REPO / ".geobase-bench" / "start"
    data_dir.mkdir(parents=True, exist_ok=True)
    health: dict[str, list[float]] = {"ours": [], "tipg": []}
    collections: dict[str, list[float]] = {"ours": [], "tipg": []}
    rss: dict[str, list[float]] = {"ours": [], "tipg": []}
    cpu: dict[str, list[float]] = {"ours": [], "tipg": []}
    _start("ours", url, data_dir, "health", False)  # warm the page cache of both interpreters' files
    _start("tipg", url, data_dir, "health", False)
    for _ in range(ctx.rounds):
        for side in ("ours", "tipg"):
            seconds, cpu_s, _ = _start(side, url, data_dir, "health", False)
            health[side].append(seconds)
            cpu[side].append(cpu_s)
        for side in ("ours", "tipg"):
            seconds, _, mib = _start(side, url, data_dir, "collections", True)
            collections[side].append(seconds)
            rss[side].append(mib)
    tipg = "tipg (uvicorn tipg.main:app, 1 worker, schemas [bench_tipg])"
    ctx.report(Result.rounds("start: process start to first 200 on health", health["ours"], health["tipg"], tipg,
                             "s", extra={"ours_route": "/health", "tipg_route": "/healthz"}))
    ctx.report(Result.rounds("start: server CPU seconds until its first 200 on health", cpu["ours"], cpu["tipg"], tipg,
                             "s", extra={"why": "wall time above includes waiting for a core on a shared machine"}))
    ctx.report(Result.rounds("start: process start to first 200 on /collections", collections["ours"],
                             collections["tipg"], tipg, "s"))
    ctx.report(Result.rounds("start: idle RSS after warm-up", rss["ours"], rss["tipg"], tipg, "MiB",
                             extra={"warm_up": "20 x (health, /collections), then 1 s idle"}))

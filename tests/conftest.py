"""Test fixtures: one real PostGIS cluster per test session, a fresh database per test that
needs one (cloned from a migrated template), and a real HTTP server in a subprocess.

No mocks: every test that touches data talks to PostGIS; every HTTP test talks to uvicorn.

Environment:
  GEOBASE_TEST_DATABASE_URL  use an external PostGIS server (needs CREATEDB) instead of a
                             private test cluster.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import httpx
import psycopg
import pytest
from psycopg import sql

from geobase.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "county"
REALDATA = (REPO / ".." / "shared" / "realdata").resolve()
ARTIFACTS = REPO / "test-artifacts"
TEST_PORT = int(os.environ.get("GEOBASE_TEST_PG_PORT", "55433"))
TEMPLATE = f"gb_template_{os.getpid()}"  # per session: several sessions may share a cluster


def tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    """(x, y) of the WebMercatorQuad (XYZ) tile holding lon/lat at zoom z: the slippy-map formula,
    written here once rather than through the product's own tile matrix set code."""
    n = 2 ** z
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def _listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Base URL (without database) of the session's PostGIS server."""
    external = os.environ.get("GEOBASE_TEST_DATABASE_URL")
    if external:
        yield external.rsplit("/", 1)[0]
        return
    from geobase.db.cluster import LocalCluster

    settings = Settings(data_dir=REPO / ".geobase-test", pg_port=TEST_PORT, database_url=None)
    cluster = LocalCluster(settings)
    cluster.start()
    yield f"postgresql://{settings.pg_user}@127.0.0.1:{settings.pg_port}"
    # the cluster is left running for the next session (start is a no-op then); `make clean` stops it


def _admin(pg_server: str) -> psycopg.Connection:
    return psycopg.connect(f"{pg_server}/postgres", autocommit=True)


def create_database(pg_server: str, name: str, template: str | None = None) -> str:
    with _admin(pg_server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if template:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{pg_server}/{name}"


def drop_database(pg_server: str, name: str) -> None:
    with _admin(pg_server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def settings_for(url: str, tmp: Path, **overrides) -> Settings:
    # the indicator monitor off in test servers (each would recompute its county at start);
    # the indicator tests turn it on (GEOBASE_INDICATOR_POLL_S) or run the job themselves
    return Settings(database_url=url, data_dir=tmp, **{"indicator_poll_s": 0, **overrides})


@pytest.fixture(scope="session")
def template_db(pg_server: str, tmp_path_factory) -> Iterator[str]:
    """A migrated, catalog-synced database used as the template of every test database."""
    from geobase.db import prepare_database

    url = create_database(pg_server, TEMPLATE)
    prepare_database(settings_for(url, tmp_path_factory.mktemp("template")), start_local=False)
    yield TEMPLATE
    drop_database(pg_server, TEMPLATE)


@pytest.fixture
def new_db(pg_server: str, template_db: str, tmp_path) -> Iterator[Callable[..., Settings]]:
    """Factory: ``new_db(template=...)`` -> Settings of a fresh database cloned from the template."""
    made: list[str] = []

    def make(template: str = template_db, **overrides) -> Settings:
        name = f"gb_t_{uuid.uuid4().hex[:10]}"
        url = create_database(pg_server, name, template)
        made.append(name)
        data_dir = tmp_path / name
        data_dir.mkdir()
        return settings_for(url, data_dir, **overrides)

    yield make
    for name in made:
        drop_database(pg_server, name)


@pytest.fixture
def db_settings(new_db) -> Settings:
    """A fresh, migrated, empty database for one test."""
    return new_db()


def assert_sample_county_complete() -> None:
    """Fail (never skip) when the committed sample county is missing or incomplete."""
    manifest = SAMPLE / "manifest.json"
    if not manifest.is_file():
        pytest.fail(f"the committed sample county is missing: no {manifest}")
    listed = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    missing = sorted(name for name in listed if not (SAMPLE / name).is_file())
    if missing:
        pytest.fail(f"the committed sample county is incomplete: {', '.join(missing)} missing in {SAMPLE}")


@pytest.fixture(scope="session")
def county_template(pg_server: str, template_db: str, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A database with the whole committed sample county ingested (built once per session).

    Returns (database name, data dir holding its rasters); clone it with ``county_db``.
    The county is committed: a missing file fails here (the sample ingest itself skips missing
    files, which is right for a demo and would leave a test a partial county)."""
    from geobase.ingest.sample import ingest_sample_county

    assert_sample_county_complete()
    name = f"gb_county_{os.getpid()}"
    url = create_database(pg_server, name, template_db)
    data_dir = tmp_path_factory.mktemp("county")
    ingest_sample_county(settings_for(url, data_dir), echo=lambda *a, **k: None)
    yield name, data_dir
    drop_database(pg_server, name)


@pytest.fixture(scope="session")
def changed_county_template(pg_server: str, county_template) -> Iterator[str]:
    """A database holding what ``make demo`` leaves: the sample county plus the demo's land-use
    change delivery as version 2 (built once per session; clone it, never use it directly).

    The modules that compare versions and the README's examples each clone it instead of running
    the change delivery's ingest again on a clone of the county (the same call, the same state)."""
    from geobase.ingest.sample import ingest_sample_county

    name, data_dir = county_template
    changed = f"gb_changed_{os.getpid()}"
    url = create_database(pg_server, changed, name)
    ingest_sample_county(settings_for(url, data_dir), echo=lambda *a, **k: None, with_changes=True)
    yield changed
    drop_database(pg_server, changed)


@pytest.fixture
def county_db(new_db, county_template) -> Settings:
    """A private copy of the loaded sample county for a test that may change it."""
    name, data_dir = county_template
    s = new_db(template=name)
    return s.model_copy(update={"data_dir": data_dir})


@pytest.fixture(scope="session")
def county_shared(pg_server: str, county_template) -> Iterator[Settings]:
    """The loaded sample county, shared read-only by the whole session (do not modify it).

    A clone of the template, so that a running county_server does not keep the template busy
    (CREATE DATABASE ... TEMPLATE fails while anyone is connected to it) and county_db works."""
    name, data_dir = county_template
    shared = f"{name}_shared"
    url = create_database(pg_server, shared, name)
    yield settings_for(url, data_dir)
    drop_database(pg_server, shared)


def app_login_url(url: str) -> str:
    """``url`` with the server's least-privileged login role (geobase.db.APP_LOGIN) as user."""
    from urllib.parse import urlsplit, urlunsplit

    from geobase.db import APP_LOGIN

    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{APP_LOGIN}@{host}"))


class LiveServer:
    """uvicorn in a subprocess: real sockets, real HTTP."""

    def __init__(self, settings: Settings, env: dict | None = None):
        self.settings = settings
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = dict(os.environ)
        full_env.update(
            {
                "GEOBASE_DATABASE_URL": settings.database_url or "",
                "GEOBASE_DATA_DIR": str(settings.data_dir),
                "GEOBASE_PORT": str(self.port),
                "GEOBASE_LOG_LEVEL": "warning",
            }
        )
        for key, value in settings.model_dump().items():
            if value is not None and key not in ("database_url", "data_dir", "port"):
                full_env[f"GEOBASE_{key.upper()}"] = str(value)
        # the server connects as the application role, as in production (never as the owner)
        if settings.database_url and not settings.app_database_url:
            full_env["GEOBASE_APP_DATABASE_URL"] = app_login_url(settings.database_url)
        full_env.update(env or {})
        self.log = open(settings.data_dir / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "geobase.cli", "serve", "--no-prepare", "--port", str(self.port)],
            env=full_env, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(REPO),
        )
        deadline = time.monotonic() + 120  # a loaded CI machine can take a minute to import everything
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()[-3000:]}")
            # until the port listens, a bare connect (microseconds, refused at once) every 20 ms:
            # the server is used as soon as it answers, not up to a 0.2 s poll later (~200 starts
            # a run); then the health request itself
            if not _listening(self.port):
                time.sleep(0.02)
                continue
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                time.sleep(0.02)
        self.proc.kill()  # never leave a half-started server behind
        self.proc.wait(10)
        raise RuntimeError("server did not come up")

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def logs(self) -> str:
        return Path(self.log.name).read_text()


@pytest.fixture
def live_server() -> Iterator[Callable[..., LiveServer]]:
    """Factory: ``live_server(settings, env=...)`` -> a running server, stopped after the test."""
    servers: list[LiveServer] = []

    def start(settings: Settings, env: dict | None = None) -> LiveServer:
        srv = LiveServer(settings, env)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="session")
def county_server(county_shared) -> Iterator[LiveServer]:
    """One server over the shared sample county for read-only HTTP tests.

    Its per-IP public bucket is made large: every anonymous test of the session draws on the one
    bucket of 127.0.0.1, so whether a whole-service copy by GDAL got a 429 depended on how fast
    the tests before it ran. The limits have their own tests, on servers of their own."""
    srv = LiveServer(county_shared, env={"GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "100000",
                                         "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "100000"})
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _owslib_request_headers_restored():
    """OWSLib's OGC API client updates its module-level ``REQUEST_HEADERS`` dict with the
    ``headers=`` of any instance (owslib/ogcapi/__init__.py: ``self.headers = REQUEST_HEADERS;
    self.headers.update(headers)``), so a key given to one client is sent by every later one in
    the process. Each test starts from OWSLib's own defaults."""
    try:
        from owslib.ogcapi import REQUEST_HEADERS
    except ImportError:  # pragma: no cover - owslib is a dev dependency
        yield
        return
    saved = dict(REQUEST_HEADERS)
    yield
    REQUEST_HEADERS.clear()
    REQUEST_HEADERS.update(saved)


@pytest.fixture(scope="session", autouse=True)
def _shared_chromium_closed() -> Iterator[None]:
    """The browser tests share one Chromium (tests/browser_harness.py), launched by the first of
    them: closed, with the Playwright driver, when the session ends."""
    yield
    import browser_harness

    browser_harness.stop()

"""Read replicas (issue 16, item 3): a primary and a streaming replica on loopback, started by
the test like `geobase db replica add` does, and real servers routing GETs to the replica.

* GETs are served by the replica (its backends, named geobase-api, ran the layer query);
* read-your-writes after an ingest over HTTP and after a sharing change, in every trial, while
  the replica's replay is paused (so a read that went to it would see the old state);
* a replica whose postmaster is SIGKILLed: every read still answers 200 (from the primary),
  each within the client's timeout; restarted, it is back in the rotation;
* a replica whose replay is paused falls behind beyond GEOBASE_REPLICA_MAX_LAG_MS and is taken
  out of the rotation: callers without a token then read the primary's (fresh) state.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from geobase.settings import Settings
from tests.conftest import SAMPLE, LiveServer

#: the ports this file may use (a client connection's TIME_WAIT on one blocks a bind: take free ones)
PORTS = range(55620, 55626)  # 55626-55629: bench/bench_replicas.py
BOUND_S = 20  # every request must answer within this (the client's timeout)


def _free_ports(n: int) -> list[int]:
    free = []
    for port in PORTS:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        free.append(port)
        if len(free) == n:
            return free
    pytest.fail(f"fewer than {n} free ports in {PORTS}")


def _wait_for(what: str, predicate, timeout: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def _start_primary_and_replica(data: Path):
    """A primary with rivers loaded and one replica, on ports free a moment ago (a client
    connection's TIME_WAIT may take one meanwhile: then everything is removed and None returned)."""
    from geobase.ingest.pipeline import ingest

    from geobase import keys
    from geobase.db import connect, prepare_database, replicas
    from geobase.errors import SetupError

    primary_port, replica_port = _free_ports(2)
    settings = Settings(data_dir=data, pg_port=primary_port, database_url=None, pool_min_size=1)
    try:
        prepare_database(settings)
        ingest(settings, "rivers", SAMPLE / "rivers.geojson")
        with connect(settings) as conn:
            admin = keys.create_key(conn, name="replica-test", role="admin", department=None).token
            conn.commit()
        return settings, replicas.add_local(settings, replica_port, "r1"), admin
    except SetupError as exc:
        if "could not start server" not in str(exc):
            raise
        _remove_all(settings)
        (settings.data_path / "pg.location").unlink(missing_ok=True)
        return None


def _remove_all(settings: Settings) -> None:
    from geobase.db import replicas
    from geobase.db.cluster import LocalCluster

    for r in replicas.load(settings):
        replicas.remove(settings, r.name)
    primary = LocalCluster(settings)
    for old in primary.pgdata.parent.glob("replica-*"):
        shutil.rmtree(old, ignore_errors=True)
    primary.remove()
    with contextlib.suppress(OSError):
        primary.pgdata.parent.rmdir()  # the per-test directory under /var/lib/geobase when run as root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(settings, replica, admin key): a private primary with rivers loaded, and one replica."""
    data = tmp_path_factory.mktemp("replicas")
    made = None
    for _ in range(3):
        made = _start_primary_and_replica(data)
        if made:
            break
    assert made, "no free ports for a primary and a replica in three tries"
    try:
        yield made
    finally:
        _remove_all(made[0])


def _server(settings: Settings, **env) -> LiveServer:
    extra = {"GEOBASE_REPLICA_CHECK_S": "0.2", **{k: str(v) for k, v in env.items()}}
    return LiveServer(settings, extra)


def _replica(replica, sql: str, params=()):
    owner = f"postgresql://geobase@127.0.0.1:{replica.port}/geobase"
    with psycopg.connect(owner, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def _primary(settings: Settings, sql: str, params=()):
    owner = f"postgresql://geobase@127.0.0.1:{settings.pg_port}/geobase"
    with psycopg.connect(owner, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def _served_by_replica(srv: LiveServer, replica, path: str, **kw) -> bool:
    """GET ``path`` (200) and say whether a server backend (geobase-api, not the health check)
    worked on the replica meanwhile."""
    t0 = _replica(replica, "SELECT clock_timestamp()")[0][0]
    r = httpx.get(f"{srv.url}{path}", timeout=BOUND_S, **kw)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    rows = _replica(replica, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'geobase-api' "
                             "AND state_change >= %s", (t0,))
    return rows[0][0] > 0


def _in_rotation(srv: LiveServer, replica) -> bool:
    return _served_by_replica(srv, replica, "/collections/rivers/items?limit=1")


def test_reads_go_to_the_replica_and_writes_are_read_back(cluster, tmp_path):
    settings, replica, admin = cluster
    # the paused replica stays in the rotation (lag bound far away): a read it served would be stale
    srv = _server(settings, GEOBASE_REPLICA_MAX_LAG_MS=600_000, GEOBASE_REPLICA_WAIT_MS=300)
    try:
        _wait_for("the replica in the read rotation", lambda: _in_rotation(srv, replica))
        features = json.loads((SAMPLE / "rivers.geojson").read_text(encoding="utf-8"))
        with srv.client(headers={"X-API-Key": admin}) as client:
            for trial in range(3):
                # the replica first replays everything the primary has (the previous trial's
                # sharing change included), so that "stale" below means exactly this trial's change
                primary_lsn = _primary(settings, "SELECT pg_current_wal_lsn()::text")[0][0]
                _wait_for("the replica caught up", lambda: _replica(
                    replica, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (primary_lsn,))[0][0])
                _replica(replica, "SELECT pg_wal_replay_pause()")
                # a pause is only requested until the startup process takes it: WAL arriving before
                # that is still replayed, and the "stale" read below would see the change
                _wait_for("the replica's replay paused",
                          lambda: _replica(replica, "SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused")
                try:
                    # a sharing change, then the caller's own read of it (anonymous: the layer's visibility)
                    level = "private" if trial % 2 == 0 else "public"
                    r = client.put("/admin/layers/water_areas/sharing", json={"sharing": level})
                    assert r.status_code == 200, r.text
                    assert "geobase_lsn" in client.cookies and r.headers["geobase-lsn"]
                    seen = httpx.get(f"{srv.url}/collections/water_areas", cookies=dict(client.cookies), timeout=BOUND_S)
                    assert seen.status_code == (404 if level == "private" else 200), (trial, level)
                    # the replica (in the read rotation, checked above) has not replayed the change:
                    # without the token the caller's read above could have been stale
                    old = "public" if level == "private" else "private"
                    assert _replica(replica, "SELECT sharing FROM catalog.layers WHERE name = 'water_areas'") \
                        == [(old,)], (trial, "the replica replayed the change: nothing proven")
                    # and a caller without the token reads the replica: the old state
                    stale = httpx.get(f"{srv.url}/collections/water_areas", timeout=BOUND_S)
                    assert stale.status_code == (200 if level == "private" else 404), (
                        trial, "not the replica", srv.logs()[-3000:])

                    # an ingest over HTTP, polled to its end, then read back
                    features["features"][0]["properties"]["NAME"] = f"trial-{trial}"
                    path = tmp_path / f"rivers-{trial}.geojson"
                    path.write_text(json.dumps(features), encoding="utf-8")
                    with path.open("rb") as fh:
                        r = client.post("/admin/layers/rivers/ingest", files={"file": (path.name, fh)})
                    assert r.status_code == 202, r.text
                    job = r.json()["jobID"]
                    status = _wait_for("the ingest job", lambda job=job: (s := client.get(f"/admin/jobs/{job}").json())
                                       ["status"] in ("successful", "failed") and s)
                    assert status["version"], status
                    names = [f["properties"]["name"] for f in
                             client.get("/collections/rivers/items", params={"limit": 100}).json()["features"]]
                    assert f"trial-{trial}" in names, (trial, names)
                finally:
                    _replica(replica, "SELECT pg_wal_replay_resume()")
            # replayed: the caller's reads are served by the replica again, and see their writes there
            cookies = dict(client.cookies)
            _wait_for("the caller's read served by the replica", lambda: _served_by_replica(
                srv, replica, "/collections/rivers/items?limit=100", cookies=cookies))
            r = client.get("/collections/rivers/items", params={"limit": 100})
            assert "trial-2" in [f["properties"]["name"] for f in r.json()["features"]]
    finally:
        srv.stop()


def _cli(settings: Settings, *args: str) -> str:
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, GEOBASE_DATA_DIR=str(settings.data_dir), GEOBASE_PG_PORT=str(settings.pg_port),
               GEOBASE_DATABASE_URL="")
    out = subprocess.run([sys.executable, "-m", "geobase.cli", *args], env=env, cwd=str(REPO),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_replica_list_command_and_db_stop_start(cluster):
    """`geobase db replica list` reports the recorded replica: up, replaying, its lag in bytes;
    `geobase db stop` / `start` stop and start the managed replica with the primary."""
    from geobase.db import replicas

    settings, replica, _ = cluster
    (row,) = json.loads(_cli(settings, "db", "replica", "list", "--json"))
    assert row["name"] == "r1" and row["port"] == replica.port and row["up"] and row["running"]
    assert isinstance(row["lag_bytes"], int) and row["replay_lsn"]
    assert "stopped replica r1" in _cli(settings, "db", "stop")
    assert not replicas.running(replica)
    assert "started replica r1" in _cli(settings, "db", "start")
    assert replicas.running(replica)
    _wait_for("the replica answering", lambda: _replica(replica, "SELECT pg_is_in_recovery()")[0][0])


def test_killed_replica_reads_answer_from_the_primary(cluster):
    from geobase.db import replicas

    settings, replica, _ = cluster
    srv = _server(settings, GEOBASE_REPLICA_MAX_LAG_MS=1000)
    try:
        _wait_for("the replica in the read rotation", lambda: _in_rotation(srv, replica))
        pid = int((Path(replica.pgdata) / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        _wait_for("the replica's postmaster gone", lambda: not replicas.running(replica))
        with httpx.Client(base_url=srv.url, timeout=BOUND_S) as client:
            for _ in range(3):
                for path in ("/collections/rivers/items?limit=5", "/collections/rivers", "/collections"):
                    r = client.get(path)
                    assert r.status_code == 200, (path, r.status_code, r.text[:300])
                time.sleep(0.3)
        # restarted, the health check takes it back
        replicas.start(settings, replica)
        _wait_for("the replica back in the read rotation", lambda: _in_rotation(srv, replica))
    finally:
        srv.stop()
        replicas.start(settings, replica)


def _share(settings: Settings, layer: str, level: str) -> None:
    from geobase.db import connect

    with connect(settings) as conn:
        conn.execute("UPDATE catalog.layers SET sharing = %s WHERE name = %s", (level, layer))
        conn.commit()


def test_lagging_replica_is_taken_out_of_the_rotation(cluster):
    settings, replica, _ = cluster
    srv = _server(settings, GEOBASE_REPLICA_MAX_LAG_MS=1000)
    try:
        _share(settings, "water_areas", "public")
        _wait_for("the replica in the read rotation", lambda: _in_rotation(srv, replica))
        _wait_for("the layer public on the replica", lambda: _replica(
            replica, "SELECT sharing FROM catalog.layers WHERE name = 'water_areas'")[0][0] == "public")
        _replica(replica, "SELECT pg_wal_replay_pause()")
        try:
            _share(settings, "water_areas", "private")  # a write no HTTP caller holds a token for
            # while the replica served reads, an anonymous caller would still see the layer
            _wait_for("reads of the primary's state", lambda: httpx.get(
                f"{srv.url}/collections/water_areas", timeout=BOUND_S).status_code == 404, timeout=60)
            assert not _in_rotation(srv, replica), srv.logs()[-3000:]
        finally:
            _replica(replica, "SELECT pg_wal_replay_resume()")
        _wait_for("the replica caught up and back in the rotation", lambda: _in_rotation(srv, replica))
    finally:
        srv.stop()

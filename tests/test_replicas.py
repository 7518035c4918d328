"""Read replicas (issue 16, item 3): a primary and a streaming replica on loopback, started by
the test like `geobase db replica add` does, and real servers routing GETs to the replica.

* GETs are served by the replica (its backends, named geobase-api, ran the layer query);
* read-your-writes after an ingest over HTTP and after a sharing change, in every trial, while
  the replica's replay is paused (so a read that went to it would see the old state);
* a replica whose postmaster is SIGKILLed: every read still answers 200 (from the primary),
  each within the client's timeout; restarted, it is back in the rotation;
* a replica whose replay is paused falls behind beyond GEOBASE_REPLICA_MAX_LAG_MS and is taken
  out of the rotation: callers without a token then read the primary's (fresh) state;
* a read the standby cancels in a real recovery conflict (40001, and the 40P01 of its deadlock
  check) is answered 200 by the primary, not 503.
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
# 55626-55629: bench/bench_replicas.py; GEOBASE_TEST_REPLICA_PORTS=<lo>-<hi> for a run beside another
_lo, _, _hi = os.environ.get("GEOBASE_TEST_REPLICA_PORTS", "55620-55625").partition("-")
PORTS = range(int(_lo), int(_hi) + 1)
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


def _replica_setting(replica, name: str, value: str | None) -> None:
    """Set (None: reset) a setting of the replica's own configuration, reloaded at once."""
    from psycopg import sql

    owner = f"postgresql://geobase@127.0.0.1:{replica.port}/geobase"
    with psycopg.connect(owner, autocommit=True, connect_timeout=5) as conn:
        if value is None:
            conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
        else:
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")


def _flush_primary_wal(settings: Settings) -> None:
    """A committed transaction of its own: the primary flushes (and streams) its WAL up to here,
    the lock records of an open transaction included."""
    _primary(settings, "SELECT pg_current_xact_id()")


def _replica_locks(replica, relation: str) -> list[tuple]:
    """(pid, application_name, mode, granted) of every lock on ``relation`` on the replica."""
    return _replica(replica, "SELECT l.pid, coalesce(a.application_name, ''), l.mode, l.granted FROM pg_locks l "
                             "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.relation = to_regclass(%s)",
                    (relation,))


#: the replica's counter of the read's cancellation, per SQLSTATE: a recovery conflict on a lock
#: (pg_stat_database_conflicts), or a deadlock found by the backend's own check (pg_stat_database)
_COUNTERS = {"40001": "SELECT confl_lock FROM pg_stat_database_conflicts WHERE datname = current_database()",
             "40P01": "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"}


@pytest.mark.parametrize("delay,sqlstate", [("300ms", "40001"), ("30s", "40P01")],
                         ids=["cancelled-40001", "deadlock-40P01"])
def test_read_cancelled_by_a_recovery_conflict_is_answered_by_the_primary(cluster, delay, sqlstate):
    """A read the standby cancels because replay needs what the read holds is answered by the
    primary: 200 with the primary's rows, never the replica's 503 (issue 16: a replica lagging
    or failing is taken out of the read without a 5xx).

    The conflict is real and deterministic: on the primary, one open transaction takes ACCESS
    EXCLUSIVE on a partition of the layer (replayed: the standby's startup process holds it),
    the server's items query on the replica locks the layer table and waits for that
    partition, then the same transaction locks the layer table itself: replay must wait for the
    read, which waits for replay. With ``max_standby_streaming_delay`` 300 ms the standby
    cancels the read (SQLSTATE 40001, "canceling statement due to conflict with recovery":
    a relation lock held too long); with 30 s its deadlock check does first (40P01). The
    primary's transaction is rolled back only once the replica's read is gone, so the retry on
    the primary waits for it and then reads the unchanged rows."""
    import threading

    settings, replica, _ = cluster
    _replica_setting(replica, "max_standby_streaming_delay", delay)
    # the lag bound far away: the read stays on the replica while replay waits (the point is the
    # retry); no lock timeout: the read waits on the replica until the standby cancels it
    srv = _server(settings, GEOBASE_REPLICA_MAX_LAG_MS=600_000, GEOBASE_REPLICA_LOCK_TIMEOUT_MS=0)
    holder = None
    try:
        _wait_for("the replica in the read rotation", lambda: _in_rotation(srv, replica))
        path = "/collections/rivers/items?limit=100"
        expected = httpx.get(f"{srv.url}{path}", timeout=BOUND_S).json()["features"]
        assert expected
        (partition,) = _primary(settings, "SELECT format('data.%%I', c.relname) FROM pg_inherits i "
                                          "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = "
                                          "'data.rivers'::regclass ORDER BY c.relname DESC LIMIT 1")[0]
        before = _replica(replica, _COUNTERS[sqlstate])[0][0]
        holder = psycopg.connect(f"postgresql://geobase@127.0.0.1:{settings.pg_port}/geobase", connect_timeout=5)
        holder.execute(f"LOCK TABLE {partition} IN ACCESS EXCLUSIVE MODE")
        _flush_primary_wal(settings)
        _wait_for("replay holding the partition's lock on the replica", lambda: any(
            mode == "AccessExclusiveLock" and granted for _, _, mode, granted in _replica_locks(replica, partition)))

        answer: dict = {}
        reader = threading.Thread(target=lambda: answer.update(r=httpx.get(f"{srv.url}{path}", timeout=BOUND_S)))
        reader.start()
        _wait_for("the server's read waiting on the replica for the partition", lambda: any(
            app == "geobase-api" and not granted for _, app, _, granted in _replica_locks(replica, partition)))
        assert any(app == "geobase-api" and granted for _, app, _, granted in _replica_locks(replica, "data.rivers"))

        holder.execute("LOCK TABLE data.rivers IN ACCESS EXCLUSIVE MODE")  # replay now waits for the read
        _flush_primary_wal(settings)
        _wait_for("the replica's read cancelled", lambda: not any(
            app == "geobase-api" for _, app, _, _ in _replica_locks(replica, partition)), timeout=BOUND_S)
        holder.rollback()  # the retry on the primary was waiting for this transaction
        reader.join(BOUND_S)
        r = answer["r"]
        assert r.status_code == 200, (r.status_code, r.text[:300], srv.logs()[-3000:])
        assert r.json()["features"] == expected
        # what PostgreSQL 15 raised, as the server logged it, and the replica's own count of it
        assert f"({sqlstate}: " in srv.logs() and "answered by the primary" in srv.logs(), srv.logs()[-3000:]
        # The cancelled backend puts the conflict in its pending statistics, flushed to the
        # shared view when it goes idle: at once if a second has passed since its last flush,
        # else after PostgreSQL 15's PGSTAT_IDLE_INTERVAL (10 s). A 10 s wait raced that timer
        # (CI failed on it once); 30 s does not.
        _wait_for("the cancellation counted by the replica",
                  lambda: _replica(replica, _COUNTERS[sqlstate])[0][0] > before, timeout=30)
    finally:
        if holder is not None:
            holder.close()
        srv.stop()
        _replica_setting(replica, "max_standby_streaming_delay", None)


def test_read_queued_behind_replay_is_answered_by_the_primary(cluster):
    """A read that would queue on the replica behind replay's ACCESS EXCLUSIVE lock is answered
    by the primary after GEOBASE_REPLICA_LOCK_TIMEOUT_MS, not when replay gets its lock.

    Real and deterministic: a transaction of the test's own on the replica reads the layer table
    (and stays open); the primary takes ACCESS EXCLUSIVE on it and commits at once (as a vacuum
    truncating the table does); replay waits for the test's reader, up to
    max_standby_streaming_delay (120 s here), and every new read of the table on the replica
    queues behind replay's request. The server's read must answer 200, with the rows, within
    the client's 15 s, while replay is still waiting (so it did not pass through the replica)."""
    settings, replica, _ = cluster
    _replica_setting(replica, "max_standby_streaming_delay", "120s")
    srv = _server(settings, GEOBASE_REPLICA_MAX_LAG_MS=600_000, GEOBASE_REPLICA_LOCK_TIMEOUT_MS=500)
    holder = None
    try:
        _wait_for("the replica in the read rotation", lambda: _in_rotation(srv, replica))
        path = "/collections/rivers/items?limit=100"
        expected = httpx.get(f"{srv.url}{path}", timeout=BOUND_S).json()["features"]
        holder = psycopg.connect(f"postgresql://geobase@127.0.0.1:{replica.port}/geobase", connect_timeout=5)
        holder.execute("SELECT count(*) FROM data.rivers")  # an open transaction holding the table
        with psycopg.connect(f"postgresql://geobase@127.0.0.1:{settings.pg_port}/geobase", connect_timeout=5) as p:
            p.execute("LOCK TABLE data.rivers IN ACCESS EXCLUSIVE MODE")  # committed as the block ends

        def replay_waiting() -> bool:
            return any(mode == "AccessExclusiveLock" and not granted
                       for _, _, mode, granted in _replica_locks(replica, "data.rivers"))

        _wait_for("replay waiting for the table's lock on the replica", replay_waiting)
        r = httpx.get(f"{srv.url}{path}", timeout=15)
        assert r.status_code == 200, (r.status_code, r.text[:300], srv.logs()[-3000:])
        assert r.json()["features"] == expected
        assert replay_waiting(), "replay went on: the read may have been the replica's"
        assert "(55P03: " in srv.logs() and "answered by the primary" in srv.logs(), srv.logs()[-3000:]
    finally:
        if holder is not None:
            holder.close()
        srv.stop()
        _replica_setting(replica, "max_standby_streaming_delay", None)


def test_layer_partitions_are_never_truncated_by_vacuum(cluster):
    """Every county partition is made with vacuum_truncate off (migration 0014_s12prov for those
    made before): a truncating vacuum's ACCESS EXCLUSIVE lock, replayed on the replica, would
    cancel or stall the reads of the county there."""
    settings, _, _ = cluster
    rows = _primary(settings, "SELECT c.relname, (SELECT o.option_value FROM pg_options_to_table(c.reloptions) o "
                              "WHERE o.option_name = 'vacuum_truncate') FROM pg_inherits i "
                              "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'data.rivers'::regclass")
    assert rows
    for name, value in rows:
        assert value in ("off", "false"), (name, value)


def _replica_in_health(srv: LiveServer) -> dict:
    """The replica as the server's router sees it (/health lists the read replicas)."""
    (r1,) = httpx.get(f"{srv.url}/health", timeout=BOUND_S).json()["replicas"]
    return r1


def test_a_busy_replica_stays_in_the_rotation(cluster):
    """A replica whose every connection is at work is busy, not down (issue 16: before, a read
    that waited for its pool in vain took it out of the rotation until the next health check, so
    under load reads flapped to the primary and the health state said the replica was down).

    Real and deterministic: the replica's pool has one connection (GEOBASE_POOL_MAX_SIZE=1); a
    read carrying a read-your-writes token the replica will never reach holds it, polling the
    replay position, for GEOBASE_REPLICA_WAIT_MS (then the primary serves it). A read arriving
    meanwhile waits REPLICA_CHECKOUT_S for the replica's pool and is answered 200 by the primary;
    the replica stays in the rotation (nothing logged taking it out, /health lists it in the
    rotation and counts the connections the primary gave instead), and once the holder is done
    reads are served by it again.

    (The holder waits up to GEOBASE_REPLICA_WAIT_MS for each connection it takes: an items page
    takes two, one after the other; and its answer's new token asks the primary's pool, which
    its own stream holds, for up to GEOBASE_POOL_TIMEOUT_S: 15 s here.)"""
    import threading

    from geobase.db.lsn import REPLAY_POSITION_SQL, lsn_text

    settings, replica, _ = cluster
    srv = _server(settings, GEOBASE_POOL_MAX_SIZE=1, GEOBASE_REPLICA_WAIT_MS=5_000,
                  GEOBASE_REPLICA_MAX_LAG_MS=600_000)
    holder = None
    try:
        _wait_for("the replica in the read rotation", lambda: _in_rotation(srv, replica))
        path = "/collections/rivers/items?limit=5"
        expected = httpx.get(f"{srv.url}{path}", timeout=BOUND_S).json()["features"]
        ahead = lsn_text(_primary(settings, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")[0][0]
                         + (1 << 40))  # a write a terabyte of WAL from now: never replayed in this test
        t0 = _replica(replica, "SELECT clock_timestamp()")[0][0]
        logged = len(srv.logs())
        held: dict = {}

        def hold() -> None:
            try:
                held["r"] = httpx.get(f"{srv.url}{path}", headers={"Geobase-LSN": ahead}, timeout=BOUND_S)
            except httpx.HTTPError as exc:
                held["r"] = exc

        holder = threading.Thread(target=hold)
        holder.start()
        _wait_for("the replica's one connection polling for the holder's token", lambda: _replica(
            replica, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'geobase-api' "
                     "AND query = %s AND state_change >= %s", (REPLAY_POSITION_SQL, t0))[0][0] > 0)
        r = httpx.get(f"{srv.url}{path}", timeout=BOUND_S)
        assert r.status_code == 200 and r.json()["features"] == expected, (r.status_code, r.text[:300])
        state = _replica_in_health(srv)  # itself a read (one connection) that finds the replica busy
        # both reads found the replica's one connection at work (the holder's), and left it in
        assert state["busy_on_primary"] >= 2, state
        assert state["in_rotation"] and state["reason"] == "ok", state
        holder.join(BOUND_S)
        assert isinstance(held["r"], httpx.Response), held["r"]
        assert held["r"].status_code == 200 and held["r"].json()["features"] == expected
        _wait_for("a read served by the replica again", lambda: _in_rotation(srv, replica), timeout=10)
        assert "out of the read rotation" not in srv.logs()[logged:], srv.logs()[-3000:]
    finally:
        if holder is not None:
            holder.join(BOUND_S)
        srv.stop()


def test_the_router_tells_a_busy_replica_from_one_whose_connections_fail(cluster):
    """geobase.pool.RoutedPool itself, on the real primary and replica: a read that finds the
    replica's one connection at work is served by the primary and leaves the replica in the
    rotation; a replica the health check reaches but whose pool cannot connect (refused: nothing
    listens where its pool connects) is taken out, the read served by the primary all the same."""
    import asyncio

    from psycopg_pool import AsyncConnectionPool

    from geobase.pool import ROUTE, ReplicaState, Route, RoutedPool

    settings, replica, _ = cluster
    primary_url = f"postgresql://geobase@127.0.0.1:{settings.pg_port}/geobase"
    (closed,) = _free_ports(1)
    s = settings.model_copy(update={"replica_max_lag_ms": 600_000, "replica_wait_ms": 60_000})

    def make(url: str, size: int = 1, min_size: int = 1) -> AsyncConnectionPool:
        return AsyncConnectionPool(url, min_size=min_size, max_size=size, timeout=BOUND_S, open=False,
                                   kwargs={"autocommit": True, "connect_timeout": 2})

    async def read(routed: RoutedPool, token: int | None = None) -> tuple[psycopg.AsyncConnection, Route]:
        route = Route(read=True, token=token)
        token = ROUTE.set(route)
        try:
            conn = await routed.getconn()
        finally:
            ROUTE.reset(token)
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
        return conn, route

    async def busy_then_free() -> None:
        rs = ReplicaState("r1", replica.url)
        routed = RoutedPool(make(primary_url, 2), [rs], s, make)
        await routed.primary.open(wait=True)
        try:
            await routed.check_health()  # the health check admits it and makes its pool
            assert rs.up and rs.pool is not None, rs.describe()
            await rs.pool.wait(timeout=BOUND_S)  # its one connection made
            held, first = await read(routed)
            assert first.replica_conns == 1, "the first read was not the replica's"
            other, second = await read(routed)
            assert (second.replica_conns, second.primary_conns) == (0, 1)
            assert rs.up and rs.reason == "ok" and rs.busy == 1, rs.describe()
            await routed.putconn(other)
            await routed.putconn(held)
            again, third = await read(routed)
            assert third.replica_conns == 1, rs.describe()
            await routed.putconn(again)
            # a read cancelled (its client gone) while it waits for the replica to replay its
            # token gives the connection back (before: the pool's one slot was lost for good)
            waiting = asyncio.create_task(read(routed, token=1 << 62))
            while not any(owner is rs.pool for owner in list(routed._owner.values())):
                await asyncio.sleep(0.01)  # until the read holds the replica's connection
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            last, fourth = await read(routed)
            assert fourth.replica_conns == 1 and rs.busy == 1, rs.describe()
            await routed.putconn(last)
        finally:
            await routed.close()

    async def failing() -> None:
        rs = ReplicaState("r1", replica.url)  # the health check connects here: it answers
        routed = RoutedPool(make(primary_url, 2), [rs], s,
                            lambda url: make(f"postgresql://geobase@127.0.0.1:{closed}/geobase", 1, 0))
        await routed.primary.open(wait=True)
        try:
            await routed.check_health()
            assert rs.up, rs.describe()
            conn, route = await read(routed)  # the replica's pool cannot connect: the primary serves
            assert (route.replica_conns, route.primary_conns) == (0, 1)
            assert not rs.up and rs.reason.startswith("no connection") and rs.busy == 0, rs.describe()
            await routed.putconn(conn)
        finally:
            await routed.close()

    asyncio.run(busy_then_free())
    asyncio.run(failing())

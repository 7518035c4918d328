"""Read replicas of the primary: made, started, listed and removed like the local cluster.

``geobase db replica add`` makes a streaming replica of the local cluster with
``pg_basebackup -R`` (the standby's connection to the primary written by PostgreSQL itself) in
a directory beside the primary's, on its own loopback port, run by the same OS user; ``--url``
registers an external replica instead (one made by the DBA, or a managed service's).

Where replicas are recorded: ``<data_dir>/replicas.json``, beside the cluster, not a catalog
table. The list is the deployment's shape, like the cluster's port: the server must know it
before it opens a connection, it must not be replicated to the replicas themselves (a catalog
row would be), and a restored database must not bring back replicas that no longer exist.

The server (:mod:`geobase.pool`) reads the list at start: it opens a read pool per replica and
routes GET requests to them; writes stay on the primary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from geobase.errors import InvalidInput, NotFound, SetupError
from geobase.settings import Settings

REGISTRY_FILE = "replicas.json"


@dataclass(frozen=True)
class Replica:
    """One replica: ``url`` is what the HTTP server connects with (the application role for a
    managed one); ``pgdata``/``port`` only for a replica this machine runs."""

    name: str
    url: str
    port: int | None = None
    pgdata: str | None = None

    @property
    def managed(self) -> bool:
        return self.pgdata is not None


def registry_path(settings: Settings) -> Path:
    return settings.data_path / REGISTRY_FILE


def load(settings: Settings) -> list[Replica]:
    """The recorded replicas (none when the file does not exist)."""
    path = registry_path(settings)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    return [Replica(**r) for r in rows]


def _save(settings: Settings, replicas: list[Replica]) -> None:
    path = registry_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in replicas], indent=2), encoding="utf-8")
    os.replace(tmp, path)  # a reader sees the old list or the new one, never half a file


def _check_name(name: str, existing: list[Replica]) -> None:
    if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 40:
        raise InvalidInput(f"--name: {name!r} is not a plain name (letters, digits, - and _)", parameter="name")
    if any(r.name == name for r in existing):
        raise InvalidInput(f"a replica named {name!r} exists already", parameter="name")


def register_external(settings: Settings, url: str, name: str | None = None) -> Replica:
    """Record a replica run elsewhere; it must answer and be in recovery (a standby)."""
    existing = load(settings)
    name = name or f"r{len(existing) + 1}"
    _check_name(name, existing)
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            raise InvalidInput(f"{name}: the server at --url is not a standby (pg_is_in_recovery() is false): "
                               "writes sent to it would not reach the primary", parameter="url")
    replica = Replica(name=name, url=url)
    _save(settings, [*existing, replica])
    return replica


def add_local(settings: Settings, port: int, name: str | None = None) -> Replica:
    """A streaming replica of the running local cluster on ``port``, started and recorded."""
    from geobase.db.cluster import LocalCluster, ensure_installed
    from geobase.db.connection import APP_LOGIN

    if not settings.uses_local_cluster:
        raise InvalidInput("GEOBASE_DATABASE_URL is set: add an external replica with --url", parameter="url")
    existing = load(settings)
    name = name or f"r{len(existing) + 1}"
    _check_name(name, existing)
    if port == settings.pg_port or any(r.port == port for r in existing):
        raise InvalidInput(f"--port: {port} is taken by the primary or another replica", parameter="port")
    primary = LocalCluster(settings)
    if not primary.running():
        raise SetupError("the local cluster is not running: `geobase db start` first")
    bindir = ensure_installed(settings, allow_install=False)
    pgdata = primary.pgdata.parent / f"replica-{name}"
    if pgdata.exists():
        raise InvalidInput(f"{pgdata} exists already: remove it or choose another --name", parameter="name")
    pgdata.mkdir(mode=0o700)
    if primary.run_as.uid is not None:
        os.chown(pgdata, primary.run_as.uid, primary.run_as.gid)
    try:
        primary._run([str(bindir / "pg_basebackup"), "-D", str(pgdata), "-R", "-X", "stream", "-c", "fast",
                      "-d", f"host=127.0.0.1 port={settings.pg_port} user={settings.pg_user} "
                            f"application_name=geobase-replica-{name}"])
        with (pgdata / "postgresql.auto.conf").open("a") as fh:
            # Recovery conflicts (replay needing what a replica query holds): hot_standby_feedback
            # keeps the primary's vacuum from removing rows a replica query may still see (no
            # snapshot conflicts); the lock conflicts left (a truncating vacuum — off on layer
            # partitions, migration 0014_s12prov — or DDL) are bounded on the server's side: a
            # read waits GEOBASE_REPLICA_LOCK_TIMEOUT_MS at most, and a read the standby cancels
            # is answered by the primary (geobase/pool.py retry_on_primary). max_standby_streaming_delay
            # stays PostgreSQL's 30 s: shorter would cut long downloads to bound replay, whose lag
            # takes the replica out of the rotation meanwhile. Each wait is logged.
            fh.write(f"port = {port}\nhot_standby = on\nhot_standby_feedback = on\n"
                     "log_recovery_conflict_waits = on\n")
    except BaseException:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise
    replica = Replica(name=name, port=port, pgdata=str(pgdata),
                      url=f"postgresql://{APP_LOGIN}@127.0.0.1:{port}/{settings.pg_database}")
    _save(settings, [*existing, replica])
    start(settings, replica)
    return replica


def _pg_ctl(settings: Settings, replica: Replica, *args: str) -> subprocess.CompletedProcess:
    from geobase.db.cluster import LocalCluster, ensure_installed

    bindir = ensure_installed(settings, allow_install=False)
    return LocalCluster(settings)._run([str(bindir / "pg_ctl"), "-D", str(replica.pgdata), *args], check=False)


def running(replica: Replica) -> bool:
    from geobase.db.cluster import _is_postgres

    try:
        pid = int((Path(replica.pgdata) / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError, TypeError):
        return False
    return _is_postgres(pid)


def start(settings: Settings, replica: Replica) -> bool:
    """Start a managed replica (False when it was running); waits until it accepts reads."""
    if not replica.managed or running(replica):
        return False
    (Path(replica.pgdata) / "postmaster.pid").unlink(missing_ok=True)  # stale after a kill
    res = _pg_ctl(settings, replica, "-l", str(Path(replica.pgdata) / "geobase-server.log"), "-w", "-t", "60",
                  "-o", f"-p {replica.port}", "start")
    if res.returncode != 0:
        raise SetupError(f"replica {replica.name} did not start: {res.stderr.strip() or res.stdout.strip()}")
    return True


def stop(settings: Settings, replica: Replica) -> bool:
    if not replica.managed or not running(replica):
        return False
    _pg_ctl(settings, replica, "-m", "fast", "-w", "-t", "60", "stop")
    return True


def start_all(settings: Settings) -> list[str]:
    """Start every managed replica (with the primary: `geobase db start`); their names."""
    return [r.name for r in load(settings) if start(settings, r)]


def stop_all(settings: Settings) -> list[str]:
    """Stop every managed replica (with the primary: `geobase db stop`); their names."""
    return [r.name for r in load(settings) if stop(settings, r)]


def remove(settings: Settings, name: str) -> Replica:
    """Unregister a replica; a managed one is stopped and its directory deleted."""
    replicas = load(settings)
    found = next((r for r in replicas if r.name == name), None)
    if found is None:
        raise NotFound(f"no replica named {name!r}", parameter="name")
    _save(settings, [r for r in replicas if r.name != name])
    if found.managed:
        stop(settings, found)
        shutil.rmtree(found.pgdata, ignore_errors=True)
    return found


def status(settings: Settings, replica: Replica, primary_url: str) -> dict:
    """What ``replica list`` shows: up or not, replay position and lag behind the primary."""
    info: dict = {"name": replica.name, "url": replica.url, "managed": replica.managed,
                  "port": replica.port, "running": running(replica) if replica.managed else None}
    t0 = time.monotonic()
    try:
        with psycopg.connect(replica.url, connect_timeout=3, autocommit=True) as conn:
            replay, paused, at = conn.execute(
                "SELECT pg_last_wal_replay_lsn()::text, pg_is_wal_replay_paused(), "
                "pg_last_xact_replay_timestamp()").fetchone()
        with psycopg.connect(primary_url, connect_timeout=3, autocommit=True) as conn:
            lag = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)",
                               (replay,)).fetchone()[0]
        info.update(up=True, replay_lsn=replay, replay_paused=paused, lag_bytes=int(lag),
                    last_replayed_commit=at.isoformat() if at else None)
    except psycopg.Error as exc:
        info.update(up=False, error=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    info["checked_ms"] = round((time.monotonic() - t0) * 1000, 1)
    return info

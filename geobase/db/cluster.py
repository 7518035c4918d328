"""The project's own private PostgreSQL/PostGIS cluster (the embedded default).

With no ``GEOBASE_DATABASE_URL`` geobase runs PostgreSQL itself: ``initdb`` into the data
directory, its own loopback port, PostGIS created. PostgreSQL refuses to run as root, so when
invoked as root the server runs as an unprivileged OS user (``postgres`` from the Debian
package, else a ``geobase`` system user we create). Every operation is idempotent: starting a
running cluster is a no-op, and a stale ``postmaster.pid`` left by a crash is removed first.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from geobase.errors import SetupError
from geobase.settings import Settings

DEBIAN_PACKAGE = "postgresql-15-postgis-3"
_BIN_CANDIDATES = [Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15, 14, 13)]


def find_bindir(settings: Settings) -> Path | None:
    """Directory holding ``pg_ctl`` and ``initdb`` whose server has PostGIS installed."""
    candidates = [settings.pg_bindir] if settings.pg_bindir else []
    which = shutil.which("pg_config")
    if which:
        out = subprocess.run([which, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += _BIN_CANDIDATES
    for cand in candidates:
        if cand and (cand / "pg_ctl").exists() and (cand / "initdb").exists() and _has_postgis(cand):
            return cand
    return None


def _has_postgis(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        out = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True)
        sharedir = Path(out.stdout.strip())
    else:  # Debian layout: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
        sharedir = Path("/usr/share/postgresql") / bindir.parent.name
    return (sharedir / "extension" / "postgis.control").exists()


def ensure_installed(settings: Settings, *, allow_install: bool = True) -> Path:
    """Return the server bindir, installing PostGIS with apt on Debian/Ubuntu when missing."""
    bindir = find_bindir(settings)
    if bindir:
        return bindir
    apt = shutil.which("apt-get")
    if apt and allow_install and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        print(f"geobase: installing {DEBIAN_PACKAGE} with apt-get (first run only) ...", flush=True)
        subprocess.run([apt, "update", "-qq"], check=False, env=env)
        res = subprocess.run([apt, "install", "-y", "-qq", DEBIAN_PACKAGE], env=env)
        if res.returncode != 0:
            raise SetupError(f"apt-get install {DEBIAN_PACKAGE} failed (exit {res.returncode})")
        bindir = find_bindir(settings)
        if bindir:
            return bindir
    if apt:
        raise SetupError(
            f"PostgreSQL with PostGIS is not installed. Run: sudo apt-get install -y {DEBIAN_PACKAGE} "
            "(or set GEOBASE_DATABASE_URL to an external PostGIS)."
        )
    raise SetupError(
        "PostgreSQL server binaries with PostGIS 3 were not found. Install PostgreSQL >= 13 and "
        "PostGIS 3 (e.g. 'brew install postgis', 'dnf install postgis'), set GEOBASE_PG_BINDIR to the "
        "directory holding pg_ctl, or set GEOBASE_DATABASE_URL to an external PostGIS."
    )


@dataclass
class RunAs:
    """The OS user the server runs as (None: the current user)."""

    uid: int | None = None
    gid: int | None = None
    name: str | None = None

    def kwargs(self) -> dict:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _service_user() -> RunAs:
    if os.geteuid() != 0:
        return RunAs()
    for name in ("postgres", "geobase"):
        try:
            pw = pwd.getpwnam(name)
            return RunAs(pw.pw_uid, pw.pw_gid, name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "geobase"], check=True
    )
    pw = pwd.getpwnam("geobase")
    return RunAs(pw.pw_uid, pw.pw_gid, "geobase")


class LocalCluster:
    """Lifecycle of the private cluster: start, stop, status, url, reset."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_as = _service_user()
        self.pgdata = self._resolve_pgdata()

    # -- where the cluster lives -------------------------------------------------------------
    def _resolve_pgdata(self) -> Path:
        """``<data_dir>/pg`` unless the service user cannot reach it (e.g. a repo under /root,
        mode 700): then a per-data-dir directory under /var/lib/geobase, recorded in a pointer file."""
        base = self.settings.data_path
        default = base / "pg"
        pointer = base / "pg.location"
        if pointer.exists():
            return Path(pointer.read_text().strip())
        if self.run_as.uid is None or _reachable_by(default.parent, self.run_as):
            return default
        digest = hashlib.sha1(str(base).encode()).hexdigest()[:12]
        return Path("/var/lib/geobase/clusters") / digest / "pg"

    @property
    def url(self) -> str:
        s = self.settings
        return f"postgresql://{s.pg_user}@127.0.0.1:{s.pg_port}/{s.pg_database}"

    @property
    def logfile(self) -> Path:
        return self.pgdata / "geobase-server.log"

    # -- commands --------------------------------------------------------------------------------
    def _run(self, args: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        res = subprocess.run(args, capture_output=True, text=True, **self.run_as.kwargs(), **kw)
        if check and res.returncode != 0:
            raise SetupError(f"{Path(args[0]).name} failed (exit {res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
        return res

    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def running(self) -> bool:
        pid = self._pid()
        return pid is not None and _is_postgres(pid)

    def _pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            return int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _clear_stale_pid(self) -> bool:
        """Remove postmaster.pid when its process is gone (crash, kill -9, reboot)."""
        pidfile = self.pgdata / "postmaster.pid"
        if pidfile.exists() and not self.running():
            pidfile.unlink()
            return True
        return False

    def init(self, bindir: Path) -> None:
        self.settings.data_path.mkdir(parents=True, exist_ok=True)
        if self.pgdata.parent != self.settings.data_path:
            (self.settings.data_path / "pg.location").write_text(str(self.pgdata))
        self.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.run_as.uid is not None:
            os.chown(self.pgdata, self.run_as.uid, self.run_as.gid)
        self._run(
            [str(bindir / "initdb"), "-D", str(self.pgdata), "-U", self.settings.pg_user, "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"],
        )
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write(
                "\n# geobase private cluster\n"
                f"port = {self.settings.pg_port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 200\n"
                "shared_buffers = 512MB\n"
                "work_mem = 64MB\n"
                "maintenance_work_mem = 512MB\n"
                "max_wal_size = 4GB\n"
                "synchronous_commit = off\n"
                "jit = off\n"
                "logging_collector = off\n"
            )

    def start(self, *, allow_install: bool = True) -> bool:
        """Start the cluster; returns False when it was already running (a no-op)."""
        bindir = ensure_installed(self.settings, allow_install=allow_install)
        if not self.initialised():
            self.init(bindir)
        if self.running():
            return False
        self._clear_stale_pid()
        self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.logfile), "-w", "-t", "60",
             "-o", f"-p {self.settings.pg_port}", "start"],
        )
        self._ensure_database()
        return True

    def stop(self, mode: str = "fast") -> bool:
        """Stop the cluster; returns False when it was not running."""
        if not self.running():
            self._clear_stale_pid()
            return False
        bindir = ensure_installed(self.settings, allow_install=False)
        self._run([str(bindir / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop"])
        return True

    def status(self) -> dict:
        return {
            "pgdata": str(self.pgdata),
            "initialised": self.initialised(),
            "running": self.running(),
            "pid": self._pid() if self.running() else None,
            "port": self.settings.pg_port,
            "url": self.url,
            "run_as": self.run_as.name or pwd.getpwuid(os.geteuid()).pw_name,
        }

    def reset(self) -> None:
        """Stop and delete the cluster, then create it afresh (all data is lost)."""
        self.stop()
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self.start()

    def remove(self) -> bool:
        """Stop the cluster and delete its directory and pointer file; False when none existed."""
        self.stop()
        existed = self.pgdata.exists()
        if existed:
            shutil.rmtree(self.pgdata)
        (self.settings.data_path / "pg.location").unlink(missing_ok=True)
        return existed

    def _ensure_database(self) -> None:
        import psycopg

        admin = f"postgresql://{self.settings.pg_user}@127.0.0.1:{self.settings.pg_port}/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.pg_database,)
                    ).fetchone()
                    if not exists:
                        from psycopg import sql

                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.settings.pg_database)))
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


def _is_postgres(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return b"postgres" in cmdline


def _reachable_by(path: Path, run_as: RunAs) -> bool:
    """Can the service user traverse every ancestor of ``path``?"""
    p = path.resolve()
    for ancestor in [p, *p.parents]:
        if not ancestor.exists():
            continue
        st = ancestor.stat()
        if st.st_uid == run_as.uid:
            mode_bit = 0o100
        elif st.st_gid == run_as.gid:
            mode_bit = 0o010
        else:
            mode_bit = 0o001
        if not st.st_mode & mode_bit:
            return False
    return True

"""The server's connection pool: the primary's and the replicas' pools, reads routed between them.

The API (``api/app.py``) opens one :func:`server_pool` in its lifespan; how each pooled
connection is configured and checked is :mod:`geobase.db.serving`."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from geobase.db import database_url
from geobase.db.lsn import PRIMARY_POSITION_SQL, REPLAY_POSITION_SQL, lsn_text, wal_position
from geobase.db.serving import ConnectionCheck, configure_connection
from geobase.settings import Settings

log = logging.getLogger("geobase.pool")

#: the name of the health checks' own connections to the replicas (not serving requests)
HEALTH_APPLICATION_NAME = "geobase-replica-check"


def server_pool(settings: Settings, checker: ConnectionCheck) -> RoutedPool:
    """The (unopened) pool of the API server, sized and timed by ``settings``: the primary's,
    with a read pool per replica recorded by ``geobase db replica`` (:mod:`geobase.db.replicas`)."""
    from geobase.db import replicas as replica_registry

    timeout = int(settings.statement_timeout_ms)

    async def configure(conn: psycopg.AsyncConnection) -> None:
        await configure_connection(conn, timeout)

    async def configure_replica(conn: psycopg.AsyncConnection) -> None:
        # On a standby the only lock a read can wait for is one WAL replay holds or waits for
        # (an ACCESS EXCLUSIVE lock of the primary's: a vacuum truncating a table, DDL): new
        # reads queue behind replay's request until the reads it waits for end, or for up to
        # max_standby_streaming_delay (30 s). Past the lock timeout the read fails (55P03)
        # before its first byte and the primary answers it (retry_on_primary): a stall of the
        # replica costs a read GEOBASE_REPLICA_LOCK_TIMEOUT_MS, not half a minute.
        await configure_connection(conn, timeout, settings.replica_lock_timeout_ms)

    def make(url: str, replica: bool = False, **kw) -> AsyncConnectionPool:
        return AsyncConnectionPool(url, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
                                   timeout=settings.pool_timeout_s, configure=configure_replica if replica else configure,
                                   open=False, kwargs={"autocommit": True, "connect_timeout": 5}, **kw)

    primary = make(database_url(settings), check=checker.check)
    states = [ReplicaState(r.name, r.url) for r in replica_registry.load(settings)]
    return RoutedPool(primary, states, settings, lambda url: make(url, replica=True), on_return=checker.returned)


async def database_versions(conn: psycopg.AsyncConnection) -> dict[str, str]:
    """The PostgreSQL and PostGIS versions the server talks to (``/health``)."""
    cur = await conn.execute("SELECT current_setting('server_version'), postgis_lib_version(), postgis_full_version()")
    pg, postgis, full = await cur.fetchone()
    return {"postgresql": pg, "postgis": postgis, "postgis_full": full}


def _connect_errors(pool: AsyncConnectionPool) -> int:
    """How many of the pool's attempts to open a connection have failed so far."""
    return pool.get_stats().get("connections_errors", 0)


# ------------------------------------------------------------------------------------------
# read replicas: the one place where a request's connection is chosen
# ------------------------------------------------------------------------------------------
#: how long a read waits for a replica's pool before it is served by the primary instead (a busy
#: replica stays in the rotation: :meth:`RoutedPool._unreachable`)
REPLICA_CHECKOUT_S = 1.0
#: how often a read that waits for its own write polls the replica's replay position
_POLL_S = 0.01


@dataclass
class Route:
    """What the current request asks of the pool (set per request by the HTTP adapter):
    ``read`` — it may be served by a replica; ``token`` — the WAL position of the caller's
    own last write, which a replica must have replayed before it serves the caller;
    ``primary_only`` — the second attempt of a read a replica failed (:func:`retry_on_primary`);
    ``replica_failure`` — why the replica failed it (set by :func:`retry_on_primary`)."""

    read: bool
    token: int | None = None
    replica_conns: int = 0
    primary_conns: int = 0
    primary_only: bool = False
    replica_failure: str | None = None
    replicas_used: list[str] = field(default_factory=list)


#: the request's route; unset (background work, the CLI, the gate): the primary
ROUTE: contextvars.ContextVar[Route | None] = contextvars.ContextVar("geobase_route", default=None)


@dataclass
class ReplicaState:
    """A replica as the router sees it: its pool, and whether it is in the read rotation."""

    name: str
    url: str
    pool: AsyncConnectionPool | None = None
    up: bool = False
    lag_ms: float = 0.0
    replay: int | None = None
    reason: str = "not checked yet"
    served: int = 0
    retried: int = 0
    #: connections of reads the primary gave because every connection of this replica was at work
    busy: int = 0

    def describe(self) -> dict:
        return {"name": self.name, "in_rotation": self.up, "lag_ms": round(self.lag_ms),
                "replay_lsn": lsn_text(self.replay) if self.replay is not None else None,
                "reason": self.reason, "reads_served": self.served, "reads_retried_on_primary": self.retried,
                "busy_on_primary": self.busy}


def retry_on_primary(exc: BaseException) -> bool:
    """Whether the current request's failure ``exc`` is a replica's that the primary may answer
    instead, marking the request's :class:`Route` so (the HTTP adapter then runs the read once
    more, on the primary alone, if no byte of its answer has been sent).

    Which failures: a read that took a replica connection and failed with a database error of
    the server or the link — a query the standby cancelled because replay needed what it held
    (PostgreSQL 15: SQLSTATE 40001 ``canceling statement due to conflict with recovery``, a
    relation lock, a buffer pin or a snapshot held too long, also FATAL ``terminating
    connection``; 40P01 when the standby's deadlock check finds a query waiting on a lock
    replay holds while holding one replay waits for), a replica killed or stopped under the
    query (the connection lost, 57P01), a read that waited for replay's lock past the replicas'
    lock timeout (55P03, see :func:`server_pool`). Not a statement timeout (57014): the primary would run
    as long, at twice the cost. The error cannot be pinned on the connection that raised it
    (psycopg's error carries none), so a read that also used the primary and failed there is
    tried once more there: a GET twice, bounded to twice."""
    route = ROUTE.get()
    if route is None or not route.read or route.primary_only or route.replica_conns == 0:
        return False
    if not isinstance(exc, psycopg.OperationalError) or isinstance(exc, psycopg.errors.QueryCanceled):
        return False
    first = (str(exc).strip().splitlines() or [""])[0]
    route.replica_failure = f"{exc.sqlstate or type(exc).__name__}: {first[:160]}"
    return True


class RoutedPool:
    """The server's pool: the primary's pool plus a read pool per replica.

    A connection taken while the request's :data:`ROUTE` says *read* comes from a replica in
    the rotation (round robin), after one query that both proves the connection alive and reads
    the replica's replay position; when the caller's token is ahead of it, the query is repeated
    for up to ``replica_wait_ms`` and then the primary serves. Every failure on the way (no
    replica, a replica down, lagging) falls back to the primary, and so does a read that finds
    every connection of a replica at work for ``REPLICA_CHECKOUT_S`` (the replica is busy, not
    down: it stays in the rotation, :meth:`_unreachable`); a read the
    replica fails once it has the connection (a recovery conflict, the replica killed under it)
    is run again on the primary by the HTTP adapter (:func:`retry_on_primary`): a replica never
    turns a read into an error before its first byte is sent. Everything else (writes, ingests, edits, the gate, jobs)
    gets the primary. A health check every ``replica_check_s`` measures each replica's lag
    (time since the primary was at a position the replica has not replayed) and takes it out of
    the rotation beyond ``replica_max_lag_ms``, or when it does not answer; it re-admits it
    when it is back within the bound."""

    def __init__(self, primary: AsyncConnectionPool, replicas: list[ReplicaState], settings: Settings,
                 make_pool: Callable[[str], AsyncConnectionPool],
                 on_return: Callable[[psycopg.AsyncConnection], None] | None = None):
        self.primary = primary
        #: told of each connection given back to the primary's pool (ConnectionCheck.returned)
        self._on_return = on_return
        self.replicas = replicas
        self.settings = settings
        self._make_pool = make_pool
        self._owner: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._next = 0
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._health: asyncio.Task | None = None
        self._checking: dict[str, psycopg.AsyncConnection] = {}

    # -- life ----------------------------------------------------------------------------------
    async def open(self, wait: bool = False) -> None:
        await self.primary.open(wait=wait)
        if self.replicas:
            self._health = asyncio.create_task(self._health_loop(), name="replica-health")

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(BaseException):
                await self._health
        for rs in self.replicas:
            await self._drop_pool(rs)
        for conn in self._checking.values():
            with contextlib.suppress(Exception):
                await conn.close()
        await self.primary.close()

    # -- connections -----------------------------------------------------------------------------
    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection:
        route = ROUTE.get()
        if route is not None and route.read and not route.primary_only and self.replicas:
            conn = await self._replica_conn(route)
            if conn is not None:
                route.replica_conns += 1
                return conn
        if route is not None:
            route.primary_conns += 1
        return await self.primary.getconn(timeout=timeout)

    async def putconn(self, conn: psycopg.AsyncConnection) -> None:
        owner = self._owner.pop(conn, None)
        if owner is None and self._on_return is not None:
            self._on_return(conn)
        await (owner or self.primary).putconn(conn)

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[psycopg.AsyncConnection]:
        conn = await self.getconn(timeout=timeout)
        try:
            yield conn
        finally:
            await self.putconn(conn)

    async def primary_position(self) -> int:
        """The primary's WAL position now (a read-your-writes token covering every commit so far)."""
        async with self.primary.connection(timeout=self.settings.pool_timeout_s) as conn:
            cur = await conn.execute(PRIMARY_POSITION_SQL)
            return wal_position(int((await cur.fetchone())[0]))

    def describe(self) -> list[dict]:
        return [rs.describe() for rs in self.replicas]

    def retried(self, route: Route) -> None:
        """Count and log a read that a replica failed and the primary is asked to answer."""
        for name in set(route.replicas_used):
            rs = next((r for r in self.replicas if r.name == name), None)
            if rs is not None:
                rs.retried += 1
        log.warning("a read failed on replica %s (%s): answered by the primary",
                    ", ".join(sorted(set(route.replicas_used))) or "?", route.replica_failure)

    async def _replica_conn(self, route: Route) -> psycopg.AsyncConnection | None:
        live = [rs for rs in self.replicas if rs.up and rs.pool is not None]
        if not live:
            return None
        self._next = (self._next + 1) % len(live)
        deadline = time.monotonic() + self.settings.replica_wait_ms / 1000
        for rs in live[self._next:] + live[:self._next]:
            pool = rs.pool
            errors = _connect_errors(pool)
            try:
                conn = await pool.getconn(timeout=REPLICA_CHECKOUT_S)
            except PoolTimeout as exc:
                if self._unreachable(pool, errors):
                    self._out(rs, f"no connection: {type(exc).__name__}, {_connect_errors(pool) - errors} "
                                  "failed connection attempts")
                else:  # busy: the primary serves this read, the replica stays in the rotation
                    rs.busy += 1
                    log.debug("replica %s busy (every connection at work): a read served by the primary", rs.name)
                continue
            except Exception as exc:  # the pool closed under the read
                self._out(rs, f"no connection: {type(exc).__name__}")
                continue
            self._owner[conn] = pool  # at work from here (_unreachable counts it)
            try:
                ok = await self._caught_up(conn, route.token, deadline)
            except Exception as exc:  # the connection died with the replica
                self._owner.pop(conn, None)
                await pool.putconn(conn)
                self._out(rs, f"check failed: {type(exc).__name__}")
                continue
            except BaseException:  # the read cancelled (its client gone) while it waited: never lose a slot
                self._owner.pop(conn, None)
                await pool.putconn(conn)
                raise
            if ok:
                rs.served += 1
                route.replicas_used.append(rs.name)
                return conn
            self._owner.pop(conn, None)
            await pool.putconn(conn)
        return None

    def _unreachable(self, pool: AsyncConnectionPool, errors_before: int) -> bool:
        """Whether a replica pool that gave no connection within REPLICA_CHECKOUT_S is failing
        (out of the rotation) rather than busy (kept in it).

        Busy: none of its connection attempts failed during the wait and some of its connections
        are at work for reads, so it answers, only not this read within the bound: taking it out
        until the next health check would send every read to the primary exactly when the
        replica's capacity is needed, and say the replica was down when it was not. Failing: an
        attempt to connect failed during the wait (refused, reset, rejected: too many clients,
        authentication), or no connection of it is at work (it has none to give and made none).
        A replica that hangs with every connection at work stays in until the health check, which
        has its own connection and timeout, finds it unanswering."""
        if _connect_errors(pool) > errors_before:
            return True
        return not any(owner is pool for owner in list(self._owner.values()))

    async def _caught_up(self, conn: psycopg.AsyncConnection, token: int | None, deadline: float) -> bool:
        while True:
            cur = await conn.execute(REPLAY_POSITION_SQL)
            replay = (await cur.fetchone())[0]
            if replay is None:  # promoted or not a standby: not a replica any more
                raise psycopg.OperationalError("not in recovery")
            if token is None or int(replay) >= token:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_S)

    def _out(self, rs: ReplicaState, reason: str) -> None:
        """Take the replica out of the read rotation (the health check re-admits it)."""
        if rs.up:
            log.warning("replica %s out of the read rotation: %s", rs.name, reason)
        rs.up, rs.reason = False, reason

    async def _drop_pool(self, rs: ReplicaState) -> None:
        pool, rs.pool = rs.pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close(timeout=1.0)

    # -- health ----------------------------------------------------------------------------------
    async def _health_loop(self) -> None:
        while True:
            try:
                await self.check_health()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the loop die
                log.warning("replica health check failed: %s", exc)
            await asyncio.sleep(self.settings.replica_check_s)

    async def check_health(self) -> None:
        """Sample the primary's position, then each replica's replay position and lag."""
        try:
            position = await self.primary_position()
            self._samples.append((time.monotonic(), position))  # the time it was read, not asked
        except Exception as exc:
            log.debug("primary position not sampled: %s", exc)
        now = time.monotonic()
        horizon = now - 2 * self.settings.replica_max_lag_ms / 1000 - 10 * self.settings.replica_check_s
        while len(self._samples) > 2 and self._samples[1][0] < horizon:
            self._samples.popleft()
        for rs in self.replicas:
            await self._check_replica(rs, now)

    async def _check_replica(self, rs: ReplicaState, now: float) -> None:
        try:
            conn = self._checking.get(rs.name)
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(rs.url, autocommit=True, connect_timeout=2,
                                                             application_name=HEALTH_APPLICATION_NAME)
                self._checking[rs.name] = conn
            cur = await asyncio.wait_for(conn.execute(REPLAY_POSITION_SQL), timeout=2)
            replay = (await cur.fetchone())[0]
        except Exception as exc:
            conn = self._checking.pop(rs.name, None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            self._out(rs, f"down: {type(exc).__name__}")
            await self._drop_pool(rs)
            return
        if replay is None:
            self._out(rs, "not a standby (pg_last_wal_replay_lsn() is null)")
            return
        rs.replay = int(replay)
        behind = [t for t, lsn in self._samples if lsn > rs.replay]
        rs.lag_ms = (now - behind[0]) * 1000 if behind else 0.0
        if rs.lag_ms > self.settings.replica_max_lag_ms:
            self._out(rs, f"lagging {rs.lag_ms:.0f} ms > {self.settings.replica_max_lag_ms} ms")
            return
        if not rs.up:
            if rs.pool is None:
                rs.pool = self._make_pool(rs.url)
                await rs.pool.open(wait=False)
            log.info("replica %s in the read rotation (lag %.0f ms)", rs.name, rs.lag_ms)
            rs.up, rs.reason = True, "ok"

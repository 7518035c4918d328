"""A serving connection's set-up and its check on checkout (the server's pool, geobase/pool.py).

The SQL that prepares a connection for serving (its ``application_name``, the PostGIS warm-up,
the statement and lock timeouts) lives in the core, next to the pool that runs it, not in the
app wiring."""

from __future__ import annotations

import logging
import time
import weakref

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("geobase.pool")

#: a new backend loads PostGIS, PROJ and the CGCS2000 spheroid on first use (~200 ms): paid
#: when the pool opens the connection, not in a user's first request
WARM_UP_SQL = ("SELECT ST_Area(g::geography), ST_Transform(g, 3857) "
               "FROM (SELECT 'SRID=4490;POLYGON((118 29,118.01 29,118.01 29.01,118 29))'::geometry AS g) x")

APPLICATION_NAME = "geobase-api"


class ConnectionCheck:
    """The pool's check on checkout, without a round trip for a connection in steady use.

    ``AsyncConnectionPool.check_connection`` sends an empty query on every checkout: a round
    trip on every request. A connection given back less than :attr:`idle_s` ago, with no
    database failure seen since, is handed out as it is; any other is checked. A database
    restart is still survived: the first request on a dead connection fails cleanly (503) and
    records the failure (:meth:`failed`), after which every older connection is checked again."""

    def __init__(self, idle_s: float = 2.0):
        self.idle_s = idle_s
        self._returned: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._failure_at = 0.0

    def failed(self) -> None:
        self._failure_at = time.monotonic()

    async def check(self, conn) -> None:
        last = self._returned.pop(conn, None)
        now = time.monotonic()
        if last is not None and last > self._failure_at and now - last < self.idle_s:
            return
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            self.failed()
            raise

    def returned(self, conn) -> None:
        """``conn`` is given back now (:meth:`RoutedPool.putconn`): checked again only when it
        lies idle longer than :attr:`idle_s` or a failure is seen first.

        Recorded as the connection is handed back, not by the pool's ``reset=`` callback: with a
        reset callback psycopg_pool returns every connection through its worker task (queued,
        woken on a later turn of the event loop) instead of putting it back at once — a second
        task and a loop wake-up per request for a timestamp."""
        self._returned[conn] = time.monotonic()


async def configure_connection(conn: psycopg.AsyncConnection, statement_timeout_ms: int,
                               lock_timeout_ms: int | None = None) -> None:
    """Name the connection, warm PostGIS up and set the statement timeout (after the warm-up,
    so that it does not apply to it; a failed warm-up only means no warm-up). ``lock_timeout_ms``:
    a replica's connections (see :func:`server_pool`)."""
    await conn.execute(sql.SQL("SET application_name = {}").format(sql.Literal(APPLICATION_NAME)))
    try:
        await conn.execute(WARM_UP_SQL)
    except psycopg.Error as exc:
        log.debug("connection warm-up skipped: %s", exc)
    await conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(statement_timeout_ms))))
    if lock_timeout_ms is not None:
        await conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(int(lock_timeout_ms))))
    await conn.commit()

"""The tables of direct first loads whose ingest is gone (ingest/loader.py :class:`DirectLoad`).

A direct load commits its new table and rows before it builds the indexes (two sessions at
once), in a table no reader sees until it is attached to the layer. An ingest killed in between
leaves that table behind; the next ingest drops it (and says so in its report), as it drops
leftover staging tables (ingest/staging.py)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from geobase.catalog.versions import lock_key


def load_lock_name(table: str) -> str:
    """The advisory lock a direct load's session holds on its table while it lives."""
    return f"load:{table}"


def drop_leftover_loads(conn: psycopg.Connection) -> list[str]:
    """Drop the tables of direct loads whose ingest is gone (killed, or its connection lost
    before it could drop them): ``data.<layer>__load_<job>`` tables that are no partition and
    whose session lock (:func:`load_lock_name`) is free. Returns their names. They were never
    part of a layer: no reader saw their rows, no version names them."""
    dropped = []
    names = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'data' "
        "AND c.relkind = 'r' AND NOT c.relispartition AND position('__load_' in c.relname) > 0").fetchall()]
    conn.commit()
    for name in names:
        key = lock_key(load_lock_name(name))
        if not conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(key)).fetchone()[0]:
            continue  # a live ingest owns it
        try:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("data", name)))
            conn.commit()
            dropped.append(name)
        finally:
            conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(key))
            conn.commit()
    return dropped

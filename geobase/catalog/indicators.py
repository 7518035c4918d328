"""The catalog tables of indicator monitoring (migration 0010_s8ind): the queue of published
versions, the state the stored values reflect, the values (time series), the targets, the
warnings and their events. Every SQL statement on these tables is here.

Why an outbox row per version: the one version writer (``insert_version_row``) queues the
version in its own transaction, so every committed version (ingest, edit, rollback, raster) is
seen by the indicators exactly once and an aborted one never; the recompute runs later as a job
(geobase/indicators/monitor.py) and never holds up the writer or a request.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


# --- the queue --------------------------------------------------------------------------------

def version_published(conn: psycopg.Connection, layer: str, version: int) -> None:
    """Queue a new layer version for the indicators, in the caller's (the version's) transaction."""
    conn.execute("INSERT INTO catalog.indicator_pending (layer, version) VALUES (%s, %s)", (layer, version))


async def pending(conn: psycopg.AsyncConnection, limit: int = 1000) -> list[tuple[int, str, int]]:
    """(id, layer, version) of the queued versions not processed yet, oldest first."""
    cur = await conn.execute("SELECT id, layer, version FROM catalog.indicator_pending WHERE done_at IS NULL "
                             "ORDER BY id LIMIT %s", (limit,))
    return [(int(i), layer, int(v)) for i, layer, v in await cur.fetchall()]


async def has_pending(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM catalog.indicator_pending WHERE done_at IS NULL)")
    return bool((await cur.fetchone())[0])


async def mark_done(conn: psycopg.AsyncConnection, ids: list[int]) -> None:
    await conn.execute("UPDATE catalog.indicator_pending SET done_at = now() WHERE id = ANY(%s)", (ids,))


async def current_versions(conn: psycopg.AsyncConnection, layers: list[str]) -> dict[str, int]:
    cur = await conn.execute("SELECT name, current_version FROM catalog.layers WHERE name = ANY(%s) "
                             "AND current_version IS NOT NULL", (layers,))
    return {n: int(v) for n, v in await cur.fetchall()}


async def raster_version(conn: psycopg.AsyncConnection, layer: str, version: int):
    """The catalog row of one version of a raster layer (as :class:`geobase.catalog.layers.
    CurrentLayer`, for :func:`geobase.catalog.layers.raster_file`): values computed for the
    versions recorded with them read that version's file, not whichever DEM is current now."""
    from geobase.catalog.layers import CurrentLayer

    cur = await conn.execute("SELECT created_at, rows_total, extent, source_name, metadata FROM catalog.layer_versions "
                             "WHERE layer = %s AND version = %s", (layer, version))
    row = await cur.fetchone()
    if row is None:
        return CurrentLayer(layer, None, "public", (), None, None, None, None, None, None)
    return CurrentLayer(layer, None, "public", (), version, row[0], row[1], list(row[2]) if row[2] else None,
                        row[3], row[4])


# --- the state and the values -------------------------------------------------------------------

async def state(conn: psycopg.AsyncConnection) -> tuple[dict[str, int], str] | None:
    cur = await conn.execute("SELECT versions, fingerprint FROM catalog.indicator_state WHERE id = 1")
    row = await cur.fetchone()
    return (dict(row[0]), row[1]) if row else None


async def set_state(conn: psycopg.AsyncConnection, versions: dict[str, int], fp: str) -> None:
    await conn.execute(
        "INSERT INTO catalog.indicator_state (id, versions, fingerprint) VALUES (1, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET versions = excluded.versions, fingerprint = excluded.fingerprint, "
        "updated_at = now()", (_j(versions), fp))


async def latest_values(conn: psycopg.AsyncConnection, divisions: list[str] | None = None) -> dict[tuple, dict]:
    """``{(indicator, division): {"value", "parts", "versions", "id"}}`` of the newest value rows."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (indicator, division) indicator, division, value, parts, versions, id "
        "FROM catalog.indicator_values WHERE (%(d)s::text[] IS NULL OR division = ANY(%(d)s::text[])) "
        "ORDER BY indicator, division, id DESC", {"d": divisions})
    return {(i, d): {"value": v, "parts": p, "versions": vs, "id": n} for i, d, v, p, vs, n in await cur.fetchall()}


async def insert_values(conn: psycopg.AsyncConnection, rows: list[dict], versions: dict[str, int],
                        cause: tuple[str, int] | None) -> None:
    """One value row per (indicator, division) of ``rows`` (keys indicator, division, value, parts)."""
    if not rows:
        return
    layer, version = cause or (None, None)
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO catalog.indicator_values (indicator, division, value, parts, versions, cause_layer, "
            "cause_version) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(r["indicator"], r["division"], r["value"], _j(r["parts"]), _j(versions), layer, version) for r in rows])


async def series(conn: psycopg.AsyncConnection, indicator: str, division: str | None = None) -> list[dict]:
    """Every stored value of an indicator (of one division), oldest first: the time series."""
    cur = await conn.execute(
        "SELECT division, value, versions, cause_layer, cause_version, computed_at, id FROM catalog.indicator_values "
        "WHERE indicator = %s AND (%s::text IS NULL OR division = %s) ORDER BY division, id",
        (indicator, division, division))
    names = ("division", "value", "versions", "cause_layer", "cause_version", "computed_at", "seq")
    return [dict(zip(names, r)) for r in await cur.fetchall()]


# --- targets -------------------------------------------------------------------------------------

async def upsert_targets(conn: psycopg.AsyncConnection, rows: list[tuple[str, str, float]], *, source: str,
                         user: str) -> int:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO catalog.indicator_targets (indicator, division, target, source, updated_by) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (indicator, division) DO UPDATE SET target = excluded.target, "
            "source = excluded.source, updated_by = excluded.updated_by, updated_at = now()",
            [(i, d, t, source, user) for i, d, t in rows])
    return len(rows)


async def targets(conn: psycopg.AsyncConnection, indicator: str | None = None) -> dict[tuple[str, str], float]:
    cur = await conn.execute("SELECT indicator, division, target FROM catalog.indicator_targets "
                             "WHERE %s::text IS NULL OR indicator = %s", (indicator, indicator))
    return {(i, d): float(t) for i, d, t in await cur.fetchall()}


# --- warnings and events ---------------------------------------------------------------------------

_WARNING_COLS = ("id, indicator, division, level, status, value, target, cause_layer, cause_version, versions, "
                 "parcels, raised_at, cleared_at, cleared_value, cleared_layer, cleared_version, acknowledged_by, "
                 "acknowledged_at")


def _warning(row) -> dict:
    return dict(zip([c.strip() for c in _WARNING_COLS.split(",")], row))


async def open_warnings(conn: psycopg.AsyncConnection) -> dict[tuple[str, str], dict]:
    cur = await conn.execute(f"SELECT {_WARNING_COLS} FROM catalog.indicator_warnings WHERE status = 'open'")
    return {(w["indicator"], w["division"]): w for w in map(_warning, await cur.fetchall())}


async def _event(conn: psycopg.AsyncConnection, warning_id: int, event: str) -> None:
    cur = await conn.execute(f"SELECT {_WARNING_COLS} FROM catalog.indicator_warnings WHERE id = %s", (warning_id,))
    await conn.execute("INSERT INTO catalog.indicator_events (warning_id, event, data) VALUES (%s, %s, %s)",
                       (warning_id, event, _j(_warning(await cur.fetchone()))))


async def raise_warning(conn: psycopg.AsyncConnection, *, indicator: str, division: str, level: str, value: float,
                        target: float, cause: tuple[str, int] | None, versions: dict, parcels: list) -> int:
    layer, version = cause or (None, None)
    cur = await conn.execute(
        "INSERT INTO catalog.indicator_warnings (indicator, division, level, value, target, cause_layer, cause_version, "
        "versions, parcels) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (indicator, division, level, value, target, layer, version, _j(versions), _j(parcels)))
    wid = (await cur.fetchone())[0]
    await _event(conn, wid, "raised")
    return wid


async def clear_warning(conn: psycopg.AsyncConnection, warning_id: int, *, value: float | None,
                        cause: tuple[str, int] | None) -> None:
    layer, version = cause or (None, None)
    await conn.execute(
        "UPDATE catalog.indicator_warnings SET status = 'cleared', cleared_at = now(), cleared_value = %s, "
        "cleared_layer = %s, cleared_version = %s WHERE id = %s AND status = 'open'", (value, layer, version, warning_id))
    await _event(conn, warning_id, "cleared")


async def acknowledge(conn: psycopg.AsyncConnection, warning_id: int, user: str) -> dict | None:
    """Record who acknowledged the warning (the first acknowledgement stands); None: no such warning."""
    cur = await conn.execute(
        "UPDATE catalog.indicator_warnings SET acknowledged_by = coalesce(acknowledged_by, %s), "
        "acknowledged_at = coalesce(acknowledged_at, now()) WHERE id = %s RETURNING acknowledged_at = now()",
        (user, warning_id))
    row = await cur.fetchone()
    if row is None:
        return None
    if row[0]:  # acknowledged just now: an event
        await _event(conn, warning_id, "acknowledged")
    return await warning(conn, warning_id)


async def warning(conn: psycopg.AsyncConnection, warning_id: int) -> dict | None:
    cur = await conn.execute(f"SELECT {_WARNING_COLS} FROM catalog.indicator_warnings WHERE id = %s", (warning_id,))
    row = await cur.fetchone()
    return _warning(row) if row else None


async def warnings(conn: psycopg.AsyncConnection, *, status: str | None = None, indicator: str | None = None,
                   division: str | None = None, limit: int = 500) -> list[dict]:
    cur = await conn.execute(
        f"SELECT {_WARNING_COLS} FROM catalog.indicator_warnings WHERE (%(s)s::text IS NULL OR status = %(s)s) "
        "AND (%(i)s::text IS NULL OR indicator = %(i)s) AND (%(d)s::text IS NULL OR division = %(d)s) "
        "ORDER BY id DESC LIMIT %(n)s", {"s": status, "i": indicator, "d": division, "n": limit})
    return [_warning(r) for r in await cur.fetchall()]


async def events_since(conn: psycopg.AsyncConnection, after: int, limit: int = 100) -> list[dict]:
    """Warning events after id ``after``, oldest first (what the warning stream sends)."""
    cur = await conn.execute("SELECT id, warning_id, event, at, data FROM catalog.indicator_events WHERE id > %s "
                             "ORDER BY id LIMIT %s", (after, limit))
    return [dict(zip(("id", "warning_id", "event", "at", "data"), r)) for r in await cur.fetchall()]


async def last_event(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute("SELECT coalesce(max(id), 0) FROM catalog.indicator_events")
    return int((await cur.fetchone())[0])

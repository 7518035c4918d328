"""Webhook subscriptions and their outbox of deliveries: the SQL of :mod:`geobase.webhooks`.

Tables (migration ``0010``): ``catalog.webhooks`` (a layer, a URL, the HMAC secret, the event
types wanted) and ``catalog.webhook_deliveries`` (one row per event per webhook: pending, then
delivered, or dead after too many failures). A new layer version is put in the outbox by a
trigger on the version row, in the transaction that makes the version; any other event type is
put there by :func:`enqueue` in the caller's transaction (the same guarantee: announced if and
only if committed). The secret is read here only by :func:`claim_due` (to sign) and is never
part of what the listing functions return.
"""

from __future__ import annotations

import json
import uuid

import psycopg
from psycopg.rows import dict_row

from geobase.errors import NotFound

_PUBLIC = ("id::text AS id, layer, url, events, description, department, created_by, created_at, "
           "(SELECT count(*) FROM catalog.webhook_deliveries d WHERE d.webhook_id = w.id AND d.status = 'pending') "
           "AS pending, (SELECT count(*) FROM catalog.webhook_deliveries d WHERE d.webhook_id = w.id "
           "AND d.status = 'dead') AS dead")
_DELIVERY = ("d.id, d.webhook_id::text AS webhook_id, d.event, d.layer, d.payload, d.status, d.attempts, "
             "d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.delivered_at, w.url")


def add_webhook(conn: psycopg.Connection, *, layer: str, url: str, secret: str, events: list[str],
                description: str | None, department: str | None, created_by: str) -> dict:
    """Register a webhook; returns its public row (without the secret)."""
    wid = str(uuid.uuid4())
    conn.execute("INSERT INTO catalog.webhooks (id, layer, url, secret, events, description, department, created_by) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                 (wid, layer, url, secret, events, description, department, created_by))
    return get_webhook(conn, wid)


def get_webhook(conn: psycopg.Connection, wid: str) -> dict:
    """The active webhook ``wid`` (NotFound otherwise), never its secret."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_PUBLIC} FROM catalog.webhooks w WHERE id::text = %s AND removed_at IS NULL",
                          (wid,)).fetchone()
    if row is None:
        raise NotFound(f"no webhook {wid!r}", parameter="webhook")
    return row


def list_webhooks(conn: psycopg.Connection, layer: str | None = None) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {_PUBLIC} FROM catalog.webhooks w WHERE removed_at IS NULL "
                           "AND (%(l)s::text IS NULL OR layer = %(l)s) ORDER BY layer, created_at",
                           {"l": layer}).fetchall()


def remove_webhook(conn: psycopg.Connection, wid: str) -> dict:
    """Stop a webhook: it gets no new deliveries and its pending ones are cancelled (the rows of
    what was sent stay, for the record)."""
    row = get_webhook(conn, wid)
    conn.execute("UPDATE catalog.webhooks SET removed_at = now() WHERE id = %s", (wid,))
    conn.execute("UPDATE catalog.webhook_deliveries SET status = 'cancelled' WHERE webhook_id = %s "
                 "AND status = 'pending'", (wid,))
    return row


def enqueue(conn: psycopg.Connection, layer: str, event: str, payload: dict) -> int:
    """Put ``event`` about ``layer`` in the outbox of every webhook of the layer that wants it, in
    the caller's transaction. How another event type (an indicator warning, ...) plugs in: call
    this next to the write that makes the event; the worker signs and delivers it like a version.
    Returns the number of deliveries queued."""
    body = {"event": event, "layer": layer, **payload}
    return conn.execute(
        "INSERT INTO catalog.webhook_deliveries (webhook_id, event, layer, payload) "
        "SELECT id, %s, %s, %s FROM catalog.webhooks WHERE layer = %s AND removed_at IS NULL AND %s = ANY (events)",
        (event, layer, json.dumps(body, ensure_ascii=False, default=str), layer, event)).rowcount


def claim_due(conn: psycopg.Connection, limit: int, lease_s: float) -> list[dict]:
    """Take up to ``limit`` due deliveries (with their webhook's URL and secret) and push their
    next attempt ``lease_s`` ahead, so another worker (or this one after a crash) retries them
    only if this attempt never records its outcome. SKIP LOCKED: workers never wait on each other."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """UPDATE catalog.webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => %s)
               FROM catalog.webhooks w
               WHERE w.id = d.webhook_id AND d.id IN (
                   SELECT id FROM catalog.webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now()
                   ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
               RETURNING d.id, d.event, d.layer, d.payload, d.body, d.attempts, w.url, w.secret,
                         w.removed_at IS NOT NULL AS removed""", (lease_s, limit)).fetchall()


def set_body(conn: psycopg.Connection, did: int, body: str) -> None:
    """Keep the exact bytes sent the first time: every retry sends (and signs) the same body."""
    conn.execute("UPDATE catalog.webhook_deliveries SET body = %s WHERE id = %s AND body IS NULL", (body, did))


def record_success(conn: psycopg.Connection, did: int, status: int) -> None:
    conn.execute("UPDATE catalog.webhook_deliveries SET status = 'delivered', attempts = attempts + 1, "
                 "last_status = %s, last_error = NULL, delivered_at = now() WHERE id = %s", (status, did))


def record_failure(conn: psycopg.Connection, did: int, status: int | None, error: str, *, dead: bool,
                   retry_in_s: float) -> None:
    """One failed attempt: due again in ``retry_in_s``, or on the dead-letter list (``dead``)."""
    conn.execute("UPDATE catalog.webhook_deliveries SET attempts = attempts + 1, last_status = %s, last_error = %s, "
                 "status = CASE WHEN %s THEN 'dead' ELSE 'pending' END, "
                 "next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
                 (status, error[:500], dead, retry_in_s, did))


def cancel(conn: psycopg.Connection, did: int) -> None:
    conn.execute("UPDATE catalog.webhook_deliveries SET status = 'cancelled' WHERE id = %s", (did,))


def list_deliveries(conn: psycopg.Connection, *, status: str | None = None, layer: str | None = None,
                    webhook: str | None = None, limit: int = 100) -> list[dict]:
    """Deliveries, newest first (``status='dead'``: the dead-letter list)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_DELIVERY} FROM catalog.webhook_deliveries d JOIN catalog.webhooks w ON w.id = d.webhook_id "
            "WHERE (%(s)s::text IS NULL OR d.status = %(s)s) AND (%(l)s::text IS NULL OR d.layer = %(l)s) "
            "AND (%(w)s::text IS NULL OR d.webhook_id::text = %(w)s) ORDER BY d.id DESC LIMIT %(n)s",
            {"s": status, "l": layer, "w": webhook, "n": limit}).fetchall()


def retry_delivery(conn: psycopg.Connection, did: int) -> dict:
    """Put a dead delivery back in the queue, due now, with a fresh count of attempts."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE catalog.webhook_deliveries d SET status = 'pending', attempts = 0, next_attempt_at = now() "
            "FROM catalog.webhooks w WHERE w.id = d.webhook_id AND d.id = %s AND d.status = 'dead' "
            f"AND w.removed_at IS NULL RETURNING {_DELIVERY}", (did,)).fetchone()
    if row is None:
        raise NotFound(f"no dead delivery {did} of an active webhook", parameter="delivery")
    return row

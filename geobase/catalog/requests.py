"""Requests for conditional data (有条件开放): an outside user registers (name, organisation,
contact — the server sends no mail; the approving department sees the contact), asks for
datasets with a purpose; the owner department approves or refuses; approval issues a key limited
to those datasets (and the formats and box asked for) that expires by itself
(:func:`geobase.keys.create_scoped_key`). The requester reads the state of their requests, and
the key once, with their requester token.

The SQL of ``catalog.requesters`` and ``catalog.access_requests`` lives here; the audit rows are
noted by the routes (api/requests.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from geobase.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from geobase.principal import Principal

TOKEN_RE = re.compile(r"^gbr_([0-9a-f]{32})_([A-Za-z0-9_-]{20,100})$")
#: what a request may ask for (and its key then reads; :func:`geobase.security.reads_format`):
#: files (a GeoJSON download, CSV, GeoPackage, FlatGeobuf, GeoParquet, zipped Shapefile), the
#: API's paged JSON and HTML views, vector tiles (mvt), picture tiles (png: WMTS, the DEM's) and
#: a raster's coverage (geotiff); none asked for: every format
FORMATS = ("geojson", "csv", "gpkg", "fgb", "parquet", "shp", "json", "html", "mvt", "png", "geotiff")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def register(conn: psycopg.Connection, *, name: str, organisation: str, contact: str) -> dict:
    """A new requester and their token (shown once; only its hash is kept)."""
    for field, value in (("name", name), ("organisation", organisation), ("contact", contact)):
        if not isinstance(value, str) or not value.strip() or len(value) > 300 or any(ord(c) < 32 for c in value):
            raise InvalidInput(f"{field}: 1-300 printable characters", parameter=field)
    rid = uuid.uuid4()
    secret = secrets.token_urlsafe(32)
    conn.execute("INSERT INTO catalog.requesters (id, name, organisation, contact, token_hash) "
                 "VALUES (%s, %s, %s, %s, %s)", (rid, name.strip(), organisation.strip(), contact.strip(), _hash(secret)))
    return {"id": str(rid), "token": f"gbr_{rid.hex}_{secret}", "name": name.strip()}


def requester_of(conn: psycopg.Connection, token: str | None) -> dict:
    """The requester a token belongs to (Unauthorized for anything else)."""
    m = TOKEN_RE.match((token or "").strip())
    if not m:
        raise Unauthorized("a requester token is required (X-Requester-Token: gbr_...; POST /catalog/requesters)")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT id, name, organisation, contact, token_hash FROM catalog.requesters WHERE id = %s",
                          (uuid.UUID(m.group(1)),)).fetchone()
    if row is None or not hmac.compare_digest(row["token_hash"], _hash(m.group(2))):
        raise Unauthorized("unknown requester token")
    return row


def create_request(conn: psycopg.Connection, requester: dict, *, datasets: list[str], formats: list[str],
                   bbox: list[float] | None, purpose: str, days: int, requestable: dict[str, str]) -> dict:
    """Ask for ``datasets``; ``requestable`` maps each dataset the requester may ask for here
    (listed in this zone and conditional) to its owner department."""
    if not datasets or len(datasets) > 50:
        raise InvalidInput("datasets: 1-50 dataset names", parameter="datasets")
    unknown = [d for d in datasets if d not in requestable]
    if unknown:
        raise InvalidInput(f"datasets: not conditional datasets of this catalog: {unknown[:10]}", parameter="datasets")
    owners = {requestable[d] for d in datasets}
    if len(owners) != 1:
        raise InvalidInput("datasets: ask one owner department at a time", parameter="datasets")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InvalidInput(f"formats: one or more of {', '.join(FORMATS)}", parameter="formats")
    if bbox is not None and (len(bbox) != 4 or bbox[0] > bbox[2] or bbox[1] > bbox[3]):
        raise InvalidInput("bbox: minx,miny,maxx,maxy", parameter="bbox")
    if not isinstance(purpose, str) or not (5 <= len(purpose.strip()) <= 2000):
        raise InvalidInput("purpose: 5-2000 characters", parameter="purpose")
    if not (1 <= days <= 366):
        raise InvalidInput("days: 1-366", parameter="days")
    rid = uuid.uuid4()
    conn.execute("""INSERT INTO catalog.access_requests (id, requester, datasets, formats, bbox, purpose, days, department)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                 (rid, requester["id"], sorted(set(datasets)), sorted(set(formats)), bbox, purpose.strip(), days,
                  owners.pop()))
    return get_request(conn, str(rid))


_SELECT = """SELECT r.id::text, r.datasets, r.formats, r.bbox, r.purpose, r.days, r.status, r.department,
                    r.decided_by, r.decided_at, r.reason, r.key_id, r.created_at, q.name AS requester_name,
                    q.organisation, q.contact, r.requester::text AS requester
             FROM catalog.access_requests r JOIN catalog.requesters q ON q.id = r.requester"""


def _outs(conn: psycopg.Connection, rows: list[dict]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts, with the state of each approved request's key."""
    from geobase.keys import key_facts

    facts = key_facts(conn, [r["key_id"] for r in rows if r.get("key_id")])
    out = []
    for row in rows:
        doc = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}
        if row.get("key_id"):
            state, expires = facts.get(row["key_id"], ("revoked", None))
            doc["key_state"], doc["key_expires_at"] = state, expires.isoformat() if expires else None
        out.append(doc)
    return out


def get_request(conn: psycopg.Connection, request_id: str) -> dict:
    try:
        rid = uuid.UUID(request_id)
    except ValueError:
        raise NotFound(f"request {request_id[:40]!r} not found", parameter="requestId") from None
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SELECT + " WHERE r.id = %s", (rid,)).fetchone()
    if row is None:
        raise NotFound(f"request {request_id[:40]!r} not found", parameter="requestId")
    return _outs(conn, [row])[0]


def requests_of(conn: psycopg.Connection, requester: dict) -> list[dict]:
    """The requester's requests, newest first; an approved request's key is handed over once."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_SELECT + " WHERE r.requester = %s ORDER BY r.created_at DESC", (requester["id"],)).fetchall()
        handed = cur.execute(
            "UPDATE catalog.access_requests r SET key_token = NULL FROM (SELECT id, key_token FROM "
            "catalog.access_requests WHERE requester = %s AND key_token IS NOT NULL FOR UPDATE) o "
            "WHERE r.id = o.id RETURNING r.id::text AS id, o.key_token", (requester["id"],)).fetchall()
    tokens = {h["id"]: h["key_token"] for h in handed}
    return [r | ({"key": tokens[r["id"]]} if r["id"] in tokens else {}) for r in _outs(conn, rows)]


def department_requests(conn: psycopg.Connection, principal: Principal, status: str | None = None) -> list[dict]:
    """The requests a department's steward (or an admin: all) decides, newest first."""
    _may_decide(principal, None)
    sql_, args = _SELECT + " WHERE true", []
    if not principal.is_admin:
        sql_, args = sql_ + " AND r.department = %s", [principal.department]
    if status:
        sql_, args = sql_ + " AND r.status = %s", [*args, status]
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql_ + " ORDER BY r.created_at DESC LIMIT 1000", args).fetchall()
    return _outs(conn, rows)


def _may_decide(principal: Principal, department: str | None) -> None:
    if principal.is_public:
        raise Unauthorized("deciding requests needs a steward key of the owner department")
    if principal.is_admin:
        return
    if principal.scope is not None or not principal.has_role("steward"):
        raise Forbidden(f"deciding requests needs the 'steward' role; your key has {principal.role!r}")
    if department is not None and principal.department != department:
        raise Forbidden(f"this request is for department {department!r}; stewards of {principal.department!r} "
                        "may not decide it")


def decide(conn: psycopg.Connection, principal: Principal, request_id: str, *, approve: bool,
           reason: str | None, days: int | None = None) -> dict:
    """Approve (issue the scoped, expiring key) or refuse a pending request."""
    from geobase import keys

    req = get_request(conn, request_id)
    _may_decide(principal, req["department"])
    if req["status"] != "pending":
        raise InvalidInput(f"request is already {req['status']}", parameter="requestId")
    if reason is not None and len(reason) > 2000:
        raise InvalidInput("reason: at most 2000 characters", parameter="reason")
    key_id = token = None
    if approve:
        days = days or req["days"]
        created = keys.create_scoped_key(
            conn, name=f"request {req['id'][:8]}: {req['requester_name']} ({req['organisation']})"[:200],
            department=req["department"], expires_days=float(days), created_by=principal.name,
            scope={"datasets": req["datasets"], "formats": req["formats"], "bbox": req["bbox"], "request": req["id"]})
        key_id, token = created.id, created.token
    conn.execute("""UPDATE catalog.access_requests SET status = %s, decided_by = %s, decided_at = now(), reason = %s,
                    key_id = %s, key_token = %s WHERE id = %s AND status = 'pending'""",
                 ("approved" if approve else "refused", principal.name, reason, key_id, token, uuid.UUID(req["id"])))
    return get_request(conn, request_id)

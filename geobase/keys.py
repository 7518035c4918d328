"""API keys: created once, shown once, stored only as a hash.

A key looks like ``gb_<id>_<secret>``: ``id`` (12 hex digits) is public — it appears in listings
and in the audit log — and ``secret`` (256 bits, URL-safe base64) is never stored; the database
keeps ``sha256(secret)``. A high-entropy random secret needs no slow password hash: guessing is
hopeless and a stolen hash cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from geobase.catalog import check_display_text, department_exists
from geobase.errors import InvalidInput, NotFound, Unauthorized
from geobase.principal import Principal
from geobase.vocab import ROLE_RANK

KEY_RE = re.compile(r"^gb_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    m = KEY_RE.match(token.strip())
    return (m.group(1), m.group(2)) if m else None


@dataclass
class CreatedKey:
    id: str
    token: str  # the only time the secret exists outside the caller's hands
    name: str
    department: str | None
    role: str
    expires_at: datetime | None

    def as_dict(self) -> dict:
        return {"id": self.id, "key": self.token, "name": self.name, "department": self.department,
                "role": self.role, "expires_at": self.expires_at.isoformat() if self.expires_at else None}


def _check_role_dept(conn: psycopg.Connection, role: str, department: str | None) -> None:
    if role not in ROLE_RANK:
        raise InvalidInput(f"role must be one of {', '.join(ROLE_RANK)}, not {role!r}", parameter="role")
    if department is None:
        if role != "admin":
            raise InvalidInput("a department is required for every role but admin", parameter="department")
        return
    if not department_exists(conn, department):
        raise InvalidInput(f"unknown department {department!r}", parameter="department")


def create_key(conn: psycopg.Connection, *, name: str, role: str, department: str | None,
               expires_days: float | None = None, created_by: str = "cli") -> CreatedKey:
    """Create a key and return it with its secret (shown once)."""
    if not name or len(name) > 200:
        raise InvalidInput("name: 1-200 characters", parameter="name")
    check_display_text(name, "name")
    _check_role_dept(conn, role, department)
    if expires_days is not None and not (0 < expires_days <= 3650):
        raise InvalidInput("expires_days must be in (0, 3650]", parameter="expires_days")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    conn.execute(
        """INSERT INTO catalog.api_keys (id, name, department, role, secret_hash, created_by, expires_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (key_id, name, department, role, hash_secret(secret), created_by, expires),
    )
    return CreatedKey(key_id, f"gb_{key_id}_{secret}", name, department, role, expires)


def create_scoped_key(conn: psycopg.Connection, *, name: str, department: str, scope: dict,
                      expires_days: float, created_by: str) -> CreatedKey:
    """A viewer key limited to ``scope["datasets"]`` (also recording its formats and bbox) that
    expires by itself: what an approved data request issues (:mod:`geobase.catalog.requests`).
    It reads only those datasets, desensitised as for outside callers
    (:func:`geobase.security.can_see`, :func:`geobase.security.hidden_attributes`)."""
    from psycopg.types.json import Jsonb

    if not scope.get("datasets"):
        raise InvalidInput("a scoped key needs at least one dataset", parameter="datasets")
    if not (0 < expires_days <= 366):
        raise InvalidInput("expires_days must be in (0, 366]", parameter="days")
    created = create_key(conn, name=name, role="viewer", department=department, expires_days=expires_days,
                         created_by=created_by)
    conn.execute("UPDATE catalog.api_keys SET scope = %s WHERE id = %s", (Jsonb(scope), created.id))
    return created


def key_states(conn: psycopg.Connection, ids: list[str]) -> dict[str, str]:
    """{key id: "active" | "expired" | "revoked"} of the keys ``ids`` (e.g. approved requests' keys)."""
    return {i: state for i, (state, _) in key_facts(conn, ids).items()}


def key_facts(conn: psycopg.Connection, ids: list[str]) -> dict[str, tuple[str, datetime | None]]:
    """{key id: (state, expires_at)} of the keys ``ids``: what a request's page shows of its key."""
    rows = conn.execute(
        """SELECT id, CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
                           WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired' ELSE 'active' END,
                  expires_at
           FROM catalog.api_keys WHERE id = ANY(%s)""", (list(ids),)).fetchall()
    return {i: (state, expires) for i, state, expires in rows}


def list_keys(conn: psycopg.Connection, *, include_revoked: bool = False) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT id, name, department, role, created_at, created_by, expires_at, revoked_at,
                      (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())) AS active
               FROM catalog.api_keys WHERE %s OR revoked_at IS NULL ORDER BY created_at, id""",
            (include_revoked,),
        ).fetchall()
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows]


def revoke_key(conn: psycopg.Connection, key_id: str) -> None:
    row = conn.execute(
        "UPDATE catalog.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s RETURNING id",
        (key_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"key {key_id!r} not found", parameter="key_id")


class KeyRefused(Unauthorized):
    """A presented key that does not authenticate, with what is known of it for the audit log:
    ``key`` is the key's holder when the id exists (an expired or revoked key, a wrong secret),
    ``key_id`` the id the token names (also for an unknown id), ``reason`` why it was refused.
    Nothing of this goes into the reply (the caller learns only "invalid, expired or revoked")."""

    def __init__(self, message: str, *, key: Principal | None = None, key_id: str | None = None,
                 reason: str = "invalid"):
        super().__init__(message)
        self.key = key
        self.key_id = key_id
        self.reason = reason


async def lookup(conn: psycopg.AsyncConnection, token: str) -> Principal | None:
    """The principal of a valid, unexpired, unrevoked key; None for anything else."""
    try:
        return await authenticate(conn, token)
    except KeyRefused:
        return None


async def authenticate(conn: psycopg.AsyncConnection, token: str) -> Principal:
    """The principal of a valid, unexpired, unrevoked key; else :class:`KeyRefused` saying which
    key it was (when its id exists) and why (malformed, unknown, wrong secret, revoked, expired)."""
    parsed = parse_key(token)
    if parsed is None:
        raise KeyRefused(REFUSED, reason="malformed")
    key_id, secret = parsed
    cur = await conn.execute(
        """SELECT name, department, role, secret_hash, revoked_at IS NOT NULL,
                  expires_at IS NOT NULL AND expires_at <= now(), scope
           FROM catalog.api_keys WHERE id = %s""",
        (key_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise KeyRefused(REFUSED, key_id=key_id, reason="unknown key")
    scope = frozenset((row[6] or {}).get("datasets") or ()) if row[6] is not None else None
    formats = frozenset((row[6] or {}).get("formats") or ()) if row[6] is not None else None
    box = (row[6] or {}).get("bbox") if row[6] is not None else None
    holder = Principal(name=row[0], department=row[1], role=row[2], key_id=key_id, scope=scope,
                       formats=formats or None, bbox=tuple(float(v) for v in box) if box else None)
    if not hmac.compare_digest(row[3], hash_secret(secret)):
        raise KeyRefused(REFUSED, key=holder, key_id=key_id, reason="wrong secret")
    if row[4]:
        raise KeyRefused(REFUSED, key=holder, key_id=key_id, reason="revoked")
    if row[5]:
        raise KeyRefused(REFUSED, key=holder, key_id=key_id, reason="expired")
    return holder


REFUSED = "invalid, expired or revoked API key"


def presented_token(headers) -> str | None:
    """The key a request presents (``Authorization: Bearer`` or ``X-API-Key``), or None.

    Raises Unauthorized for a malformed Authorization header or two different keys."""
    from geobase.errors import Unauthorized

    auth = headers.get("authorization")
    xkey = headers.get("x-api-key")
    bearer = None
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization must be 'Bearer <key>'")
        bearer = value.strip()
    if xkey is not None and bearer is not None and xkey.strip() != bearer:
        raise Unauthorized("two different keys presented (Authorization and X-API-Key)")
    token = bearer if bearer is not None else (xkey.strip() if xkey is not None else None)
    if token == "":
        raise Unauthorized("empty API key")
    return token


class KeyResolver:
    """Turns a presented key into a Principal, caching lookups for ``ttl`` seconds.

    Revocation and expiry therefore take effect within ``ttl`` (default 5 s), while a busy client
    costs one key lookup per ``ttl`` instead of one per request. Unknown keys are cached too, so
    a client hammering with a bad key does not hammer the database."""

    def __init__(self, pool_getter, ttl: float = 5.0, max_entries: int = 10_000):
        self._pool_getter = pool_getter
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    async def resolve_token(self, token: str | None) -> Principal:
        """The key's principal, PUBLIC without a key; :class:`KeyRefused` for a key that does not
        authenticate (the gate audits it with the key's id and holder when known)."""
        import time

        from geobase.principal import PUBLIC

        if token is None:
            return PUBLIC
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            outcome = hit[0]
        else:
            if parse_key(token) is None:
                outcome = KeyRefused(REFUSED, reason="malformed")
            else:
                pool = self._pool_getter()
                async with pool.connection() as conn:
                    try:
                        outcome = await authenticate(conn, token)
                    except KeyRefused as exc:
                        outcome = exc
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[digest] = (outcome, now + self.ttl)
        if isinstance(outcome, KeyRefused):
            raise KeyRefused(REFUSED, key=outcome.key, key_id=outcome.key_id, reason=outcome.reason)
        return outcome

    async def __call__(self, request) -> Principal:
        """``app.state.principal_resolver``: the gate has usually resolved it already."""
        cached = request.scope.get("geobase.principal")
        if cached is not None:
            return cached
        principal = await self.resolve_token(presented_token(request.headers))
        request.scope["geobase.principal"] = principal
        return principal

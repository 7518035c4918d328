"""Changing features: create, replace, update (merge patch), delete, in an edit session or alone.

Every change goes through an edit session (:mod:`geobase.catalog.edits`): a write outside a
session is a session of one change, opened, checked and committed in one transaction with the
caller's reason as its message. A change inside a session is staged (checked as an ingest checks
a row, :mod:`geobase.editing.rows`) and becomes part of the layer only when the session commits
as ONE version. No lost update: every change names the state it was made from (``If-Match``: the
feature's content hash as the caller last saw it; inside a session, as the session sees it) and
the commit re-checks, under the layer's writer lock, that no feature changed since the session
first touched it. A commit either writes the whole session or nothing (one transaction).

The writes run as the database owner (``owner_settings``): the server's own role may not write
layer data. Who may write is decided before by :func:`geobase.security.require_editor`.
"""

from __future__ import annotations

import atexit
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool

from geobase.catalog import edits
from geobase.catalog.versions import CommitResult, lock_layer
from geobase.db import database_url
from geobase.editing import coverage
from geobase.editing.rows import Row, stored_row
from geobase.errors import Conflict, Forbidden, InvalidInput, NotFound, PreconditionFailed, PreconditionRequired
from geobase.settings import Settings
from geobase.features.ids import FeatureRef, qualified_ids_sync
from geobase.specs import LayerSpec
from geobase.storage import ID_SEP, division_field

#: the longest reason or commit message kept
MAX_MESSAGE = 2000


_POOLS: dict[str, ConnectionPool] = {}
_POOLS_LOCK = threading.Lock()


@contextmanager
def connect(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection of this process's editing pool for the settings' database. Why kept: a new
    backend pays ~250 ms for PostGIS's first ST_Transform (PROJ set-up), and every commit
    transforms the staged geometries to Web Mercator; a kept connection pays it once."""
    url = database_url(settings)
    with _POOLS_LOCK:
        pool = _POOLS.get(url)
        if pool is None:
            pool = ConnectionPool(url, min_size=1, max_size=max(2, settings.pool_max_size), name="editing",
                                  kwargs={"connect_timeout": 10}, check=ConnectionPool.check_connection, open=True)
            _POOLS[url] = pool
    with pool.connection(timeout=settings.pool_timeout_s) as conn:
        yield conn


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.close(timeout=1)


@dataclass(frozen=True)
class Actor:
    """Who edits: the name recorded as the version's author, the key and department."""

    name: str
    key_id: str | None
    department: str | None
    is_admin: bool = False


@dataclass
class WriteResult:
    """A change staged (``version`` None) or committed; ``etag`` None after a delete;
    ``division``: the feature's county (None: a new feature the commit places)."""

    key: str
    etag: str | None
    session: str
    version: int | None = None
    division: str | None = None


T = TypeVar("T")

#: builds the new row from the feature's current one (None: it does not exist); None = delete
Build = Callable[[Row | None], Row | None]


def strong_etag(content_hash: str) -> str:
    return f'"{content_hash}"'


def if_match_hashes(header: str | None) -> list[str] | None:
    """The content hashes an ``If-Match`` names (``*``: any existing state); None if absent.
    A weak tag never matches (If-Match compares strongly); a tag of the items route
    (``"<hash>-<representation>"``) names the hash before the dash."""
    if header is None or not header.strip():
        return None
    out = []
    for tag in (t.strip() for t in header.split(",")):
        if tag == "*":
            out.append("*")
        elif tag.startswith('"') and tag.endswith('"') and len(tag) > 2:
            out.append(tag[1:-1].split("-", 1)[0])
    return out


def check_message(text: object, parameter: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{parameter}: every committed change needs a reason (a non-empty text)",
                           parameter=parameter)
    if len(text) > MAX_MESSAGE:
        raise InvalidInput(f"{parameter}: at most {MAX_MESSAGE} characters", parameter=parameter)
    return text.strip()


def _precondition(if_match: list[str] | None, current: Row | None, current_hash: str | None, key: str) -> None:
    if if_match is None:
        raise PreconditionRequired(f"feature {key!r}: send If-Match with the ETag you last read (a write without "
                                   "it could overwrite someone else's change)", parameter="If-Match")
    if current is None:
        raise NotFound(f"feature {key!r} not found", parameter="featureId")
    if "*" not in if_match and current_hash not in if_match:
        raise PreconditionFailed(f"feature {key!r} changed since you read it (ETag now {strong_etag(current_hash)}); "
                                 "nothing was changed: reload it and edit again", parameter="If-Match",
                                 details={"etag": strong_etag(current_hash)})


def _session_for(conn: psycopg.Connection, spec: LayerSpec, sid: str, actor: Actor) -> dict:
    """The open session ``sid`` of this layer, locked, if this caller may use it."""
    try:
        uuid.UUID(sid)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no edit session {str(sid)[:60]!r}", parameter="Edit-Session") from None
    row = edits.session_row(conn, sid, lock=True)
    if row is None or row["layer"] != spec.name:
        raise NotFound(f"no edit session {sid} on {spec.name!r}", parameter="Edit-Session")
    if not actor.is_admin and row["key_id"] != actor.key_id:
        raise Forbidden(f"edit session {sid} belongs to another key")
    if row["status"] != "open":
        raise Conflict(f"edit session {sid} is {row['status']} (version {row['version']})" if row["version"]
                       else f"edit session {sid} is {row['status']}", parameter="Edit-Session")
    return row


def seen(conn: psycopg.Connection, spec: LayerSpec, sid: str | None, key: str, division: str | None = None
         ) -> tuple[Row | None, str | None, str | None]:
    """(the feature ``key`` of county ``division`` as the session sees it, its hash, the base hash
    a new staging records). A session stages one feature per key: a second county's feature of a
    key the session already changed is refused (the coverage check compares staged features by
    key)."""
    staged = edits.staged_change(conn, sid, key) if sid else None
    if staged is not None:
        if division is not None and staged["division"] not in (None, division):
            raise Conflict(f"this edit session already changes feature {staged['division']}{ID_SEP}{key}; a session "
                           f"changes one feature of a key: edit {division}{ID_SEP}{key} in another session",
                           parameter="featureId")
        row = stored_row(spec, staged) if staged["op"] == "upsert" else None
        return row, staged["hash"], staged["base_hash"]
    current = edits.current_feature(conn, spec, key, division)
    if current is None:
        return None, None, None
    return stored_row(spec, current), current["_hash"], current["_hash"]


def row_division(spec: LayerSpec, row: Row | None) -> str | None:
    """The county a row's own division field names (its first 6 digits), None without one: the
    county a new feature is staged in (the commit derives the same, geobase/catalog/edits.py)."""
    field = division_field(spec)
    value = str(row.attributes.get(field) or "") if row is not None and field else ""
    return value[:6] if len(value) >= 6 and value[:6].isdigit() else None


def run_edit(settings: Settings, spec: LayerSpec, actor: Actor, *, session: str | None, reason: str | None,
             stage: Callable[[psycopg.Connection, str], T]) -> tuple[str, int | None, T]:
    """Run ``stage(conn, session id)`` in the named open session, or in a new session of its own
    committed at once with ``reason`` (one transaction: all of it or nothing).
    Returns (session id, the committed version or None, what ``stage`` returned)."""
    if session is None:
        reason = check_message(reason, "reason")
    with connect(settings) as conn, conn.transaction():
        sid = session
        if sid is not None:
            _session_for(conn, spec, sid, actor)
        else:
            sid = str(uuid.uuid4())
            edits.open_session(conn, sid, spec.name, created_by=actor.name, key_id=actor.key_id,
                               department=actor.department)
        out = stage(conn, sid)
        version = _commit(conn, spec, sid, actor, reason).version if session is None else None
    return sid, version, out


def stage_row(conn: psycopg.Connection, spec: LayerSpec, sid: str, key: str, new: Row | None,
              base: str | None, division: str | None = None) -> str | None:
    """Stage ``new`` (None: a delete) as the state of feature ``key`` of county ``division``
    (None: a new feature, placed by its own division field); returns its content hash. A feature
    stays in its county: its feature id is its county and key."""
    own = row_division(spec, new)
    if division is not None and own is not None and own != division:
        field = division_field(spec)
        raise InvalidInput(f"{field}: {new.attributes.get(field)!r} names county {own}, but feature "
                           f"{division}{ID_SEP}{key} is of county {division}: an edit does not move a feature to "
                           "another county", parameter=field)
    new_hash = new.hash(spec) if new is not None else None
    edits.stage_change(conn, sid, key, op="upsert" if new is not None else "delete", base_hash=base,
                       new_hash=new_hash, attributes=new.as_json() if new is not None else None,
                       ewkb=new.ewkb if new is not None else None, division=division or own)
    return new_hash


def checked(conn: psycopg.Connection, spec: LayerSpec, sid: str, key: str, if_match: list[str] | None,
            division: str | None = None) -> tuple[Row, str]:
    """Feature ``key`` (of county ``division``) as the session sees it, after its precondition:
    (row, base hash to record)."""
    row, row_hash, base = seen(conn, spec, sid, key, division)
    _precondition(if_match, row, row_hash, key)
    return row, base


def write(settings: Settings, spec: LayerSpec, key: str | None, build: Build, *, actor: Actor,
          if_match: list[str] | None, session: str | None, reason: str | None, create: bool = False,
          division: str | None = None) -> WriteResult:
    """One change of feature ``key`` of county ``division`` (None: the key's one feature, as
    resolved by :func:`geobase.features.ids.resolve`; ``create``: a new feature, its key and
    county from the built row)."""

    def stage(conn: psycopg.Connection, sid: str) -> tuple[str, str | None, str | None]:
        if create:
            new = build(None)
            k, county = new.key(spec), row_division(spec, new)
            existing, _, base = seen(conn, spec, sid, k, county)
            if existing is not None:
                raise Conflict(f"feature {k!r} exists already in {spec.name!r}: replace it with PUT "
                               f"/collections/{spec.name}/items/{k}", parameter="body")
            return k, stage_row(conn, spec, sid, k, new, base, county), county
        row, base = checked(conn, spec, sid, key, if_match, division)
        return key, stage_row(conn, spec, sid, key, build(row), base, division), division

    sid, version, (k, new_hash, county) = run_edit(settings, spec, actor, session=session, reason=reason, stage=stage)
    return WriteResult(k, strong_etag(new_hash) if new_hash else None, sid, version, county)


def _commit(conn: psycopg.Connection, spec: LayerSpec, sid: str, actor: Actor, message: str) -> CommitResult:
    lock_layer(conn, spec.name)  # the coverage is checked against the rows the version will replace
    edits.refuse_shared_keys(conn, spec, sid)  # first: every change then names its row by key and county
    if spec.coverage:
        coverage.check_session(conn, spec, sid)
    return edits.write_edit_version(conn, spec, sid, created_by=actor.name, message=message)


def open_session(settings: Settings, spec: LayerSpec, actor: Actor) -> str:
    sid = str(uuid.uuid4())
    with connect(settings) as conn, conn.transaction():
        edits.open_session(conn, sid, spec.name, created_by=actor.name, key_id=actor.key_id,
                           department=actor.department)
    return sid


def session_info(settings: Settings, spec: LayerSpec, sid: str, actor: Actor) -> dict:
    """The session and its staged changes (any status; its owner or an admin)."""
    with connect(settings) as conn, conn.transaction():
        try:
            _session_for(conn, spec, sid, actor)
        except Conflict:
            pass  # a finished session is still shown
        row = edits.session_row(conn, sid)
        qualified = qualified_ids_sync(conn, spec)
        row["changes"] = [{"featureId": FeatureRef(c["key"], c["division"]).id(qualified and c["division"] is not None),
                           "op": c["op"], "etag": strong_etag(c["hash"]) if c["hash"] else None}
                          for c in edits.session_changes(conn, sid)]
    return row


def commit_session(settings: Settings, spec: LayerSpec, sid: str, actor: Actor, message: object) -> CommitResult:
    """Commit the session as one version (all of it, or nothing: one transaction)."""
    message = check_message(message, "message")
    with connect(settings) as conn, conn.transaction():
        row = _session_for(conn, spec, sid, actor)
        if not row["changes"]:
            raise InvalidInput(f"edit session {sid} has no changes to commit", parameter="session")
        return _commit(conn, spec, sid, actor, message)


def discard_session(settings: Settings, spec: LayerSpec, sid: str, actor: Actor) -> int:
    """Drop the session's staged changes; returns how many there were."""
    with connect(settings) as conn, conn.transaction():
        row = _session_for(conn, spec, sid, actor)
        edits.finish_session(conn, sid, "discarded")
        return row["changes"]


def check_session(settings: Settings, spec: LayerSpec, sid: str, actor: Actor) -> dict:
    """What committing the session would check, without committing (the map shows it before the
    steward commits): the coverage and the lost-update check answer 422 / 412 as the commit
    would; otherwise ``{"ok": true}``. Nothing is written."""
    with connect(settings) as conn, conn.transaction():
        row = _session_for(conn, spec, sid, actor)
        edits.refuse_shared_keys(conn, spec, sid)  # as the commit: every change names its row by key and county
        if spec.coverage:
            coverage.check_session(conn, spec, sid)
        edits.check_bases(conn, spec, sid)
    return {"id": sid, "ok": True, "changes": row["changes"]}

"""The departments that own layers and hold keys (``catalog.departments``): listed, added and
looked up here only. The specs' departments are upserted by :func:`geobase.catalog.sync_catalog`;
an admin may add more at run time (``geobase departments add``, ``POST /admin/departments``)."""

from __future__ import annotations

import re

import psycopg
from psycopg.rows import dict_row

from geobase.errors import Conflict, InvalidInput
from geobase.vocab import is_name

_BAD_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def check_display_text(value: str | None, parameter: str) -> None:
    """Names shown to admins (key names, department names) are plain text: control characters
    (NUL is refused by PostgreSQL anyway), lone surrogates and bidirectional overrides are
    refused with a 400 instead of failing the INSERT or spoofing a listing."""
    if value is not None and _BAD_TEXT.search(value):
        raise InvalidInput(f"{parameter}: control characters, lone surrogates and bidirectional overrides "
                           "are not allowed", parameter=parameter)


def department_exists(conn: psycopg.Connection, code: str) -> bool:
    return conn.execute("SELECT 1 FROM catalog.departments WHERE code = %s", (code,)).fetchone() is not None


def department_codes(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT code FROM catalog.departments").fetchall()}


def add_department(conn: psycopg.Connection, code: str, name_zh: str, name_en: str,
                   contact: str | None = None) -> None:
    """Add a department (InvalidInput for a bad code or name, Conflict when it exists)."""
    if not is_name(code):
        raise InvalidInput("code: lowercase letters, digits and _ (1-63 chars), starting with a letter",
                           parameter="code")
    if not name_zh or not name_en or len(name_zh) > 200 or len(name_en) > 200:
        raise InvalidInput("name_zh and name_en: 1-200 characters", parameter="name")
    for value, parameter in ((name_zh, "name_zh"), (name_en, "name_en"), (contact, "contact")):
        check_display_text(value, parameter)
    try:
        conn.execute("INSERT INTO catalog.departments (code, name_zh, name_en, contact) VALUES (%s,%s,%s,%s)",
                     (code, name_zh, name_en, contact))
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"department {code!r} exists") from exc


def list_departments(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT code, name_zh, name_en, contact FROM catalog.departments ORDER BY code").fetchall()

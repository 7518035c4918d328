"""Cursor tokens of keyset paging: opaque to clients, never trusted by the server.

A token carries the layer version the paging started on, the direction and the boundary row's
sort values; :func:`decode_cursor` refuses anything :func:`encode_cursor` would not write, and
:func:`check_cursor_value` each value that does not fit its sort column's type."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from geobase.errors import InvalidInput


def encode_cursor(version: int | None, direction: str, sort_sig: str, values: list[Any]) -> str:
    raw = json.dumps([version, direction, sort_sig, values], separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, sort_sig: str) -> tuple[int | None, str, list[Any]]:
    """The (version, direction, boundary values) a cursor token carries. A token is opaque
    but not trusted: anything but what :func:`encode_cursor` writes is a 400 naming ``cursor``
    (the values are bound as SQL parameters of the sort columns' types, see ``_keyset``)."""
    bad = InvalidInput("cursor: not a cursor this server issued (follow the next/prev links)", parameter="cursor")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        parts = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        raise bad from None
    if not (isinstance(parts, list) and len(parts) == 4):
        raise bad
    version, direction, sig, values = parts
    if (direction not in ("n", "p") or not isinstance(values, list) or not isinstance(sig, str)
            or not (version is None or (isinstance(version, int) and not isinstance(version, bool)))
            or not all(v is None or isinstance(v, (str, int, float)) for v in values)):
        raise bad
    if sig != sort_sig:
        raise InvalidInput("cursor: it belongs to a different sortby; follow the links of the same query",
                           parameter="cursor")
    return version, direction, values


def check_cursor_value(v: Any, cast: str) -> None:
    """A cursor's boundary value must fit its sort column's type (else the cast would fail in SQL)."""
    if v is None:
        return
    ok = {"bigint": isinstance(v, int) and not isinstance(v, bool),
          "double precision": isinstance(v, (int, float)) and not isinstance(v, bool),
          "boolean": isinstance(v, bool)}.get(cast, isinstance(v, str))
    if ok and cast in ("date", "timestamptz"):
        try:
            dt.datetime.fromisoformat(v)
        except ValueError:
            ok = False
    if not ok:
        raise InvalidInput("cursor: does not match this query (follow the next/prev links)", parameter="cursor")

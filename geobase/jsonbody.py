"""JSON request bodies read with nothing in them left unread or guessed: the one rule for every
JSON body the API takes (the analyses' and processes' inputs, editing, and the bodies FastAPI
parses into a model, re-read by ``api/params.py``).

* UTF-8 only (RFC 8259 §8.1): a UTF-16/32 body or one with a byte-order mark is refused,
  naming the problem, instead of being read in an encoding the client never declared;
* a member named twice in one object is refused naming it: RFC 8259 leaves its meaning open
  and a parser keeps the last and drops the first, silently (``{"sharing": "department",
  "sharing": "public"}`` set a layer public);
* a NUL character in any string is refused naming the member's path: no text the database
  stores or compares can hold one, and left to it the refusal named no field."""

from __future__ import annotations

import json
from typing import Any

from geobase.errors import InvalidInput


def decode_json_body(data: bytes, parameter: str = "body") -> Any:
    """Parse a JSON request body, which must be UTF-8 (RFC 8259 §8.1). ``json.loads`` would
    also guess UTF-16/32 from the first bytes; such a body is refused, naming the problem,
    instead of being read in an encoding the client never declared."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(data) >= 2 and (data[0] == 0 or data[1] == 0)):
        raise InvalidInput(f"{parameter}: the body is UTF-16/UTF-32 encoded; send JSON as UTF-8", parameter=parameter)
    if data[:3] == b"\xef\xbb\xbf":
        raise InvalidInput(f"{parameter}: the body starts with a byte-order mark; send JSON as UTF-8 without one",
                           parameter=parameter)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{parameter}: the body is not valid UTF-8 (byte {exc.start}); send JSON as UTF-8",
                           parameter=parameter) from None
    return loads_strict(text, parameter)


class _DuplicateName(ValueError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateName(k)
        out[k] = v
    return out


def loads_strict(text: str, parameter: str = "body") -> Any:
    """A JSON request body parsed with nothing in it left unread: a member named twice in one
    object is refused naming it (RFC 8259 leaves its meaning open; a parser keeps the last and
    drops the first, silently: ``{"check_only": true, ..., "check_only": false}``), and so is a
    NUL character in any string (:func:`_refuse_nul`)."""
    try:
        doc = json.loads(text, object_pairs_hook=_object_without_repeats)
    except _DuplicateName as dup:
        raise InvalidInput(f"{dup.name}: named twice in one JSON object; give it once (nothing was done)",
                           parameter=dup.name) from None
    except ValueError as exc:
        raise InvalidInput(f"{parameter}: not valid JSON: {exc}", parameter=parameter) from None
    _refuse_nul(doc, text)
    return doc


def _nul_path(value: Any, path: str) -> str | None:
    """The path (``a.b[2]``) of the first string, key or value, holding a NUL character."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            inner = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k):
                return inner.replace("\x00", "?")
            found = _nul_path(v, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _nul_path(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _refuse_nul(doc: Any, text: str) -> None:
    """400 naming the field of a JSON body whose text holds a NUL character (``\\u0000``): no
    text the database stores or compares can, and left to it the refusal would name no field.
    ``text``: the body as received (a cheap look for the escape before any walk: JSON spells it
    with a lower-case ``u`` and digits only, and a raw NUL byte is not JSON at all)."""
    if "\\u0000" not in text:
        return
    path = _nul_path(doc, "")
    if path is not None:
        raise InvalidInput(f"{path or 'body'}: contains a NUL character (\\u0000), which no text here may hold",
                           parameter=path or "body")

"""Reading a CQL2 filter (``cql2-text`` or ``cql2-json``) into the cql2-json tree, safely.

The ``cql2`` package (Rust cql2-rs) parses both encodings; :mod:`geobase.cql2` compiles the
tree into SQL. Deeply nested text would overflow the parser's stack (a crash of the server, not
an exception), so text is bounded (:data:`MAX_TEXT`, :data:`MAX_DEPTH`) and parsed on a thread
with a large stack; numbers are taken as Python reads them from the text (cql2-rs may be one
unit in the last place off).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from typing import Any

import cql2 as cql2_rs

from geobase.errors import InvalidInput

PARAM = "filter"
#: longest filter text accepted, and deepest nesting of parentheses / NOT (the parser recurses)
MAX_TEXT = 65_536
MAX_DEPTH = 64
_PARSE_STACK = 64 << 20  # the parser's thread stack: ample margin under MAX_TEXT


def bad(msg: str) -> InvalidInput:
    """A 400 naming the ``filter`` parameter."""
    return InvalidInput(f"filter: {msg}", parameter=PARAM)


def _check_text_shape(text: str) -> None:
    """Refuse text whose nesting would overflow the parser (parentheses, chains of NOT)."""
    if len(text) > MAX_TEXT:
        raise bad(f"longer than {MAX_TEXT:,} characters")
    depth = deepest = nots = 0
    quote = None
    word = []
    for ch in text + " ":
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
        if ch.isalpha():
            word.append(ch)
        else:
            if len(word) == 3 and "".join(word).upper() == "NOT":
                nots += 1
            word = []
    if deepest > MAX_DEPTH or nots > MAX_DEPTH:
        raise bad(f"nested deeper than {MAX_DEPTH} levels")


def _on_big_stack(fn: Callable[[], Any]) -> Any:
    """Run the Rust parser on a thread with a large stack (its recursion is per nesting level)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    old = threading.stack_size(_PARSE_STACK)
    try:
        t = threading.Thread(target=run, name="cql2-parse")
        t.start()
    finally:
        threading.stack_size(old)
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def parse(text: str, lang: str | None) -> Any:
    """Parse a filter in ``cql2-text`` (default) or ``cql2-json`` into the cql2-json tree;
    syntax errors are 400s naming ``filter``."""
    lang = (lang or "cql2-text").strip().lower()
    if lang not in ("cql2-text", "cql2-json"):
        raise InvalidInput(f"filter-lang: {lang!r} is not supported (use cql2-text or cql2-json)",
                           parameter="filter-lang")
    try:
        if lang == "cql2-json":
            tree = json.loads(text)  # a plain JSON syntax error gets Python's clear message
            _on_big_stack(lambda: cql2_rs.parse_json(text))  # the shape check of cql2-rs
            return tree  # Python's reading: numbers exact (cql2-rs may be 1 ulp off, see below)
        _check_text_shape(text)
        return _exact_numbers(text, _on_big_stack(lambda: cql2_rs.parse_text(text)).to_json())
    except InvalidInput:
        raise
    except RecursionError:
        raise bad(f"nested too deeply for {lang}") from None
    except Exception as exc:  # ParseError, JSON errors: the message helps the caller find the spot
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if "untagged enum Expr" in msg:
            msg = "a node is not a valid cql2-json expression (check geometry types and coordinates)"
        raise bad(f"not valid {lang}: {msg[:300]}") from None


_NUMBER = re.compile(r"(?<![\w.:])-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.])")
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"")


def _exact_numbers(text: str, tree: Any) -> Any:
    """The tree with each number as Python reads it from the text.

    cql2-rs 0.6 reads about half of all 17-digit coordinates one unit in the last place off
    (a polygon copied from the data then fails S_EQUALS/S_TOUCHES). Numbers keep their order
    from the text to the tree, so when the counts agree and each pair is within a few ulps,
    the text's exact value replaces the tree's; otherwise the tree stays as it is."""
    tokens = [float(m.group()) for m in _NUMBER.finditer(_QUOTED.sub(" ", text))]
    values: list[float] = []

    def collect(node: Any) -> None:
        if isinstance(node, bool):
            return
        if isinstance(node, (int, float)):
            values.append(node)
        elif isinstance(node, list):
            for x in node:
                collect(x)
        elif isinstance(node, dict):
            for x in node.values():
                collect(x)

    collect(tree)
    if len(tokens) != len(values) or not all(
            a == b or abs(a - b) <= 4 * math.ulp(max(abs(a), abs(b))) for a, b in zip(tokens, values)):
        return tree
    it = iter(tokens)

    def rebuild(node: Any) -> Any:
        if isinstance(node, bool):
            return node
        if isinstance(node, (int, float)):
            return next(it)
        if isinstance(node, list):
            return [rebuild(x) for x in node]
        if isinstance(node, dict):
            return {k: rebuild(v) for k, v in node.items()}
        return node

    return rebuild(tree)

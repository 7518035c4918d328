"""Band names, their EO common names and wavelengths, and the expression rule.

A scene's bands are named ``b1`` .. ``bN`` (rio-tiler's names, so expressions and ``bands=``
speak the same words); ``--bands b1=blue,b4=nir`` gives them STAC EO common names, and each
common name its centre wavelength (µm, the EO extension's table). Expressions are band
arithmetic only: band names, numbers, ``+ - * /`` and parentheses; anything else (a function
call, an attribute, a name that is not a band) is refused before rio-tiler sees it."""

from __future__ import annotations

import re

from geobase.errors import InvalidInput

# STAC EO extension common names -> centre wavelength (micrometres)
COMMON_NAMES: dict[str, float] = {
    "coastal": 0.44, "blue": 0.485, "green": 0.56, "red": 0.66, "yellow": 0.6, "pan": 0.6,
    "rededge": 0.705, "nir": 0.835, "nir08": 0.865, "nir09": 0.945, "cirrus": 1.375,
    "swir16": 1.65, "swir22": 2.22, "lwir": 11.5, "lwir11": 10.9, "lwir12": 12.0,
}
BAND_RE = re.compile(r"b([1-9][0-9]{0,2})")
_TOKEN = re.compile(r"\s*(?:(b[1-9][0-9]{0,2})\b|([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+)|([-+*/()]))")
EXPRESSION_MAX = 500


def parse_band_map(text: str | None, count: int) -> dict[str, str]:
    """``b1=blue,b2=green`` -> {"b1": "blue", ...}; every key a band of the scene, every value
    an EO common name, no band named twice."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        key, value = key.strip(), value.strip().lower()
        m = BAND_RE.fullmatch(key)
        if not sep or not m:
            raise InvalidInput(f"--bands: {part.strip()!r} is not like b1=blue (bands are b1..b{count})",
                               parameter="bands")
        if int(m.group(1)) > count:
            raise InvalidInput(f"--bands: the scene has {count} bands, there is no {key}", parameter="bands")
        if value not in COMMON_NAMES:
            raise InvalidInput(f"--bands: {value!r} is not an EO common name ({', '.join(COMMON_NAMES)})",
                               parameter="bands")
        if key in out:
            raise InvalidInput(f"--bands: {key} is named twice", parameter="bands")
        out[key] = value
    return out


def check_bands(names: list[str], count: int, parameter: str = "bands") -> list[int]:
    """Band names (``b3``) -> 1-based indexes, each within the scene's band count."""
    out = []
    for name in names:
        m = BAND_RE.fullmatch(name.strip())
        if not m or int(m.group(1)) > count:
            raise InvalidInput(f"{parameter}: {name.strip()!r} is not a band of this collection (b1..b{count})",
                               parameter=parameter)
        out.append(int(m.group(1)))
    return out


def _follows(prev: str, kind: str) -> bool:
    """A token may follow the previous one: a value or ``(`` after an operator or ``(`` (and
    unary + -); an operator or ``)`` after a value (``)`` counts as a value)."""
    if kind in ("value", "("):
        return prev != "value"
    if kind == ")":
        return prev == "value"
    return prev == "value" or (kind in "+-" and prev in ("start", "(", "*", "/"))


def check_expression(expr: str, count: int) -> list[int]:
    """Validate band arithmetic (one or several ``;``-separated expressions, the way rio-tiler
    reads them) and return the bands it uses; InvalidInput naming the first offending
    character or band otherwise."""
    if not expr or len(expr) > EXPRESSION_MAX:
        raise InvalidInput(f"expression: 1..{EXPRESSION_MAX} characters", parameter="expression")
    used: list[int] = []
    for block in expr.split(";"):
        pos, depth, tokens, prev = 0, 0, 0, "start"
        while pos < len(block):
            if block[pos:].strip() == "":
                break
            m = _TOKEN.match(block, pos)
            if m is None:
                raise InvalidInput(f"expression: {block[pos:].strip()[:20]!r} is not allowed (only band names "
                                   "b1.., numbers, + - * / and parentheses)", parameter="expression")
            if m.group(1):
                used += check_bands([m.group(1)], count, "expression")
            kind = "value" if (m.group(1) or m.group(2)) else m.group(3)
            if not _follows(prev, kind):
                raise InvalidInput(f"expression: {m.group(0).strip()!r} cannot follow what precedes it",
                                   parameter="expression")
            prev = "value" if kind == ")" else kind
            depth += {"(": 1, ")": -1}.get(m.group(3) or "", 0)
            if depth < 0:
                raise InvalidInput("expression: unbalanced parentheses", parameter="expression")
            pos, tokens = m.end(), tokens + 1
        if depth != 0 or tokens == 0 or prev != "value":
            raise InvalidInput("expression: unbalanced parentheses or an empty expression", parameter="expression")
    if not used:
        raise InvalidInput("expression: uses no band", parameter="expression")
    return sorted(set(used))

"""Data grades, openness classes and network zones — the rules as data.

Under the natural-resources data-security measures every dataset has a **grade**
(一般 general / 重要 important / 核心 core) and an **openness class** (无条件开放 open /
有条件开放 conditional / 不予开放 closed); a deployment runs in one **network zone**
(涉密内网 classified / 政务外网 government / 互联网 internet, ``GEOBASE_NETWORK_ZONE``).
:data:`ZONE_TABLE` says which grade x openness may exist in which zone; a dataset that may not is
not listed, served, tiled, downloaded or analysed there (:func:`geobase.security.can_see` asks
:func:`zone_allows`). In the internet zone a *conditional* dataset is listed in the catalog (so it
can be requested) but its data reach only callers with a key (an approved request's key, a
department's key), never an anonymous caller (:func:`open_to_anonymous`).

Everything unknown is refused (fail closed): a zone, grade or class not in the table (a typo in
the database, a value from a newer release) makes the dataset invisible, never visible.
"""

from __future__ import annotations

from typing import Literal

Grade = Literal["general", "important", "core"]
Openness = Literal["open", "conditional", "closed"]
Zone = Literal["classified", "government", "internet"]

GRADES: tuple[str, ...] = ("general", "important", "core")
OPENNESS: tuple[str, ...] = ("open", "conditional", "closed")
ZONES: tuple[str, ...] = ("classified", "government", "internet")

#: the Chinese terms, for pages, CSV exports and DCAT labels
LABELS_ZH: dict[str, str] = {
    "general": "一般数据", "important": "重要数据", "core": "核心数据",
    "open": "无条件开放", "conditional": "有条件开放", "closed": "不予开放",
    "classified": "涉密内网", "government": "政务外网", "internet": "互联网",
}

#: zone -> the (grade, openness) pairs a dataset may have to exist in that zone at all.
#: classified: everything; government: all but core data; internet: general data that is
#: open or conditional (closed and important/core data never leave the government networks).
ZONE_TABLE: dict[str, frozenset[tuple[str, str]]] = {
    "classified": frozenset((g, o) for g in GRADES for o in OPENNESS),
    "government": frozenset((g, o) for g in ("general", "important") for o in OPENNESS),
    "internet": frozenset({("general", "open"), ("general", "conditional")}),
}


def zone_allows(zone: str, grade: object, openness: object) -> bool:
    """May a dataset of this grade and openness exist in this zone? Unknown -> False."""
    allowed = ZONE_TABLE.get(zone) if isinstance(zone, str) else None
    return allowed is not None and (grade, openness) in allowed


def open_to_anonymous(zone: str, openness: object) -> bool:
    """May a caller without a key read the data of an allowed dataset of this class here? In the
    internet zone only open data; inside the government networks the sharing level decides."""
    if zone == "internet":
        return openness == "open"
    return zone in ZONES


def zone_table_rows() -> list[dict[str, object]]:
    """:data:`ZONE_TABLE` as rows (for the documentation and ``/catalog/zones``)."""
    return [{"grade": g, "openness": o, "zones": [z for z in ZONES if (g, o) in ZONE_TABLE[z]],
             "anonymous_in": [z for z in ZONES if (g, o) in ZONE_TABLE[z] and open_to_anonymous(z, o)]}
            for g in GRADES for o in OPENNESS]

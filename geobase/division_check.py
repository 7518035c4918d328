"""The one check of a county code a caller names (``division=``, CQL2 ``division = '…'`` /
``division IN (…)``): every endpoint that takes one answers the same way (issue 16).

- a malformed code (not 6 digits) or an empty list: 400 naming the parameter;
- a well-formed code that is no known county: 400 naming the parameter, because a mistyped
  county must not read as "nothing there" (an empty page, an empty change feed);
- a known county the layer holds nothing of (no partition): an empty answer, 200, on every
  endpoint alike — the county exists, it has not delivered this layer (yet).

Known counties are those the database holds a partition of, in any layer (the administrative
divisions layer's counties among them: its rows are partitioned by county like every layer's):
one query on ``pg_inherits``, answered from the catalog on the primary, a replica (the catalog
is replicated) or a coordinator with shards (a foreign partition is a partition too), kept per
catalog state (every layer's current version, read on each request: a county loaded after the
server started is known on the next request).

The layer's own partitions are not needed: a ``division`` filter on a county without a partition
prunes every partition, so the query answers empty by itself (see
:func:`geobase.storage.division_filter`).
"""

from __future__ import annotations

from typing import Any

import psycopg

from geobase.catalog.state import layer_states
from geobase.cql2_parse import parse
from geobase.errors import InvalidInput
from geobase.storage import DATA_SCHEMA, DIVISION, check_division

#: counties named in the message of a refusal, at most (a nation has some 2,800)
LISTED = 20

# every county with a partition of some layer table: ``data.<layer>__<6 digits>`` under ``data.<layer>``
_KNOWN_SQL = (
    "SELECT DISTINCT right(c.relname, 6) FROM pg_inherits i "
    "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
    "JOIN pg_namespace n ON n.oid = p.relnamespace "
    "WHERE n.nspname = %s AND p.relkind = 'p' AND right(c.relname, 6) ~ '^[0-9]{6}$' "
    "AND c.relname = p.relname || '__' || right(c.relname, 6)")


#: per database (the primary and each replica a process reads): (catalog state, its counties).
#: The answer of :data:`_KNOWN_SQL` is kept per catalog state: a county's partition is made by the
#: ingest (or edit) that commits a new version of its layer, so while every layer's current
#: version is what it was, so are the partitions. The state is read first, the partitions after
#: it: what is kept is never older than the state it is kept under.
_KNOWN: dict[tuple, tuple[tuple, frozenset[str]]] = {}


async def known_counties(conn: psycopg.AsyncConnection) -> set[str]:
    """Every county any layer holds a partition of: the catalog query (a join over every
    partition of every layer, some 2,800 counties a layer in a nation) runs once per catalog
    state, each request reads only the layers' versions (a few rows)."""
    where = (conn.info.host, conn.info.port, conn.info.dbname)
    stamp = tuple(sorted((n, s.current_version) for n, s in (await layer_states(conn)).items()))
    kept = _KNOWN.get(where)
    if kept is None or kept[0] != stamp:
        cur = await conn.execute(_KNOWN_SQL, (DATA_SCHEMA,))
        if len(_KNOWN) > 100:
            _KNOWN.clear()
        kept = _KNOWN[where] = (stamp, frozenset(r[0] for r in await cur.fetchall()))
    return set(kept[1])


def known_counties_sync(conn: psycopg.Connection) -> set[str]:
    """:func:`known_counties` on a sync connection (the CLI, tests)."""
    return {r[0] for r in conn.execute(_KNOWN_SQL, (DATA_SCHEMA,)).fetchall()}


def parse_counties(value: str | list[str] | None, parameter: str = DIVISION) -> list[str]:
    """The well-formed county codes of ``division=339901,339902`` (or a list), in order, once
    each; malformed or none at all is a 400 naming ``parameter``."""
    given = value if isinstance(value, list) else (str(value).split(",") if value is not None else [])
    given = [str(v).strip() for v in given]
    if not [v for v in given if v]:
        raise InvalidInput(f"{parameter}: empty; give one or more 6-digit county codes, comma-separated",
                           parameter=parameter)
    return list(dict.fromkeys(check_division(v, parameter) for v in given))


def check_counties(codes: list[str], known: set[str], layer: str, parameter: str = DIVISION) -> list[str]:
    """``codes`` when every one is a known county; else a 400 naming ``parameter``."""
    unknown = [d for d in codes if d not in known]
    if unknown:
        listed = sorted(known)
        shown = ", ".join(listed[:LISTED]) + (f" and {len(listed) - LISTED} more" if len(listed) > LISTED else "")
        what = "" if parameter == DIVISION else f"{DIVISION} "
        raise InvalidInput(f"{parameter}: {what}{', '.join(unknown)} is not a county of {layer!r} nor of any other layer: "
                           f"not a known division (known counties: {shown or 'none yet'})", parameter=parameter)
    return codes


def cql2_counties(text: str | None, lang: str | None) -> list[str]:
    """The county codes a CQL2 filter compares ``division`` with (``=`` and ``IN``, either side),
    each checked to be well formed (a 400 naming ``filter``); other comparisons (``<>``, LIKE)
    name no county. A filter that does not mention ``division`` is not parsed again."""
    if not text or DIVISION not in text:
        return []
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                walk(n)
            return
        if not isinstance(node, dict):
            return
        args = node.get("args")
        if isinstance(args, list) and str(node.get("op", "")).lower() in ("=", "in") and len(args) == 2:
            props = [i for i, a in enumerate(args) if a == {"property": DIVISION}]
            if props:
                other = args[1 - props[0]]
                for lit in other if isinstance(other, list) else [other]:
                    if isinstance(lit, str):
                        out.append(check_division(lit, "filter"))
        walk(args)

    walk(parse(text, lang))
    return list(dict.fromkeys(out))


async def checked_counties(conn: psycopg.AsyncConnection, layer: str, division: str | None = None,
                           cql2_text: str | None = None, cql2_lang: str | None = None) -> list[str] | None:
    """The counties of a request's ``division=`` (None when it names none), after the one check
    of them and of the counties its CQL2 filter names; runs the catalog query only when the
    request names a county."""
    codes = parse_counties(division) if division is not None else None
    in_filter = cql2_counties(cql2_text, cql2_lang)
    if codes is None and not in_filter:
        return None
    known = await known_counties(conn)
    if codes is not None:
        check_counties(codes, known, layer)
    check_counties(in_filter, known, layer, "filter")
    return codes


async def tile_divisions(conn: psycopg.AsyncConnection, registry, layers: str,
                         division: str | None) -> tuple[str, ...] | None:
    """The counties of a tile URL's ``division=`` (XYZ, OGC, composite, WMTS tiles, TileJSON;
    None: every county), after the one check; a raster layer is not partitioned by county: a
    ``division`` for it is refused, never ignored."""
    if division is None:
        return None
    spec = registry.layers.get(layers)
    if spec is not None and spec.kind != "vector":
        raise InvalidInput(f"division: {layers!r} is a raster, not partitioned by county", parameter="division")
    return tuple(sorted(await checked_counties(conn, layers, division)))

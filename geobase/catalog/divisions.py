"""Counties (行政区划代码) in the catalog: which counties each layer version changed and, for every
county current in it, its row count and extent.

How layer versions relate to county deliveries: versions are numbered per layer, for the whole
province, in commit order; a county's delivery (or rollback) is one new layer version that
changes that county's partition only and names it in ``touched``. So the province as of version
v is simply the rows current in v (geobase/storage.py ``as_of_filter``), and county D as of v is
the same filter on D's partition: time travel, diffs and the change feed need nothing new. The
versions of county D are the layer versions that touched it; D's current version is the last
of them. Versions made before partitions have ``touched`` NULL: they were the one county's.

The per-county counts and extents are carried forward from the previous version, so a county's
ingest counts and measures its own partition only, never another county's rows.
"""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from geobase.catalog.layers import current_layers, union_extent
from geobase.partitions import partition_divisions
from geobase.specs import LayerSpec
from geobase.storage import current_filter, division_filter, partition_ident, table_ident

Divisions = dict[str, dict]


def division_stats(conn: psycopg.Connection, spec: LayerSpec, divisions: list[str]) -> Divisions:
    """``{division: {"rows": n, "extent": [minx, miny, maxx, maxy] | None}}`` of the current rows of
    the counties named (only their partitions are read); a county without rows is left out."""
    if not divisions:
        return {}
    rows = conn.execute(sql.SQL(
        "SELECT division, n, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT division, count(*) AS n, "
        "ST_Extent(geom) AS e FROM {t} WHERE {cur} AND {d} GROUP BY division) x").format(
        t=table_ident(spec), cur=current_filter(), d=division_filter(divisions))).fetchall()
    return {r[0]: {"rows": int(r[1]), "extent": [float(x) for x in r[2:]] if r[2] is not None else None}
            for r in rows}


def current_divisions(conn: psycopg.Connection, layer: str) -> Divisions | None:
    """The per-county map of the layer's current version; None when it has no version or its
    version predates the map."""
    row = conn.execute(
        "SELECT v.divisions FROM catalog.layers l JOIN catalog.layer_versions v ON v.layer = l.name "
        "AND v.version = l.current_version WHERE l.name = %s", (layer,)).fetchone()
    if row is None:
        return {}
    return row[0]


def carry_forward(conn: psycopg.Connection, spec: LayerSpec, touched: list[str],
                  fresh: Divisions | None = None) -> Divisions:
    """The per-county map of a new version that changed the counties ``touched``: theirs counted
    now (or ``fresh``, when the caller knows them), every other county's taken from the current
    version (counted once, from the partitions, when that version predates the map)."""
    prev = current_divisions(conn, spec.name)
    if prev is None:
        others = [d for d in partition_divisions(conn, spec) if d not in touched]
        prev = division_stats(conn, spec, others)
    out = {d: v for d, v in prev.items() if d not in touched}
    out.update(fresh if fresh is not None else division_stats(conn, spec, touched))
    return {d: out[d] for d in sorted(out) if out[d]["rows"]}


def totals(divisions: Divisions) -> tuple[int, list[float] | None]:
    """The layer's row count and extent (the union of its counties')."""
    boxes = [d["extent"] for d in divisions.values() if d.get("extent")]
    extent = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
              max(b[3] for b in boxes)] if boxes else None
    return sum(d["rows"] for d in divisions.values()), extent


def dumps(divisions: Divisions | None) -> str | None:
    return None if divisions is None else json.dumps(divisions)


def county_versions(conn: psycopg.Connection, layer: str, division: str) -> list[int]:
    """The layer versions that changed county ``division`` (and those made before partitions)."""
    return [r[0] for r in conn.execute(
        "SELECT version FROM catalog.layer_versions WHERE layer = %s AND (touched IS NULL OR %s = ANY(touched)) "
        "ORDER BY version", (layer, division)).fetchall()]


#: every county of a layer's current version with its extent and the last version that changed it
COUNTY_STATES_SQL = """
    SELECT d.key, d.value->'extent',
           (SELECT max(o.version) FROM catalog.layer_versions o WHERE o.layer = l.name
              AND o.version <= l.current_version AND (o.touched IS NULL OR d.key = ANY(o.touched)))
    FROM catalog.layers l
    JOIN catalog.layer_versions v ON v.layer = l.name AND v.version = l.current_version
    CROSS JOIN LATERAL jsonb_each(coalesce(v.divisions, '{}'::jsonb)) d
    WHERE l.name = %s ORDER BY d.key
"""


async def county_states(conn: psycopg.AsyncConnection, layer: str) -> dict[str, tuple[int, list[float] | None]]:
    """``{division: (the last version that changed it, its extent)}`` of the layer's current
    version: what a cache keyed per county needs (a tile wholly inside county B need not change
    when county A gets a new version). Empty for a version made before the per-county map."""
    cur = await conn.execute(COUNTY_STATES_SQL, (layer,))
    return {d: (v, list(e) if e else None) for d, e, v in await cur.fetchall()}


async def counties_extent(conn: psycopg.AsyncConnection, layers: list[str],
                          divisions: tuple[str, ...] | None) -> list[float] | None:
    """The union of the extents the layers' current versions record for these counties, every
    county's when ``divisions`` is None (None: the layers hold nothing of them; TileJSON's
    ``bounds``)."""
    if divisions is None:
        return union_extent(list((await current_layers(conn, layers)).values()))
    boxes = [extent for name in layers for d, (_, extent) in (await county_states(conn, name)).items()
             if d in divisions and extent]
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def versions_beyond(conn: psycopg.Connection, spec: LayerSpec, division: str, last: int) -> int | None:
    """The highest version that county ``division``'s rows name beyond ``last`` (the layer's
    last version in the catalog), None when none does: rows a writer committed on a shard and
    the catalog never recorded (geobase/db/shards.py)."""
    top = conn.execute(sql.SQL("SELECT greatest(max(_vfrom), max(_vto)) FROM {}").format(
        partition_ident(spec, division))).fetchone()[0]
    return top if top is not None and top > last else None


def undo_versions_beyond(conn: psycopg.Connection, spec: LayerSpec, division: str, last: int) -> tuple[int, int]:
    """Undo in county ``division``'s partition what versions after ``last`` did (their rows
    deleted, the rows they retired current again), in the caller's transaction, which holds the
    layer's writer lock. Returns (rows deleted, rows made current again)."""
    part, v = partition_ident(spec, division), sql.Literal(int(last))
    deleted = conn.execute(sql.SQL("DELETE FROM {} WHERE _vfrom > {}").format(part, v)).rowcount
    reopened = conn.execute(sql.SQL("UPDATE {} SET _vto = NULL WHERE _vto > {}").format(part, v)).rowcount
    return deleted, reopened

"""The imagery catalogue's SQL (``catalog.imagery_collections``, ``catalog.imagery_items``):
STAC Collections and Items of ingested scenes, written by :mod:`geobase.imagery.ingest` and read
by the STAC API, the imagery tiles and the CLI. Writers use a synchronous connection (the CLI),
readers an asynchronous one (the server)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from geobase.errors import Conflict

#: imagery has no sharing rule of its own yet: it is shown to exactly the callers who may see
#: this layer, in every output (STAC, tiles, WMTS, catalog records); fail closed without it
IMAGERY_RULE_LAYER = "dem"


@dataclass(frozen=True)
class ItemQuery:
    """A STAC item search: every part optional; ``bbox`` in EPSG:4326, datetimes aware."""

    collections: tuple[str, ...] | None = None
    ids: tuple[str, ...] | None = None
    bbox: tuple[float, float, float, float] | None = None
    start: datetime | None = None
    end: datetime | None = None
    limit: int = 10
    offset: int = 0
    #: a compiled CQL2 ``filter`` over :data:`STAC_QUERYABLES` (bound parameters only)
    where: sql.Composable | None = None


def ensure_collection(conn: psycopg.Connection, cid: str, title: str | None = None,
                      description: str | None = None) -> None:
    """Create the collection when it does not exist (its title is kept when it does)."""
    conn.execute("INSERT INTO catalog.imagery_collections (id, title, description) VALUES (%s, %s, %s) "
                 "ON CONFLICT (id) DO NOTHING", (cid, title, description))


def insert_item(conn: psycopg.Connection, collection: str, item_id: str, when: datetime,
                bbox: tuple[float, float, float, float], cloud_cover: float | None, file: str, item: dict) -> None:
    """One scene's row; Conflict when the collection already has an item of that id."""
    try:
        conn.execute(
            "INSERT INTO catalog.imagery_items (collection, id, datetime, footprint, cloud_cover, file, item) "
            "VALUES (%s, %s, %s, ST_MakeEnvelope(%s, %s, %s, %s, 4326), %s, %s, %s::jsonb)",
            (collection, item_id, when, *bbox, cloud_cover, file, json.dumps(item)))
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"collection {collection!r} already has an item {item_id!r}") from exc


def item_exists(conn: psycopg.Connection, collection: str, item_id: str) -> bool:
    return conn.execute("SELECT 1 FROM catalog.imagery_items WHERE collection = %s AND id = %s",
                        (collection, item_id)).fetchone() is not None


_COLLECTIONS = """
SELECT c.id, c.title, c.description, count(i.id) AS items,
       ST_XMin(ST_Extent(i.footprint)) AS xmin, ST_YMin(ST_Extent(i.footprint)) AS ymin,
       ST_XMax(ST_Extent(i.footprint)) AS xmax, ST_YMax(ST_Extent(i.footprint)) AS ymax,
       min(i.datetime) AS start, max(i.datetime) AS end
  FROM catalog.imagery_collections c LEFT JOIN catalog.imagery_items i ON i.collection = c.id
"""


async def collections(conn: psycopg.AsyncConnection, cid: str | None = None) -> list[dict]:
    """Collections with their derived extent (bbox of their items' footprints, time span)."""
    where = sql.SQL("WHERE c.id = %s ") if cid is not None else sql.SQL("")
    query = sql.SQL(_COLLECTIONS) + where + sql.SQL("GROUP BY c.id ORDER BY c.id")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, (cid,) if cid is not None else ())
        return await cur.fetchall()


def _where(q: ItemQuery) -> tuple[sql.Composable, list]:
    parts: list[sql.Composable] = [sql.SQL("TRUE")]
    args: list = []
    if q.collections is not None:
        parts.append(sql.SQL("collection = ANY(%s)"))
        args.append(list(q.collections))
    if q.ids is not None:
        parts.append(sql.SQL("id = ANY(%s)"))
        args.append(list(q.ids))
    if q.bbox is not None:
        parts.append(sql.SQL("footprint && ST_MakeEnvelope(%s, %s, %s, %s, 4326)"))
        args += list(q.bbox)
    if q.start is not None:
        parts.append(sql.SQL("datetime >= %s"))
        args.append(q.start)
    if q.end is not None:
        parts.append(sql.SQL("datetime <= %s"))
        args.append(q.end)
    if q.where is not None:  # its literals are quoted in the text: a '%' of a LIKE must not read as a placeholder
        parts.append(sql.SQL("(" + q.where.as_string(None).replace("%", "%%") + ")"))
    return sql.SQL(" AND ").join(parts), args


async def search_items(conn: psycopg.AsyncConnection, q: ItemQuery) -> tuple[list[dict], int]:
    """(rows with ``collection, id, datetime, file, item``, number matched), newest first."""
    where, args = _where(q)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.SQL("SELECT count(*) AS n FROM catalog.imagery_items WHERE ") + where, args)
        matched = (await cur.fetchone())["n"]
        await cur.execute(sql.SQL("SELECT collection, id, datetime, file, item FROM catalog.imagery_items WHERE ")
                          + where + sql.SQL(" ORDER BY datetime DESC, collection, id LIMIT %s OFFSET %s"),
                          [*args, q.limit, q.offset])
        return await cur.fetchall(), matched


#: mosaic orders: which scene is drawn on top where scenes overlap (first file on top)
MOSAIC_ORDERS = {
    "latest": sql.SQL("datetime DESC, id"),
    # least cloudy on top; a scene of unknown cloud cover below every known one; ties: latest
    "cloud": sql.SQL("cloud_cover ASC NULLS LAST, datetime DESC, id"),
}


async def mosaic_files(conn: psycopg.AsyncConnection, collection: str, start: datetime | None,
                       end: datetime | None, order: str = "latest") -> list[str]:
    """The collection's scene files for a mosaic, topmost first (``order``: a key
    of :data:`MOSAIC_ORDERS`): one indexed query per tile, no count and no extent (this runs on
    every imagery tile)."""
    query = sql.SQL(
        "SELECT file FROM catalog.imagery_items WHERE collection = %s AND (%s::timestamptz IS NULL OR datetime >= %s)"
        " AND (%s::timestamptz IS NULL OR datetime <= %s) ORDER BY ") + MOSAIC_ORDERS[order]
    cur = await conn.execute(query, (collection, start, start, end, end))
    return [r[0] for r in await cur.fetchall()]


async def collection_exists(conn: psycopg.AsyncConnection, collection: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM catalog.imagery_collections WHERE id = %s", (collection,))
    return await cur.fetchone() is not None


async def latest_item(conn: psycopg.AsyncConnection, collection: str) -> dict | None:
    """The collection's latest scene (``file``, ``item``): its bands describe the collection's
    drawing presets (a collection's scenes share a sensor)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT file, item FROM catalog.imagery_items WHERE collection = %s "
                          "ORDER BY datetime DESC, id LIMIT 1", (collection,))
        return await cur.fetchone()


async def collection_ids(conn: psycopg.AsyncConnection) -> list[dict]:
    """Every collection with at least one scene: ``id, title`` and its footprints' bbox (WMTS
    layers, map layers)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT c.id, c.title, ST_XMin(e) AS xmin, ST_YMin(e) AS ymin, ST_XMax(e) AS xmax, ST_YMax(e) AS ymax,"
            " start, \"end\" FROM catalog.imagery_collections c JOIN ("
            "SELECT collection, ST_Extent(footprint) AS e, min(datetime) AS start, max(datetime) AS \"end\""
            " FROM catalog.imagery_items GROUP BY collection) i ON i.collection = c.id ORDER BY c.id")
        return await cur.fetchall()


#: STAC item properties a search ``filter`` may name -> (spec type, the SQL reading it from
#: ``catalog.imagery_items``): the columns the catalogue keeps, the rest from the stored Item
STAC_QUERYABLES: dict[str, tuple[str, sql.Composable]] = {
    "id": ("text", sql.Identifier("id")),
    "collection": ("text", sql.Identifier("collection")),
    "datetime": ("datetime", sql.Identifier("datetime")),
    "eo:cloud_cover": ("number", sql.Identifier("cloud_cover")),
    "platform": ("text", sql.SQL("(item->'properties'->>'platform')")),
    "constellation": ("text", sql.SQL("(item->'properties'->>'constellation')")),
    "instrument": ("text", sql.SQL("(item->'properties'->'instruments'->>0)")),
    "gsd": ("number", sql.SQL("(item->'properties'->>'gsd')::double precision")),
    "proj:epsg": ("number", sql.SQL("(item->'properties'->>'proj:epsg')::double precision")),
}
FOOTPRINT = sql.Identifier("footprint")


async def scene_dates(conn: psycopg.AsyncConnection, collection: str) -> list[datetime]:
    """The acquisition times of a collection's scenes (the map's date picker)."""
    cur = await conn.execute("SELECT datetime FROM catalog.imagery_items WHERE collection = %s ORDER BY datetime",
                             (collection,))
    return [r[0] for r in await cur.fetchall()]

"""Tile statements prepared once per connection (geobase.tiles.render, issue #15):

* a prepared tile is byte for byte the tile of the statement composed with the tile's literals
  (one layer, the composite, a caller with hidden attributes and a key's box, both tile grids);
* after a new version commits, the very next tile on the same connection draws the new rows with
  the statement prepared before (reused, not prepared again);
* a session that lost its statements (``DEALLOCATE ALL``) and a tile whose statement failed to
  prepare leave the connection answering the next tiles correctly."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import mapbox_vector_tile
import psycopg
import pytest
from geobase.tiles import render as tile_render
from geobase.tiles.mvt import plan_layer, tile_sql
from geobase.tiles.tms import CGCS2000_QUAD, WEB_MERCATOR_QUAD
from test_tiles import tile_xy
from test_tiles_data import LAND_CODES, LAT0, LON0, commit_version, land_use_rows, load_test_county

from geobase.db import database_url
from geobase.specs import get_registry


def _classes(raw: bytes) -> set[str]:
    layers = mapbox_vector_tile.decode(raw) if raw else {}
    return {f["properties"]["dlbm"] for f in layers.get("land_use", {}).get("features", [])}


async def _composed(conn: psycopg.AsyncConnection, plans, names, tms, z, row, col) -> bytes:
    cur = await conn.execute(tile_sql(plans, names, tms, z, row, col))
    return bytes((await cur.fetchone())[0] or b"")


async def _held(conn: psycopg.AsyncConnection) -> set[str]:
    cur = await conn.execute("SELECT name FROM pg_prepared_statements WHERE starts_with(name, 'geobase_tile_')")
    return {r[0] for r in await cur.fetchall()}


@pytest.fixture
def county(new_db):
    s = new_db()
    load_test_county(s, dem=False)
    return s


def test_prepared_tiles_equal_the_composed_statement_and_follow_a_new_version(county):
    url, reg = database_url(county), get_registry(county)
    spec = reg.layers["land_use"]
    vector = sorted(n for n, s in reg.layers.items() if s.kind == "vector")
    box = (LON0 + 0.01, LAT0 + 0.01, LON0 + 0.04, LAT0 + 0.04)

    async def scenario():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for tms in (WEB_MERCATOR_QUAD, CGCS2000_QUAD):
                for z in (14, 15, 16):
                    row, col = tile_xy(tms, z, LON0 + 0.03, LAT0 + 0.03)
                    views = [([plan_layer(spec, reg, z, set())], ["land_use"]),
                             ([plan_layer(spec, reg, z, {"dlmc"}, within=box)], ["land_use"]),
                             ([p for p in (plan_layer(reg.layers[n], reg, z, set()) for n in vector) if p], vector)]
                    for plans, names in views:
                        for with_states in (False, True):  # the second time: EXECUTE of the held statement
                            _, versions, _, raw = await tile_render.render(conn, plans, names, tms, z, row, col,
                                                                            30_000, with_states=with_states)
                            assert raw == await _composed(conn, plans, names, tms, z, row, col)
                            assert raw and versions["land_use"] is not None
            held = await _held(conn)
            assert held and held == tile_render._prepared[conn]  # every statement above was prepared once

            # a new version: every parcel becomes orchard (0201); the next tile draws it with the
            # statement prepared before
            z = 16
            row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.03, LAT0 + 0.03)
            plans = [plan_layer(spec, reg, z, set())]
            before = (await tile_render.render(conn, plans, ["land_use"], WEB_MERCATOR_QUAD, z, row, col, None))
            assert _classes(before[3]) <= set(LAND_CODES) and "0201" not in _classes(before[3])
            with psycopg.connect(url) as other:
                v2 = commit_version(other, "land_use", [{**r, "dlbm": "0201", "dlmc": "orchard"}
                                                        for r in land_use_rows()])
                other.commit()
            _, versions, _, raw = await tile_render.render(conn, plans, ["land_use"], WEB_MERCATOR_QUAD, z, row, col,
                                                           None)
            assert _classes(raw) == {"0201"} and versions == {"land_use": v2}
            assert await _held(conn) == held  # the same statements: reused, none prepared again
            assert raw == await _composed(conn, plans, ["land_use"], WEB_MERCATOR_QUAD, z, row, col)

    asyncio.run(scenario())


def test_a_session_that_lost_its_statements_or_failed_to_prepare_one_still_answers(county):
    url, reg = database_url(county), get_registry(county)
    spec = reg.layers["land_use"]
    z = 15
    row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.03, LAT0 + 0.03)
    plans = [plan_layer(spec, reg, z, set())]

    async def tile(conn, p=plans) -> bytes:
        return (await tile_render.render(conn, p, ["land_use"], WEB_MERCATOR_QUAD, z, row, col, 30_000))[3]

    async def scenario():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            truth = await _composed(conn, plans, ["land_use"], WEB_MERCATOR_QUAD, z, row, col)
            assert truth and await tile(conn) == truth
            await conn.execute("DEALLOCATE ALL")  # e.g. a DISCARD ALL by a pooler
            assert await tile(conn) == truth  # told by PostgreSQL, prepared again, asked once more
            assert len(await _held(conn)) == 1
            # a statement that cannot be prepared (a column the table lacks): the error reaches the
            # caller, the connection is left idle and its list is read back before the next tile
            broken = [replace(plans[0], attributes=plans[0].attributes + ("no_such_column",))]
            with pytest.raises(psycopg.errors.UndefinedColumn):
                await tile(conn, broken)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert await tile(conn) == truth
            assert len(await _held(conn)) == 1  # the held statement was used, not prepared twice

    asyncio.run(scenario())


def test_the_states_read_with_a_tile_is_prepared_once_and_reads_what_the_catalog_says_now(county):
    """The layer states a cold tile reads in its round trip (a statement prepared per connection,
    tiles.render.STATES_NAME) are the catalog's rows at that moment: a sharing change committed
    elsewhere shows in the very next tile's states, and a session that lost its statements
    prepares it again."""
    from geobase.catalog.state import layer_states

    url, reg = database_url(county), get_registry(county)
    spec = reg.layers["land_use"]
    z = 16
    row, col = tile_xy(WEB_MERCATOR_QUAD, z, LON0 + 0.03, LAT0 + 0.03)
    plans = [plan_layer(spec, reg, z, set())]

    async def states(conn):
        return (await tile_render.render(conn, plans, ["land_use"], WEB_MERCATOR_QUAD, z, row, col, 30_000,
                                         with_states=True))[2]

    async def scenario():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert await states(conn) == await layer_states(conn)
            assert tile_render.STATES_NAME in await _held(conn)
            assert await states(conn) == await layer_states(conn)  # executed, not prepared twice
            before = (await states(conn))["land_use"].access.sharing
            changed = "public" if before != "public" else "internal"
            with psycopg.connect(url, autocommit=True) as other:
                other.execute("UPDATE catalog.layers SET sharing = %s WHERE name = 'land_use'", (changed,))
            got = await states(conn)
            assert got["land_use"].access.sharing == changed and got == await layer_states(conn)
            await conn.execute("DEALLOCATE ALL")
            assert await states(conn) == await layer_states(conn)
            assert len(await _held(conn)) == 2  # the tile's statement and the states', each once

    asyncio.run(scenario())

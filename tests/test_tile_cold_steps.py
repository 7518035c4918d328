"""The steps a cold tile no longer repeats (issue #15: a cold tile <= 1.1x its bare statement),
each still giving what it gave: the pool takes a connection back at once (no reset task), the
prepared tile's query written as bytes is the query psycopg's ``sql`` composed, equal state
rows give the very states object, a layer plan is made once per spec, zoom and caller (and a
caller with another view gets its own), and a tile for a client without gzip is written
directly only while the app's middlewares inside the gate are the ones known to leave it alone.

The tile bytes and headers themselves are compared with the routers' answers in
tests/test_tile_fast_cold.py (which also checks that a miss answered to a client without gzip
is stored, compressed, after its answer)."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest
from psycopg import sql


def test_a_connection_given_back_is_in_the_pool_at_once_and_known_as_fresh(db_settings):
    """With psycopg_pool's ``reset=`` callback a connection went back through the pool's worker
    task (a later turn of the loop); now it is available as soon as ``putconn`` returns, and the
    connection check knows it was just used (no check round trip on its next checkout)."""
    from geobase.pool import ConnectionCheck, server_pool

    settings = db_settings.model_copy(update={"pool_min_size": 1, "pool_max_size": 1})

    async def run() -> None:
        checker = ConnectionCheck()
        pool = server_pool(settings, checker)
        await pool.open(wait=True)
        try:
            conn = await pool.getconn(timeout=5)
            assert pool.primary.get_stats()["pool_available"] == 0
            await pool.putconn(conn)
            assert pool.primary.get_stats()["pool_available"] == 1  # back before any other task ran
            assert conn in checker._returned
            again = await pool.getconn(timeout=5)
            assert again is conn
            await pool.putconn(again)
        finally:
            await pool.close()

    asyncio.run(run())


def test_the_prepared_tile_query_bytes_are_what_sql_composition_wrote(db_settings):
    """``_numbers`` and ``_head`` (geobase.tiles.render) against ``sql.Literal`` and
    ``sql.SQL("; ").join`` on a real connection, over the numbers tiles take and the odd ones."""
    from geobase.tiles import render

    rng = random.Random(15)
    values = [0.0, -0.0, 1.0, -1.0, 5e-324, -1e300, 20037508.342789244, -20037508.342789244,
              float("inf"), float("-inf"), 123456789.123456789]
    values += [rng.uniform(-2.1e7, 2.1e7) for _ in range(3000)]
    values += [rng.uniform(-1, 1) * 10 ** rng.randint(-40, 40) for _ in range(3000)]
    values += [float(c) for c in (110101, 430121, 659004, 1)]
    with psycopg.connect(db_settings.database_url) as conn:
        for v in values:
            assert render._numbers([v]) == sql.Literal(v).as_bytes(conn), v
        assert render._numbers(values[:20]) == sql.SQL(", ").join(sql.Literal(v) for v in values[:20]).as_bytes(conn)
        for timeout in (None, 0, 5000, 300000):
            for with_states in (False, True):
                parts = [sql.SQL("BEGIN")]
                if timeout:
                    parts.append(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{timeout}ms")))
                if with_states:  # the states statement each connection prepares beside the tile's
                    parts.append(sql.SQL("EXECUTE {}").format(sql.Identifier(render.STATES_NAME)))
                parts += [render._CUSTOM_PLAN, sql.SQL("EXECUTE x")]
                assert render._head(timeout, with_states) + b"EXECUTE x" == sql.SQL("; ").join(parts).as_bytes(conn)


def test_equal_state_rows_give_the_same_states_and_other_rows_new_ones():
    from geobase.catalog.state import states_from_rows

    rows = [("a", "planning", "public", None, 3, "g1", "open"), ("b", "forestry", "department", ["x"], None, None, None)]
    first = states_from_rows(rows)
    assert states_from_rows([tuple(r) for r in rows]) is first  # equal rows: the very object
    changed = states_from_rows([rows[0][:4] + (4,) + rows[0][5:], rows[1]])  # a new version of a
    assert changed is not first and changed["a"].current_version == 4 and first["a"].current_version == 3
    assert changed["b"] == first["b"]
    assert states_from_rows(rows) is not changed and states_from_rows(rows) == first


def test_a_layer_plan_is_made_once_per_spec_zoom_and_caller_and_each_caller_gets_its_view():
    from geobase.principal import PUBLIC, Principal
    from geobase.security import caller_view
    from geobase.settings import get_settings
    from geobase.specs import get_registry
    from geobase.tiles.mvt import plan_layer
    from geobase.tiles.plans import layer_plan

    registry = get_registry(get_settings())
    spec = registry.layers["land_use"]
    admin = Principal(name="root", department="admin", role="admin", key_id="k-admin")
    boxed = Principal(name="req", department="planning", role="viewer", key_id="k-box",
                      scope=frozenset({"land_use"}), bbox=(112.8, 28.0, 113.0, 28.2))
    for who in (PUBLIC, admin, boxed):
        for z in (12, 14, 16):
            plan = layer_plan(spec, registry, z, who)
            assert plan == plan_layer(spec, registry, z, *caller_view(who, spec)), (who, z)
            assert layer_plan(spec, registry, z, who) is plan  # made once
    assert layer_plan(spec, registry, 16, boxed).within == boxed.bbox
    assert layer_plan(spec, registry, 16, PUBLIC).within is None
    assert layer_plan(spec, registry, 16, PUBLIC) is not layer_plan(spec, registry, 16, admin)


@pytest.mark.parametrize("extra", [False, True])
def test_a_tile_for_a_client_without_gzip_is_written_directly_only_behind_known_middlewares(db_settings, extra):
    """The app as create_app builds it: written directly; with any other middleware inside the
    gate (one that might change such an answer): sent through the stack, as a route's answer."""
    from geobase.api.app import create_app
    from geobase.api.gate import Admission
    from geobase.api.tile_cold import ColdTiles

    app = create_app(db_settings)
    if extra:
        class Other:
            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                await self.app(scope, receive, send)

        # inside the gate: user_middleware is outermost first; the gate's index + 1 is inside it
        from starlette.middleware import Middleware

        from geobase.api.gate import GateMiddleware
        gate = next(i for i, m in enumerate(app.user_middleware) if m.cls is GateMiddleware)
        app.user_middleware.insert(gate + 1, Middleware(Other))
    admission = Admission(settings=app.state.settings, resolver=None, pool_getter=lambda: None)
    assert ColdTiles(app, admission).identity_direct is (not extra)

"""Recomputing the indicators when layers get new versions: the queue of published versions
(``catalog.indicator_pending``) processed in commit order, one transaction per version.

The stored values reflect one set of layer versions (``catalog.indicator_state``). A queued
version of a layer the indicators read moves that layer forward by one version:

* incremental (the usual case, the layer's previous version is the state's): only the townships
  whose pieces meet a row the version added or retired are touched, and each of their terms
  changes by the m² of the added rows minus the retired ones (geobase/indicators/compute.py).
  The cost follows the change, not the county (bench/bench_indicators.py);
* full: the first run, changed definitions (their fingerprint), a new version of the township
  layer or of a raster (the DEM), or a gap in the versions: every township computed from the rows.

The county's value is made from the sum of its townships' terms (they tile it). Each touched
(indicator, division) gets a value row with the versions it came from and the version that
caused it, then its thresholds are checked (geobase/indicators/warnings.py). Processing holds a
session advisory lock, so two workers never process the same version.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from geobase.catalog import indicators as cat
from geobase.indicators.compute import Change, Context, divisions, term_m2, township_pieces
from geobase.indicators.spec import DIVISIONS_LAYER, Indicator, Term, fingerprint
from geobase.indicators.warnings import evaluate
from geobase.specs import Registry

LOCK = sql.SQL("hashtextextended('geobase:indicators', 0)")


def dependencies(indicators: dict[str, Indicator]) -> set[str]:
    return {layer for ind in indicators.values() for layer in ind.layers}


def distinct_terms(indicators: dict[str, Indicator], layer: str | None = None) -> list[Term]:
    """Each term once (indicators share terms: farmland is in three), of ``layer`` when given."""
    seen: dict[str, Term] = {}
    for ind in indicators.values():
        for t in ind.terms:
            if layer is None or layer in t.layers:
                seen.setdefault(t.key, t)
    return list(seen.values())


def _rows(indicators: dict[str, Indicator], parts: dict[str, dict[str, float]], divs: dict[str, dict],
          only: set[str] | None = None) -> list[dict]:
    """Value rows of every indicator (of ``only``) for the townships in ``parts`` and their
    counties (parts summed over the county's townships)."""
    county_parts: dict[str, dict[str, float]] = {}
    for code, p in parts.items():
        acc = county_parts.setdefault(code[:6], {})
        for k, m2 in p.items():
            acc[k] = acc.get(k, 0.0) + m2
    out = []
    for ind in indicators.values():
        if only is not None and ind.id not in only:
            continue
        keys = [t.key for t in ind.terms]
        for level, table in (("township", parts), ("county", county_parts)):
            if level not in ind.model.applies_to:
                continue
            for code, p in sorted(table.items()):
                if divs.get(code, {}).get("level", level) != level:
                    continue
                mine = {k: p.get(k, 0.0) for k in keys}
                out.append({"indicator": ind.id, "division": code, "parts": mine, "value": ind.value(mine)})
    return out


async def full(ctx: Context, indicators: dict[str, Indicator], cause: tuple[str, int] | None) -> list[dict]:
    """Every indicator of every township (and county) from the rows as of ``ctx.versions``."""
    divs = await divisions(ctx)
    towns = await township_pieces(ctx, None)
    parts: dict[str, dict[str, float]] = {code: {} for code in towns}
    for term in distinct_terms(indicators):
        for code, m2 in (await term_m2(ctx, term)).items():
            parts.setdefault(code, {})[term.key] = m2
    rows = _rows(indicators, parts, divs)
    await cat.insert_values(ctx.conn, rows, ctx.versions, cause)
    return rows


async def incremental(ctx: Context, indicators: dict[str, Indicator], change: Change) -> list[dict] | None:
    """The indicators reading ``change.layer`` for the townships the change touches, each term
    corrected by the change; None when a touched division has no stored value to correct."""
    towns = await township_pieces(ctx, change)
    if not towns:
        return []
    divs = await divisions(ctx)
    counties = sorted({c[:6] for c in towns})
    latest = await cat.latest_values(ctx.conn, towns + counties)
    affected = {i for i, ind in indicators.items() if change.layer in ind.layers}
    delta: dict[str, dict[str, float]] = {code: {} for code in towns}
    for term in distinct_terms(indicators, change.layer):
        plus, minus = await term_m2(ctx, term, change, 1), await term_m2(ctx, term, change, -1)
        for code in towns:
            delta[code][term.key] = plus.get(code, 0.0) - minus.get(code, 0.0)
    parts: dict[str, dict[str, float]] = {}
    for code in towns:
        p: dict[str, float] = {}
        for i in affected:
            old = latest.get((i, code))
            if old is None:
                return None
            p.update(old["parts"])
        parts[code] = {k: m2 + delta[code].get(k, 0.0) for k, m2 in p.items()}
    rows = [r for r in _rows(indicators, parts, divs, affected) if len(r["division"]) != 6]
    for county in counties:  # the county: its stored parts plus the change of its touched townships
        for i in affected:
            old = latest.get((i, county))
            if old is None or "county" not in indicators[i].model.applies_to:
                continue
            p = {k: m2 + sum(delta[c].get(k, 0.0) for c in towns if c[:6] == county) for k, m2 in old["parts"].items()}
            rows.append({"indicator": i, "division": county, "parts": p, "value": indicators[i].value(p)})
    await cat.insert_values(ctx.conn, rows, ctx.versions, (change.layer, change.v2))
    return rows


async def _apply(ctx: Context, indicators: dict[str, Indicator], item: tuple[int, str, int], fp: str) -> dict:
    """One queued version, in the caller's transaction: values, warnings, state, done."""
    _, layer, v = item
    prev = ctx.versions.get(layer)
    ctx.versions = {**ctx.versions, layer: v}
    change = Change(layer, prev, v) if prev is not None else None
    rows = None
    kind = "full"
    if change is not None and layer != DIVISIONS_LAYER and ctx.registry.layers[layer].kind != "raster" \
            and prev == v - 1:
        rows = await incremental(ctx, indicators, change)
        kind = "incremental"
    if rows is None:
        rows, kind, change = await full(ctx, indicators, (layer, v)), "full", None
    await evaluate(ctx, indicators, rows, (layer, v), change)
    await cat.set_state(ctx.conn, ctx.versions, fp)
    return {"layer": layer, "version": v, "kind": kind, "divisions": sorted({r["division"] for r in rows})}


async def waiting_for(conn: psycopg.AsyncConnection, registry: Registry) -> str | None:
    """Why nothing can be computed yet (None: it can): every indicator is a value per township,
    so without a loaded township layer there is nothing to compute, which is a state to report
    (``/indicators`` ``status``, the job's message), not a failure to log every poll."""
    if DIVISIONS_LAYER not in registry.layers:
        return f"waiting for a township layer: no layer {DIVISIONS_LAYER!r} is declared; nothing computed"
    if not await cat.current_versions(conn, [DIVISIONS_LAYER]):
        return f"waiting for a township layer: {DIVISIONS_LAYER!r} has no loaded version; nothing computed"
    return None


async def process(conn: psycopg.AsyncConnection, registry: Registry, indicators: dict[str, Indicator],
                  data_path=None) -> dict:
    """Process every queued version (``conn`` in autocommit); ``{"busy": True}`` when another
    worker holds the lock, ``{"waiting": why}`` when there are no townships to compute for (the
    queue is left as it is: the first full run after the township layer arrives covers it).
    Returns what was done, version by version."""
    why = await waiting_for(conn, registry)
    if why is not None:
        return {"busy": False, "waiting": why, "steps": []}
    cur = await conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(LOCK))
    if not (await cur.fetchone())[0]:
        return {"busy": True, "steps": []}
    try:
        return {"busy": False, "steps": await _drain(conn, registry, indicators, data_path)}
    finally:
        await conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(LOCK))


async def _drain(conn: psycopg.AsyncConnection, registry: Registry, indicators: dict[str, Indicator],
                 data_path) -> list[dict]:
    fp, deps = fingerprint(indicators), dependencies(indicators)
    steps: list[dict] = []
    while True:
        async with conn.transaction():
            items = await cat.pending(conn)
            st = await cat.state(conn)
            if st is None or st[1] != fp:  # first run or new definitions: everything from the current versions
                versions = await cat.current_versions(conn, sorted(deps))
                ctx = Context(conn, registry, versions, data_path)
                rows = await full(ctx, indicators, None)
                await evaluate(ctx, indicators, rows, None, None)
                await cat.set_state(conn, versions, fp)
                await cat.mark_done(conn, [i for i, _, v in items])
                steps.append({"kind": "full", "versions": versions, "divisions": sorted({r["division"] for r in rows})})
                continue
        if not items:
            return steps
        for item in items:
            async with conn.transaction():
                versions = (await cat.state(conn))[0]
                if item[1] in deps and versions.get(item[1], 0) < item[2]:
                    ctx = Context(conn, registry, dict(versions), data_path)
                    steps.append(await _apply(ctx, indicators, item, fp))
                await cat.mark_done(conn, [item[0]])

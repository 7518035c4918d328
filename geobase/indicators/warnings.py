"""Threshold crossings: a value against its division's target raises a red or yellow warning,
and a later value back within the target clears it (geobase/catalog/indicators.py stores both
and an event for each, which the warning stream pushes to subscribers).

A warning names the indicator, the division, the value and the target, the layer version that
caused it and the parcels that moved it: the features that version added or retired in the
division on the side of the indicator's definition that changed (a warning raised by a target
import or a full recompute has no such parcels). One warning is open per indicator and division:
a change of level clears the open one and raises a new one.
"""

from __future__ import annotations

from psycopg import sql

from geobase.catalog import indicators as cat
from geobase.indicators.compute import PIECES, Change, Context, moved_parcels
from geobase.indicators.spec import Indicator, Thresholds

#: relative slack of the comparisons (areas summed in another order differ in the last digits)
EPS = 1e-9


def level(value: float | None, target: float | None, th: Thresholds | None) -> str | None:
    """``red``, ``yellow`` or None for a value against its target (see layers/indicators/*.yaml)."""
    if value is None or target is None or th is None:
        return None
    slack = EPS * max(1.0, abs(target))
    if th.direction == "at_least":
        return "red" if value < th.red * target - slack else "yellow" if value < th.yellow * target - slack else None
    return "red" if value > th.red * target + slack else "yellow" if value > th.yellow * target + slack else None


async def _parcels(ctx: Context, ind: Indicator, change: Change | None, division: str) -> list[dict]:
    if change is None:
        return []
    out: list[dict] = []
    codes = [division] if len(division) > 6 else None
    for term in ind.terms:
        if change.layer not in (term.layer, term.zone_layer):
            continue
        for code in codes or await _towns(ctx, division):
            for p in await moved_parcels(ctx, term, change, code):
                if p not in out:
                    out.append({**p, "division": code} if codes is None else p)
    return out[:100]


async def _towns(ctx: Context, county: str) -> list[str]:
    cur = await ctx.conn.execute(sql.SQL("SELECT DISTINCT code FROM {} WHERE starts_with(code, %s)").format(PIECES),
                                 (county,))
    return [r[0] for r in await cur.fetchall()]


async def evaluate(ctx: Context, indicators: dict[str, Indicator], rows: list[dict], cause: tuple[str, int] | None,
                   change: Change | None) -> list[dict]:
    """Raise and clear warnings for the value rows just stored; returns what changed."""
    targets = await cat.targets(ctx.conn)
    open_ = await cat.open_warnings(ctx.conn)
    changed = []
    for r in rows:
        ind = indicators[r["indicator"]]
        key = (r["indicator"], r["division"])
        target = targets.get(key)
        new = level(r["value"], target, ind.model.thresholds)
        was = open_.get(key)
        if was is not None and was["level"] == new:
            continue
        if was is not None:
            await cat.clear_warning(ctx.conn, was["id"], value=r["value"], cause=cause)
            changed.append({"cleared": was["id"], **r})
        if new is not None:
            parcels = await _parcels(ctx, ind, change, r["division"])
            wid = await cat.raise_warning(ctx.conn, indicator=ind.id, division=r["division"], level=new,
                                          value=r["value"], target=target, cause=cause, versions=ctx.versions,
                                          parcels=parcels)
            changed.append({"raised": wid, "level": new, **r})
    return changed

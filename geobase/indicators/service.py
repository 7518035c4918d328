"""What the API, the CLI and the dashboard read: the indicators a caller may see, their values by
division and version (the time series with the target and the level), the warnings, and the
CSV of a series.

Who sees what: an indicator is an aggregate of the layers it reads, so it is shown only to a
caller who may read every one of them and every attribute its filters use
(:mod:`geobase.security`); a warning only with its indicator. The public sees the indicators
over public layers.
"""

from __future__ import annotations

import csv
import io

import psycopg

from geobase.catalog import indicators as cat
from geobase.errors import NotFound
from geobase.indicators import engine
from geobase.indicators.compute import Context, divisions
from geobase.indicators.spec import Indicator
from geobase.indicators.warnings import level
from geobase.security import hidden_attributes, visible_layers
from geobase.specs import Registry


async def visible(conn: psycopg.AsyncConnection, principal, registry: Registry,
                  indicators: dict[str, Indicator]) -> dict[str, Indicator]:
    """The indicators the caller may see (every layer readable, no filter on a masked attribute)."""
    specs = {s.name: s for s in await visible_layers(conn, principal, registry)}
    out = {}
    for i, ind in indicators.items():
        if not ind.layers <= set(specs):
            continue
        masked = False
        for t in ind.terms:
            for layer, which in ((t.layer, "where"), (t.zone_layer, "zone")):
                if layer and set(t.filter(which)) & hidden_attributes(principal, specs[layer]):
                    masked = True
        if not masked:
            out[i] = ind
    return out


def require(indicators: dict[str, Indicator], indicator_id: str) -> Indicator:
    ind = indicators.get(indicator_id)
    if ind is None:
        raise NotFound(f"no indicator {indicator_id!r} (GET /indicators lists them)", parameter="indicatorId")
    return ind


async def _divisions(conn: psycopg.AsyncConnection, registry: Registry, indicators: dict[str, Indicator]) -> dict:
    versions = await cat.current_versions(conn, sorted(engine.dependencies(indicators)))
    return await divisions(Context(conn, registry, versions))


async def overview(conn: psycopg.AsyncConnection, registry: Registry, indicators: dict[str, Indicator]) -> dict:
    """Every indicator with its latest value, target and level per division."""
    latest = await cat.latest_values(conn)
    targets = await cat.targets(conn)
    open_ = await cat.open_warnings(conn)
    divs = await _divisions(conn, registry, indicators)
    out = []
    for ind in indicators.values():
        values = []
        for code, info in divs.items():
            if info["level"] not in ind.model.applies_to:
                continue
            v = latest.get((ind.id, code))
            t = targets.get((ind.id, code))
            values.append({"division": code, "name": info["name"], "level": info["level"],
                           "value": v["value"] if v else None, "target": t,
                           "status": level(v["value"] if v else None, t, ind.model.thresholds),
                           "warning": (open_.get((ind.id, code)) or {}).get("id")})
        out.append({**ind.document(), "values": values})
    st = await cat.state(conn)
    # what a reader of an empty list needs to know: waiting for townships, or not yet computed
    status = await engine.waiting_for(conn, registry) or ("computed" if st else "not computed yet")
    return {"indicators": out, "versions": st[0] if st else None, "status": status,
            "divisions": [{"code": c, **i} for c, i in divs.items()]}


async def detail(conn: psycopg.AsyncConnection, registry: Registry, indicators: dict[str, Indicator],
                 indicator_id: str, division: str | None = None) -> dict:
    """One indicator: per division its series (value, versions, the version that caused it)
    with the target and the level of the latest value."""
    ind = require(indicators, indicator_id)
    divs = await _divisions(conn, registry, indicators)
    if division is not None and division not in divs:
        raise NotFound(f"no division {division!r}", parameter="division")
    targets = await cat.targets(conn, ind.id)
    by_div: dict[str, list] = {}
    for row in await cat.series(conn, ind.id, division):
        by_div.setdefault(row["division"], []).append(row)
    out = []
    for code, info in divs.items():
        if (division and code != division) or info["level"] not in ind.model.applies_to:
            continue
        s = by_div.get(code, [])
        target = targets.get((ind.id, code))
        latest = s[-1]["value"] if s else None
        out.append({"division": code, "name": info["name"], "level": info["level"], "target": target,
                    "value": latest, "status": level(latest, target, ind.model.thresholds),
                    "series": [{"seq": r["seq"], "value": r["value"], "versions": r["versions"],
                                "cause": {"layer": r["cause_layer"], "version": r["cause_version"]}
                                if r["cause_layer"] else None,
                                "computed_at": r["computed_at"].isoformat()} for r in s]})
    return {**ind.document(), "divisions": out}


def detail_csv(doc: dict) -> str:
    """The series of :func:`detail` as one CSV table (a row per division and value), with the
    UTF-8 byte order mark Excel needs to read Chinese names."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["indicator", "name_zh", "unit", "division", "division_name", "level", "seq", "value", "target",
                "cause_layer", "cause_version", "versions", "computed_at"])
    for d in doc["divisions"]:
        for r in d["series"]:
            cause = r["cause"] or {}
            w.writerow([doc["id"], doc["name_zh"], doc["unit"], d["division"], d["name"], d["level"], r["seq"],
                        "" if r["value"] is None else repr(round(r["value"], 6)), "" if d["target"] is None
                        else d["target"], cause.get("layer") or "", cause.get("version") or "",
                        ";".join(f"{k}={v}" for k, v in sorted(r["versions"].items())), r["computed_at"]])
    return "\ufeff" + buf.getvalue()


async def warning_list(conn: psycopg.AsyncConnection, indicators: dict[str, Indicator], *,
                       status: str | None = None, division: str | None = None) -> list[dict]:
    """Warnings of the indicators given (the caller's), newest first, with names and units."""
    out = []
    for w in await cat.warnings(conn, status=status, division=division):
        ind = indicators.get(w["indicator"])
        if ind is None:
            continue
        out.append(warning_doc(w, ind))
    return out


def warning_doc(w: dict, ind: Indicator) -> dict:
    doc = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in w.items()}
    doc.update({"name_zh": ind.model.name_zh, "name_en": ind.model.name_en, "unit": ind.model.unit,
                "cause": {"layer": w["cause_layer"], "version": w["cause_version"]} if w["cause_layer"] else None})
    return doc

"""Planning targets (规划目标) per indicator and division, imported from a CSV table an admin
keeps in Excel: columns ``indicator``, ``division``, ``target`` (in the indicator's unit; an
optional ``unit`` column must then agree).

All or nothing: every row is checked first (a known indicator; a division of the township layer
at the level the indicator applies to; a finite number >= 0; no row twice) and the first
problem is an error naming its row, so a half-imported table never drives the warnings. After
an import the stored values are checked against the new targets at once.
"""

from __future__ import annotations

import csv
import io
import math

import psycopg

from geobase.catalog import indicators as cat
from geobase.errors import InvalidInput
from geobase.indicators import engine
from geobase.indicators.compute import Context, divisions
from geobase.indicators.spec import Indicator
from geobase.indicators.warnings import evaluate
from geobase.specs import Registry

COLUMNS = ("indicator", "division", "target")
MAX_ROWS = 100_000


def parse(text: str) -> list[dict]:
    """The rows of a CSV text (UTF-8, an Excel BOM allowed), each with its line number."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InvalidInput(f"targets: the header lacks {', '.join(missing)} (columns: indicator,division,target)",
                           parameter="file")
    reader.fieldnames = header
    rows = []
    for n, row in enumerate(reader, start=2):
        if len(rows) >= MAX_ROWS:
            raise InvalidInput(f"targets: more than {MAX_ROWS} rows", parameter="file")
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        rows.append({"line": n, **{k: (row.get(k) or "").strip() for k in (*COLUMNS, "unit")}})
    return rows


def _check(rows: list[dict], indicators: dict[str, Indicator], divs: dict[str, dict]) -> list[tuple[str, str, float]]:
    out, seen = [], set()
    for r in rows:
        where = f"targets: row {r['line']}"
        ind = indicators.get(r["indicator"])
        if ind is None:
            raise InvalidInput(f"{where}: unknown indicator {r['indicator']!r}", parameter="file")
        div = divs.get(r["division"])
        if div is None:
            raise InvalidInput(f"{where}: unknown division {r['division']!r}", parameter="file")
        if div["level"] not in ind.model.applies_to:
            raise InvalidInput(f"{where}: {r['indicator']} does not apply to the {div['level']} {r['division']}",
                               parameter="file")
        if r["unit"] and r["unit"] != ind.model.unit:
            raise InvalidInput(f"{where}: unit {r['unit']!r}, but {r['indicator']} is in {ind.model.unit}",
                               parameter="file")
        try:
            target = float(r["target"])
        except ValueError:
            raise InvalidInput(f"{where}: target {r['target']!r} is not a number", parameter="file") from None
        if not math.isfinite(target) or target < 0:
            raise InvalidInput(f"{where}: target must be a finite number >= 0", parameter="file")
        if (ind.id, r["division"]) in seen:
            raise InvalidInput(f"{where}: {ind.id} of {r['division']} is given twice", parameter="file")
        seen.add((ind.id, r["division"]))
        out.append((ind.id, r["division"], target))
    if not out:
        raise InvalidInput("targets: the table has no rows", parameter="file")
    return out


async def import_targets(conn: psycopg.AsyncConnection, registry: Registry, indicators: dict[str, Indicator],
                         text: str, *, source: str, user: str) -> dict:
    """Check and store a target table (``conn`` in autocommit: one transaction here), then
    raise or clear warnings against the stored values. Returns counts."""
    rows = parse(text)
    async with conn.transaction():
        versions = await cat.current_versions(conn, sorted(engine.dependencies(indicators)))
        ctx = Context(conn, registry, versions)
        checked = _check(rows, indicators, await divisions(ctx))
        n = await cat.upsert_targets(conn, checked, source=source, user=user)
        st = await cat.state(conn)
        if st is not None:
            ctx.versions = st[0]
        latest = await cat.latest_values(conn)
        values = [{"indicator": i, "division": d, "value": v["value"], "parts": v["parts"]}
                  for (i, d), v in latest.items() if i in indicators]
        changed = await evaluate(ctx, indicators, values, None, None)
    return {"imported": n, "raised": sum(1 for c in changed if "raised" in c),
            "cleared": sum(1 for c in changed if "cleared" in c)}

"""Indicator recompute: all indicators for one changed township against the whole county.

Data: the scaled sample county (``ctx.county()``: ``ctx.parcels`` land-use parcels, six
townships, control lines, planning zones, water, the DEM) ingested with geobase's own ingest
into its own database on the bench cluster; the indicators of layers/indicators/*.yaml computed
once (untimed). Then a new land-use version made through the editing core (untimed): ``CHANGED``
farmland parcels of one township reclassified as construction land, as an annual change survey
or an edit session delivers it.

Measured in the same run, interleaved (full, incremental, one-township; ``ctx.rounds`` rounds),
each inside a transaction that is rolled back, so every round computes the same thing:
  * ours — the incremental recompute geobase runs for that version
    (geobase/indicators/engine.py ``incremental``): the townships the change touches, each term
    corrected by the m² of the rows the version added minus those it retired;
  * baseline — recomputing every indicator for the whole county from the rows
    (``engine.full``, what the first run and a new township layer do);
  * extra figure — recomputing every indicator for the one touched township from its rows (the
    obvious "only the changed division" approach), to show what correcting by the change adds.
The values of the incremental recompute are compared with the full one (largest relative
difference printed). Target: incremental <= 0.1x the whole county.
"""

from __future__ import annotations

import asyncio
import time

import psycopg
from common import Context, Result

DB = "geobase_bench_indicators"
TOWN = "339901003"
CHANGED = 20


def _load(ctx: Context, url: str) -> None:
    """Ingest the scaled county as delivered (its DLTB folder zipped once, as the sample's is)."""
    import zipfile

    from geobase.ingest.sample import ingest_sample_county

    county = ctx.county()
    files = county.parent / f"{county.name}-delivery"
    if not (files / "DLTB.zip").exists():
        files.mkdir(exist_ok=True)
        for f in county.iterdir():
            if f.is_file() and not (files / f.name).exists():
                (files / f.name).symlink_to(f)
        with zipfile.ZipFile(files / "DLTB.zip", "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted((county / "DLTB").iterdir()):
                z.write(f, f.name)
    settings = ctx.settings.model_copy(update={"database_url": url})
    ingest_sample_county(settings, echo=lambda *a, **k: print("bench:", *a, flush=True), directory=files)


def _change(settings, registry) -> int:
    """A new land-use version: CHANGED farmland parcels of TOWN become construction land."""
    from geobase.crs import parse_crs
    from geobase.editing.batch import apply_changes
    from geobase.editing.service import Actor

    with psycopg.connect(settings.database_url) as conn:
        keys = [r[0] for r in conn.execute("""
            SELECT x._key FROM data.land_use x JOIN data.admin_divisions t ON t._vto IS NULL AND t.xzqdm = %s
            WHERE x._vto IS NULL AND x.dlbm IN ('0101', '0102', '0103') AND ST_CoveredBy(x.geom, t.geom)
            ORDER BY x._key LIMIT %s""", (TOWN, CHANGED)).fetchall()]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "op": "update", "id": k, "properties": {"dlbm": "0601"}} for k in keys]}
    return apply_changes(settings, registry.layers["land_use"], registry, doc, message="bench change",
                         actor=Actor("bench", None, None, True), crs=parse_crs(None, "crs"))["version"]


async def _prepare(settings, registry, indicators) -> tuple[dict, int, int]:
    """(the versions the stored values are for, land use's version there, its changed version)."""
    from geobase.catalog import indicators as cat
    from geobase.indicators import engine

    async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        await engine.process(conn, registry, indicators, settings.data_path)  # whatever is queued
        versions = (await cat.state(conn))[0]
    return versions, versions["land_use"], _change(settings, registry)


def run(ctx: Context) -> None:
    from geobase.indicators.spec import get_indicators
    from geobase.specs import get_registry

    url = ctx.named_database(DB)
    settings = ctx.settings.model_copy(update={"database_url": url})
    t0 = time.perf_counter()
    _load(ctx, url)
    registry = get_registry(settings)
    indicators = get_indicators(registry)
    versions, v1, v2 = asyncio.run(_prepare(settings, registry, indicators))
    print(f"bench: county loaded and indicators computed in {time.perf_counter() - t0:.0f} s; "
          f"change land_use v{v1} -> v{v2}", flush=True)
    asyncio.run(_measure(ctx, settings, registry, indicators, versions, v1, v2))


async def _measure(ctx: Context, settings, registry, indicators, versions: dict, v1: int, v2: int) -> None:
    from geobase.indicators import engine
    from geobase.indicators.compute import Change, term_m2, township_pieces
    from geobase.indicators.compute import Context as Ctx

    change = Change("land_use", v1, v2)
    after = {**versions, "land_use": v2}
    got: dict = {}

    async def timed(fn) -> float:
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            start = time.perf_counter()
            rows = await fn(Ctx(conn, registry, dict(after), settings.data_path))
            elapsed = time.perf_counter() - start
            await conn.rollback()
        got[fn.__name__] = rows
        return elapsed

    async def whole_county(c):
        return await engine.full(c, indicators, ("land_use", v2))

    async def incremental(c):
        return await engine.incremental(c, indicators, change)

    async def one_township(c):
        towns = await township_pieces(c, change)
        return {t.key: await term_m2(c, t) for t in engine.distinct_terms(indicators)}, towns

    rounds = {"full": [], "incremental": [], "township": []}
    for _ in range(ctx.rounds):  # interleaved: a busy machine slows all three alike
        rounds["full"].append(await timed(whole_county))
        rounds["incremental"].append(await timed(incremental))
        rounds["township"].append(await timed(one_township))
    full = {(r["indicator"], r["division"]): r["value"] for r in got["whole_county"]}
    inc = {(r["indicator"], r["division"]): r["value"] for r in got["incremental"]}
    worst = max((abs(v - full[k]) / max(abs(full[k]), 1e-9) for k, v in inc.items()
                 if v is not None and full.get(k) is not None), default=0.0)
    touched = sorted({r["division"] for r in got["incremental"]})
    ctx.report(Result.rounds("indicators: recompute for one changed township (incremental)", rounds["incremental"],
                             rounds["full"], "whole county from the rows", "s",
                             extra={"changed_parcels": CHANGED, "divisions": touched, "indicators": len(indicators),
                                    "max_rel_diff_vs_full": worst, "target_ratio": 0.1}))
    ctx.report(Result.rounds("indicators: one township recomputed from its rows (not used; for comparison)",
                             rounds["township"], rounds["full"], "whole county from the rows", "s"))

"""Cross-department overlay analyses with their heavy work in PostGIS, next to the indexes:
site compliance check, layer x layer tabulation, plan conflicts, change between versions and
water buffers. (Slope x farmland lives in :mod:`geobase.analysis_slope`.)

Conventions (domain.md §6): layers are intersected in EPSG:4490; every piece's area is
ellipsoidal on the CGCS2000 ellipsoid (``ST_Area(geom::geography)``, or the stored ``_area_m2``
when a feature lies wholly inside the other geometry, which is the same number computed once at
ingest); pieces below the sliver threshold are dropped and their count and total reported;
areas are given in m², ha and mu. Input geometries are bound as WKB parameters, never
formatted into SQL; identifiers come from validated specs via ``psycopg.sql``.

All services take an open ``psycopg.AsyncConnection`` and the layer specs the caller may see
(``security.visible_layers``), so access control is decided by the caller once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from psycopg import sql

from geobase.analysis_rules import (
    ConflictRule,
    SiteRule,
    compile_filter,
    conflict_id,
    load_conflict_rules,
    load_site_rules,
    worst,
)
from geobase.errors import InvalidInput, NotFound
from geobase.geojson_text import GeoJSONText
from geobase.geometry_input import InputGeometry
from geobase.specs import LayerSpec, Registry
from geobase.storage import table_ident

MU_PER_M2 = 15 / 10_000


_CHECK_ONLY: ContextVar[bool] = ContextVar("geobase_analysis_check_only", default=False)


class InputsChecked(Exception):
    """Raised at an analysis's :func:`inputs_checked` point in check-only mode."""


def inputs_checked() -> None:
    """Each analysis calls this once it has validated every input and before it computes:
    in check-only mode (:func:`check_inputs`) it stops there. So an async job refuses bad
    input at submission (400) with the very checks the run makes, not after a 201."""
    if _CHECK_ONLY.get():
        raise InputsChecked()


async def check_inputs(run: Callable[[], Awaitable[Any]]) -> None:
    """Run an analysis up to its :func:`inputs_checked` point; its InvalidInput propagates."""
    token = _CHECK_ONLY.set(True)
    try:
        await run()
    except InputsChecked:
        pass
    finally:
        _CHECK_ONLY.reset(token)


def units(m2: float) -> dict:
    """An area in m², hectares and mu (1 mu = 10 000/15 m²), rounded only for display."""
    return {"m2": round(m2, 6), "ha": round(m2 / 10_000, 8), "mu": round(m2 * MU_PER_M2, 6)}


def _hidden(principal, spec: LayerSpec) -> set[str]:
    """The caller's masked attributes of a layer (no principal: the public's, failing closed)."""
    from geobase.security import PUBLIC, hidden_attributes

    return hidden_attributes(principal or PUBLIC, spec)


def _filter_readable(registry: Registry, principal, layer: str, flt: dict) -> bool:
    """Whether a declared rule's filter names only attributes this caller may read: a rule over
    a masked attribute would reveal it through its verdict, so it is reported not-evaluated."""
    spec = registry.layers.get(layer)
    return spec is not None and not (set(flt or {}) & _hidden(principal, spec))


def _area_col(spec: LayerSpec) -> sql.Composable:
    return sql.SQL("coalesce(t._area_m2, ST_Area(t.geom::geography))")


async def layer_versions(conn: psycopg.AsyncConnection, names: list[str]) -> dict[str, dict]:
    """Current version and its time of every layer used: part of every report."""
    cur = await conn.execute(
        """SELECT l.name, l.current_version, v.created_at, v.source_name
           FROM catalog.layers l LEFT JOIN catalog.layer_versions v
             ON v.layer = l.name AND v.version = l.current_version
           WHERE l.name = ANY(%s) ORDER BY l.name""", (names,))
    return {n: {"version": v, "created_at": c.isoformat() if c else None, "source": s}
            for n, v, c, s in await cur.fetchall()}


# ---------------------------------------------------------------------------------------------
# site compliance check
# ---------------------------------------------------------------------------------------------

def _class_info(codes: dict, code: str | None) -> dict:
    if code is None:
        return {}
    c = codes.get(code) or codes.get(code[:4])
    out = {"class": code, "class_name": c.zh if c else None}
    if c and c.group:
        out["group"] = c.group
        g = codes.get(c.group)
        out["group_name"] = g.zh if g else None
    if c and c.category:
        out["category"] = c.category
    return out


async def _site_pieces(conn, spec: LayerSpec, site_wkb: bytes, attrs: list[str],
                       flags: list[tuple[str, sql.Composable]] | None = None) -> list[dict]:
    """Pieces of the layer's current features inside the site; ``flags`` are (rule id, filter)
    pairs evaluated per feature in the same query, so coverage rules need no query of their own."""
    tbl = table_ident(spec)
    flags = flags or []
    flag_sql = sql.SQL("ARRAY[{}]::boolean[]").format(sql.SQL(", ").join(f for _, f in flags)) if flags \
        else sql.SQL("ARRAY[]::boolean[]")
    # attributes as plain columns (text, bigint, float8, boolean, date, timestamptz: JSON-ready in
    # Python); building a jsonb object per row cost more than the spatial predicates
    attr_cols = sql.SQL("").join(sql.SQL(", t.{}").format(sql.Identifier(a)) for a in attrs)
    polygonal = spec.geometry == "MultiPolygon"
    measure = (sql.SQL("CASE WHEN c.covered THEN coalesce(t._area_m2, ST_Area(t.geom::geography)) "
                       "ELSE ST_Area(p.piece::geography) END") if polygonal
               else sql.SQL("ST_Length(p.piece::geography)") if spec.geometry == "MultiLineString"
               else sql.SQL("0"))
    extract = sql.SQL("3" if polygonal else "2" if spec.geometry == "MultiLineString" else "1")
    q = sql.SQL("""
        WITH site AS (SELECT ST_GeomFromWKB(%(g)s, 4490) AS g)
        SELECT t._key, ST_AsGeoJSON(p.piece, 15), {measure}, {flags}{attrs}
        FROM {tbl} t CROSS JOIN site
        CROSS JOIN LATERAL (SELECT ST_Covers(site.g, t.geom) AS covered) c
        CROSS JOIN LATERAL (SELECT CASE WHEN c.covered THEN t.geom
                                   ELSE ST_CollectionExtract(ST_Intersection(t.geom, site.g), {ex}) END AS piece) p
        WHERE t._vto IS NULL AND ST_Intersects(t.geom, site.g)
        ORDER BY t._key
    """).format(attrs=attr_cols, measure=measure, tbl=tbl, ex=extract, flags=flag_sql)
    cur = await conn.execute(q, {"g": site_wkb})
    rows = await cur.fetchall()
    flag_ids = [rid for rid, _ in flags]
    # thousands of pieces: the geometries are not parsed at all (GeoJSONText is written out
    # verbatim and parsed only by a consumer that draws or measures them)
    return [{"key": r[0], "attributes": dict(zip(attrs, r[4:])),
             "geometry": GeoJSONText(r[1]) if r[1] else None, "measure": float(r[2] or 0),
             "rules": [rid for rid, hit in zip(flag_ids, r[3]) if hit] if any(r[3]) else []}
            for r in rows]


async def _rule_result(conn, registry: Registry, rule: SiteRule, site: InputGeometry, sliver: float) -> dict:
    spec = registry.layers[rule.layer]
    flt = compile_filter(registry, rule.layer, rule.filter, "t", f"rule {rule.id}")
    tbl = table_ident(spec)
    if rule.mode == "overlap" and spec.coverage:
        # a coverage has no overlaps: the offending area is the sum of the pieces (covered
        # features use their stored area); their geometries are the layer's pieces
        q = sql.SQL("""
            WITH site AS (SELECT ST_GeomFromWKB(%(g)s, 4490) AS g)
            SELECT coalesce(sum(CASE WHEN ST_Covers(site.g, t.geom) THEN coalesce(t._area_m2, ST_Area(t.geom::geography))
                                     ELSE ST_Area(ST_Intersection(t.geom, site.g)::geography) END), 0),
                   array_agg(t._key ORDER BY t._key), NULL::text
            FROM {tbl} t CROSS JOIN site
            WHERE t._vto IS NULL AND ST_Intersects(t.geom, site.g) AND {flt}
        """).format(tbl=tbl, flt=flt)
    elif rule.mode == "overlap":
        q = sql.SQL("""
            WITH site AS (SELECT ST_GeomFromWKB(%(g)s, 4490) AS g),
            m AS (SELECT t._key, ST_CollectionExtract(ST_Intersection(t.geom, site.g), 3) AS piece
                  FROM {tbl} t CROSS JOIN site
                  WHERE t._vto IS NULL AND ST_Intersects(t.geom, site.g) AND {flt}),
            u AS (SELECT ST_Union(piece) AS g, array_agg(_key ORDER BY _key) AS keys FROM m)
            SELECT coalesce(ST_Area(u.g::geography), 0), u.keys, ST_AsGeoJSON(u.g, 15, 0) FROM u
        """).format(tbl=tbl, flt=flt)
    else:
        q = sql.SQL("""
            WITH site AS (SELECT ST_GeomFromWKB(%(g)s, 4490) AS g),
            inside AS (SELECT ST_Union(t.geom) AS g, array_agg(t._key ORDER BY t._key) AS keys
                       FROM {tbl} t CROSS JOIN site
                       WHERE t._vto IS NULL AND ST_Intersects(t.geom, site.g) AND {flt}),
            d AS (SELECT CASE WHEN inside.g IS NULL THEN site.g
                              ELSE ST_CollectionExtract(ST_Difference(site.g, inside.g), 3) END AS g, inside.keys
                  FROM site, inside)
            SELECT coalesce(ST_Area(d.g::geography), 0), d.keys, ST_AsGeoJSON(d.g, 15, 0) FROM d
        """).format(tbl=tbl, flt=flt)
    cur = await conn.execute(q, {"g": site.wkb})
    area, keys, gj = await cur.fetchone()
    return _rule_from_pieces(rule, site, sliver, float(area or 0),
                             list(keys or []) if rule.mode == "overlap" else [], geojson=gj)


def _rule_from_pieces(rule: SiteRule, site: InputGeometry, sliver: float, area: float, keys: list[str],
                      geojson: str | None = None) -> dict:
    """One rule's verdict from its offending area; the geometry is kept only when the rule fires."""
    threshold = rule.min_area_m2 if rule.min_area_m2 is not None else sliver
    fired = area > threshold
    return {
        "id": rule.id, "title": rule.title.model_dump(), "layer": rule.layer, "mode": rule.mode,
        "verdict": rule.verdict if fired else "ok", "fires_as": rule.verdict,
        "area": units(area), "share": round(area / site.area_m2, 6) if site.area_m2 else None,
        "features": keys, "geometry": json.loads(geojson) if fired and geojson else None,
        "note": rule.note if fired else None,
        "below_threshold": (not fired and area > 0),
    }


@asynccontextmanager
async def interactive_snapshot(conn: psycopg.AsyncConnection):
    """All the queries of an interactive analysis in one read-only snapshot (the report's
    versions and pieces agree even when an ingest commits meanwhile), without parallel
    workers: a worker process must first load PostGIS and look up the CGCS2000 spheroid,
    which made a site check's pieces query half again as slow as running it alone."""
    own = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    async with conn.transaction():
        if own:  # must be the transaction's first statement; a caller's transaction keeps its own
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await conn.execute("SELECT set_config('max_parallel_workers_per_gather', '0', true)")
        yield


HIDDEN_RULE_REASON = "needs data this caller may not see"


async def site_check(conn: psycopg.AsyncConnection, registry: Registry, visible: list[LayerSpec],
                     site: InputGeometry, **options) -> dict:
    """Check a site against every visible vector layer and the declared rules (see
    :func:`_site_check`), in one snapshot (:func:`interactive_snapshot`)."""
    async with interactive_snapshot(conn):
        return await _site_check(conn, registry, visible, site, **options)


async def _site_check(conn: psycopg.AsyncConnection, registry: Registry, visible: list[LayerSpec],
                      site: InputGeometry, *, sliver_m2: float = 1.0, project_type: str = "construction",
                      layers: list[str] | None = None, rules: list[SiteRule] | None = None,
                      principal=None) -> dict:
    """Check a site against every visible vector layer and the declared rules.

    ``visible`` are the layers the caller may see; rules over other layers are reported as
    ``not-evaluated`` (so a public caller never learns what a hidden layer holds)."""
    vis = {s.name: s for s in visible if s.kind == "vector"}
    if layers:
        unknown = [n for n in layers if n not in vis]
        if unknown:
            raise InvalidInput(f"layers: unknown or not visible layers {unknown}", parameter="layers")
        vis = {n: vis[n] for n in layers}
    rules = rules if rules is not None else load_site_rules(registry)
    inputs_checked()
    versions = await layer_versions(conn, sorted(vis))
    used = {n: s for n, s in vis.items() if versions.get(n, {}).get("version") is not None}
    from geobase.security import PUBLIC, hidden_attributes

    principal = principal or PUBLIC

    out_layers: dict[str, Any] = {}
    dropped = {"count": 0, "m2": 0.0}
    from_pieces: dict[str, tuple[float, list[str]]] = {}  # coverage overlap rules, from the pieces
    for name, spec in sorted(used.items()):
        attrs = [a for a in spec.attribute_names if a not in hidden_attributes(principal, spec)]
        flags = [(r.id, compile_filter(registry, name, r.filter, "t", f"rule {r.id}")) for r in rules
                 if r.layer == name and r.mode == "overlap" and spec.coverage
                 and _filter_readable(registry, principal, name, r.filter)]
        pieces = await _site_pieces(conn, spec, site.wkb, attrs, flags)
        for rid, _ in flags:
            hits = [p for p in pieces if rid in p["rules"]]
            from_pieces[rid] = (sum(p["measure"] for p in hits), sorted(p["key"] for p in hits))
        kept = []
        codes = (registry.codes_for(spec, spec.class_field) or {}) if spec.class_field else {}
        for p in pieces:
            p.pop("rules", None)
            if spec.geometry == "MultiPolygon" and p["measure"] < sliver_m2:
                dropped["count"] += 1
                dropped["m2"] += p["measure"]
                continue
            code = p["attributes"].get(spec.class_field) if spec.class_field else None
            if spec.class_field:
                p.update(_class_info(codes, code))
            kept.append(p)
        out_layers[name] = _summarise_layer(spec, kept, site.area_m2)
    rule_results = []
    may_see = {s.name for s in visible}
    for r in rules:
        if r.layer not in may_see or not _filter_readable(registry, principal, r.layer, r.filter):
            # say the check is incomplete without naming the hidden layer (or masked attribute)
            rule_results.append({"id": r.id, "title": r.title.model_dump(), "verdict": "not-evaluated",
                                 "fires_as": r.verdict, "reason": HIDDEN_RULE_REASON})
            continue
        if r.layer not in used:
            rule_results.append({"id": r.id, "title": r.title.model_dump(), "layer": r.layer,
                                 "verdict": "not-evaluated", "fires_as": r.verdict,
                                 "reason": f"layer {r.layer!r} was not checked or has no data"})
            continue
        if r.applies_to and project_type not in r.applies_to:
            rule_results.append({"id": r.id, "title": r.title.model_dump(), "layer": r.layer,
                                 "verdict": "ok", "fires_as": r.verdict,
                                 "reason": f"applies to {r.applies_to}, not to project type {project_type!r}"})
            continue
        if r.id in from_pieces:
            rule_results.append(_rule_from_pieces(r, site, sliver_m2, *from_pieces[r.id]))
            continue
        rule_results.append(await _rule_result(conn, registry, r, site, sliver_m2))
    evaluated = worst([r["verdict"] for r in rule_results])
    complete, summary = verdict_summary(rule_results, evaluated)
    return {
        "analysis": "site-check",
        "site": {"area": units(site.area_m2), "vertices": site.vertices, "input_crs": site.source_crs,
                 "repaired": site.repaired, "geometry": site.geojson},
        "project_type": project_type,
        # a verdict from part of the rules says so first: never "needs-approval" while rules were skipped
        "complete": complete,
        "verdict": evaluated if complete else "incomplete",
        "summary": summary,
        "verdict_of_evaluated_rules": evaluated,
        "not_evaluated": [r["id"] for r in rule_results if r["verdict"] == "not-evaluated"],
        "rules": rule_results,
        "layers": out_layers,
        "slivers_dropped": {"count": dropped["count"], **units(dropped["m2"]), "threshold_m2": sliver_m2},
        "versions": {n: versions[n] for n in sorted(used)},
    }


def verdict_summary(rule_results: list[dict], evaluated: str) -> tuple[bool, str]:
    """Whether every rule was evaluated, and the one line that heads every output format:
    the verdict, or "incomplete: N rules need data you may not see" (and why the others were
    skipped) with what the evaluated rules say, so a partial verdict never reads as final."""
    skipped = [r for r in rule_results if r["verdict"] == "not-evaluated"]
    if not skipped:
        return True, evaluated
    hidden = sum(1 for r in skipped if r.get("reason") == HIDDEN_RULE_REASON)
    reasons = []
    if hidden:
        reasons.append(f"{hidden} rule{'s' if hidden != 1 else ''} need{'s' if hidden == 1 else ''} "
                       "data you may not see")
    if len(skipped) > hidden:
        n = len(skipped) - hidden
        reasons.append(f"{n} rule{'s' if n != 1 else ''} not checked (layer not selected or without data)")
    done = len(rule_results) - len(skipped)
    tail = (f"; the {done} evaluated rule{'s' if done != 1 else ''} of {len(rule_results)} give{'s' if done == 1 else ''} "
            f"{evaluated}" if done else f"; none of the {len(rule_results)} rules was evaluated")
    return False, "incomplete: " + ", ".join(reasons) + tail


def _summarise_layer(spec: LayerSpec, pieces: list[dict], site_m2: float) -> dict:
    polygonal = spec.geometry == "MultiPolygon"
    total = sum(p["measure"] for p in pieces)
    by: dict[str, dict[str, float]] = {"class": {}, "group": {}, "category": {}}
    names: dict[str, str | None] = {}
    for p in pieces:
        for level in ("class", "group", "category"):
            code = p.get(level)
            if code is not None:
                by[level][code] = by[level].get(code, 0.0) + p["measure"]
        if p.get("class"):
            names[p["class"]] = p.get("class_name")
        if p.get("group"):
            names[p["group"]] = p.get("group_name")
    def table(d: dict[str, float]) -> list[dict]:
        rows = []
        for code, m2 in sorted(d.items()):
            row = {"code": code, "name": names.get(code)}
            if polygonal:
                row.update(units(m2))
                row["share"] = round(m2 / site_m2, 6) if site_m2 else None
            else:
                row["length_m"] = round(m2, 3)
            rows.append(row)
        return rows

    for p in pieces:  # in place: thousands of pieces per site
        if polygonal:
            p["area"] = units(p["measure"])
        else:
            p["length_m"] = round(p["measure"], 3)
    summary = {"class_field": spec.class_field, "geometry": spec.geometry, "features": len(pieces),
               "by_class": table(by["class"]), "pieces": pieces}
    if by["group"]:
        summary["by_group"] = table(by["group"])
    if by["category"]:
        summary["by_category"] = table(by["category"])
    if polygonal:
        summary["total"] = units(total)
        summary["share"] = round(total / site_m2, 6) if site_m2 else None
    else:
        summary["total_length_m"] = round(total, 3)
    return summary


# ---------------------------------------------------------------------------------------------
# area of interest and tabulation
# ---------------------------------------------------------------------------------------------

async def aoi_from_code(conn: psycopg.AsyncConnection, code: str) -> tuple[bytes, float, str]:
    """WKB, area and name of an administrative division (township or county) by its code."""
    if not code.isdigit() or len(code) not in (6, 9, 12):
        raise InvalidInput(f"aoi: {code!r} is not a 6/9/12-digit division code", parameter="aoi")
    cur = await conn.execute(
        """SELECT ST_AsBinary(ST_Union(geom)), ST_Area(ST_Union(geom)::geography), min(xzqmc)
           FROM data.admin_divisions WHERE _vto IS NULL AND xzqdm = %s""", (code,))
    wkb, area, name = await cur.fetchone()
    if wkb is None:
        raise InvalidInput(f"aoi: no administrative division with code {code!r}", parameter="aoi")
    return bytes(wkb), float(area), name


def _class_column(registry: Registry, spec: LayerSpec, field: str | None, parameter: str, principal=None) -> str:
    """The field to group by: the named one or the layer's class field, if the caller may read
    it (security.require_field: the same check as items' properties and sortby)."""
    from geobase.security import require_field

    field = field or spec.class_field
    if not field:
        raise InvalidInput(f"{parameter}: layer {spec.name!r} has no class field; name one", parameter=parameter)
    return require_field(spec, field, parameter, hidden=_hidden(principal, spec))


def tabulate_sql(a: LayerSpec, fa: str, b: LayerSpec, fb: str, *, with_aoi: bool,
                 part: tuple[int, int] | None = None, part_on: str = "b") -> sql.Composed:
    """Areas by class of A x class of B.

    Speed comes from three things: (1) a feature wholly covered by the other skips
    ST_Intersection and uses its precomputed ``_area_m2``; (2) the few large features (zones)
    drive the nested loop with the many small ones (parcels) found through their GiST index, so
    consecutive ST_Intersects/ST_Covers calls share the same large geometry and PostGIS reuses
    its prepared (indexed) form instead of rescanning 1,000s of vertices per pair; (3) ``part`` =
    (k, n) splits the work by ``mod(<part_on>._rid, n)`` over several connections — on the
    large-feature side, which keeps the good join order in every part."""
    alias = sql.Identifier(part_on)
    part_sql = sql.SQL("AND mod({}._rid, {n}) = {k}").format(alias, n=sql.Literal(part[1]), k=sql.Literal(part[0])) \
        if part else sql.SQL("")
    if not with_aoi:
        return sql.SQL("""
            SELECT a.{fa}::text, b.{fb}::text, sum(
                CASE WHEN ST_Covers(b.geom, a.geom) THEN coalesce(a._area_m2, ST_Area(a.geom::geography))
                     WHEN ST_Covers(a.geom, b.geom) THEN coalesce(b._area_m2, ST_Area(b.geom::geography))
                     ELSE ST_Area(ST_Intersection(a.geom, b.geom)::geography) END), count(*)
            FROM {ta} a JOIN {tb} b ON ST_Intersects(a.geom, b.geom) AND b._vto IS NULL
            WHERE a._vto IS NULL {part}
            GROUP BY 1, 2 ORDER BY 1, 2
        """).format(fa=sql.Identifier(fa), fb=sql.Identifier(fb), ta=table_ident(a), tb=table_ident(b), part=part_sql)
    return sql.SQL("""
        WITH aoi AS (SELECT ST_GeomFromWKB(%(aoi)s, 4490) AS g)
        SELECT a.{fa}::text, b.{fb}::text, sum(
            CASE WHEN ST_Covers(aoi.g, a.geom) AND ST_Covers(b.geom, a.geom) THEN coalesce(a._area_m2, ST_Area(a.geom::geography))
                 WHEN ST_Covers(aoi.g, a.geom) THEN ST_Area(ST_Intersection(a.geom, b.geom)::geography)
                 ELSE ST_Area(ST_Intersection(ST_Intersection(a.geom, aoi.g), b.geom)::geography) END), count(*)
        FROM aoi, {ta} a JOIN {tb} b ON ST_Intersects(a.geom, b.geom) AND b._vto IS NULL
        WHERE a._vto IS NULL AND ST_Intersects(a.geom, aoi.g) AND ST_Intersects(b.geom, aoi.g) {part}
        GROUP BY 1, 2 ORDER BY 1, 2
    """).format(fa=sql.Identifier(fa), fb=sql.Identifier(fb), ta=table_ident(a), tb=table_ident(b), part=part_sql)


async def _row_estimate(conn: psycopg.AsyncConnection, spec: LayerSpec) -> float:
    cur = await conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (f"data.{spec.name}",))
    row = await cur.fetchone()
    return float(row[0]) if row else 0.0


async def tabulate(conn: psycopg.AsyncConnection, registry: Registry, visible: list[LayerSpec], layer_a: str,
                   layer_b: str, *, class_a: str | None = None, class_b: str | None = None,
                   aoi: InputGeometry | None = None, aoi_code: str | None = None,
                   conninfo: str | None = None, workers: int = 1, principal=None) -> dict:
    """Areas by class of ``layer_a`` x class of ``layer_b`` within an area of interest (a
    division code, a polygon, or the whole county when neither is given)."""
    vis = {s.name: s for s in visible}
    for p, n in (("layer_a", layer_a), ("layer_b", layer_b)):
        if n not in vis or vis[n].geometry != "MultiPolygon":
            raise InvalidInput(f"{p}: unknown, hidden or non-polygon layer {n!r}", parameter=p)
    a, b = vis[layer_a], vis[layer_b]
    fa = _class_column(registry, a, class_a, "class_a", principal)
    fb = _class_column(registry, b, class_b, "class_b", principal)
    aoi_info: dict[str, Any]
    if aoi_code:
        wkb, aoi_m2, name = await aoi_from_code(conn, aoi_code)
        aoi_info = {"code": aoi_code, "name": name, "area": units(aoi_m2)}
    elif aoi is not None:
        wkb, aoi_m2 = aoi.wkb, aoi.area_m2
        aoi_info = {"geometry": aoi.geojson, "area": units(aoi_m2), "input_crs": aoi.source_crs}
    else:
        wkb, aoi_m2 = None, None
        aoi_info = {"whole": True}
    inputs_checked()
    params = {"aoi": wkb} if wkb is not None else None
    rows: list[tuple] = []
    if workers > 1 and conninfo:
        import asyncio

        part_on = "b" if await _row_estimate(conn, b) <= await _row_estimate(conn, a) else "a"

        async def run_part(k: int) -> list[tuple]:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as c2:
                await c2.execute("SET max_parallel_workers_per_gather = 0")
                q = tabulate_sql(a, fa, b, fb, with_aoi=wkb is not None, part=(k, workers), part_on=part_on)
                cur = await c2.execute(q, params)
                return await cur.fetchall()
        for part_rows in await asyncio.gather(*(run_part(k) for k in range(workers))):
            rows.extend(part_rows)
    else:
        cur = await conn.execute(tabulate_sql(a, fa, b, fb, with_aoi=wkb is not None), params)
        rows = await cur.fetchall()
    cells: dict[tuple[str, str], list[float]] = {}
    for ca, cb, m2, n in rows:
        if float(m2 or 0) <= 1e-6:  # features that only touch along an edge
            continue
        acc = cells.setdefault((ca, cb), [0.0, 0])
        acc[0] += float(m2 or 0)
        acc[1] += int(n)
    total = sum(v[0] for v in cells.values())
    if aoi_m2 is None:
        cur = await conn.execute(sql.SQL("SELECT sum(coalesce(_area_m2, ST_Area(geom::geography))) FROM {} "
                                         "WHERE _vto IS NULL").format(table_ident(a)))
        aoi_m2 = float((await cur.fetchone())[0] or 0)
        aoi_info["area"] = units(aoi_m2)
        aoi_info["area_source"] = f"sum of {layer_a} areas"
    row_tot: dict[str, float] = {}
    col_tot: dict[str, float] = {}
    for (ca, cb), (m2, _) in cells.items():
        row_tot[ca] = row_tot.get(ca, 0.0) + m2
        col_tot[cb] = col_tot.get(cb, 0.0) + m2
    versions = await layer_versions(conn, [layer_a, layer_b])
    return {
        "analysis": "tabulate",
        "layer_a": {"name": layer_a, "class_field": fa}, "layer_b": {"name": layer_b, "class_field": fb},
        "aoi": aoi_info,
        "cells": [{"a": ca, "b": cb, **units(v[0]), "pieces": v[1]} for (ca, cb), v in sorted(cells.items())],
        "totals_a": [{"a": k, **units(v)} for k, v in sorted(row_tot.items())],
        "totals_b": [{"b": k, **units(v)} for k, v in sorted(col_tot.items())],
        "total": units(total),
        "coverage_of_aoi": round(total / aoi_m2, 8) if aoi_m2 else None,
        "versions": versions,
    }


# ---------------------------------------------------------------------------------------------
# plan conflicts
# ---------------------------------------------------------------------------------------------

async def conflicts(conn: psycopg.AsyncConnection, registry: Registry, visible: list[LayerSpec], *,
                    sliver_m2: float = 1.0, rule_ids: list[str] | None = None,
                    aoi: InputGeometry | None = None, rules: list[ConflictRule] | None = None,
                    progress=None, principal=None) -> dict:
    """Conflict patches of the declared rules for the whole county (or an AOI)."""
    rules = rules if rules is not None else load_conflict_rules(registry)
    if rule_ids:
        known = {r.id for r in rules}
        unknown = [r for r in rule_ids if r not in known]
        if unknown:
            raise InvalidInput(f"rules: unknown conflict rules {unknown} (known: {sorted(known)})",
                               parameter="rules")
        rules = [r for r in rules if r.id in rule_ids]
    vis = {s.name: s for s in visible}
    inputs_checked()
    out_rules, patches = [], []
    for i, r in enumerate(rules):
        if r.a.layer not in vis or r.b.layer not in vis or not (
                _filter_readable(registry, principal, r.a.layer, r.a.filter)
                and _filter_readable(registry, principal, r.b.layer, r.b.filter)):
            out_rules.append({"id": r.id, "title": r.title.model_dump(), "status": "not-evaluated",
                              "reason": "a layer of this rule is not available to this caller"})
            continue
        sa, sb = vis[r.a.layer], vis[r.b.layer]
        fa = compile_filter(registry, r.a.layer, r.a.filter, "a", f"rule {r.id}")
        fb = compile_filter(registry, r.b.layer, r.b.filter, "b", f"rule {r.id}")
        same = sql.SQL("AND a._rid <> b._rid") if r.a.layer == r.b.layer else sql.SQL("")
        aoi_sql = sql.SQL("AND ST_Intersects(a.geom, ST_GeomFromWKB(%(aoi)s, 4490))") if aoi else sql.SQL("")
        piece = (sql.SQL("ST_CollectionExtract(ST_Intersection(ST_Intersection(a.geom, b.geom), "
                         "ST_GeomFromWKB(%(aoi)s, 4490)), 3)") if aoi
                 else sql.SQL("ST_CollectionExtract(ST_Intersection(a.geom, b.geom), 3)"))
        q = sql.SQL("""
            SELECT a._key, b._key, {ca}, {cb}, ST_AsGeoJSON(p.g, 15, 0), ST_Area(p.g::geography)
            FROM {ta} a JOIN {tb} b ON ST_Intersects(a.geom, b.geom) AND b._vto IS NULL {same}
            CROSS JOIN LATERAL (SELECT {piece} AS g) p
            WHERE a._vto IS NULL AND {fa} AND {fb} {aoi}
            ORDER BY a._key, b._key
        """).format(ca=_readable_column(principal, sa, sa.class_field or sa.source_key[0], "a"),
                    cb=_readable_column(principal, sb, sb.class_field or sb.source_key[0], "b"),
                    ta=table_ident(sa), tb=table_ident(sb), same=same, piece=piece, fa=fa, fb=fb, aoi=aoi_sql)
        cur = await conn.execute(q, {"aoi": aoi.wkb} if aoi else None)
        threshold = r.min_area_m2 if r.min_area_m2 is not None else sliver_m2
        kept, dropped_n, dropped_m2 = [], 0, 0.0
        for ka, kb, cla, clb, gj, m2 in await cur.fetchall():
            m2 = float(m2 or 0)
            if m2 < threshold:
                dropped_n += 1
                dropped_m2 += m2
                continue
            keys = [f"{r.a.layer}:{ka}", f"{r.b.layer}:{kb}"]
            kept.append({"id": conflict_id(r.id, keys), "rule": r.id, "a": {"layer": r.a.layer, "key": ka, "class": cla},
                         "b": {"layer": r.b.layer, "key": kb, "class": clb}, "area": units(m2),
                         "geometry": json.loads(gj) if gj else None})
        patches.extend(kept)
        out_rules.append({"id": r.id, "title": r.title.model_dump(), "status": "evaluated", "patches": len(kept),
                          "area": units(sum(p["area"]["m2"] for p in kept)),
                          "slivers_dropped": {"count": dropped_n, **units(dropped_m2), "threshold_m2": threshold}})
        if progress:
            await progress((i + 1) / len(rules), f"rule {r.id}: {len(kept)} patches")
    used = sorted({r.a.layer for r in rules} | {r.b.layer for r in rules})
    return {"analysis": "conflicts", "rules": out_rules, "patches": patches,
            "total": units(sum(p["area"]["m2"] for p in patches)),
            "versions": await layer_versions(conn, [u for u in used if u in vis])}


# ---------------------------------------------------------------------------------------------
# change between two versions
# ---------------------------------------------------------------------------------------------

async def change(conn: psycopg.AsyncConnection, registry: Registry, visible: list[LayerSpec], layer: str,
                 v1: int, v2: int, *, class_field: str | None = None, sliver_m2: float = 1.0,
                 principal=None) -> dict:
    """Transition matrix of areas between classes from version ``v1`` to ``v2`` of a layer,
    intersecting the retired rows of v1 with the new rows of v2 (unchanged features are the
    same row in both versions and cannot contribute), plus the area that left each class
    without a successor (``removed``: deleted parcels, shrunk edges) and the area that entered
    it from nowhere (``added``).

    The books balance per class: area(v1, c) + sum(transitions into c) - sum(transitions out
    of c) - removed(c) + added(c) = area(v2, c) (``net_by_class``), to a micro-m², because
    ``removed``/``added`` are the retired/new area of the class minus its transitions, figured
    on the same rounded numbers the answer shows. Every intersection counts in the matrix;
    slivers below ``sliver_m2`` are left out of ``changed_patches`` (the drawable pieces) only."""
    vis = {s.name: s for s in visible}
    if layer not in vis or vis[layer].geometry != "MultiPolygon":
        raise InvalidInput(f"layer: unknown, hidden or non-polygon layer {layer!r}", parameter="layer")
    spec = vis[layer]
    field = _class_column(registry, spec, class_field, "class_field", principal)
    cur = await conn.execute("SELECT version FROM catalog.layer_versions WHERE layer = %s ORDER BY version", (layer,))
    have = [r[0] for r in await cur.fetchall()]
    for p, v in (("v1", v1), ("v2", v2)):
        if v not in have:
            raise InvalidInput(f"{p}: layer {layer!r} has no version {v} (versions: {have})", parameter=p)
    if v1 >= v2:
        raise InvalidInput(f"v2: must be later than v1 ({v1} >= {v2})", parameter="v2")
    inputs_checked()
    old = sql.SQL("o._vfrom <= {v1} AND (o._vto IS NOT NULL AND o._vto > {v1} AND o._vto <= {v2})").format(
        v1=sql.Literal(v1), v2=sql.Literal(v2))
    new = sql.SQL("n._vfrom > {v1} AND n._vfrom <= {v2} AND (n._vto IS NULL OR n._vto > {v2})").format(
        v1=sql.Literal(v1), v2=sql.Literal(v2))
    q = sql.SQL("""
        SELECT o._key, n._key, o.{f}::text, n.{f}::text, ST_AsGeoJSON(p.g, 15, 0), ST_Area(p.g::geography)
        FROM {t} o JOIN {t} n ON ST_Intersects(o.geom, n.geom)
        CROSS JOIN LATERAL (SELECT ST_CollectionExtract(ST_Intersection(o.geom, n.geom), 3) AS g) p
        WHERE {old} AND {new}
        ORDER BY o._key, n._key
    """).format(f=sql.Identifier(field), t=table_ident(spec), old=old, new=new)
    # one read-only snapshot for the matrix and the retired/new areas: the balance must not mix versions
    own = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    async with conn.transaction():
        if own:  # a caller's transaction keeps its own snapshot
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur = await conn.execute(q)
        rows = await cur.fetchall()
        sides: dict[str, dict[str, list[float]]] = {}
        for side, cond, alias in (("retired", old, "o"), ("new", new, "n")):
            cur = await conn.execute(sql.SQL("SELECT {a}.{f}::text, ST_Area({a}.geom::geography) FROM {t} {a} WHERE {c}")
                                     .format(a=sql.Identifier(alias), f=sql.Identifier(field), t=table_ident(spec),
                                             c=cond))
            per: dict[str, list[float]] = {}
            for c, m2 in await cur.fetchall():
                per.setdefault(c, []).append(float(m2 or 0))
            sides[side] = per
    pieces: dict[tuple[str, str], list[float]] = {}
    patches = []
    dropped = [0, 0.0]
    for ko, kn, co, cn, gj, m2 in rows:
        m2 = float(m2 or 0)
        pieces.setdefault((co, cn), []).append(m2)
        if m2 < sliver_m2:
            dropped[0] += 1
            dropped[1] += m2
            continue
        if co != cn:
            patches.append({"from": {"key": ko, "class": co}, "to": {"key": kn, "class": cn},
                            "area": units(m2), "geometry": json.loads(gj) if gj else None})
    matrix = {k: math.fsum(v) for k, v in pieces.items()}
    codes = registry.codes_for(spec, field) or {}

    def grp(c):
        code = codes.get(c) or codes.get((c or "")[:4])
        return code.group if code and code.group else c

    def r6(x: float) -> float:
        return round(x, 6)

    # removed/added: the retired (new) area of a class not accounted for by its transitions,
    # on the rounded figures the answer shows, so that summing the answer balances exactly
    shown = {k: r6(m2) for k, m2 in matrix.items()}
    classes = sorted(set(sides["retired"]) | set(sides["new"]) | {c for k in matrix for c in k}, key=str)
    removed, added = {}, {}
    for c in classes:
        retired = r6(math.fsum(sides["retired"].get(c, [])))
        new_ = r6(math.fsum(sides["new"].get(c, [])))
        removed[c] = r6(retired - math.fsum(m2 for (a, _), m2 in shown.items() if a == c))
        added[c] = r6(new_ - math.fsum(m2 for (_, b), m2 in shown.items() if b == c))
    net = {c: r6(math.fsum([m2 for (a, b), m2 in shown.items() if b == c]) - math.fsum(
        [m2 for (a, b), m2 in shown.items() if a == c]) - removed[c] + added[c]) for c in classes}

    def by_group(per: dict) -> list[dict]:
        g: dict[str, list[float]] = {}
        for c, m2 in per.items():
            g.setdefault(grp(c), []).append(m2)
        return [{"class": k, **units(math.fsum(v))} for k, v in sorted(g.items(), key=lambda kv: str(kv[0]))]

    groups: dict[tuple[str, str], list[float]] = {}
    for (co, cn), m2 in shown.items():
        groups.setdefault((grp(co), grp(cn)), []).append(m2)
    return {"analysis": "change", "layer": layer, "class_field": field, "v1": v1, "v2": v2,
            "transitions": [{"from": a, "to": b, **units(m2)} for (a, b), m2 in sorted(shown.items(), key=str)],
            "transitions_by_group": [{"from": a, "to": b, **units(math.fsum(v))}
                                     for (a, b), v in sorted(groups.items(), key=str)],
            "removed": [{"class": c, **units(removed[c])} for c in classes],
            "added": [{"class": c, **units(added[c])} for c in classes],
            "removed_by_group": by_group(removed),
            "added_by_group": by_group(added),
            "net_by_class": [{"class": c, **units(net[c])} for c in classes],
            "balance": "area(v1, class) + transitions into it - transitions out of it - removed + added = "
                       "area(v2, class); net_by_class is that difference",
            "changed_patches": patches,
            "changed_area": units(math.fsum(m2 for (a, b), m2 in matrix.items() if a != b)),
            "slivers_dropped": {"count": dropped[0], **units(dropped[1]), "threshold_m2": sliver_m2,
                                "note": "left out of changed_patches only; the matrix counts every piece"}}


# ---------------------------------------------------------------------------------------------
# water buffers
# ---------------------------------------------------------------------------------------------

async def buffer(conn: psycopg.AsyncConnection, registry: Registry, visible: list[LayerSpec], *, layer: str,
                 distance_m: float, water_layers: list[str] | None = None, aoi: InputGeometry | None = None,
                 filter: dict | None = None, limit: int = 100_000, principal=None) -> dict:
    """Features of ``layer`` within ``distance_m`` (true ellipsoidal distance) of water bodies,
    with the minimum distance and the area inside each water body's protected band."""
    if not (0 < distance_m <= 10_000):
        raise InvalidInput("distance_m: must be > 0 and <= 10000 metres", parameter="distance_m")
    water_layers = water_layers or ["rivers", "water_areas"]
    vis = {s.name: s for s in visible}
    if layer not in vis or vis[layer].kind != "vector":
        raise InvalidInput(f"layer: unknown or hidden layer {layer!r}", parameter="layer")
    spec = vis[layer]
    flt = compile_filter(registry, layer, filter or {}, "t", "filter", hidden=_hidden(principal, spec))
    for w in water_layers:  # all of them before any query (and before a job is accepted)
        if w not in vis:
            raise InvalidInput(f"water_layers: unknown or hidden layer {w!r}", parameter="water_layers")
    inputs_checked()
    # geometry prefilter in degrees, conservative up to 56°N (1° of longitude >= 62 km there),
    # so the GiST index narrows the candidates before the exact geography test
    deg = distance_m / 62_000.0
    results, totals = [], {}
    for w in water_layers:
        if w not in vis:
            raise InvalidInput(f"water_layers: unknown or hidden layer {w!r}", parameter="water_layers")
        ws = vis[w]
        name_col = _readable_column(principal, ws, "name", "w")
        code_col = _readable_column(principal, ws, "water_code", "w")
        cls = _readable_column(principal, spec, spec.class_field, "t")
        aoi_sql = sql.SQL("AND ST_Intersects(t.geom, ST_GeomFromWKB(%(aoi)s, 4490))") if aoi else sql.SQL("")
        band_area = (sql.SQL("ST_Area(ST_Intersection(t.geom, ST_SetSRID(ST_Buffer(w.geom::geography, %(d)s)::geometry, 4490))::geography)")
                     if spec.geometry == "MultiPolygon" else sql.SQL("NULL::float8"))
        q = sql.SQL("""
            SELECT t._key, {cls}, w._key, {name}, {code}, ST_Distance(t.geom::geography, w.geom::geography), {band}
            FROM {tt} t JOIN {tw} w ON ST_DWithin(t.geom, w.geom, %(deg)s) AND w._vto IS NULL
            WHERE t._vto IS NULL AND {flt} {aoi}
              AND ST_DWithin(t.geom::geography, w.geom::geography, %(d)s)
            ORDER BY t._key, w._key LIMIT %(limit)s
        """).format(cls=cls, name=name_col, code=code_col, band=band_area, tt=table_ident(spec), tw=table_ident(ws),
                    flt=flt, aoi=aoi_sql)
        params = {"d": float(distance_m), "deg": deg, "limit": int(limit)}
        if aoi:
            params["aoi"] = aoi.wkb
        cur = await conn.execute(q, params)
        n, band_total = 0, 0.0
        for key, c, wkey, wname, wcode, dist, band in await cur.fetchall():
            n += 1
            band_total += float(band or 0)
            results.append({"key": key, "class": c, "water_layer": w, "water_key": wkey, "water_name": wname,
                            "water_code": wcode, "distance_m": round(float(dist), 3),
                            "area_in_band": units(float(band)) if band is not None else None})
        totals[w] = {"features": n, "area_in_band": units(band_total)}
    return {"analysis": "buffer", "layer": layer, "distance_m": distance_m, "water_layers": water_layers,
            "features": results, "totals": totals,
            "versions": await layer_versions(conn, [layer, *water_layers])}


def _readable_column(principal, spec: LayerSpec, name: str | None, alias: str | None = None) -> sql.Composable:
    """An output column of a report, or NULL when the layer lacks it or it is masked for the caller."""
    if not name or name not in spec.attribute_names or name in _hidden(principal, spec):
        return sql.SQL("NULL::text")
    ident = sql.Identifier(alias, name) if alias else sql.Identifier(name)
    return sql.SQL("{}::text").format(ident)


def require_visible(visible: list[LayerSpec], name: str, registry: Registry | None = None) -> LayerSpec:
    for s in visible:
        if s.name == name:
            return s
    if isinstance(name, str) and (registry is None or name in registry.layers):
        from geobase.security import note_denied

        note_denied(name)  # audited as read.denied when it names a real layer hidden from the caller
    raise NotFound(f"layer {name!r} not found", parameter="layer")

"""Plan conflicts (多规合一): the patches where two layers' declared uses contradict each other
(``layers/rules/conflicts.yaml``), county-wide or within an area of interest.

Conventions: see :mod:`geobase.analysis.common`."""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from geobase.analysis.common import (
    Progress,
    filter_readable,
    inputs_checked,
    layer_versions,
    qualified_layers,
    readable_column,
    units,
)
from geobase.analysis.input import InputGeometry
from geobase.analysis.rules import ConflictRule, compile_filter, conflict_id, load_conflict_rules
from geobase.errors import InvalidInput
from geobase.features.ids import id_sql
from geobase.specs import LayerSpec, Registry
from geobase.storage import current_filter, table_ident


async def conflicts(conn: psycopg.AsyncConnection, registry: Registry, visible: list[LayerSpec], *,
                    sliver_m2: float = 1.0, rule_ids: list[str] | None = None,
                    aoi: InputGeometry | None = None, rules: list[ConflictRule] | None = None,
                    progress: Progress | None = None, principal=None) -> dict:
    """Conflict patches of the declared rules for the whole county (or an AOI); ``progress``
    hears (rules done, rules in all, message) after each rule."""
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
    # features named by the id the Features API gives them (bare keys in a county's database)
    qualified = await qualified_layers(conn, [vis[n] for n in sorted({x.layer for r in rules for x in (r.a, r.b)})
                                              if n in vis])
    out_rules, patches = [], []
    for i, r in enumerate(rules):
        if r.a.layer not in vis or r.b.layer not in vis or not (
                filter_readable(registry, principal, r.a.layer, r.a.filter)
                and filter_readable(registry, principal, r.b.layer, r.b.filter)):
            out_rules.append({"id": r.id, "title": r.title.model_dump(), "status": "not-evaluated",
                              "reason": "a layer of this rule is not available to this caller"})
            continue
        entry, kept = await _rule_patches(conn, registry, r, vis[r.a.layer], vis[r.b.layer], aoi, sliver_m2,
                                          principal, qualified)
        patches.extend(kept)
        out_rules.append(entry)
        if progress:
            await progress(i + 1, len(rules), f"rule {r.id}: {len(kept)} patches")
    used = sorted({r.a.layer for r in rules} | {r.b.layer for r in rules})
    return {"analysis": "conflicts", "rules": out_rules, "patches": patches,
            "total": units(sum(p["area"]["m2"] for p in patches)),
            "versions": await layer_versions(conn, [u for u in used if u in vis])}


async def _rule_patches(conn: psycopg.AsyncConnection, registry: Registry, r: ConflictRule, sa: LayerSpec,
                        sb: LayerSpec, aoi: InputGeometry | None, sliver_m2: float, principal,
                        qualified: dict[str, bool]) -> tuple[dict, list[dict]]:
    """One rule's report entry and its patches above the rule's sliver threshold, each side's
    feature by its id (``qualified``: :func:`qualified_layers`)."""
    fa = compile_filter(registry, r.a.layer, r.a.filter, "a", f"rule {r.id}")
    fb = compile_filter(registry, r.b.layer, r.b.filter, "b", f"rule {r.id}")
    same = sql.SQL("AND a._rid <> b._rid") if r.a.layer == r.b.layer else sql.SQL("")
    aoi_sql = sql.SQL("AND ST_Intersects(a.geom, ST_GeomFromWKB(%(aoi)s, 4490))") if aoi else sql.SQL("")
    piece = (sql.SQL("ST_CollectionExtract(ST_Intersection(ST_Intersection(a.geom, b.geom), "
                     "ST_GeomFromWKB(%(aoi)s, 4490)), 3)") if aoi
             else sql.SQL("ST_CollectionExtract(ST_Intersection(a.geom, b.geom), 3)"))
    q = sql.SQL("""
        SELECT {ida}, {idb}, {ca}, {cb}, ST_AsGeoJSON(p.g, 15, 0), ST_Area(p.g::geography)
        FROM {ta} a JOIN {tb} b ON ST_Intersects(a.geom, b.geom) AND {cur_b} {same}
        CROSS JOIN LATERAL (SELECT {piece} AS g) p
        WHERE {cur_a} AND {fa} AND {fb} {aoi}
        ORDER BY 1, 2
    """).format(ida=id_sql(qualified[sa.name], "a"), idb=id_sql(qualified[sb.name], "b"), ca=readable_column(principal, sa, sa.class_field or sa.source_key[0], "a"),
                cb=readable_column(principal, sb, sb.class_field or sb.source_key[0], "b"),
                ta=table_ident(sa), tb=table_ident(sb), same=same, piece=piece, fa=fa, fb=fb, aoi=aoi_sql,
                cur_a=current_filter("a"), cur_b=current_filter("b"))
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
    entry = {"id": r.id, "title": r.title.model_dump(), "status": "evaluated", "patches": len(kept),
             "area": units(sum(p["area"]["m2"] for p in kept)),
             "slivers_dropped": {"count": dropped_n, **units(dropped_m2), "threshold_m2": threshold}}
    return entry, kept

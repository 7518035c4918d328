"""Site compliance check: a project red line against every visible vector layer (its pieces
per layer and class, in m², ha and mu) and against the declared site rules
(``layers/rules/site_check.yaml``), with one verdict that says when it is incomplete.

Conventions: see :mod:`geobase.analysis.common`."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from geobase.analysis.common import (
    feature_ids,
    filter_readable,
    hidden,
    inputs_checked,
    interactive_snapshot,
    layer_versions,
    units,
)
from geobase.analysis.input import InputGeometry
from geobase.analysis.rules import SiteRule, compile_filter, load_site_rules, worst
from geobase.errors import InvalidInput
from geobase.geojson_text import GeoJSONText
from geobase.security import PUBLIC
from geobase.specs import LayerSpec, Registry
from geobase.storage import current_filter, table_ident

HIDDEN_RULE_REASON = "needs data this caller may not see"


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


async def _site_pieces(conn, spec: LayerSpec, site_wkb: bytes, attrs: list[str], fid: sql.Composable,
                       flags: list[tuple[str, sql.Composable]] | None = None) -> list[dict]:
    """Pieces of the layer's current features inside the site, each by its feature id
    (``fid``, :func:`feature_ids`); ``flags`` are (rule id, filter) pairs evaluated per feature in the
    same query, so coverage rules need no query of their own."""
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
        SELECT {fid}, ST_AsGeoJSON(p.piece, 15), {measure}, {flags}{attrs}
        FROM {tbl} t CROSS JOIN site
        CROSS JOIN LATERAL (SELECT ST_Covers(site.g, t.geom) AS covered) c
        CROSS JOIN LATERAL (SELECT CASE WHEN c.covered THEN t.geom
                                   ELSE ST_CollectionExtract(ST_Intersection(t.geom, site.g), {ex}) END AS piece) p
        WHERE {cur} AND ST_Intersects(t.geom, site.g)
        ORDER BY 1
    """).format(fid=fid, attrs=attr_cols, measure=measure, tbl=tbl, ex=extract, flags=flag_sql,
               cur=current_filter("t"))
    cur = await conn.execute(q, {"g": site_wkb})
    rows = await cur.fetchall()
    flag_ids = [rid for rid, _ in flags]
    # thousands of pieces: the geometries are not parsed at all (GeoJSONText is written out
    # verbatim and parsed only by a consumer that draws or measures them)
    return [{"key": r[0], "attributes": dict(zip(attrs, r[4:])),
             "geometry": GeoJSONText(r[1]) if r[1] else None, "measure": float(r[2] or 0),
             "rules": [rid for rid, hit in zip(flag_ids, r[3]) if hit] if any(r[3]) else []}
            for r in rows]


async def _rule_result(conn, registry: Registry, rule: SiteRule, site: InputGeometry, sliver: float,
                       fid: sql.Composable) -> dict:
    """One rule's result, its features named by their ids (``fid``, :func:`feature_ids`)."""
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
                   array_agg({fid} ORDER BY {fid}), NULL::text
            FROM {tbl} t CROSS JOIN site
            WHERE {cur} AND ST_Intersects(t.geom, site.g) AND {flt}
        """).format(fid=fid, tbl=tbl, flt=flt, cur=current_filter("t"))
    elif rule.mode == "overlap":
        q = sql.SQL("""
            WITH site AS (SELECT ST_GeomFromWKB(%(g)s, 4490) AS g),
            m AS (SELECT {fid} AS _key, ST_CollectionExtract(ST_Intersection(t.geom, site.g), 3) AS piece
                  FROM {tbl} t CROSS JOIN site
                  WHERE {cur} AND ST_Intersects(t.geom, site.g) AND {flt}),
            u AS (SELECT ST_Union(piece) AS g, array_agg(_key ORDER BY _key) AS keys FROM m)
            SELECT coalesce(ST_Area(u.g::geography), 0), u.keys, ST_AsGeoJSON(u.g, 15, 0) FROM u
        """).format(fid=fid, tbl=tbl, flt=flt, cur=current_filter("t"))
    else:
        q = sql.SQL("""
            WITH site AS (SELECT ST_GeomFromWKB(%(g)s, 4490) AS g),
            inside AS (SELECT ST_Union(t.geom) AS g, array_agg({fid} ORDER BY {fid}) AS keys
                       FROM {tbl} t CROSS JOIN site
                       WHERE {cur} AND ST_Intersects(t.geom, site.g) AND {flt}),
            d AS (SELECT CASE WHEN inside.g IS NULL THEN site.g
                              ELSE ST_CollectionExtract(ST_Difference(site.g, inside.g), 3) END AS g, inside.keys
                  FROM site, inside)
            SELECT coalesce(ST_Area(d.g::geography), 0), d.keys, ST_AsGeoJSON(d.g, 15, 0) FROM d
        """).format(fid=fid, tbl=tbl, flt=flt, cur=current_filter("t"))
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
    principal = principal or PUBLIC
    fids = await feature_ids(conn, list(used.values()), "t", versions)
    out_layers, dropped, from_pieces = await _layers_report(conn, registry, used, site, rules, sliver_m2, principal,
                                                            fids)
    rule_results = []
    may_see = {s.name for s in visible}
    for r in rules:
        skipped = _rule_skipped(registry, r, may_see, used, project_type, principal)
        if skipped is not None:
            rule_results.append(skipped)
        elif r.id in from_pieces:
            rule_results.append(_rule_from_pieces(r, site, sliver_m2, *from_pieces[r.id]))
        else:
            rule_results.append(await _rule_result(conn, registry, r, site, sliver_m2, fids[r.layer]))
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


async def _layers_report(conn: psycopg.AsyncConnection, registry: Registry, used: dict[str, LayerSpec],
                         site: InputGeometry, rules: list[SiteRule], sliver_m2: float, principal,
                         fids: dict[str, sql.Composable]) -> tuple[dict[str, Any], dict[str, float], dict[str, tuple[float, list[str]]]]:
    """The site's pieces of every used layer, summarised per layer; the slivers dropped; and the
    offending area and keys of coverage overlap rules, flagged per piece in the same query."""
    out_layers: dict[str, Any] = {}
    dropped = {"count": 0, "m2": 0.0}
    from_pieces: dict[str, tuple[float, list[str]]] = {}
    for name, spec in sorted(used.items()):
        attrs = [a for a in spec.attribute_names if a not in hidden(principal, spec)]
        flags = [(r.id, compile_filter(registry, name, r.filter, "t", f"rule {r.id}")) for r in rules
                 if r.layer == name and r.mode == "overlap" and spec.coverage
                 and filter_readable(registry, principal, name, r.filter)]
        pieces = await _site_pieces(conn, spec, site.wkb, attrs, fids[name], flags)
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
            if spec.class_field:
                p.update(_class_info(codes, p["attributes"].get(spec.class_field)))
            kept.append(p)
        out_layers[name] = _summarise_layer(spec, kept, site.area_m2)
    return out_layers, dropped, from_pieces


def _rule_skipped(registry: Registry, r: SiteRule, may_see: set[str], used: dict[str, LayerSpec],
                  project_type: str, principal) -> dict | None:
    """A rule's result when it is not computed (hidden data, layer without data, another project
    type); None when it is to be computed."""
    if r.layer not in may_see or not filter_readable(registry, principal, r.layer, r.filter):
        # say the check is incomplete without naming the hidden layer (or masked attribute)
        return {"id": r.id, "title": r.title.model_dump(), "verdict": "not-evaluated",
                "fires_as": r.verdict, "reason": HIDDEN_RULE_REASON}
    if r.layer not in used:
        return {"id": r.id, "title": r.title.model_dump(), "layer": r.layer,
                "verdict": "not-evaluated", "fires_as": r.verdict,
                "reason": f"layer {r.layer!r} was not checked or has no data"}
    if r.applies_to and project_type not in r.applies_to:
        return {"id": r.id, "title": r.title.model_dump(), "layer": r.layer,
                "verdict": "ok", "fires_as": r.verdict,
                "reason": f"applies to {r.applies_to}, not to project type {project_type!r}"}
    return None


def verdict_summary(rule_results: list[dict], evaluated: str) -> tuple[bool, str]:
    """Whether every rule was evaluated, and the one line that heads every output format:
    the verdict, or "incomplete: N rules need data you may not see" (and why the others were
    skipped) with what the evaluated rules say, so a partial verdict never reads as final."""
    skipped = [r for r in rule_results if r["verdict"] == "not-evaluated"]
    if not skipped:
        return True, evaluated
    n_hidden = sum(1 for r in skipped if r.get("reason") == HIDDEN_RULE_REASON)
    reasons = []
    if n_hidden:
        reasons.append(f"{n_hidden} rule{'s' if n_hidden != 1 else ''} need{'s' if n_hidden == 1 else ''} "
                       "data you may not see")
    if len(skipped) > n_hidden:
        n = len(skipped) - n_hidden
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


"""Change between two versions of a layer: the transition matrix of areas between classes, with
the area that left each class without a successor and the area that entered it from nowhere,
so that the books balance per class.

Conventions: see :mod:`geobase.analysis.common`."""

from __future__ import annotations

import json
import math

import psycopg
from psycopg import sql

from geobase.analysis.common import class_column, qualified_layers, inputs_checked, read_only_snapshot, units
from geobase.catalog import layers as layer_reads
from geobase.errors import InvalidInput
from geobase.features.ids import id_sql
from geobase.specs import LayerSpec, Registry
from geobase.storage import added_between, removed_between, table_ident


def _r6(x: float) -> float:
    return round(x, 6)


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
    field = class_column(registry, spec, class_field, "class_field", principal)
    have = list(await layer_reads.layer_versions(conn, layer))
    for p, v in (("v1", v1), ("v2", v2)):
        if v not in have:
            raise InvalidInput(f"{p}: layer {layer!r} has no version {v} (versions: {have})", parameter=p)
    if v1 >= v2:
        raise InvalidInput(f"v2: must be later than v1 ({v1} >= {v2})", parameter="v2")
    inputs_checked()
    rows, sides = await _change_rows(conn, spec, field, v1, v2)
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
    return {"analysis": "change", "layer": layer, "class_field": field, "v1": v1, "v2": v2,
            **_balance(registry, spec, field, matrix, sides),
            "balance": "area(v1, class) + transitions into it - transitions out of it - removed + added = "
                       "area(v2, class); net_by_class is that difference",
            "changed_patches": patches,
            "changed_area": units(math.fsum(m2 for (a, b), m2 in matrix.items() if a != b)),
            "slivers_dropped": {"count": dropped[0], **units(dropped[1]), "threshold_m2": sliver_m2,
                                "note": "left out of changed_patches only; the matrix counts every piece"}}


async def _change_rows(conn: psycopg.AsyncConnection, spec: LayerSpec, field: str, v1: int, v2: int,
                       ) -> tuple[list[tuple], dict[str, dict[str, list[float]]]]:
    """The pieces (old id, new id, old class, new class, GeoJSON, m²) of the retired rows of v1
    intersected with the new rows of v2, and per side the areas of those rows by class: in one
    read-only snapshot, since the balance must not mix versions."""
    old, new = removed_between(v1, v2, "o"), added_between(v1, v2, "n")
    # each side's feature by the id the Features API gives it (bare keys in a county's database)
    qualified = (await qualified_layers(conn, [spec]))[spec.name]
    ido, idn = id_sql(qualified, "o"), id_sql(qualified, "n")
    q = sql.SQL("""
        SELECT {ido}, {idn}, o.{f}::text, n.{f}::text, ST_AsGeoJSON(p.g, 15, 0), ST_Area(p.g::geography)
        FROM {t} o JOIN {t} n ON ST_Intersects(o.geom, n.geom)
        CROSS JOIN LATERAL (SELECT ST_CollectionExtract(ST_Intersection(o.geom, n.geom), 3) AS g) p
        WHERE {old} AND {new}
        ORDER BY 1, 2
    """).format(ido=ido, idn=idn, f=sql.Identifier(field), t=table_ident(spec), old=old, new=new)
    async with read_only_snapshot(conn):
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
    return rows, sides


def _balance(registry: Registry, spec: LayerSpec, field: str, matrix: dict[tuple[str, str], float],
             sides: dict[str, dict[str, list[float]]]) -> dict:
    """The transitions (by class and by group), removed, added and net per class: removed/added
    are the retired (new) area of a class not accounted for by its transitions, on the rounded
    figures the answer shows, so that summing the answer balances exactly."""
    codes = registry.codes_for(spec, field) or {}

    def grp(c):
        code = codes.get(c) or codes.get((c or "")[:4])
        return code.group if code and code.group else c

    shown = {k: _r6(m2) for k, m2 in matrix.items()}
    classes = sorted(set(sides["retired"]) | set(sides["new"]) | {c for k in matrix for c in k}, key=str)
    removed, added = {}, {}
    for c in classes:
        retired = _r6(math.fsum(sides["retired"].get(c, [])))
        new_ = _r6(math.fsum(sides["new"].get(c, [])))
        removed[c] = _r6(retired - math.fsum(m2 for (a, _), m2 in shown.items() if a == c))
        added[c] = _r6(new_ - math.fsum(m2 for (_, b), m2 in shown.items() if b == c))
    net = {c: _r6(math.fsum([m2 for (a, b), m2 in shown.items() if b == c]) - math.fsum(
        [m2 for (a, b), m2 in shown.items() if a == c]) - removed[c] + added[c]) for c in classes}

    def by_group(per: dict) -> list[dict]:
        g: dict[str, list[float]] = {}
        for c, m2 in per.items():
            g.setdefault(grp(c), []).append(m2)
        return [{"class": k, **units(math.fsum(v))} for k, v in sorted(g.items(), key=lambda kv: str(kv[0]))]

    groups: dict[tuple[str, str], list[float]] = {}
    for (co, cn), m2 in shown.items():
        groups.setdefault((grp(co), grp(cn)), []).append(m2)
    return {"transitions": [{"from": a, "to": b, **units(m2)} for (a, b), m2 in sorted(shown.items(), key=str)],
            "transitions_by_group": [{"from": a, "to": b, **units(math.fsum(v))}
                                     for (a, b), v in sorted(groups.items(), key=str)],
            "removed": [{"class": c, **units(removed[c])} for c in classes],
            "added": [{"class": c, **units(added[c])} for c in classes],
            "removed_by_group": by_group(removed),
            "added_by_group": by_group(added),
            "net_by_class": [{"class": c, **units(net[c])} for c in classes]}

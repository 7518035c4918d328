"""Reading, comparing and restoring layer versions, for the whole layer (the province) or for one
county (行政区划代码): list, diff, rollback.

A diff compares two row sets by county, feature key and content hash; a rollback is a new
version whose rows equal an old version's rows (of one county, or of every county): history
only grows, nothing is rewritten. A county's rollback changes its partition only (the same
rule as its ingest, geobase/catalog/versions.py); see geobase/catalog/divisions.py for how
layer versions relate to counties.
"""

from __future__ import annotations

import json

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from geobase.catalog.divisions import carry_forward, county_versions, totals
from geobase.catalog.versions import insert_version_row, lock_layer, next_version
from geobase.db import connect
from geobase.errors import InvalidInput, NotFound
from geobase.partitions import partition_divisions
from geobase.settings import Settings
from geobase.specs import LayerSpec, get_registry
from geobase.storage import (
    as_of_filter,
    check_division,
    current_filter,
    division_filter,
    measure_column,
    table_ident,
)


def _spec(settings: Settings, layer: str) -> LayerSpec:
    return get_registry(settings).layer(layer)


def _current_version(conn: psycopg.Connection, layer: str) -> int | None:
    row = conn.execute("SELECT current_version FROM catalog.layers WHERE name = %s", (layer,)).fetchone()
    return row[0] if row else None


def list_versions(settings: Settings, layer: str, division: str | None = None) -> list[dict]:
    """Every version of the layer, or (``division``) those that changed that county; ``current``
    marks the layer's current version, or the county's (the last that changed it)."""
    _spec(settings, layer)
    division = check_division(division) if division is not None else None
    with connect(settings) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur_v = _current_version(conn, layer)
        rows = cur.execute(
            """
            SELECT version, mode, source_name, source_checksum, source_format, created_at, created_by, rows_total,
                   rows_added, rows_removed, rows_changed, extent, restored_from,
                   report->'errors' AS errors, report->'warnings' AS warnings, metadata, touched, divisions
            FROM catalog.layer_versions WHERE layer = %s ORDER BY version
            """, (layer,)).fetchall()
        if division is not None:
            keep = set(county_versions(conn, layer, division))
            rows = [r for r in rows if r["version"] in keep]
            cur_v = rows[-1]["version"] if rows else None
    for r in rows:
        r["current"] = r["version"] == cur_v
    return rows


def _version_exists(conn: psycopg.Connection, layer: str, version: int, parameter: str) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM catalog.layer_versions WHERE layer = %s AND version = %s",
                          (layer, int(version))).fetchone()
    if row is None:
        raise NotFound(f"layer {layer!r} has no version {version}", parameter=parameter)
    return row


def _class_changes(conn: psycopg.Connection, spec: LayerSpec, f1: sql.Composable, f2: sql.Composable) -> list[dict]:
    """Area (m², ellipsoidal) that moved between classes of ``spec.class_field`` from f1 to f2."""
    rows = conn.execute(sql.SQL("""
        WITH a AS (SELECT {c} AS cls, geom FROM {t} WHERE {f1} AND NOT {f2}),
             b AS (SELECT {c} AS cls, geom FROM {t} WHERE {f2} AND NOT {f1})
        SELECT a.cls, b.cls, sum(ST_Area(ST_Intersection(a.geom, b.geom)::geography))
        FROM a JOIN b ON a.geom && b.geom AND ST_Intersects(a.geom, b.geom)
        WHERE a.cls IS DISTINCT FROM b.cls
        GROUP BY 1, 2 HAVING sum(ST_Area(ST_Intersection(a.geom, b.geom)::geography)) > 0.01
        ORDER BY 3 DESC
    """).format(c=sql.Identifier(spec.class_field), t=table_ident(spec), f1=f1, f2=f2)).fetchall()
    return [{"from": r[0], "to": r[1], "area_m2": round(float(r[2]), 2)} for r in rows]


def diff(settings: Settings, layer: str, v1: int, v2: int, division: str | None = None) -> dict:
    """Added/removed/changed feature counts from v1 to v2 (of the layer, or of one county's
    partition) and, for a classified polygon layer, the area (m², ellipsoidal) that moved
    between classes (e.g. land use ``dlbm``)."""
    spec = _spec(settings, layer)
    with connect(settings) as conn:
        a = _version_exists(conn, layer, v1, "v1")
        b = _version_exists(conn, layer, v2, "v2")
        if spec.kind == "raster":
            a, b = a["metadata"], b["metadata"]
            return {"layer": layer, "v1": v1, "v2": v2, "kind": "raster",
                    "changed": a.get("path") != b.get("path"),
                    "v1_metadata": a, "v2_metadata": b}
        f1, f2 = as_of_filter(v1), as_of_filter(v2)
        if division is not None:
            county = division_filter(check_division(division))
            f1, f2 = (sql.SQL("({} AND {})").format(f, county) for f in (f1, f2))
        counts = conn.execute(sql.SQL("""
            WITH a AS (SELECT _key, division, _hash FROM {t} WHERE {f1}),
                 b AS (SELECT _key, division, _hash FROM {t} WHERE {f2})
            SELECT count(*) FILTER (WHERE a._key IS NULL), count(*) FILTER (WHERE b._key IS NULL),
                   count(*) FILTER (WHERE a._key IS NOT NULL AND b._key IS NOT NULL AND a._hash <> b._hash),
                   count(*) FILTER (WHERE a._hash = b._hash)
            FROM a FULL JOIN b ON a._key = b._key AND a.division = b.division
        """).format(t=table_ident(spec), f1=f1, f2=f2)).fetchone()
        out = {"layer": layer, "v1": v1, "v2": v2, "added": counts[0], "removed": counts[1], "changed": counts[2],
               "unchanged": counts[3]}
        if division is not None:
            out["division"] = division
        if spec.class_field and spec.geometry == "MultiPolygon":
            out["class_field"] = spec.class_field
            out["class_changes"] = _class_changes(conn, spec, f1, f2)
        return out


def _restore_rows(conn: psycopg.Connection, spec: LayerSpec, version: int, v: int, scope: list[str]
                  ) -> tuple[int, int, int]:
    """Make the rows of ``version`` in the counties ``scope`` current again as version ``v``:
    ``(added, removed, changed)``. Keys present now and in the target with the same content stay
    untouched; no other county's partition is read or written."""
    t = table_ident(spec)
    fv = sql.SQL("({} AND {})").format(as_of_filter(version), division_filter(scope))
    measure = measure_column(spec)
    cols = ["_key", "_hash", "division", *spec.attribute_names, *([measure] if measure else []), "geom", "geom_3857"]
    retired = conn.execute(sql.SQL("""
        WITH r AS (UPDATE {t} d SET _vto = {v} WHERE {scope} AND {cur} AND NOT {fv} RETURNING _key, division)
        SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {t} o WHERE {fv} AND o._key = r._key
                                                       AND o.division = r.division))
        FROM r
    """).format(t=t, v=sql.Literal(v), fv=fv, scope=division_filter(scope, "d"), cur=current_filter("d"))).fetchone()
    inserted = conn.execute(sql.SQL("""
        INSERT INTO {t} (_vfrom, {cols}) SELECT {v}, {cols} FROM {t} WHERE {fv} AND _vto IS NOT NULL
          AND _vto <> {v}
    """).format(t=t, v=sql.Literal(v), fv=fv, cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols))).rowcount
    changed = retired[1]
    return inserted - changed, retired[0] - changed, changed


def rollback(settings: Settings, layer: str, version: int, *, user: str = "cli", division: str | None = None) -> dict:
    """Make a new version whose content equals ``version``: of every county, or (``division``) of
    that county only, the others staying as they are (one transaction, per-layer lock)."""
    spec = _spec(settings, layer)
    division = check_division(division) if division is not None else None
    with connect(settings) as conn, conn.transaction():
        lock_layer(conn, layer)
        old = _version_exists(conn, layer, version, "version")
        if division is None and _current_version(conn, layer) == version:
            raise InvalidInput(f"version {version} of {layer!r} is already the current version",
                               parameter="version")
        v = next_version(conn, layer)
        row = {"source_name": old["source_name"],
               "source_checksum": old["source_checksum"], "source_format": old["source_format"],
               "created_by": user, "report": {"rollback_of": version, "errors": {}, "warnings": {}},
               "metadata": old["metadata"] or {}, "restored_from": version}
        if spec.kind == "raster":
            insert_version_row(conn, layer, v, mode="rollback", rows_total=old["rows_total"], added=0, removed=0,
                               changed=1, extent=old["extent"], **row)
            return {"layer": layer, "version": v, "restored_from": version}
        scope = [division] if division is not None else partition_divisions(conn, spec)
        if division is not None and division not in partition_divisions(conn, spec):
            raise NotFound(f"layer {layer!r} has no rows of county {division}", parameter="division")
        if division is not None and (county_versions(conn, layer, division) or [None])[-1] == version:
            raise InvalidInput(f"version {version} of {layer!r} is already county {division}'s current version",
                               parameter="version")
        added, removed, changed = _restore_rows(conn, spec, version, v, scope)
        divs = carry_forward(conn, spec, scope)
        total, extent = totals(divs)
        insert_version_row(conn, layer, v, mode="rollback", rows_total=total, added=added, removed=removed,
                           changed=changed, extent=extent, touched=scope, divisions=divs, **row)
    out = {"layer": layer, "version": v, "restored_from": version, "rows_total": total, "added": added,
           "removed": removed, "changed": changed}
    if division is not None:
        out["division"] = division
    return out


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2, default=str)

"""Layer versions: list them, diff two of them, roll back to one.

Every ingest is a version (``catalog.layer_versions``); a row of ``data.<layer>`` is part of
version v when ``_vfrom <= v AND (_vto IS NULL OR _vto > v)``. So a diff is a comparison of two
row sets by feature key and content hash, and a rollback is a new version whose rows equal an
old version's rows: history only grows, nothing is rewritten.
"""

from __future__ import annotations

import json

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from geobase.db import connect
from geobase.errors import InvalidInput, NotFound
from geobase.settings import Settings
from geobase.specs import LayerSpec, get_registry
from geobase.storage import as_of_filter, measure_column, table_ident


def _spec(settings: Settings, layer: str) -> LayerSpec:
    return get_registry(settings).layer(layer)


def list_versions(settings: Settings, layer: str) -> list[dict]:
    _spec(settings, layer)
    with connect(settings) as conn, conn.cursor(row_factory=dict_row) as cur:
        current = conn.execute("SELECT current_version FROM catalog.layers WHERE name = %s", (layer,)).fetchone()
        rows = cur.execute(
            """
            SELECT version, mode, source_name, source_checksum, source_format, created_at, created_by, rows_total,
                   rows_added, rows_removed, rows_changed, extent, restored_from,
                   report->'errors' AS errors, report->'warnings' AS warnings, metadata
            FROM catalog.layer_versions WHERE layer = %s ORDER BY version
            """, (layer,)).fetchall()
    cur_v = current[0] if current else None
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


def diff(settings: Settings, layer: str, v1: int, v2: int) -> dict:
    """Added/removed/changed feature counts from v1 to v2 and, for a classified polygon layer,
    the area (m², ellipsoidal) that moved between classes (e.g. land use ``dlbm``)."""
    spec = _spec(settings, layer)
    with connect(settings) as conn:
        _version_exists(conn, layer, v1, "v1")
        _version_exists(conn, layer, v2, "v2")
        if spec.kind == "raster":
            a = _version_exists(conn, layer, v1, "v1")["metadata"]
            b = _version_exists(conn, layer, v2, "v2")["metadata"]
            return {"layer": layer, "v1": v1, "v2": v2, "kind": "raster",
                    "changed": a.get("path") != b.get("path"),
                    "v1_metadata": a, "v2_metadata": b}
        t = table_ident(spec)
        f1, f2 = as_of_filter(v1), as_of_filter(v2)
        counts = conn.execute(sql.SQL("""
            WITH a AS (SELECT _key, _hash FROM {t} WHERE {f1}), b AS (SELECT _key, _hash FROM {t} WHERE {f2})
            SELECT count(*) FILTER (WHERE a._key IS NULL), count(*) FILTER (WHERE b._key IS NULL),
                   count(*) FILTER (WHERE a._key IS NOT NULL AND b._key IS NOT NULL AND a._hash <> b._hash),
                   count(*) FILTER (WHERE a._hash = b._hash)
            FROM a FULL JOIN b ON a._key = b._key
        """).format(t=t, f1=f1, f2=f2)).fetchone()
        out = {"layer": layer, "v1": v1, "v2": v2, "added": counts[0], "removed": counts[1], "changed": counts[2],
               "unchanged": counts[3]}
        cls = spec.class_field
        if cls and spec.geometry == "MultiPolygon":
            c = sql.Identifier(cls)
            rows = conn.execute(sql.SQL("""
                WITH a AS (SELECT {c} AS cls, geom FROM {t} WHERE {f1} AND NOT {f2}),
                     b AS (SELECT {c} AS cls, geom FROM {t} WHERE {f2} AND NOT {f1})
                SELECT a.cls, b.cls, sum(ST_Area(ST_Intersection(a.geom, b.geom)::geography))
                FROM a JOIN b ON a.geom && b.geom AND ST_Intersects(a.geom, b.geom)
                WHERE a.cls IS DISTINCT FROM b.cls
                GROUP BY 1, 2 HAVING sum(ST_Area(ST_Intersection(a.geom, b.geom)::geography)) > 0.01
                ORDER BY 3 DESC
            """).format(c=c, t=t, f1=f1, f2=f2)).fetchall()
            out["class_field"] = cls
            out["class_changes"] = [{"from": r[0], "to": r[1], "area_m2": round(float(r[2]), 2)} for r in rows]
        return out


def rollback(settings: Settings, layer: str, version: int, *, user: str = "cli") -> dict:
    """Make a new version whose content equals ``version`` (one transaction, per-layer lock)."""
    from geobase.ingest.loader import insert_version_row, lock_layer, next_version

    spec = _spec(settings, layer)
    with connect(settings) as conn:
        with conn.transaction():
            lock_layer(conn, layer)
            old = _version_exists(conn, layer, version, "version")
            cur_v = conn.execute("SELECT current_version FROM catalog.layers WHERE name = %s", (layer,)).fetchone()[0]
            if cur_v == version:
                raise InvalidInput(f"version {version} of {layer!r} is already the current version",
                                   parameter="version")
            v = next_version(conn, layer)
            meta = old["metadata"] or {}
            report = {"rollback_of": version, "errors": {}, "warnings": {}}
            if spec.kind == "raster":
                insert_version_row(conn, layer, v, mode="rollback", rows_total=old["rows_total"], added=0, removed=0,
                                   changed=1, extent=old["extent"], source_name=old["source_name"],
                                   source_checksum=old["source_checksum"], source_format=old["source_format"],
                                   created_by=user, report=report, metadata=meta, restored_from=version)
                return {"layer": layer, "version": v, "restored_from": version}
            t = table_ident(spec)
            fv = as_of_filter(version)
            attrs = spec.attribute_names
            measure = measure_column(spec)
            cols = ["_key", "_hash", *attrs, *([measure] if measure else []), "geom", "geom_3857"]
            # keys present now and in the target with the same content stay untouched
            retired = conn.execute(sql.SQL("""
                WITH r AS (UPDATE {t} d SET _vto = {v} WHERE d._vto IS NULL AND NOT {fv} RETURNING _key)
                SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {t} o WHERE {fv} AND o._key = r._key))
                FROM r
            """).format(t=t, v=sql.Literal(v), fv=fv)).fetchone()
            inserted = conn.execute(sql.SQL("""
                INSERT INTO {t} (_vfrom, {cols}) SELECT {v}, {cols} FROM {t} WHERE {fv} AND _vto IS NOT NULL
                  AND _vto <> {v}
            """).format(t=t, v=sql.Literal(v), fv=fv, cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols))).rowcount
            changed = retired[1]
            removed = retired[0] - changed
            added = inserted - changed
            total = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE _vto IS NULL").format(t)).fetchone()[0]
            insert_version_row(conn, layer, v, mode="rollback", rows_total=total, added=added, removed=removed,
                               changed=changed, extent=old["extent"], source_name=old["source_name"],
                               source_checksum=old["source_checksum"], source_format=old["source_format"],
                               created_by=user, report=report, metadata=meta, restored_from=version)
    return {"layer": layer, "version": v, "restored_from": version, "rows_total": total, "added": added,
            "removed": removed, "changed": changed}


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2, default=str)

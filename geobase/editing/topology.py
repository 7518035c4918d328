"""Split a parcel by a line and merge adjacent parcels: the two edits stewards of a coverage need.

Both compute their geometry in PostGIS from the features as the session sees them, so the pieces
share the cut exactly (``ST_Split``) and a merged parcel is the exact union (``ST_Union``) of its
parts: the coverage keeps its total area (to rounding far below 1e-9) and the commit's coverage
check (:mod:`geobase.editing.coverage`) passes. A split gives every piece the parcel's attributes
and a new feature id (the caller names them, in the order of the pieces from west to east, then
south to north), and the neighbours sharing the cut edges get the cut's vertices (see
:func:`_adjust_neighbours`); a merge keeps the first feature's id and attributes and deletes the others.
Where the spec states an area (``stated_area_field``), the new parcels state their ellipsoidal
area in the spec's unit. Each is one change set: in a session, or alone with a reason.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from geobase.crs import Crs, to_storage
from geobase.editing.rows import Row, check_attributes
from geobase.editing.service import Actor, checked, run_edit, seen, stage_row, strong_etag
from geobase.errors import CheckFailed, Conflict, InvalidInput
from geobase.features.ids import FeatureRef, qualified_ids_sync, resolve_sync
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry
from geobase.storage import current_filter, table_ident

_SPLIT = """
    WITH p AS (SELECT (ST_Dump(ST_Split(ST_GeomFromEWKB(%(g)s), ST_GeomFromEWKB(%(line)s)))).geom AS g)
    SELECT ST_AsEWKB(ST_Multi(g)), ST_Area(g::geography), ST_AsGeoJSON(ST_Multi(g), 9) FROM p WHERE ST_Area(g) > 0
    ORDER BY ST_X(ST_PointOnSurface(g)), ST_Y(ST_PointOnSurface(g))
"""
#: the current features (other than the split one and those the session touched) that get the cut's new
#: vertices on their shared edges: ST_Snap inserts a vertex into a segment within 1e-9° (0.1 mm)
_NEIGHBOURS = """
    WITH v AS (SELECT (ST_DumpPoints(ST_GeomFromEWKB(p))).geom AS pt FROM unnest(%(pieces)s::bytea[]) AS p),
         x AS (SELECT ST_Collect(DISTINCT pt) AS pts FROM v
               WHERE ST_DWithin(pt, ST_Boundary(ST_GeomFromEWKB(%(g)s)), 1e-12) AND NOT EXISTS (
                   SELECT 1 FROM ST_DumpPoints(ST_GeomFromEWKB(%(g)s)) o WHERE ST_Equals(o.geom, v.pt)))
    SELECT d._key, ST_AsEWKB(ST_Multi(ST_Snap(d.geom, x.pts, 1e-9))), ST_IsValid(ST_Snap(d.geom, x.pts, 1e-9)),
           d.division
    FROM {t} d, x WHERE {cur} AND x.pts IS NOT NULL AND NOT (d._key = %(key)s AND d.division = %(div)s)
      AND d.geom && ST_Expand(x.pts, 1e-9) AND ST_DWithin(d.geom, x.pts, 1e-9)
      AND NOT EXISTS (SELECT 1 FROM catalog.edit_changes c WHERE c.session_id = %(sid)s AND c.key = d._key
                      AND (c.division IS NULL OR c.division = d.division))
    ORDER BY d._key, d.division
"""
_MERGE = """
    WITH u AS (SELECT ST_Union(ST_GeomFromEWKB(g)) AS g FROM unnest(%(gs)s::bytea[]) AS g)
    SELECT ST_AsEWKB(ST_Multi(g)), ST_NumGeometries(ST_Multi(g)), ST_Area(g::geography), ST_IsValid(g) FROM u
"""


def _stated(spec: LayerSpec, attrs: dict[str, Any], area_m2: float) -> dict[str, Any]:
    if not spec.stated_area_field:
        return attrs
    factor = 10_000.0 if spec.stated_area_unit == "ha" else 1.0
    return {**attrs, spec.stated_area_field: area_m2 / factor}


def _line(geometry: Any, crs: Crs) -> bytes:
    import shapely

    if not isinstance(geometry, dict) or geometry.get("type") != "LineString":
        raise InvalidInput("line: a GeoJSON LineString is expected", parameter="line")
    try:
        line = shapely.geometry.shape(geometry)
    except Exception as exc:  # malformed coordinates
        raise InvalidInput(f"line: malformed coordinates ({str(exc)[:200]})", parameter="line") from None
    line = to_storage(line, crs, "line")
    return shapely.to_wkb(shapely.set_srid(line, 4490), include_srid=True)


def resolved(conn: psycopg.Connection, spec: LayerSpec, feature_id: str) -> FeatureRef:
    """The current feature ``feature_id`` names (:func:`geobase.features.ids.resolve_sync`: a
    county-qualified id or a bare key; several: 409), else the id as a key of no known county (a
    feature staged in the session so far, or the edit's 404)."""
    return resolve_sync(conn, spec, feature_id) or FeatureRef(feature_id, None)


def _id(ref: FeatureRef, qualified: bool) -> str:
    return ref.id(qualified and ref.division is not None)


def _new_keys(spec: LayerSpec, ids: Any, n: int) -> list[str]:
    if len(spec.source_key) != 1:
        raise InvalidInput(f"{spec.name!r} has a composite feature id; split it with PUT/POST", parameter="ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i.strip() for i in ids) or len(set(ids)) != len(ids):
        raise InvalidInput("ids: a list of distinct new feature ids, one per piece", parameter="ids")
    if len(ids) != n:
        raise CheckFailed("split_pieces", f"the line cuts the parcel into {n} pieces; give {n} ids, not {len(ids)}",
                          field="ids")
    return ids


def _adjust_neighbours(conn: psycopg.Connection, spec: LayerSpec, sid: str, ref: FeatureRef, ewkb: bytes,
                       pieces: list[bytes]) -> None:
    """Give the neighbours the vertices the cut added to the parcel's edges. Why: an area on the
    ellipsoid treats each edge as a geodesic, and a vertex added on a straight edge makes it two
    geodesics; unless the neighbour's copy of that edge gets the same vertex, the pieces and the
    neighbour would together cover a little more or less than before (metres² on long edges)."""
    q = sql.SQL(_NEIGHBOURS).format(t=table_ident(spec), cur=current_filter("d"))
    params = {"pieces": pieces, "g": ewkb, "key": ref.key, "div": ref.division, "sid": sid}
    for n_key, n_ewkb, valid, n_div in conn.execute(q, params).fetchall():
        if not valid:
            raise CheckFailed("split_neighbour", f"neighbour {n_key!r} would become invalid with the cut's vertices",
                              field="line", feature=n_key)
        row, base = checked(conn, spec, sid, n_key, ["*"], n_div)
        stage_row(conn, spec, sid, n_key, Row(row.attributes, bytes(n_ewkb)), base, n_div)


def split(settings: Settings, spec: LayerSpec, registry: Registry, feature_id: str, body: Any, crs: Crs, *,
          actor: Actor, if_match: list[str] | None, session: str | None, reason: str | None) -> dict:
    """Cut feature ``feature_id`` by ``body["line"]`` into pieces named ``body["ids"]`` (keys: the
    pieces stay in the parcel's county)."""
    if spec.geometry != "MultiPolygon":
        raise InvalidInput(f"{spec.name!r} holds {spec.geometry}: only parcels are split", parameter="collectionId")
    if not isinstance(body, dict):
        raise InvalidInput('body: {"line": <LineString>, "ids": [...]} is expected', parameter="body")
    line = _line(body.get("line"), crs)

    def stage(conn: psycopg.Connection, sid: str) -> tuple[str, str, list[dict]]:
        ref, qualified = resolved(conn, spec, feature_id), qualified_ids_sync(conn, spec)
        key = ref.key
        row, base = checked(conn, spec, sid, key, if_match, ref.division)
        pieces = conn.execute(_SPLIT, {"g": row.ewkb, "line": line}).fetchall()
        if len(pieces) < 2:
            raise CheckFailed("split_line", "line: it does not cut the parcel in two (it must cross it from edge "
                              "to edge)", field="line", feature=key)
        ids = _new_keys(spec, body.get("ids"), len(pieces))
        stage_row(conn, spec, sid, key, None, base, ref.division)
        _adjust_neighbours(conn, spec, sid, ref, row.ewkb, [p[0] for p in pieces])
        out = []
        for new_key, (ewkb, area, geojson) in zip(ids, pieces):
            existing, _, piece_base = seen(conn, spec, sid, new_key, ref.division)
            if existing is not None:
                raise Conflict(f"ids: feature {new_key!r} exists already", parameter="ids")
            attrs = _stated(spec, {**row.as_json(), spec.source_key[0]: new_key}, area)
            piece = Row(check_attributes(spec, registry, attrs), bytes(ewkb))
            out.append({"featureId": _id(FeatureRef(new_key, ref.division), qualified), "area_m2": area,
                        "geometry": json.loads(geojson),  # CRS84, as staged
                        "etag": strong_etag(stage_row(conn, spec, sid, new_key, piece, piece_base, ref.division))})
        return _id(ref, qualified), out

    sid, version, (split_id, pieces) = run_edit(settings, spec, actor, session=session, reason=reason, stage=stage)
    return {"split": split_id, "pieces": pieces, "session": sid, "version": version}


def merge(settings: Settings, spec: LayerSpec, registry: Registry, feature_id: str, body: Any, *, actor: Actor,
          if_match: list[str] | None, session: str | None, reason: str | None) -> dict:
    """Merge the features ``body["with"]`` (ids) into feature ``feature_id`` (they must make one
    polygon)."""
    others = body.get("with") if isinstance(body, dict) else None
    if not isinstance(others, list) or not others or not all(isinstance(o, str) for o in others) \
            or feature_id in others or len(set(others)) != len(others):
        raise InvalidInput('body: {"with": [ids of the other parcels]} is expected', parameter="with")

    def stage(conn: psycopg.Connection, sid: str) -> dict:
        refs = [resolved(conn, spec, i) for i in [feature_id, *others]]
        if len(set(refs)) != len(refs):
            raise InvalidInput("with: names the same parcel twice, or the parcel itself", parameter="with")
        parts = [checked(conn, spec, sid, r.key, if_match, r.division) for r in refs]
        ewkb, n, area, valid = conn.execute(_MERGE, {"gs": [p[0].ewkb for p in parts]}).fetchone()
        if n != 1 or not valid:
            raise CheckFailed("merge_adjacent", f"{', '.join([feature_id, *others])} do not make one polygon: only "
                              "adjacent parcels merge", field="with", feature=feature_id)
        merged = Row(check_attributes(spec, registry, _stated(spec, parts[0][0].as_json(), area)), bytes(ewkb))
        etag = strong_etag(stage_row(conn, spec, sid, refs[0].key, merged, parts[0][1], refs[0].division))
        for r, (_, base) in zip(refs[1:], parts[1:]):
            stage_row(conn, spec, sid, r.key, None, base, r.division)
        return {"featureId": _id(refs[0], qualified_ids_sync(conn, spec)), "area_m2": area, "etag": etag}

    sid, version, out = run_edit(settings, spec, actor, session=session, reason=reason, stage=stage)
    return {**out, "merged": others, "session": sid, "version": version}

"""Scripted corrections: a GeoJSON FeatureCollection of changes applied as ONE edit session,
committed as one version with one message (``geobase edit apply``), or nothing at all.

Each feature says what to do with its foreign member ``op``: ``create`` (the id comes from the
spec's key attributes), ``replace`` or ``update`` (a merge patch of ``properties`` and, if given,
``geometry``) or ``delete`` of the feature ``id``. A feature may carry the ``etag`` it was read
with (as the HTTP API returns it): then a feature changed since is a 412 for the whole file.
Every change is checked as an HTTP edit is (:mod:`geobase.editing.rows`, the coverage at commit).
"""

from __future__ import annotations

from typing import Any

import psycopg

from geobase.crs import Crs
from geobase.editing.rows import Row, check_attributes, check_geometry, feature_parts
from geobase.editing.service import Actor, checked, if_match_hashes, row_division, run_edit, seen, stage_row
from geobase.editing.topology import resolved
from geobase.errors import Conflict, GeobaseError, InvalidInput
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry

OPS = ("create", "replace", "update", "delete")


def _change(spec: LayerSpec, registry: Registry, f: Any, crs: Crs, n: int) -> tuple[str, str | None, Any, list]:
    """(op, feature id, a row or a patch builder, If-Match hashes) of the ``n``-th feature."""
    if not isinstance(f, dict) or f.get("op", "replace") not in OPS:
        raise InvalidInput(f"features[{n}]: a Feature with op one of {', '.join(OPS)}", parameter="features")
    op, key = f.get("op", "replace"), f.get("id")
    if op != "create" and (not isinstance(key, (str, int)) or isinstance(key, bool)):
        raise InvalidInput(f"features[{n}]: {op} needs the feature's id", parameter="features")
    key = str(key) if key is not None else None
    match = if_match_hashes(f["etag"]) if isinstance(f.get("etag"), str) else ["*"]
    if op == "delete":
        return op, key, None, match
    props, geometry = feature_parts({**f, "type": "Feature"})
    if op == "update":
        ewkb = check_geometry(spec, geometry, crs) if "geometry" in f else None

        def build(current: Row) -> Row:
            merged = check_attributes(spec, registry, {**current.as_json(), **props})
            return Row(merged, ewkb if ewkb is not None else current.ewkb)
        return op, key, build, match
    if key is not None and len(spec.source_key) == 1:
        props = {spec.source_key[0]: key, **props}
    return op, key, Row(check_attributes(spec, registry, props), check_geometry(spec, geometry, crs)), match


def apply_changes(settings: Settings, spec: LayerSpec, registry: Registry, doc: Any, *, actor: Actor,
                  message: str, crs: Crs) -> dict:
    """Apply the FeatureCollection ``doc`` as one version; returns its counts and number."""
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not doc.get("features"):
        raise InvalidInput("a GeoJSON FeatureCollection with at least one change is expected", parameter="file")
    changes = []
    for n, f in enumerate(doc["features"]):
        try:
            changes.append(_change(spec, registry, f, crs, n))
        except GeobaseError as exc:
            exc.message = f"features[{n}]: {exc.message}" if not exc.message.startswith("features[") else exc.message
            raise

    def stage(conn: psycopg.Connection, sid: str) -> int:
        for n, (op, key, what, match) in enumerate(changes):
            try:
                if op == "create":
                    key, county = what.key(spec), row_division(spec, what)
                    existing, _, base = seen(conn, spec, sid, key, county)
                    if existing is not None:
                        raise Conflict(f"feature {key!r} exists already", parameter="features")
                    stage_row(conn, spec, sid, key, what, base, county)
                    continue
                ref = resolved(conn, spec, key)  # the one rule of ids (geobase/features/ids.py)
                if op == "replace" and what.key(spec) != ref.key:
                    raise InvalidInput(f"the key attributes make {what.key(spec)!r}, not the id", parameter="features")
                row, base = checked(conn, spec, sid, ref.key, match, ref.division)
                new = None if op == "delete" else (what(row) if op == "update" else what)
                stage_row(conn, spec, sid, ref.key, new, base, ref.division)
            except GeobaseError as exc:
                exc.message = f"features[{n}] ({key}): {exc.message}"
                raise
        return len(changes)

    sid, version, count = run_edit(settings, spec, actor, session=None, reason=message, stage=stage)
    return {"layer": spec.name, "session": sid, "version": version, "changes": count}

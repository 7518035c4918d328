"""The layer catalog: specs (the files) synced into ``catalog.layers`` (the database), and
read back with their current version, counts and extents for listings.

The specs are the source of truth for what a layer *is*; the database holds what it *has*
(versions, rows) and what admins changed at run time (the sharing level).

The one home of the catalog tables outside ingest: the reads of layers and their versions
(:mod:`geobase.catalog.layers`, re-exported here), the departments
(:mod:`geobase.catalog.departments`, re-exported here), the per-request
:class:`~geobase.catalog.state.LayerState` of the serving side (:mod:`geobase.catalog.state`,
imported from there: it builds on :mod:`geobase.security`'s access facts), the sync of the
specs and the sharing changes (below)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from geobase.catalog.departments import (add_department, check_display_text, department_codes, department_exists,
                                         list_departments)
from geobase.catalog.layers import (RASTER_PATH_KEYS, CurrentLayer, VersionInfo, access_rows, current_layers,
                                    current_layers_sync, current_versions_sql, first_created, layer_versions,
                                    layer_versions_sync, raster_file, union_extent)
from geobase.errors import InvalidInput, NotFound
from geobase.settings import Settings, get_settings
from geobase.specs import LayerSpec, Registry, get_registry
from geobase.vocab import SHARING_LEVELS
from geobase.partitions import ensure_layer_table


def sync_catalog(conn: psycopg.Connection, settings: Settings | None = None, registry: Registry | None = None) -> int:
    """Upsert departments and layers from the specs and create/extend the data tables.

    An admin's run-time change of a layer's sharing level survives: the spec's level is applied
    only while the stored level still equals the level of the previously synced spec."""
    registry = registry or get_registry(settings or get_settings())
    for d in registry.departments.values():
        conn.execute(
            """
            INSERT INTO catalog.departments (code, name_zh, name_en, contact) VALUES (%s, %s, %s, %s)
            ON CONFLICT (code) DO UPDATE SET name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en,
                contact = EXCLUDED.contact
            """,
            (d.code, d.name.zh, d.name.en, d.contact),
        )
    for spec in registry.layers.values():
        doc = spec.model_dump(mode="json")
        conn.execute(
            """
            INSERT INTO catalog.layers (name, title_zh, title_en, description, department, sharing,
                                        shared_with, kind, geometry_type, spec, spec_hash)
            VALUES (%(name)s, %(zh)s, %(en)s, %(desc)s, %(dept)s, %(sharing)s, %(shared)s, %(kind)s,
                    %(geom)s, %(spec)s, %(hash)s)
            ON CONFLICT (name) DO UPDATE SET
                title_zh = EXCLUDED.title_zh, title_en = EXCLUDED.title_en,
                description = EXCLUDED.description, department = EXCLUDED.department,
                sharing = CASE WHEN catalog.layers.sharing = catalog.layers.spec->>'sharing'
                               THEN EXCLUDED.sharing ELSE catalog.layers.sharing END,
                shared_with = CASE WHEN catalog.layers.sharing = catalog.layers.spec->>'sharing'
                               THEN EXCLUDED.shared_with ELSE catalog.layers.shared_with END,
                kind = EXCLUDED.kind, geometry_type = EXCLUDED.geometry_type,
                spec = EXCLUDED.spec, spec_hash = EXCLUDED.spec_hash,
                updated_at = CASE WHEN catalog.layers.spec_hash = EXCLUDED.spec_hash
                                  THEN catalog.layers.updated_at ELSE now() END
            """,
            {
                "name": spec.name, "zh": spec.title.zh, "en": spec.title.en, "desc": spec.description,
                "dept": spec.department, "sharing": spec.sharing, "shared": spec.shared_with,
                "kind": spec.kind, "geom": spec.geometry, "spec": json.dumps(doc), "hash": spec.spec_hash(),
            },
        )
        ensure_layer_table(conn, spec)
    return len(registry.layers)


@dataclass
class LayerInfo:
    """A catalog row joined with its current version: what listings and collections show."""

    spec: LayerSpec
    sharing: str
    shared_with: list[str]
    current_version: int | None
    version_created_at: Any
    feature_count: int | None
    extent: list[float] | None

    def as_dict(self) -> dict:
        return {
            "name": self.spec.name,
            "title": self.spec.title.model_dump(),
            "department": self.spec.department,
            "sharing": self.sharing,
            "kind": self.spec.kind,
            "geometry": self.spec.geometry,
            "current_version": self.current_version,
            "updated": self.version_created_at.isoformat() if self.version_created_at else None,
            "feature_count": self.feature_count,
            "extent": self.extent,
        }


def list_layers(conn: psycopg.Connection, registry: Registry | None = None) -> list[LayerInfo]:
    """Every served layer (its spec file exists) with its current version, in name order."""
    registry = registry or get_registry()
    out = []
    for name, c in current_layers_sync(conn).items():
        spec = registry.layers.get(name)
        if spec is None:  # a layer whose spec file was removed stays in the DB but is not served
            continue
        out.append(LayerInfo(spec, c.sharing, list(c.shared_with), c.version, c.created_at, c.rows_total, c.extent))
    return out


def set_sharing(conn, registry: Registry, layer: str, sharing: str, shared_with: list[str]) -> dict:
    """Change a layer's sharing (kept across catalog syncs, see :func:`sync_catalog`).

    The one home of this write: the admin router (``PUT /admin/layers/{layer}/sharing``) and
    the CLI (``geobase layers share``) both call it, so the rules cannot drift apart."""
    if sharing not in SHARING_LEVELS:
        raise InvalidInput("sharing must be public, internal, restricted or private", parameter="sharing")
    shared_with = sorted(set(shared_with))
    if sharing == "restricted" and not shared_with:
        raise InvalidInput("restricted sharing needs at least one department (--with)", parameter="shared_with")
    if sharing != "restricted" and shared_with:
        raise InvalidInput("departments (--with) apply only to restricted sharing", parameter="shared_with")
    known = department_codes(conn)
    unknown = [d for d in shared_with if d not in known]
    if unknown:
        raise InvalidInput(f"unknown department(s): {', '.join(unknown)}", parameter="shared_with")
    row = conn.execute(
        "UPDATE catalog.layers SET sharing = %s, shared_with = %s, updated_at = now() WHERE name = %s "
        "RETURNING name, department", (sharing, shared_with, layer)).fetchone()
    if row is None or layer not in registry.layers:
        raise NotFound(f"layer {layer!r} not found", parameter="layer")
    return {"layer": row[0], "department": row[1], "sharing": sharing, "shared_with": shared_with}


__all__ = [
    "RASTER_PATH_KEYS", "CurrentLayer", "LayerInfo", "VersionInfo", "access_rows", "add_department",
    "check_display_text", "current_layers", "current_layers_sync", "current_versions_sql", "department_codes",
    "department_exists", "first_created", "layer_versions", "layer_versions_sync", "list_departments",
    "list_layers", "raster_file", "set_sharing", "sync_catalog", "union_extent",
]

"""Shared set-up of the security tests: a database with one feature per vector layer, changed
sharing levels, keys of every role and department, and the expected visibility table."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

from geobase.settings import Settings
from geobase.specs import get_registry

# Sharing as the tests set it (spec defaults changed for two layers to cover every level).
SHARING = {
    "admin_divisions": ("public", []),
    "control_lines": ("internal", []),
    "dem": ("public", []),
    "forest": ("internal", []),
    "land_use": ("public", []),
    "planning_zones": ("public", []),
    "rivers": ("private", []),                    # owner water_resources only
    "water_areas": ("restricted", ["forestry"]),  # owner water_resources + forestry
    "parcel_imagery": ("public", []),             # derived by the imagery-zonal job
    "parcel_flags": ("internal", []),             # derived by the imagery-flags job
}
PUBLIC_LAYERS = {"admin_divisions", "dem", "land_use", "planning_zones", "parcel_imagery"}
INTERNAL = PUBLIC_LAYERS | {"control_lines", "forest", "parcel_flags"}
EXPECTED_VISIBLE = {
    "public": PUBLIC_LAYERS,
    "natural_resources": INTERNAL,
    "water_resources": INTERNAL | {"rivers", "water_areas"},
    "forestry": INTERNAL | {"water_areas"},
    "planning": INTERNAL,
    "admin": set(SHARING),
}
MASKED_FROM_PUBLIC = {"land_use": {"qsdwdm", "qsdwmc"}}
FEATURE_KEY = "f1"
# one small square in the sample county's area (lon/lat, EPSG:4490)
SQUARE = "MULTIPOLYGON(((112.90 28.10,112.91 28.10,112.91 28.11,112.90 28.11,112.90 28.10)))"
LINE = "MULTILINESTRING((112.90 28.10,112.91 28.11))"


def seed(settings: Settings) -> None:
    """One current feature (key f1, version 1) in every vector layer; sharing as in SHARING."""
    reg = get_registry(settings)
    with psycopg.connect(settings.database_url) as conn:
        for name, spec in reg.layers.items():
            sharing, shared = SHARING[name]
            conn.execute("UPDATE catalog.layers SET sharing=%s, shared_with=%s WHERE name=%s",
                         (sharing, shared, name))
            if spec.kind != "vector":
                continue
            wkt = LINE if spec.geometry == "MultiLineString" else SQUARE
            values = {a.name: _value(a) for a in spec.attributes}
            cols = [sql.Identifier(c) for c in values]
            conn.execute(
                sql.SQL("INSERT INTO {} (_key, _hash, _vfrom, {cols}, geom, geom_3857) VALUES "
                        "(%s, 'h', 1, {vals}, ST_GeomFromText(%s, 4490), "
                        "ST_Transform(ST_GeomFromText(%s, 4490), 3857))").format(
                    sql.Identifier("data", name), cols=sql.SQL(", ").join(cols),
                    vals=sql.SQL(", ").join([sql.Placeholder()] * len(cols))),
                [FEATURE_KEY, *values.values(), wkt, wkt],
            )
            conn.execute(
                "INSERT INTO catalog.layer_versions (layer, version, mode, rows_total, rows_added, extent) "
                "VALUES (%s, 1, 'replace', 1, 1, ARRAY[112.90, 28.10, 112.91, 28.11])", (name,))
            conn.execute("UPDATE catalog.layers SET current_version = 1 WHERE name = %s", (name,))
        conn.commit()


def _value(attr):
    return {"text": f"{attr.name}-x", "integer": 1, "bigint": 1, "number": 1.5, "float": 1.5, "real": 1.5,
            "boolean": True, "date": "2024-01-01", "datetime": "2024-01-01T00:00:00Z"}.get(attr.type, None)


def make_keys(settings: Settings) -> dict[str, str]:
    """Tokens by label: admin, <dept>:<role> for every department and role."""
    from geobase import keys

    out: dict[str, str] = {}
    with psycopg.connect(settings.database_url) as conn:
        out["admin"] = keys.create_key(conn, name="root", role="admin", department=None).token
        for dept in ("natural_resources", "water_resources", "forestry", "planning"):
            for role in ("viewer", "analyst", "steward"):
                out[f"{dept}:{role}"] = keys.create_key(conn, name=f"{dept}-{role}", role=role,
                                                        department=dept).token
        conn.commit()
    return out


def headers_for(label: str, tokens: dict[str, str]) -> dict[str, str]:
    if label == "public":
        return {}
    return {"Authorization": f"Bearer {tokens[label]}"}


def expected_for(label: str) -> set[str]:
    if label in ("public", "admin"):
        return EXPECTED_VISIBLE[label]
    return EXPECTED_VISIBLE[label.split(":")[0]]


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"

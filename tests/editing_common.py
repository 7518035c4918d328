"""Shared set-up of the editing tests: a private copy of the sample county, keys of the roles that
matter for editing, a live server, and helpers that read the database directly."""

from __future__ import annotations

import json

import psycopg
import pytest

from conftest import LiveServer, create_database, drop_database, settings_for
from test_security_common import unique_name

GEOJSON = "application/geo+json"
KEYS = {  # label -> (role, department)
    "admin": ("admin", None),
    "nr:editor": ("editor", "natural_resources"), "nr:viewer": ("viewer", "natural_resources"),
    "nr:steward": ("steward", "natural_resources"),
    "forestry:editor": ("editor", "forestry"), "forestry:analyst": ("analyst", "forestry"),
    "planning:editor": ("editor", "planning"), "water:editor": ("editor", "water_resources"),
}
FAST = {"GEOBASE_RATE_LIMIT_PER_S": "10000", "GEOBASE_RATE_LIMIT_BURST": "10000",
        "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000"}


def make_editing_keys(settings) -> dict[str, str]:
    from geobase import keys

    with psycopg.connect(settings.database_url) as conn:
        out = {label: keys.create_key(conn, name=label.replace(":", "-"), role=role, department=dept).token
               for label, (role, dept) in KEYS.items()}
        conn.commit()
    return out


@pytest.fixture(scope="module")
def ed(pg_server, county_template):
    """(server, tokens, settings) over a private copy of the sample county."""
    template, data_dir = county_template
    name = unique_name("gb_edit")
    settings = settings_for(create_database(pg_server, name, template), data_dir)
    tokens = make_editing_keys(settings)
    srv = LiveServer(settings, env=FAST)
    yield srv, tokens, settings
    srv.stop()
    drop_database(pg_server, name)


def auth(tokens: dict, label: str, **extra) -> dict:
    h = {"Authorization": f"Bearer {tokens[label]}"} if label != "public" else {}
    h.update(extra)
    return h


def q(settings, sql_text: str, params=()) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql_text, params).fetchall()


def some_key(settings, layer: str, offset: int = 0) -> str:
    return q(settings, f"SELECT _key FROM data.{layer} WHERE _vto IS NULL ORDER BY _key OFFSET %s LIMIT 1",
             (offset,))[0][0]


def layer_state(settings, layer: str) -> tuple:
    """(current version, versions, rows, a digest of every row's key, hash and version range):
    equal before and after a refused write means nothing changed."""
    return q(settings, f"""
        SELECT (SELECT current_version FROM catalog.layers WHERE name = %s),
               (SELECT count(*) FROM catalog.layer_versions WHERE layer = %s), count(*),
               md5(string_agg(_key || _hash || _vfrom || coalesce(_vto::text, '-'), ',' ORDER BY _rid))
        FROM data.{layer}""", (layer, layer))[0]


def feature(client, layer: str, key: str, headers=None) -> tuple[dict, str]:
    r = client.get(f"/collections/{layer}/items/{key}", headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json(), r.headers["etag"]


def body_of(feat: dict, **props) -> bytes:
    out = {"type": "Feature", "properties": {**feat["properties"], **props}, "geometry": feat["geometry"]}
    for hidden in ("_area_m2", "_length_m"):
        out["properties"].pop(hidden, None)
    return json.dumps(out).encode()


def audit_rows(settings, action: str, feature: str) -> list[tuple]:
    return q(settings, "SELECT principal, role, department, status, params, layers FROM catalog.audit_log "
             "WHERE action = %s AND params->>'feature' = %s ORDER BY id", (action, feature))


def edit_forest(c, h, settings, offset: int, reason: str) -> int:
    """PATCH one forest feature (the offset-th key) with its ETag, ``reason`` as the species and
    the reason; the new layer version."""
    key = some_key(settings, "forest", offset)
    _, etag = feature(c, "forest", key, h)
    r = c.patch(f"/collections/forest/items/{key}", params={"reason": reason},
                json={"properties": {"lin_zhong": reason}}, headers={**h, "If-Match": etag, "Content-Type": GEOJSON})
    assert r.status_code == 200, r.text
    return r.json()["version"]

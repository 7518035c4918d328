"""Administration over HTTP (admin keys only): departments, API keys, layer sharing, the audit log.

Routes only: key checking, the request gate and the audit writer are installed by the app
factory (api/app.py), which refuses to start without them. (Ingest endpoints under
/admin/layers/{layer}/ingest and /admin/jobs live in api/ingest.py.)
"""

from __future__ import annotations


from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from geobase.api.routing import LazyAPIRoute
from geobase import audit, keys
from geobase.catalog import departments
from geobase.api.deps import get_registry_dep, get_settings_dep
from geobase.db import connect
from geobase.catalog import set_sharing
from geobase.api.gate import get_principal
from geobase.security import Principal, require_role
from geobase.settings import Settings
from geobase.specs import Registry
from geobase.vocab import NAME_PATTERN, Role, SharingLevel

router = APIRouter(route_class=LazyAPIRoute, prefix="/admin", tags=["Administration"])

NAME = NAME_PATTERN


async def admin_principal(principal: Principal = Depends(get_principal)) -> Principal:
    require_role(principal, "admin")
    return principal


class DepartmentIn(BaseModel):
    # defer_build: its schema is built by its first use, not by every server start (issue #15)
    model_config = ConfigDict(defer_build=True, extra="forbid")
    code: str = Field(pattern=NAME, description="short code, e.g. natural_resources")
    name_zh: str = Field(min_length=1, max_length=200)
    name_en: str = Field(min_length=1, max_length=200)
    contact: str | None = Field(default=None, max_length=200)


class KeyIn(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="who or what holds the key")
    role: Role
    department: str | None = Field(default=None, pattern=NAME, description="required except for admin")
    expires_days: float | None = Field(default=None, gt=0, le=3650)


class SharingIn(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")
    sharing: SharingLevel
    shared_with: list[str] = Field(default_factory=list, max_length=100)


@router.get("/departments", summary="List departments")
def departments_list(_: Principal = Depends(admin_principal), settings: Settings = Depends(get_settings_dep)):
    with connect(settings) as conn:
        return {"departments": departments.list_departments(conn)}


@router.post("/departments", status_code=201, summary="Add a department")
def departments_add(body: DepartmentIn, _: Principal = Depends(admin_principal),
                    settings: Settings = Depends(get_settings_dep)):
    audit.note(action="department.add", department=body.code, name_zh=body.name_zh, name_en=body.name_en)
    with connect(settings) as conn:
        departments.add_department(conn, body.code, body.name_zh, body.name_en, body.contact)
        conn.commit()
    return body.model_dump()


@router.get("/keys", summary="List API keys (never their secrets)")
def keys_list(include_revoked: bool = Query(False), _: Principal = Depends(admin_principal),
              settings: Settings = Depends(get_settings_dep)):
    with connect(settings) as conn:
        return {"keys": keys.list_keys(conn, include_revoked=include_revoked)}


@router.post("/keys", status_code=201, summary="Create an API key; the secret is shown only in this reply")
def keys_create(body: KeyIn, who: Principal = Depends(admin_principal),
                settings: Settings = Depends(get_settings_dep)):
    # noted before the attempt, so a refused one is audited with what was asked
    audit.note(action="key.create", key_name=body.name, role=body.role, key_department=body.department)
    with connect(settings) as conn:
        created = keys.create_key(conn, name=body.name, role=body.role, department=body.department,
                                  expires_days=body.expires_days, created_by=f"api:{who.key_id}")
        conn.commit()
    audit.note(new_key=created.id)
    return created.as_dict()


@router.delete("/keys/{key_id}", summary="Revoke an API key (effective within GEOBASE_KEY_CACHE_S)")
def keys_revoke(key_id: str = Path(pattern=r"^[0-9a-f]{12}$"), _: Principal = Depends(admin_principal),
                settings: Settings = Depends(get_settings_dep)):
    audit.note(action="key.revoke", revoked_key=key_id)
    with connect(settings) as conn:
        keys.revoke_key(conn, key_id)
        conn.commit()
    return {"id": key_id, "revoked": True}


@router.put("/layers/{layer}/sharing", summary="Change a layer's sharing level")
def layer_share(body: SharingIn, layer: str = Path(pattern=NAME), _: Principal = Depends(admin_principal),
                settings: Settings = Depends(get_settings_dep), registry: Registry = Depends(get_registry_dep)):
    audit.note(action="layer.share", layer=layer, sharing=body.sharing, shared_with=body.shared_with)
    with connect(settings) as conn:
        result = set_sharing(conn, registry, layer, body.sharing, body.shared_with)
        conn.commit()
    return result


@router.get("/audit", summary="Query the audit log (newest first)")
def audit_query(layer: str | None = Query(None, max_length=63), who: str | None = Query(None, max_length=200),
                since: str | None = Query(None, max_length=40, description="ISO 8601"),
                until: str | None = Query(None, max_length=40, description="ISO 8601"),
                action: str | None = Query(None, max_length=63),
                limit: int = Query(100, ge=1, le=10_000),
                _: Principal = Depends(admin_principal), settings: Settings = Depends(get_settings_dep)):
    with connect(settings) as conn:
        return {"entries": audit.query(conn, layer=layer, who=who, since=since, until=until, action=action,
                                       limit=limit)}


@router.get("/audit/stats", summary="The audit writer's counters: written, pending, replaced, dropped")
async def audit_stats(request: Request, _: Principal = Depends(admin_principal)):
    """``dropped`` > 0 means audit rows were lost (queue full while the database refused them);
    ``replaced`` counts rows the database refused, stored as a minimal ``audit.unwritable`` record."""
    writer = getattr(request.app.state, "audit_writer", None)
    return writer.stats() if writer is not None else {"status": "no writer"}

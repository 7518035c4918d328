"""Request and approve conditional data over HTTP: an outside user registers and asks
(``/catalog/requesters``, ``/catalog/requests`` with ``X-Requester-Token``), the owner
department's steward decides (``/admin/requests``). Every step is audited (``catalog.request.*``).

Routes only: the rules are in :mod:`geobase.catalog.requests`; what may be asked for is what the
catalog lists as conditional in this zone (:func:`geobase.security.catalog_lists`).
"""

from __future__ import annotations

from pathlib import Path as FsPath

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from geobase.api.routing import LazyAPIRoute
from geobase.api import negotiation
from geobase.api.catalog import _CACHE
from geobase.api.deps import get_conn, get_registry_dep, get_settings_dep
from geobase.api.gate import get_principal
from pydantic import BaseModel, ConfigDict, Field

from geobase import audit
from geobase.catalog import requests as req
from geobase.db import connect
from geobase.errors import InvalidInput
from geobase.security import LayerAccess, Principal, catalog_lists
from geobase.settings import Settings
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["Catalog requests"])


class RequesterIn(BaseModel):
    # defer_build: its schema is built by its first use, not by every server start (issue #15)
    model_config = ConfigDict(defer_build=True, extra="forbid")
    name: str = Field(min_length=1, max_length=300)
    organisation: str = Field(min_length=1, max_length=300)
    contact: str = Field(min_length=1, max_length=300, description="phone or e-mail: the department contacts you")


class RequestIn(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")
    datasets: list[str] = Field(min_length=1, max_length=50)
    formats: list[str] = Field(default_factory=list, max_length=20, description=(
        "the formats the key reads the data in, any of geojson, csv, gpkg, fgb, parquet, shp (files), json and "
        "html (the API's pages), mvt (vector tiles), png (picture tiles), geotiff (a raster's coverage); "
        "none: every format"))
    bbox: list[float] | None = Field(default=None, min_length=4, max_length=4)
    purpose: str = Field(min_length=5, max_length=2000)
    days: int = Field(default=30, ge=1, le=366, description="how long the key should last")


class DecisionIn(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)
    days: int | None = Field(default=None, ge=1, le=366, description="approve: the key's life (default: as asked)")


async def _requestable(request: Request, conn, registry: Registry) -> dict[str, str]:
    """Conditional layers the catalog lists in this zone -> their owner department."""
    cache = getattr(request.app.state, "catalog_records", None) or _CACHE
    return {r["id"]: r["access"][1] for r in await cache.records(conn, registry)
            if r["kind"] != "external" and r["openness"] == "conditional"
            and catalog_lists(LayerAccess(*r["access"], r["grade"], r["openness"]))}


@router.post("/catalog/requesters", status_code=201, summary="Register to request conditional data")
def register(body: RequesterIn, settings: Settings = Depends(get_settings_dep)):
    with connect(settings) as conn:
        out = req.register(conn, name=body.name, organisation=body.organisation, contact=body.contact)
        conn.commit()
    audit.note(action="catalog.requester.register", force=True, requester=out["id"], organisation=body.organisation)
    return out | {"note": "keep the token: it is shown only now (X-Requester-Token)"}


@router.post("/catalog/requests", status_code=201, summary="Request conditional datasets (X-Requester-Token)")
async def create(request: Request, body: RequestIn, x_requester_token: str | None = Header(None),
                 conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                 settings: Settings = Depends(get_settings_dep)):
    requestable = await _requestable(request, conn, registry)
    with connect(settings) as wconn:
        who = req.requester_of(wconn, x_requester_token)
        out = req.create_request(wconn, who, datasets=body.datasets, formats=body.formats, bbox=body.bbox,
                                 purpose=body.purpose, days=body.days, requestable=requestable)
        wconn.commit()
    audit.note(action="catalog.request.create", force=True, request=out["id"], datasets=out["datasets"],
               requester=str(who["id"]))
    return out


@router.get("/catalog/requests", summary="The state of your requests (X-Requester-Token); a new key shown once")
def mine(x_requester_token: str | None = Header(None), settings: Settings = Depends(get_settings_dep)):
    with connect(settings) as conn:
        who = req.requester_of(conn, x_requester_token)
        out = req.requests_of(conn, who)
        conn.commit()
    audit.note(action="catalog.request.read", force=True, requester=str(who["id"]),
               keys_handed=[r["key_id"] for r in out if "key" in r])
    # one requester's answer (maybe holding a key): never kept by a shared cache
    return JSONResponse({"requests": out}, headers={"Cache-Control": "private, no-store",
                                                    "Vary": "X-Requester-Token"})


PAGE = FsPath(__file__).resolve().parent / "templates" / "requests.html"


@router.get("/admin/requests", summary="Requests for your department's datasets (steward or admin); "
            "f=html: the page to decide them")
def department(request: Request, status: str | None = Query(None, pattern="^(pending|approved|refused)$"),
               f: str | None = Query(None, description="json or html"),
               principal: Principal = Depends(get_principal), settings: Settings = Depends(get_settings_dep)):
    if (f or negotiation.chosen(request, "json")).lower() == "html":
        # the page holds no data: it asks for a key and reads this route's JSON with it
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})
    if f is not None and f.lower() != "json":
        raise InvalidInput("f: one of json, html", parameter="f")
    with connect(settings) as conn:
        return {"requests": req.department_requests(conn, principal, status)}


def _decide(request_id: str, body: DecisionIn, principal: Principal, settings: Settings, approve: bool) -> dict:
    with connect(settings) as conn:
        out = req.decide(conn, principal, request_id, approve=approve, reason=body.reason, days=body.days)
        conn.commit()
    audit.note(action="catalog.request." + ("approve" if approve else "refuse"), force=True, request=request_id,
               key_issued=out.get("key_id"), datasets=out["datasets"])
    return out


@router.post("/admin/requests/{requestId}/approve", summary="Approve: issue a scoped key that expires by itself")
def approve(body: DecisionIn, requestId: str = Path(max_length=40), principal: Principal = Depends(get_principal),
            settings: Settings = Depends(get_settings_dep)):
    return _decide(requestId, body, principal, settings, True)


@router.post("/admin/requests/{requestId}/refuse", summary="Refuse a request, saying why")
def refuse(body: DecisionIn, requestId: str = Path(max_length=40), principal: Principal = Depends(get_principal),
           settings: Settings = Depends(get_settings_dep)):
    return _decide(requestId, body, principal, settings, False)

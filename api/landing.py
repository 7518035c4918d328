"""Landing page, health check and the plain catalog listing."""

from __future__ import annotations

import html

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from geobase.api.routing import LazyAPIRoute
from geobase import __version__
from geobase.api import negotiation
from geobase.api.deps import base_url, get_conn, get_registry_dep
from geobase.api.gate import get_principal
from geobase.catalog import current_layers
from geobase.pool import database_versions
from geobase.security import Principal, visible_layers
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute)


def wants_html(request: Request, f: str | None) -> bool:
    if f:
        return f.lower() in ("html", "text/html")
    return negotiation.chosen(request, "json") == "html"  # Accept, weighed in api/negotiation.py


@router.get("/", summary="Landing page", tags=["Capabilities"])
async def landing(request: Request, f: str | None = Query(None, description="json or html")):
    root = base_url(request)
    links = [
        {"rel": "self", "type": "application/json", "title": "This document", "href": f"{root}/?f=json"},
        {"rel": "alternate", "type": "text/html", "title": "This document as HTML", "href": f"{root}/?f=html"},
        {"rel": "service-desc", "type": "application/vnd.oai.openapi+json;version=3.0",
         "title": "The API definition", "href": f"{root}/api"},
        {"rel": "service-doc", "type": "text/html", "title": "The API documentation", "href": f"{root}/docs"},
        {"rel": "conformance", "type": "application/json", "title": "Conformance classes",
         "href": f"{root}/conformance"},
        {"rel": "data", "type": "application/json", "title": "Collections", "href": f"{root}/collections"},
        {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes", "type": "application/json",
         "title": "Tile matrix sets", "href": f"{root}/tileMatrixSets"},
        {"rel": "alternate", "type": "text/html", "title": "The one map", "href": f"{root}/map"},
        {"rel": "status", "type": "application/json", "title": "Health", "href": f"{root}/health"},
    ]
    doc = {
        "title": "geobase — natural resources one map (自然资源一张图)",
        "description": "Land use, water, forest and spatial planning layers of every department in one "
        "PostGIS database: OGC API Features and Tiles, overlay analysis and the web map.",
        "version": __version__,
        "links": links,
    }
    if wants_html(request, f):
        items = "".join(
            f'<li><a href="{html.escape(l["href"])}">{html.escape(l["title"])}</a></li>' for l in links
        )
        return HTMLResponse(
            f"<!doctype html><html lang='zh'><head><meta charset='utf-8'><title>geobase</title></head>"
            f"<body><h1>{html.escape(doc['title'])}</h1><p>{html.escape(doc['description'])}</p>"
            f"<ul>{items}</ul></body></html>"
        )
    return JSONResponse(doc)


@router.get("/health", summary="Health: database and PostGIS versions, audit queue, read replicas", tags=["Capabilities"])
async def health(request: Request, conn: psycopg.AsyncConnection = Depends(get_conn)):
    doc = {"status": "ok", "version": __version__, "database": await database_versions(conn)}
    writer = getattr(request.app.state, "audit_writer", None)
    if writer is not None:  # the audit alarm for monitoring: "alarm" once rows were dropped (details: /admin/audit/stats)
        st = writer.stats()
        doc["audit"] = {"status": st["status"], "pending": st["pending"], "dropped": st["dropped"]}
    pool = getattr(request.app.state, "pool", None)
    if getattr(pool, "replicas", None):  # the read replicas as the router sees them (geobase/pool.py)
        doc["replicas"] = pool.describe()
    return doc


@router.get("/layers", summary="The layer catalog (plain listing)", tags=["Catalog"])
async def layers(request: Request, conn: psycopg.AsyncConnection = Depends(get_conn),
                 registry: Registry = Depends(get_registry_dep), principal: Principal = Depends(get_principal)):
    visible = {s.name for s in await visible_layers(conn, principal, registry)}
    out = []
    for name, c in (await current_layers(conn)).items():  # in name order
        spec = registry.layers.get(name)
        if spec is None or name not in visible:
            continue
        out.append({"name": name, "title": spec.title.model_dump(), "department": spec.department,
                    "sharing": c.sharing, "kind": spec.kind, "geometry": spec.geometry,
                    "current_version": c.version, "feature_count": c.rows_total,
                    "updated": c.created_at.isoformat() if c.created_at else None})
    return {"layers": out}

"""``GET /search``: find a parcel, a division, a village or owner, a place or a position for the
one map's search box. Thin: the service is :mod:`geobase.search` (what is searched, masks,
coordinate reading)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from geobase.api.routing import LazyAPIRoute
from geobase import search as search_service
from geobase.api.deps import get_conn, get_registry_dep
from geobase.api.gate import get_principal
from geobase.security import Principal
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["Map"])


@router.get("/search", summary="Find parcels, divisions, villages, places or coordinates for the map")
async def search(
    q: str | None = Query(None, description=(
        f"What to find (at most {search_service.Q_MAX} characters): a parcel number (BSM, 图斑编号), a division "
        "code or name, a village or owner name (where the caller may read it), a place name, lon/lat, or "
        "CGCS2000 Gauss-Krüger easting/northing with the zone prefix (39512345.6 3456789.0) or a zone "
        "(512345.6 3456789.0 zone 39)")),
    limit: int | None = Query(None, description=f"Most results: 1..{search_service.LIMIT_MAX} "
                                                f"(default {search_service.LIMIT_DEFAULT})"),
    conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
    principal: Principal = Depends(get_principal),
) -> dict:
    return await search_service.search(conn, principal, registry, q, limit)


@router.get("/search/labels", summary="Place names to write on the map (townships, villages, lakes) as GeoJSON points")
async def labels(conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                 principal: Principal = Depends(get_principal)) -> dict:
    return await search_service.label_points(conn, principal, registry)

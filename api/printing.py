"""Thematic map sheets over HTTP: ``POST /maps/print`` with a layout (JSON, see
:mod:`geobase.printing.layout`) answers the sheet as PDF or PNG (the layout's ``format``).

The layout is taken as a plain JSON object and checked by the core, so an unknown key is a 400
naming that key (not FastAPI's generic 422). Sheets are drawn in the analysis slots (a flood of
sheets cannot take every pooled connection), from the layers the caller may see, without the
fields masked for the caller. The facts of the sheet (scale, extent, frame and scale bar in
millimetres) travel in the ``X-Geobase-Sheet`` header as JSON."""

from __future__ import annotations

import json

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response
from geobase.api.routing import LazyAPIRoute
from geobase.api.analysis import analysis_slot
from geobase.api.deps import get_registry_dep, get_settings_dep
from geobase.api.gate import get_principal

from geobase.printing.service import print_sheet
from geobase.security import Principal
from geobase.settings import Settings
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["maps"])

EXAMPLE = {"title": "示范县土地利用现状图", "layers": ["planning_zones", "land_use", "control_lines"],
           "extent": {"bbox": [118.10, 29.05, 118.15, 29.10]}, "paper": "A4", "orientation": "landscape",
           "dpi": 150, "format": "pdf", "source": "示范县自然资源局", "approval_number": ""}


@router.post("/maps/print", summary="A thematic map sheet (PDF or PNG) from a declarative layout",
             response_class=Response,
             responses={200: {"content": {"application/pdf": {}, "image/png": {}, "image/svg+xml": {}}}})
async def print_map(request: Request, layout: dict = Body(..., examples=[EXAMPLE]),
                    settings: Settings = Depends(get_settings_dep), registry: Registry = Depends(get_registry_dep),
                    principal: Principal = Depends(get_principal)) -> Response:
    async with analysis_slot(request) as conn:
        body, media, info = await print_sheet(conn, registry, principal, settings, layout)
    ext = {"application/pdf": "pdf", "image/png": "png"}.get(media, "svg")
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'inline; filename="sheet.{ext}"',
        "X-Geobase-Sheet": json.dumps(info, separators=(",", ":")),
        "Cache-Control": "private, no-store", "Vary": "Authorization, X-API-Key"})

"""Indicator monitoring over HTTP: the indicators and their values by division and version
(JSON, CSV for Excel), the warnings (list, acknowledge, a Server-Sent Events stream), the admin's
target import, and the dashboard page. Routes only: the core is :mod:`geobase.indicators`."""

from __future__ import annotations


import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from geobase.api.routing import LazyAPIRoute
from geobase.api.deps import base_url, get_conn, get_registry_dep, request_connection
from geobase.api.gate import get_principal
from geobase.api.negotiation import chosen
from geobase.api.streaming import event_stream
from geobase.api.streaming import last_event_id as last_event_id_checked

from geobase import audit
from geobase.catalog import indicators as cat
from geobase.errors import InvalidInput, NotFound, UnsupportedMediaType
from geobase.indicators import service, targets
from geobase.security import Principal, require_role
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["Indicators"])

#: who may acknowledge a warning (a named person with a key: the acknowledgement is audited)
ACK_ROLE = "analyst"
VARY = {"Vary": "Accept, Authorization, X-API-Key"}
CSV_TYPES = ("text/csv", "application/csv", "text/plain")


def _cache(principal: Principal) -> dict[str, str]:
    return {"Cache-Control": "private, no-cache" if not principal.is_public else "no-cache", **VARY}


async def _mine(request: Request, conn, principal: Principal, registry: Registry) -> dict:
    return await service.visible(conn, principal, registry, request.app.state.indicators)


def _json(doc, principal: Principal, status: int = 200) -> Response:
    return Response(orjson.dumps(doc, default=str), media_type="application/json", status_code=status,
                    headers=_cache(principal))


@router.get("/indicators", summary="Indicator models and their latest value, target and level per division")
async def indicators_list(request: Request, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                          principal: Principal = Depends(get_principal)):
    doc = await service.overview(conn, registry, await _mine(request, conn, principal, registry))
    root = base_url(request)
    for ind in doc["indicators"]:
        ind["links"] = [{"rel": "self", "type": "application/json", "href": f"{root}/indicators/{ind['id']}"},
                        {"rel": "alternate", "type": "text/csv", "href": f"{root}/indicators/{ind['id']}?f=csv"}]
    return _json(doc, principal)


@router.get("/indicators/{indicatorId}", summary="One indicator's values by division and layer version (time series)")
async def indicator_detail(request: Request, indicatorId: str = Path(max_length=64),
                           division: str | None = Query(None, pattern=r"^\d{6,12}$"),
                           f: str | None = Query(None, description="json (default) or csv (UTF-8 with BOM, for Excel)"),
                           conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                           principal: Principal = Depends(get_principal)):
    fmt = f or chosen(request, "json")  # f= wins over Accept (api/negotiation.py)
    if fmt not in ("json", "csv"):
        raise InvalidInput(f"f: {fmt[:20]!r} is not one of json, csv", parameter="f")
    doc = await service.detail(conn, registry, await _mine(request, conn, principal, registry), indicatorId, division)
    if fmt == "csv":
        return Response(service.detail_csv(doc), media_type="text/csv; charset=utf-8", headers={
            **_cache(principal), "Content-Disposition": f'attachment; filename="{indicatorId}.csv"'})
    return _json(doc, principal)


@router.get("/warnings", summary="Warnings raised by indicator thresholds (newest first)")
async def warnings_list(request: Request, status: str | None = Query(None, pattern="^(open|cleared)$"),
                        division: str | None = Query(None, pattern=r"^\d{6,12}$"), conn=Depends(get_conn),
                        registry: Registry = Depends(get_registry_dep), principal: Principal = Depends(get_principal)):
    mine = await _mine(request, conn, principal, registry)
    return _json({"warnings": await service.warning_list(conn, mine, status=status, division=division)}, principal)


@router.post("/warnings/{warningId}/acknowledge", summary="Acknowledge a warning (audited; needs an analyst key)")
async def acknowledge(request: Request, warningId: int = Path(ge=1, le=2**62), conn=Depends(get_conn),
                      registry: Registry = Depends(get_registry_dep), principal: Principal = Depends(get_principal)):
    require_role(principal, ACK_ROLE)
    mine = await _mine(request, conn, principal, registry)
    w = await cat.warning(conn, warningId)
    if w is None or w["indicator"] not in mine:
        raise NotFound(f"no warning {warningId}", parameter="warningId")
    w = await cat.acknowledge(conn, warningId, principal.name)
    audit.note(action="warning.acknowledge", warning=warningId, indicator=w["indicator"], division=w["division"],
               force=True)
    return _json(service.warning_doc(w, mine[w["indicator"]]), principal)


def _event(e: dict) -> bytes:
    data = orjson.dumps({"event": e["event"], "warning": e["data"], "at": e["at"]}, default=str).decode()
    return f"id: {e['id']}\nevent: {e['event']}\ndata: {data}\n\n".encode()


@router.get("/warnings/stream", summary="Server-Sent Events: warnings raised, cleared, acknowledged (Last-Event-ID)")
async def warnings_stream(request: Request, until: int | None = Query(None, ge=0, le=2**62),
                          last_event_id: str | None = Header(None, alias="Last-Event-ID"),
                          registry: Registry = Depends(get_registry_dep),
                          principal: Principal = Depends(get_principal)):
    resumed = last_event_id_checked(last_event_id, "the id of the last event received")
    async with request_connection(request) as conn:
        mine = await _mine(request, conn, principal, registry)
        start = resumed if resumed is not None else await cat.last_event(conn)

    async def read_since(conn, last: int) -> list[tuple[int, bytes | None]]:
        return [(e["id"], _event(e) if e["data"]["indicator"] in mine else None)
                for e in await cat.events_since(conn, last)]

    return event_stream(request, start, until, read_since, VARY)


@router.post("/admin/indicators/targets", summary="Import planning targets from CSV (indicator,division,target)")
async def import_targets(request: Request, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                         principal: Principal = Depends(get_principal)):
    require_role(principal, "admin")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in CSV_TYPES:
        raise UnsupportedMediaType(f"Content-Type: send text/csv, not {ctype[:60] or '(none)'!r}",
                                   parameter="Content-Type")
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("body: the CSV is not UTF-8 (save it as 'CSV UTF-8' in Excel)", parameter="body") from None
    result = await targets.import_targets(conn, registry, request.app.state.indicators, text, source="api",
                                          user=principal.name)
    audit.note(action="indicators.targets.import", count=result["imported"], force=True)
    return _json(result, principal)


@router.get("/dashboard", response_class=HTMLResponse, summary="The indicator dashboard (web page)")
async def dashboard_page(request: Request,
                         indicator: str | None = Query(None, max_length=64, description="The indicator shown first"),
                         division: str | None = Query(None, pattern=r"^\d{6,12}$", description="The division charted"),
                         lang: str | None = Query(None, pattern="^(zh|en)$", description="zh (default) or en")):
    """The page reads its choices from the URL itself (a shared link opens the same view)."""
    from geobase.api.map import TILES_DIR, maplibre_dir

    maplibre_dir(request.app.state.settings)  # fail clearly, not with a blank page
    page = TILES_DIR / "templates" / "dashboard.html"
    return HTMLResponse(page.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})

"""Webhooks over HTTP: register, list, remove; the dead-letter list and its retry.

    POST   /admin/webhooks                               admin: {layer, url, events?, description?}
    GET    /admin/webhooks[?layer=]                      admin: every active webhook (never a secret)
    DELETE /admin/webhooks/{webhookId}                   admin: stop it (its pending deliveries cancelled)
    GET    /admin/webhooks/deliveries[?status=dead]      admin: deliveries, newest first (the dead letters)
    POST   /admin/webhooks/deliveries/{id}/retry         admin: a dead delivery queued again
    POST   /collections/{id}/webhooks                    the layer's department (its editors) or an admin
    GET    /collections/{id}/webhooks
    DELETE /collections/{id}/webhooks/{webhookId}

The reply to a registration holds the signing secret: the only time it is shown (it is not in
any listing, log or audit row). Signing, delivery and retries: :mod:`geobase.webhooks`.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from geobase.api.routing import LazyAPIRoute
from geobase import audit, webhooks
from geobase.api.admin import admin_principal
from geobase.api.deps import Collection, get_registry_dep, get_settings_dep, streamed_feature_collection
from geobase.api.gate import get_principal
from geobase.catalog import webhooks as outbox
from geobase.db import connect
from geobase.errors import NotFound
from geobase.security import Principal, require_editor
from geobase.settings import Settings
from geobase.specs import Registry
from geobase.vocab import NAME_PATTERN

router = APIRouter(route_class=LazyAPIRoute, tags=["Webhooks"])

UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
SECRET_NOTE = ("Store the secret now: it is not shown again. Each delivery carries X-Geobase-Timestamp and "
               "X-Geobase-Signature: sha256=HMAC-SHA256(secret, '<timestamp>.<body>').")


class HookIn(BaseModel):
    # defer_build: its schema is built by its first use, not by every server start (issue #15)
    model_config = ConfigDict(defer_build=True, extra="forbid")
    url: str = Field(min_length=1, max_length=webhooks.MAX_URL, description="http(s) URL the events are POSTed to")
    events: list[str] | None = Field(default=None, max_length=20, description="default: ['version']")
    description: str | None = Field(default=None, max_length=200)


class AdminHookIn(HookIn):
    layer: str = Field(pattern=NAME_PATTERN)


def _shown_url(url: str) -> str:
    """The URL as audited: scheme, host and path only (a query may carry a receiver's token)."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}{p.path}"


def _register(settings: Settings, layer: str, body: HookIn, who: Principal) -> dict:
    audit.note(action="webhook.add", layer=layer, url=_shown_url(body.url), events=body.events)
    with connect(settings) as conn:
        row = webhooks.register(conn, settings, layer=layer, url=body.url, events=body.events,
                                description=body.description, department=who.department,
                                created_by=who.name or who.key_id or "api")
        conn.commit()
    audit.note(webhook=row["id"])
    return {**row, "note": SECRET_NOTE}


def _remove(settings: Settings, wid: str, layer: str | None) -> dict:
    with connect(settings) as conn:
        row = outbox.get_webhook(conn, wid)
        if layer is not None and row["layer"] != layer:
            raise NotFound(f"no webhook {wid!r} on {layer!r}", parameter="webhookId")
        audit.note(action="webhook.remove", layer=row["layer"], webhook=wid, url=_shown_url(row["url"]))
        outbox.remove_webhook(conn, wid)
        conn.commit()
    return {"id": wid, "removed": True}


def _list(settings: Settings, layer: str | None) -> dict:
    with connect(settings) as conn:
        return {"webhooks": outbox.list_webhooks(conn, layer)}


@router.post("/admin/webhooks", status_code=201, summary="Register a webhook; the secret is shown only in this reply")
async def admin_add(body: AdminHookIn, who: Principal = Depends(admin_principal),
                    settings: Settings = Depends(get_settings_dep), registry: Registry = Depends(get_registry_dep)):
    registry.layer(body.layer)  # 404 for an unknown layer
    return await run_in_threadpool(_register, settings, body.layer, body, who)


@router.get("/admin/webhooks", summary="List webhooks (never their secrets)")
async def admin_list(layer: str | None = Query(None, pattern=NAME_PATTERN), _: Principal = Depends(admin_principal),
                     settings: Settings = Depends(get_settings_dep)):
    return await run_in_threadpool(_list, settings, layer)


@router.delete("/admin/webhooks/{webhookId}", summary="Remove a webhook (its pending deliveries are cancelled)")
async def admin_remove(webhookId: str = Path(pattern=UUID), _: Principal = Depends(admin_principal),
                       settings: Settings = Depends(get_settings_dep)):
    return await run_in_threadpool(_remove, settings, webhookId, None)


@router.get("/admin/webhooks/deliveries", summary="Webhook deliveries, newest first (status=dead: the dead letters)")
async def admin_deliveries(status: Literal["pending", "delivered", "dead", "cancelled"] | None = Query(None),
                           layer: str | None = Query(None, pattern=NAME_PATTERN),
                           webhook: str | None = Query(None, pattern=UUID), limit: int = Query(100, ge=1, le=10_000),
                           _: Principal = Depends(admin_principal), settings: Settings = Depends(get_settings_dep)):
    def run() -> dict:
        with connect(settings) as conn:
            return {"deliveries": outbox.list_deliveries(conn, status=status, layer=layer, webhook=webhook,
                                                         limit=limit)}
    return await run_in_threadpool(run)


@router.post("/admin/webhooks/deliveries/{deliveryId}/retry", summary="Queue a dead delivery again")
async def admin_retry(deliveryId: int = Path(ge=1, le=2**62), _: Principal = Depends(admin_principal),
                      settings: Settings = Depends(get_settings_dep)):
    audit.note(action="webhook.retry", delivery=deliveryId)

    def run() -> dict:
        with connect(settings) as conn:
            row = outbox.retry_delivery(conn, deliveryId)
            conn.commit()
        audit.note(layer=row["layer"], webhook=row["webhook_id"])
        return row
    return await run_in_threadpool(run)


@router.post("/collections/{collectionId}/webhooks", status_code=201,
             summary="Register a webhook on this layer (its department's editors); the secret is shown only here")
async def layer_add(body: HookIn, c: Collection = Depends(streamed_feature_collection),
                    who: Principal = Depends(get_principal), settings: Settings = Depends(get_settings_dep)):
    require_editor(who, c.state.access)
    return await run_in_threadpool(_register, settings, c.spec.name, body, who)


@router.get("/collections/{collectionId}/webhooks", summary="This layer's webhooks (its department's editors)")
async def layer_list(c: Collection = Depends(streamed_feature_collection), who: Principal = Depends(get_principal),
                     settings: Settings = Depends(get_settings_dep)):
    require_editor(who, c.state.access)
    return await run_in_threadpool(_list, settings, c.spec.name)


@router.delete("/collections/{collectionId}/webhooks/{webhookId}", summary="Remove a webhook of this layer")
async def layer_remove(webhookId: str = Path(pattern=UUID), c: Collection = Depends(streamed_feature_collection),
                       who: Principal = Depends(get_principal), settings: Settings = Depends(get_settings_dep)):
    require_editor(who, c.state.access)
    return await run_in_threadpool(_remove, settings, webhookId, c.spec.name)

"""``geobase admin webhook add|list|remove|deliveries|retry``: signed webhooks from the terminal.

The operator acts as an admin (the CLI has database access); each change is written to the audit
log as principal ``cli:<os user>`` without the secret, which ``add`` prints once."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from geobase.settings import get_settings

admin_app = typer.Typer(help="Administration: webhooks and their dead-letter list.", no_args_is_help=True)
webhook_app = typer.Typer(help="Signed webhooks: add (secret shown once), list, remove; deliveries, retry.",
                          no_args_is_help=True)


def _audit(conn, action: str, layer: str | None, **params) -> None:
    from geobase import audit
    from geobase.cli.admin import _operator

    audit.record(conn, principal=_operator(), action=action, layers=[layer] if layer else None, params=params)


@webhook_app.command("add")
def add_cmd(layer: str = typer.Argument(..., help="The layer whose events are sent"),
            url: str = typer.Argument(..., help="http(s) URL the events are POSTed to"),
            event: Optional[List[str]] = typer.Option(None, "--event", help="Event type (repeat; default: version)"),
            description: Optional[str] = typer.Option(None, help="What the receiver is"),
            as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """Register a webhook; prints its signing secret once."""
    from geobase import webhooks
    from geobase.cli.admin import _operator
    from geobase.db import connect
    from geobase.specs import get_registry

    settings = get_settings()
    get_registry(settings).layer(layer)
    with connect(settings) as conn:
        row = webhooks.register(conn, settings, layer=layer, url=url, events=list(event) if event else None,
                                description=description, department=None, created_by=_operator().name)
        _audit(conn, "webhook.add", layer, webhook=row["id"], url=url.split("?")[0])
        conn.commit()
    if as_json:
        typer.echo(json.dumps(row, ensure_ascii=False, default=str))
        return
    typer.echo(f"webhook {row['id']}\nlayer   {layer}\nurl     {row['url']}\nevents  {','.join(row['events'])}\n\n"
               f"  {row['secret']}\n\nStore the secret now: it is not shown again. Deliveries are signed "
               f"X-Geobase-Signature: sha256=HMAC-SHA256(secret, '<X-Geobase-Timestamp>.<body>').")


@webhook_app.command("list")
def list_cmd(layer: Optional[str] = typer.Option(None, "--layer", help="Only this layer's webhooks"),
             as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """List webhooks (never their secrets) with their pending and dead deliveries."""
    from geobase.catalog import webhooks as outbox
    from geobase.cli.admin import _print
    from geobase.db import connect

    with connect(get_settings()) as conn:
        rows = outbox.list_webhooks(conn, layer)
    _print(rows, as_json, ["id", "layer", "url", "events", "department", "created_by", "pending", "dead"], "webhooks")


@webhook_app.command("remove")
def remove_cmd(webhook_id: str = typer.Argument(..., help="The webhook id")) -> None:
    """Remove a webhook; its pending deliveries are cancelled."""
    from geobase.catalog import webhooks as outbox
    from geobase.db import connect

    with connect(get_settings()) as conn:
        row = outbox.remove_webhook(conn, webhook_id)
        _audit(conn, "webhook.remove", row["layer"], webhook=webhook_id)
        conn.commit()
    typer.echo(f"webhook {webhook_id} removed")


@webhook_app.command("deliveries")
def deliveries_cmd(status: Optional[str] = typer.Option("dead", "--status",
                                                        help="pending | delivered | dead | cancelled | all"),
                   layer: Optional[str] = typer.Option(None, "--layer"),
                   limit: int = typer.Option(100, "--limit"),
                   as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """Deliveries, newest first; by default the dead-letter list."""
    from geobase.catalog import webhooks as outbox
    from geobase.cli.admin import _print
    from geobase.db import connect

    with connect(get_settings()) as conn:
        rows = outbox.list_deliveries(conn, status=None if status == "all" else status, layer=layer, limit=limit)
    _print(rows, as_json, ["id", "webhook_id", "event", "layer", "status", "attempts", "last_status", "last_error",
                           "created_at"], "webhook deliveries")


@webhook_app.command("retry")
def retry_cmd(delivery_id: int = typer.Argument(..., help="A dead delivery's id")) -> None:
    """Queue a dead delivery again (attempts counted afresh)."""
    from geobase.catalog import webhooks as outbox
    from geobase.db import connect

    with connect(get_settings()) as conn:
        row = outbox.retry_delivery(conn, delivery_id)
        _audit(conn, "webhook.retry", row["layer"], delivery=delivery_id, webhook=row["webhook_id"])
        conn.commit()
    typer.echo(f"delivery {delivery_id} queued again")


def register(app: typer.Typer) -> None:
    admin_app.add_typer(webhook_app, name="webhook")
    app.add_typer(admin_app, name="admin")

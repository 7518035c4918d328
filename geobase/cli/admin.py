"""``geobase departments``, ``geobase keys``, ``geobase layers share``, ``geobase audit``.

CLI actions run with database access (the operator is trusted); each change is written to the
audit log as principal ``cli:<os user>``."""

from __future__ import annotations

import getpass
import json
from typing import List, Optional

import typer

from geobase.settings import get_settings
from geobase.vocab import ROLES, SHARING_LEVELS

departments_app = typer.Typer(help="Departments that own layers and hold keys.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: create (secret shown once), list, revoke.", no_args_is_help=True)


def _operator():
    from geobase.security import Principal

    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return Principal(name=f"cli:{user}", role="admin", key_id=None)


def _print(rows: list[dict], as_json: bool, columns: list[str], title: str) -> None:
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in columns])
    Console(width=200).print(table)


@departments_app.command("list")
def departments_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """List departments."""
    from geobase.catalog import list_departments
    from geobase.db import connect

    with connect(get_settings()) as conn:
        rows = list_departments(conn)
    _print(rows, as_json, ["code", "name_zh", "name_en", "contact"], "departments")


@departments_app.command("add")
def departments_add(code: str = typer.Argument(..., help="Short code, e.g. agriculture"),
                    name_zh: str = typer.Option(..., "--zh", help="Chinese name"),
                    name_en: str = typer.Option(..., "--en", help="English name"),
                    contact: Optional[str] = typer.Option(None, help="Contact e-mail")) -> None:
    """Add a department (departments in layers/departments.yaml are added by every catalog sync)."""
    from geobase import audit
    from geobase.catalog import add_department
    from geobase.db import connect

    with connect(get_settings()) as conn:
        add_department(conn, code, name_zh, name_en, contact)
        audit.record(conn, principal=_operator(), action="department.add", params={"code": code})
        conn.commit()
    typer.echo(f"department {code} added")


@keys_app.command("create")
def keys_create(name: str = typer.Option(..., help="Who or what holds the key"),
                role: str = typer.Option("viewer", help=" | ".join(ROLES)),
                department: Optional[str] = typer.Option(None, "--department", "-d",
                                                         help="Owning department (required except admin)"),
                expires_days: Optional[float] = typer.Option(None, help="Days until the key expires"),
                as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """Create a key. The secret is printed once; only its hash is stored."""
    from geobase import audit, keys
    from geobase.db import connect

    op = _operator()
    with connect(get_settings()) as conn:
        created = keys.create_key(conn, name=name, role=role, department=department,
                                  expires_days=expires_days, created_by=op.name)
        audit.record(conn, principal=op, action="key.create",
                     params={"new_key": created.id, "role": role, "department": department})
        conn.commit()
    if as_json:
        typer.echo(json.dumps(created.as_dict(), ensure_ascii=False))
        return
    typer.echo(f"key id     {created.id}\nrole       {role}\ndepartment {department or '-'}\n"
               f"expires    {created.expires_at.isoformat() if created.expires_at else 'never'}\n\n"
               f"  {created.token}\n\nStore it now: it is not shown again. Use it as "
               f"'Authorization: Bearer <key>' or 'X-API-Key: <key>'.")


@keys_app.command("list")
def keys_list(include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """List keys (ids, never secrets)."""
    from geobase import keys
    from geobase.db import connect

    with connect(get_settings()) as conn:
        rows = keys.list_keys(conn, include_revoked=include_revoked)
    _print(rows, as_json, ["id", "name", "department", "role", "created_at", "expires_at", "revoked_at", "active"],
           "API keys")


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key id (12 hex digits; the part after gb_)")) -> None:
    """Revoke a key; running servers stop accepting it within GEOBASE_KEY_CACHE_S seconds."""
    from geobase import audit, keys
    from geobase.db import connect

    if key_id.startswith("gb_"):
        parsed = keys.parse_key(key_id)
        key_id = parsed[0] if parsed else key_id.split("_")[1]
    with connect(get_settings()) as conn:
        keys.revoke_key(conn, key_id)
        audit.record(conn, principal=_operator(), action="key.revoke", params={"revoked_key": key_id})
        conn.commit()
    typer.echo(f"key {key_id} revoked")


def layers_share(layer: str = typer.Argument(..., help="Layer name"),
                 level: str = typer.Argument(..., help=" | ".join(SHARING_LEVELS)),
                 with_: Optional[List[str]] = typer.Option(None, "--with", help="Department (restricted; repeat)")) -> None:
    """Change a layer's sharing level (kept across catalog syncs)."""
    from geobase import audit
    from geobase.catalog import set_sharing
    from geobase.db import connect
    from geobase.specs import get_registry

    settings = get_settings()
    with connect(settings) as conn:
        result = set_sharing(conn, get_registry(settings), layer, level, list(with_ or []))
        audit.record(conn, principal=_operator(), action="layer.share", layers=[layer],
                     params={"sharing": level, "shared_with": result["shared_with"]})
        conn.commit()
    extra = f" with {', '.join(result['shared_with'])}" if result["shared_with"] else ""
    typer.echo(f"layer {layer} is now {level}{extra}")


def audit_cmd(layer: Optional[str] = typer.Option(None, "--layer", help="Only rows touching this layer"),
              who: Optional[str] = typer.Option(None, "--who", help="Key id, key name or department"),
              since: Optional[str] = typer.Option(None, "--since", help="ISO date/time, e.g. 2026-11-01"),
              until: Optional[str] = typer.Option(None, "--until", help="ISO date/time"),
              action: Optional[str] = typer.Option(None, "--action", help="read, write, key.create, layer.share, ..."),
              limit: int = typer.Option(100, "--limit", help="Most recent N rows"),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON.")) -> None:
    """Query the append-only audit log (newest first)."""
    from geobase import audit
    from geobase.db import connect

    with connect(get_settings()) as conn:
        rows = audit.query(conn, layer=layer, who=who, since=since, until=until, action=action, limit=limit)
    for r in rows:
        r["layers"] = ",".join(r["layers"] or [])
    _print(rows, as_json, ["at", "principal", "key_id", "department", "action", "method", "path", "layers",
                           "feature_count", "status", "client_ip"], "audit log")


def register(app: typer.Typer) -> None:
    from geobase.cli.layers import layers_app

    app.add_typer(departments_app, name="departments")
    app.add_typer(keys_app, name="keys")
    layers_app.command("share")(layers_share)
    app.command("audit")(audit_cmd)

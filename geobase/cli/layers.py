"""``geobase layers``: what the catalog holds."""

from __future__ import annotations

import json

import typer

from geobase.settings import get_settings

layers_app = typer.Typer(help="List layers and their specs, versions and counts.", no_args_is_help=True)


@layers_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """List layers with owner department, sharing level, current version and feature count."""
    from rich.console import Console
    from rich.table import Table

    from geobase.catalog import list_layers
    from geobase.db import connect

    with connect(get_settings()) as conn:
        infos = list_layers(conn)
    if as_json:
        typer.echo(json.dumps([i.as_dict() for i in infos], ensure_ascii=False, indent=2))
        return
    table = Table(title="geobase layers")
    for col in ("layer", "title", "owner", "sharing", "kind", "version", "features", "updated"):
        table.add_column(col)
    for i in infos:
        table.add_row(
            i.spec.name, i.spec.title.zh, i.spec.department, i.sharing, i.spec.geometry or i.spec.kind,
            str(i.current_version or "-"), str(i.feature_count if i.feature_count is not None else "-"),
            i.version_created_at.strftime("%Y-%m-%d %H:%M") if i.version_created_at else "-",
        )
    Console().print(table)


@layers_app.command("check-specs")
def check_specs(path: str = typer.Argument(None, help="Specs directory (default: the configured one).")) -> None:
    """Validate the layer specs; errors name the file, the key and the problem."""
    from pathlib import Path

    from geobase.specs import load_registry

    reg = load_registry(Path(path) if path else get_settings().layers_dir)
    typer.echo(f"ok: {len(reg.layers)} layers, {len(reg.code_lists)} code lists, {len(reg.departments)} departments")


def register(app: typer.Typer) -> None:
    app.add_typer(layers_app, name="layers")

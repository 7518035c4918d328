"""``geobase config``: the effective settings, grouped by concern, and what each one means."""

from __future__ import annotations

import typer


def config(markdown: bool = typer.Option(False, "--markdown", help="Print the README configuration table.")) -> None:
    """Show every setting (environment variable GEOBASE_<NAME>), its concern, current value and meaning."""
    from geobase.settings import CONCERNS, env_name, get_settings

    current = get_settings()
    rows = []
    for concern, cls in CONCERNS.items():
        for name, field in cls.model_fields.items():
            value = getattr(current, name)
            if name.endswith("database_url") and value:
                value = "<set>"  # may hold a password
            rows.append((concern, env_name(name), "" if value is None else str(value), field.description or ""))
    if markdown:
        typer.echo("| variable | current | meaning |\n| --- | --- | --- |")
        for r in rows:
            typer.echo(f"| `{r[1]}` | `{r[2]}` | {r[3]} |")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="geobase settings")
    for col in ("concern", "variable", "value", "meaning"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("config")(config)

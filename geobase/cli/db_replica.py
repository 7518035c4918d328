"""``geobase db replica``: read replicas of the local cluster (or external ones) for the server's GETs."""

from __future__ import annotations

import json

import typer

from geobase.settings import get_settings

replica_app = typer.Typer(help="Read replicas: GET requests go to them, writes to the primary.",
                          no_args_is_help=True)


@replica_app.command("add")
def add(port: int = typer.Option(None, "--port", help="Loopback port of a new streaming replica of the local cluster."),
        url: str = typer.Option(None, "--url", help="Register an external standby instead (the server's login role)."),
        name: str = typer.Option(None, "--name", help="Its name (default r1, r2, ...).")) -> None:
    """Make a streaming replica of the local cluster (pg_basebackup -R) on --port and start it,
    or register an external standby with --url. The server reads the list when it starts."""
    from geobase.db import replicas
    from geobase.errors import InvalidInput

    if (port is None) == (url is None):
        raise InvalidInput("give --port (a new local replica) or --url (an external one)", parameter="port")
    settings = get_settings()
    made = replicas.add_local(settings, port, name) if port is not None else replicas.register_external(
        settings, url, name)
    typer.echo(f"replica {made.name}: {'port ' + str(made.port) if made.managed else 'external'}, "
               f"server reads from {made.url}; restart `geobase serve` to route reads to it")


@replica_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """The recorded replicas: up or not, replay position, lag behind the primary (bytes)."""
    from geobase.db import database_url, replicas

    settings = get_settings()
    rows = [replicas.status(settings, r, database_url(settings)) for r in replicas.load(settings)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no replicas")
    for r in rows:
        state = (f"up, replay {r['replay_lsn']}, {r['lag_bytes']} bytes behind"
                 + (", replay paused" if r["replay_paused"] else "")) if r["up"] else f"down ({r['error']})"
        typer.echo(f"{r['name']}: {'port ' + str(r['port']) if r['managed'] else r['url']}: {state}")


@replica_app.command("start")
def start() -> None:
    """Start the managed replicas (after a reboot; `geobase db start` starts the primary)."""
    from geobase.db import replicas

    settings = get_settings()
    for r in replicas.load(settings):
        if r.managed:
            typer.echo(f"{r.name}: {'started' if replicas.start(settings, r) else 'already running'}")


@replica_app.command("remove")
def remove(name: str = typer.Argument(..., help="The replica's name (see `geobase db replica list`)."),
           yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Unregister a replica; a managed one is stopped and its directory deleted."""
    from geobase.db import replicas

    if not yes:
        typer.confirm(f"Remove replica {name}?", abort=True)
    gone = replicas.remove(get_settings(), name)
    typer.echo(f"removed replica {gone.name}" + (f" and {gone.pgdata}" if gone.managed else ""))

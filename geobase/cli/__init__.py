"""The ``geobase`` command. Each area registers its sub-command group in its own module here;
this file only assembles them and turns typed errors into one-line messages and exit codes."""

from __future__ import annotations

import sys

import typer

from geobase.errors import GeobaseError

app = typer.Typer(
    name="geobase",
    help="geobase: the natural-resources 'one map' base database. Manage the local PostGIS, "
    "load department layers, serve the OGC API, tiles and the web map.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    import importlib
    import pkgutil

    import geobase.cli as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"geobase.cli.{mod.name}")
        register = getattr(module, "register", None)
        if register:
            register(app)


_register()


def main() -> None:
    """The ``geobase`` command: settings are checked first, so a bad ``GEOBASE_*`` value stops
    every command with a message naming the variable (:class:`geobase.errors.ConfigError`)."""
    from geobase.settings import get_settings

    try:
        get_settings()
        app()
    except GeobaseError as exc:
        typer.secho(f"geobase: error: {exc.message}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)

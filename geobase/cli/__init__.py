"""The ``geobase`` command. Each area registers its sub-command group in its own module here;
this file only assembles them and turns typed errors into one-line messages and exit codes."""

from __future__ import annotations

import gc
import sys

# the collector off while the command's modules are imported and registered (typer, pydantic,
# the settings, every sub-command): those objects live as long as the process, and the ~80
# young-generation collections their creation triggered cost ~10-15 ms of every command's
# start to free ~550 small objects (issue #15). Once registered they are frozen (moved out of
# the collector's sight, those few KB of garbage included: else the first collection after
# re-enabling scans them all at once) and the collector is back on; `geobase serve` turns it
# off again until its app has started (geobase/cli/serve.py)
_collecting = gc.isenabled()
gc.disable()

import typer  # noqa: E402

from geobase.errors import GeobaseError  # noqa: E402

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
gc.freeze()
if _collecting:
    gc.enable()


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

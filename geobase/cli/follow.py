"""``geobase follow``: mirror a layer of another geobase instance as one county of this one."""

from __future__ import annotations

import json

import typer

from geobase.settings import get_settings

follow_app = typer.Typer(help="Follow a layer of another geobase instance (its change feed) into a county "
                              "partition of this one.", no_args_is_help=True)


def run_pass(settings, follow, **kw) -> dict:
    """One pass of ``follow``, its parts committed by the ordinary ingest (geobase/federation.py)."""
    from geobase import federation
    from geobase.ingest.pipeline import ingest

    def apply(path, **options) -> int | None:
        return ingest(settings, follow.collection, path, **options).version

    return federation.run_follow(settings, follow, apply, **kw)


@follow_app.command("add")
def add(url: str = typer.Argument(..., help="Base URL of the source instance, e.g. http://county:8000"),
        collection: str = typer.Argument(..., help="The layer to follow (the same layer exists here)."),
        division: str = typer.Option(..., "--division", help="The county (6-digit code) the mirror fills here."),
        key: str = typer.Option(None, "--key", envvar="GEOBASE_FOLLOW_KEY",
                                help="API key at the source; it must see every attribute of the layer."),
        name: str = typer.Option(None, "--name", help="Name of the follow (default <collection>-<division>).")) -> None:
    """Record a follow (the source must answer); `geobase follow run` pulls it."""
    from geobase import federation

    f = federation.add_follow(get_settings(), url, collection, division, key, name)
    typer.echo(f"following {f.url} {f.collection} into county {f.division} as {f.name!r}")


@follow_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """The follows and the source version each mirror is at."""
    from geobase import federation

    settings = get_settings()
    rows = [{"name": f.name, "url": f.url, "collection": f.collection, "division": f.division,
             "key": bool(f.key), "at_version": federation.applied_version(settings, f)}
            for f in federation.load_follows(settings)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows or [{}]:
        typer.echo(f"{r['name']}: {r['url']} {r['collection']} -> county {r['division']}, at source version "
                   f"{r['at_version']}" if r else "no follows")


@follow_app.command("run")
def run(name: str = typer.Argument(None, help="One follow (default: every follow)."),
        page_size: int = typer.Option(1000, "--page-size", min=1, max=10_000, help="Features per feed page.")) -> None:
    """One pass of each follow: pull the source's changes since the mirror's version and apply
    them. A killed or failed pass is simply run again: it resumes from what was committed."""
    from geobase import federation

    settings = get_settings()
    follows = [federation.get_follow(settings, name)] if name else federation.load_follows(settings)
    for f in follows:
        res = run_pass(settings, f, page_size=page_size, echo=lambda m, n=f.name: typer.echo(
            f"{n}: {m}"))
        typer.echo(f"{f.name}: at source version {res['at']}" + (f" ({len(res['applied'])} part(s) applied)"
                                                                 if res["applied"] else " (up to date)"))


@follow_app.command("remove")
def remove(name: str = typer.Argument(...)) -> None:
    """Forget a follow (the mirrored county stays as it is)."""
    from geobase import federation

    typer.echo(f"removed follow {federation.remove_follow(get_settings(), name).name}")


def register(app: typer.Typer) -> None:
    app.add_typer(follow_app, name="follow")

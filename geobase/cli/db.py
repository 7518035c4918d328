"""``geobase db``: the local PostGIS cluster and the catalog schema."""

from __future__ import annotations

import json

import typer

from geobase.settings import get_settings

db_app = typer.Typer(help="Run the private PostGIS cluster (or check an external one) and migrate the schema.",
                     no_args_is_help=True)


def _cluster():
    from geobase.db.cluster import LocalCluster
    from geobase.errors import InvalidInput

    settings = get_settings()
    if not settings.uses_local_cluster:
        raise InvalidInput("GEOBASE_DATABASE_URL is set: geobase uses that server and manages no local cluster")
    return LocalCluster(settings)


@db_app.command()
def start() -> None:
    """Start the local cluster (installing PostGIS on Debian if needed), create PostGIS, migrate.

    A second start is a no-op; a stale pid file after a crash is cleaned up."""
    from geobase.db import prepare_database

    settings = get_settings()
    info = prepare_database(settings)
    if settings.uses_local_cluster:
        typer.echo("started" if info.get("started") else "already running")
        from geobase.db.replicas import start_all

        for name in start_all(settings):  # the managed read replicas with it
            typer.echo(f"started replica {name}")
    typer.echo(f"PostGIS {info['postgis']}, schema {','.join(info['revision'])}, {info['layers']} layers in catalog")


@db_app.command()
def stop() -> None:
    """Stop the local cluster (fast shutdown); says which cluster it looked at."""
    cluster = _cluster()
    from geobase.db.replicas import stop_all

    for name in stop_all(cluster.settings):  # the managed read replicas first
        typer.echo(f"stopped replica {name}")
    typer.echo(f"{'stopped' if cluster.stop() else 'not running'}: cluster {cluster.pgdata} "
               f"(port {cluster.settings.pg_port})")


@db_app.command()
def remove(yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Stop the local cluster and delete it, wherever it lives (also outside the data directory,
    e.g. /var/lib/geobase when the repo is under /root), with the rasters that its catalog names.

    `make clean` runs this before removing the data directory, so that the catalog and the
    raster files never disagree (a catalog saying \"up to date\" over deleted COGs)."""
    if not yes:
        typer.confirm("Delete the local geobase database and all its data?", abort=True)
    cluster = _cluster()
    from geobase.db import replicas

    for r in replicas.load(cluster.settings):  # a replica of a deleted primary is of no use
        replicas.remove(cluster.settings, r.name)
    removed = cluster.remove()
    typer.echo(f"removed cluster {cluster.pgdata}" if removed else f"no cluster at {cluster.pgdata}")


@db_app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Show whether the local cluster runs, where its data lives and its URL."""
    settings = get_settings()
    if not settings.uses_local_cluster:
        from geobase.db import connect

        with connect(settings) as conn:
            ver = conn.execute("SELECT version()").fetchone()[0]
        info = {"external": True, "server": ver}
    else:
        info = {"data_dir": str(settings.data_path), **_cluster().status()}
    typer.echo(json.dumps(info, indent=2) if as_json else "\n".join(f"{k}: {v}" for k, v in info.items()))
    if not info.get("external") and not info["running"]:
        raise typer.Exit(3)


@db_app.command()
def url() -> None:
    """Print the database URL (for psql, QGIS, ogr2ogr)."""
    from geobase.db import database_url

    typer.echo(database_url(get_settings()))


@db_app.command()
def reset(yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Delete the local cluster and all its data, then start a fresh one."""
    if not yes:
        typer.confirm("Delete the local geobase database and all its data?", abort=True)
    cluster = _cluster()
    cluster.reset()
    from geobase.db import prepare_database

    prepare_database(get_settings())
    typer.echo(f"reset: fresh cluster at {cluster.pgdata}")


@db_app.command()
def migrate() -> None:
    """Apply schema migrations and sync the layer catalog from the specs (no cluster start)."""
    from geobase.db import prepare_database

    info = prepare_database(get_settings(), start_local=False)
    typer.echo(f"schema at {','.join(info['revision'])}; {info['layers']} layers synced")


def register(app: typer.Typer) -> None:
    from geobase.cli.db_replica import replica_app
    from geobase.cli.db_shard import shard_app

    db_app.add_typer(replica_app, name="replica")
    db_app.add_typer(shard_app, name="shard")
    app.add_typer(db_app, name="db")

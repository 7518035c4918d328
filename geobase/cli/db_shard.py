"""``geobase db shard``: counties' partitions on other PostgreSQL/PostGIS servers (foreign
partitions through postgres_fdw; the core is geobase/db/shards.py)."""

from __future__ import annotations

import json

import typer

from geobase.settings import get_settings

shard_app = typer.Typer(help="Place counties' partitions on other PostGIS servers (postgres_fdw foreign partitions).",
                        no_args_is_help=True)


def _layers(conn, settings, layers: list[str] | None, division: str) -> list:
    """The specs named, or every vector layer that has a partition of county ``division``."""
    from geobase.errors import NotFound
    from geobase.partitions import partition_divisions
    from geobase.specs import get_registry

    reg = get_registry(settings)
    if layers:
        return [reg.layer(name) for name in layers]
    specs = [s for s in reg.layers.values() if s.kind == "vector" and division in partition_divisions(conn, s)]
    if not specs:
        raise NotFound(f"no layer has a partition of county {division}; name the layers with --layer")
    return specs


def _local_settings(settings, name: str, port: int):
    from geobase.db.shards import check_name

    return settings.model_copy(update={"data_dir": settings.data_path / "shards" / check_name(name),
                                       "pg_port": port or settings.pg_port, "database_url": None})


def start_local_shard(settings, name: str, port: int) -> tuple[str, str]:
    """A private cluster for shard ``name`` on ``port`` (under ``<data_dir>/shards/<name>``,
    made and started like the main local cluster, PostGIS created): (its URL, its data dir)."""
    import psycopg

    from geobase.db.cluster import LocalCluster

    cluster = LocalCluster(_local_settings(settings, name, port))
    cluster.start()
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        # the local cluster's synchronous_commit = off suits one server; a shard must not lose
        # a commit the coordinator's catalog already counts
        conn.execute("ALTER SYSTEM SET synchronous_commit = on")
        conn.execute("SELECT pg_reload_conf()")
    return cluster.url, str(cluster.pgdata)


@shard_app.command()
def add(name: str = typer.Argument(..., help="Shard name (lower-case letters, digits, _)."),
        url: str = typer.Option(None, "--url", help="Connection string of an existing PostgreSQL/PostGIS database."),
        local: int = typer.Option(None, "--local", help="Make and start a private PostGIS cluster on this port."),
        fetch_size: int = typer.Option(10000, "--fetch-size", help="Rows per fetch from the shard."),
        connect_timeout: int = typer.Option(3, "--connect-timeout", help="Seconds before a shard counts as down."),
        statement_timeout_ms: int = typer.Option(120000, "--statement-timeout-ms",
                                                 help="The shard's own bound on one remote statement.")) -> None:
    """Register a shard: a postgres_fdw server (async, PostGIS push-down) and its user mapping."""
    from geobase.db import connect
    from geobase.db.shards import add_shard
    from geobase.errors import InvalidInput

    if (url is None) == (local is None):
        raise InvalidInput("give exactly one of --url <conninfo> and --local <port>", parameter="url")
    settings = get_settings()
    pgdata = None
    if local is not None:
        url, pgdata = start_local_shard(settings, name, local)
    with connect(settings) as conn:
        shard = add_shard(conn, name, url, fetch_size=fetch_size, connect_timeout_s=connect_timeout,
                          statement_timeout_ms=statement_timeout_ms, local_pgdata=pgdata)
    typer.echo(f"shard {shard.name}: server {shard.server} ({shard.options.get('host')}:{shard.options.get('port')}"
               f"/{shard.options.get('dbname')})")


@shard_app.command()
def place(shard: str = typer.Argument(..., help="The shard to place the counties on."),
          division: list[str] = typer.Option(..., "--division", help="County code (行政区划代码); repeatable."),
          layer: list[str] = typer.Option(None, "--layer", help="Only these layers (default: every layer of the county).")
          ) -> None:
    """Move counties' partitions onto a shard (copy, then swap local for foreign in one transaction)."""
    from geobase.db import connect
    from geobase.db.shards import place as place_county

    settings = get_settings()
    with connect(settings) as conn:
        for d in division:
            for spec in _layers(conn, settings, layer, d):
                n = place_county(conn, spec, shard, d)
                typer.echo(f"{spec.name} {d}: on shard {shard} ({n} rows moved)")


@shard_app.command()
def unplace(division: list[str] = typer.Option(..., "--division", help="County code; repeatable."),
            layer: list[str] = typer.Option(None, "--layer", help="Only these layers.")) -> None:
    """Move counties' partitions back from their shard into the coordinator."""
    from geobase.db import connect
    from geobase.db.shards import unplace as unplace_county

    settings = get_settings()
    with connect(settings) as conn:
        for d in division:
            for spec in _layers(conn, settings, layer, d):
                n = unplace_county(conn, spec, d)
                typer.echo(f"{spec.name} {d}: " + ("not on a shard" if n is None else f"local ({n} rows moved back)"))


@shard_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """The shards, their server options and the counties placed on each."""
    from geobase.db import connect
    from geobase.db.shards import list_shards

    with connect(get_settings()) as conn:
        shards = list_shards(conn)
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in shards], indent=2))
        return
    for s in shards:
        where = f"{s.options.get('host')}:{s.options.get('port')}/{s.options.get('dbname')}"
        parts = ", ".join(f"{lay}/{d}" for lay, d in s.partitions) or "no counties"
        typer.echo(f"{s.name}: {where}{' (local cluster ' + s.local_pgdata + ')' if s.local_pgdata else ''}: {parts}")


@shard_app.command()
def check(repair: bool = typer.Option(False, "--repair", help="Undo versions the coordinator never committed.")
          ) -> None:
    """Each county on a shard: reachable, and no rows of a version the coordinator did not commit
    (a coordinator that died between the shard's commit and its own). Exit 1 on a problem left."""
    import psycopg

    from geobase.db import connect
    from geobase.db.shards import in_doubt, list_shards
    from geobase.db.shards import repair as repair_county
    from geobase.specs import get_registry

    settings = get_settings()
    layers = get_registry(settings).layers
    bad = 0
    with connect(settings) as conn:
        for shard in list_shards(conn):
            for layer, d in shard.partitions:
                try:
                    top = in_doubt(conn, layers[layer], d)
                except psycopg.OperationalError as exc:
                    conn.rollback()
                    bad += 1
                    typer.echo(f"{shard.name} {layer} {d}: unavailable ({str(exc).strip().splitlines()[0]})")
                    continue
                if top is None:
                    typer.echo(f"{shard.name} {layer} {d}: ok")
                elif repair:
                    deleted, reopened = repair_county(conn, layers[layer], d)
                    typer.echo(f"{shard.name} {layer} {d}: repaired (versions up to {top} the coordinator never "
                               f"committed: {deleted} rows deleted, {reopened} current again)")
                else:
                    bad += 1
                    typer.echo(f"{shard.name} {layer} {d}: in doubt: rows of version {top}, which the coordinator "
                               "never committed; run `geobase db shard check --repair`")
    if bad:
        raise typer.Exit(1)


@shard_app.command()
def remove(name: str = typer.Argument(...),
           yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Move every county on the shard back, drop its server; a --local shard's cluster is stopped."""
    from geobase.db import connect
    from geobase.db.shards import get_shard, remove_shard
    from geobase.specs import get_registry

    if not yes:
        typer.confirm(f"Move every county on shard {name} back and remove the shard?", abort=True)
    settings = get_settings()
    with connect(settings) as conn:
        pgdata = get_shard(conn, name).local_pgdata
        moved = remove_shard(conn, name, get_registry(settings).layers)
    for layer, d, n in moved:
        typer.echo(f"{layer} {d}: local ({n} rows moved back)")
    if pgdata:
        from geobase.db.cluster import LocalCluster

        cluster = LocalCluster(_local_settings(settings, name, 0))
        if str(cluster.pgdata) == pgdata and cluster.stop():
            typer.echo(f"stopped the shard's local cluster {pgdata} (its files are kept)")
    typer.echo(f"removed shard {name}")

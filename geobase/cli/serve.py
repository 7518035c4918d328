"""``geobase serve`` and ``geobase demo``: run the HTTP server; the demo also prepares everything."""

from __future__ import annotations

import typer

from geobase.settings import get_settings


def serve(
    host: str = typer.Option(None, help="Interface to listen on (default GEOBASE_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default GEOBASE_PORT, 8000)."),
    workers: int = typer.Option(1, help="Worker processes."),
    prepare: bool = typer.Option(True, help="Start the local cluster and migrate before serving."),
) -> None:
    """Serve the OGC API, tiles, analyses and the web map over HTTP."""
    import uvicorn

    settings = get_settings()
    if prepare:
        from geobase.db import prepare_database

        prepare_database(settings)
    host = host or settings.host
    port = port or settings.port
    typer.echo(f"geobase serving on http://{host}:{port}/  (web map: http://{host}:{port}/map)")
    uvicorn.run("geobase.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=settings.log_level, timeout_graceful_shutdown=20, proxy_headers=True)


def demo(
    serve_after: bool = typer.Option(True, "--serve/--no-serve", help="Start the server at the end."),
) -> None:
    """The main job: local PostGIS up, catalog migrated, sample county ingested, server with the web map.

    Safe to run again: everything already done is skipped."""
    from geobase.db import prepare_database

    settings = get_settings()
    info = prepare_database(settings)
    typer.echo(f"database ready: PostGIS {info['postgis']}, {info['layers']} layers")
    try:
        from geobase.ingest.sample import ingest_sample_county
    except ModuleNotFoundError:
        ingest_sample_county = None
    if ingest_sample_county is not None:
        ingest_sample_county(settings, echo=typer.echo)
    if serve_after:
        serve(host=None, port=None, workers=1, prepare=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("demo")(demo)

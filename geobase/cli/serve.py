"""``geobase serve`` and ``geobase demo``: run the HTTP server; the demo also prepares everything."""

from __future__ import annotations

import gc

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
    # the collector off while the server imports its modules and builds the app: those objects
    # live as long as the process, and collecting them again and again as they are created cost
    # ~8 % of the start's CPU; the app's lifespan collects once, freezes them and turns it back on
    gc.disable()
    typer.echo(f"geobase serving on http://{host}:{port}/  (web map: http://{host}:{port}/map)")
    uvicorn.run("geobase.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=settings.log_level, timeout_graceful_shutdown=20,
                # uvicorn formats each request's access line before its logger drops it: only when shown
                access_log=settings.log_level in ("trace", "debug", "info"),
                # forwarded headers are judged by the request gate alone (GEOBASE_TRUSTED_PROXIES,
                # geobase.limits.client_ip): uvicorn would otherwise believe any loopback client's
                # X-Forwarded-For
                proxy_headers=False)


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
        # the sample and a second land-use version (the change delivery), never over a steward's data
        ingest_sample_county(settings, echo=typer.echo, with_changes=True)
    if not serve_after:
        return
    url = f"http://{settings.host}:{settings.port}"
    if _geobase_answers(url):
        typer.echo(f"geobase is already serving at {url}/ (web map: {url}/map); nothing to do")
        return
    typer.echo(
        f"\n  web map      {url}/map\n  OGC API      {url}/collections\n  API docs     {url}/docs\n"
        f"  health       {url}/health\n  database     {__import__('geobase.db', fromlist=['x']).database_url(settings)}\n"
    )
    serve(host=None, port=None, workers=1, prepare=False)


def _geobase_answers(url: str) -> bool:
    """True when a geobase server already answers on ``url`` (a second `make demo`)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return json.load(resp).get("status") == "ok"
    except Exception:
        return False


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("demo")(demo)

"""``geobase tiles ...``: seed the tile cache ahead of users, see its size, clear it.

Seeding renders the tiles the public would ask for (their view signature), so the first
visitor after an ingest gets cached tiles; tiles are keyed by layer versions, so a seed after
an ingest renders only what changed (unchanged layers' tiles are already cached hits)."""

from __future__ import annotations

import asyncio
import time

import typer

from geobase.errors import InvalidInput

tiles_app = typer.Typer(help="Vector tile cache: seed, size, clear.", no_args_is_help=True)


def parse_zoom(text: str) -> list[int]:
    """'0-14' or '12' or '10,12,14' -> zoom levels."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise InvalidInput(f"--zoom: {text!r} is not like 0-14, 12 or 10,12,14", parameter="zoom") from None
    if not out or min(out) < 0 or max(out) > 24:
        raise InvalidInput(f"--zoom: {text!r} must name levels within 0..24", parameter="zoom")
    return sorted(set(out))


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        b = tuple(float(v) for v in text.split(","))
    except ValueError:
        b = ()
    if len(b) != 4 or b[0] >= b[2] or b[1] >= b[3]:
        raise InvalidInput(f"--bbox: {text!r} is not minlon,minlat,maxlon,maxlat", parameter="bbox")
    return b  # type: ignore[return-value]


async def _seed(layers: str, zooms: list[int], bbox, tms_id: str, echo) -> dict:
    import psycopg
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from geobase.catalog import current_layers, union_extent
    from geobase.catalog.state import layer_states
    from geobase.db import database_url
    from geobase.security import PUBLIC
    from geobase.settings import get_settings
    from geobase.specs import get_registry
    from geobase.tiles.service import cache_for, resolve_layers, vector_tile
    from geobase.tiles.tms import get_tms

    settings = get_settings()
    registry = get_registry(settings)
    tms = get_tms(tms_id)
    cache = cache_for(settings)
    async with await psycopg.AsyncConnection.connect(database_url(settings), autocommit=True) as conn:
        states = await layer_states(conn)
        specs = resolve_layers(layers, states, PUBLIC, registry)
        if bbox is None:
            extent = union_extent(list((await current_layers(conn, [s.name for s in specs])).values()))
            if extent is None:
                raise InvalidInput("the layers have no loaded version with an extent; give --bbox", parameter="bbox")
            bbox = tuple(extent)
        zooms = [z for z in zooms if tms.minzoom <= z <= tms.maxzoom]
        url = database_url(settings)
        if tms.srid == 3857:  # low zooms of coverage layers read the version's generalisation pyramid
            from geobase.tiles import pyramid
            from geobase.tiles.mvt import AGGREGATE_BELOW

            for s in specs:
                cf = s.style.class_field or s.class_field
                if s.coverage and cf and states[s.name].current_version is not None:
                    dz = s.tiles.detail_zoom if s.tiles.detail_zoom is not None else AGGREGATE_BELOW
                    t1 = time.perf_counter()
                    if await asyncio.to_thread(pyramid.build, url, s, states[s.name].current_version, cf, dz):
                        echo(f"built the generalisation pyramid of {s.name} v{states[s.name].current_version} "
                             f"in {time.perf_counter() - t1:.1f} s")
        jobs = [(z, r, c) for z in zooms for r, c in tms.tiles_covering(z, bbox)]
        stats = {"tiles": len(jobs), "rendered": 0, "cached": 0, "empty": 0, "bytes": 0, "largest": 0}
        t0 = time.perf_counter()
        with Progress(TextColumn("[bold]seeding[/] z{task.fields[z]}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn()) as progress:
            task = progress.add_task("seed", total=len(jobs), z=zooms[0] if zooms else "-", rate="")
            for i, (z, r, c) in enumerate(jobs):
                res = await vector_tile(conn, cache, registry, PUBLIC, states, specs, tms, z, r, c, pyramid_url=url)
                stats["cached" if res.cached else "rendered"] += 1
                stats["empty"] += not res.body
                stats["bytes"] += len(res.body)
                stats["largest"] = max(stats["largest"], len(res.body))
                rate = (i + 1) / max(time.perf_counter() - t0, 1e-6)
                progress.update(task, advance=1, z=z, rate=f"{rate:,.1f} tiles/s")
        stats["seconds"] = round(time.perf_counter() - t0, 2)
    return stats


@tiles_app.command("seed")
def seed(
    layers: str = typer.Option("onemap", "--layers", help="Comma list of layers, or 'onemap' (all public layers)."),
    zoom: str = typer.Option("8-14", "--zoom", help="Zoom levels: 0-14, 12 or 10,12,14."),
    bbox: str = typer.Option(None, "--bbox", help="minlon,minlat,maxlon,maxlat (default: the layers' extent)."),
    tms: str = typer.Option("WebMercatorQuad", "--tms", help="WebMercatorQuad or CGCS2000Quad."),
) -> None:
    """Render and cache the tiles covering an area (as the public sees them)."""
    stats = asyncio.run(_seed(layers, parse_zoom(zoom), parse_bbox(bbox), tms, typer.echo))
    typer.echo(f"{stats['tiles']:,} tiles: {stats['rendered']:,} rendered, {stats['cached']:,} already cached, "
               f"{stats['empty']:,} empty; {stats['bytes'] / 1e6:,.1f} MB gzip, largest {stats['largest'] / 1024:,.0f} KB; "
               f"{stats['seconds']} s")


@tiles_app.command("size")
def size() -> None:
    """Show the tile cache's size and bound."""
    from geobase.settings import get_settings
    from geobase.tiles.service import cache_for

    s = get_settings()
    c = cache_for(s)
    typer.echo(f"{c.root}: {c.total_bytes / 1e6:,.1f} MB of {s.tile_cache_max_bytes / 1e6:,.0f} MB")


@tiles_app.command("clear")
def clear() -> None:
    """Empty the tile cache (never needed for correctness: keys carry layer versions)."""
    from geobase.settings import get_settings
    from geobase.tiles.service import cache_for

    n = cache_for(get_settings()).clear()
    typer.echo(f"removed {n:,} cached tiles")


def register(app: typer.Typer) -> None:
    app.add_typer(tiles_app, name="tiles")

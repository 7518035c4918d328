"""``geobase analysis``: the overlay analyses from the command line, writing the same outputs as
the HTTP endpoints and jobs (JSON, GeoJSON, CSV tables, HTML report) into ``--out DIR``.

The CLI runs as the operator (admin principal: it has the database URL anyway)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from geobase.settings import get_settings

analysis_app = typer.Typer(help="Overlay analyses: site check, tabulation, conflicts, steep farmland, change, buffers.",
                           no_args_is_help=True)

OUT = typer.Option(..., "--out", help="Directory for the outputs (created; files replaced atomically).")
ENGINE = typer.Option("postgis", "--engine", help="postgis (default) or sedona: Apache Sedona over GeoParquet "
                                                  "exports of the layers (optional: scripts/setup.sh --sedona)")


def _engine(name: str) -> str:
    if name not in ("postgis", "sedona"):
        from geobase.errors import InvalidInput

        raise InvalidInput(f"--engine: {name!r} is not postgis or sedona", parameter="engine")
    return name


def _geometry_arg(path: str | None) -> dict | None:
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        from geobase.errors import InvalidInput

        raise InvalidInput(f"geometry: file {path} does not exist", parameter="geometry")
    return json.loads(p.read_text(encoding="utf-8")) if p.suffix.lower() in (".geojson", ".json") else None


def _run(process: str, inputs: dict, out: Path, upload: Path | None = None, engine: str = "postgis") -> None:
    from geobase.analysis import output as analysis_output
    from geobase.analysis.processes import PROCESSES, run_process
    from geobase.db import database_url
    from geobase.security import Principal
    from geobase.specs import get_registry

    settings = get_settings()
    registry = get_registry(settings)
    operator = Principal(name="cli", role="admin", key_id="cli")
    model, _ = PROCESSES[process]

    async def go() -> dict:
        import psycopg

        async with await psycopg.AsyncConnection.connect(database_url(settings), autocommit=True) as conn:
            if upload is not None:
                from geobase.analysis import site_check
                from geobase.analysis.input import parse_upload
                from geobase.security import visible_layers

                site = parse_upload(upload.read_bytes(), upload.name, settings, repair=inputs.get("repair", False))
                vis = await visible_layers(conn, operator, registry)
                return await site_check(conn, registry, vis, site, sliver_m2=settings.analysis_sliver_m2,
                                                project_type=inputs.get("project_type", "construction"),
                                                principal=operator)
            body = model.model_validate({k: v for k, v in inputs.items() if v is not None})
            if engine == "sedona":
                return await _run_sedona(process, body, conn, settings, registry, operator)
            return await run_process(process, body, conn, settings, registry, operator)

    result = asyncio.run(go())
    files = analysis_output.write_outputs(result, out, process)
    summary = result.get("summary") or result.get("verdict") or result.get("total") or ""
    typer.echo(f"{process}: {summary}")
    for f in files:
        typer.echo(f"  wrote {f}")


async def _run_sedona(process: str, body, conn, settings, registry, operator) -> dict:
    """The tabulation or steep farmland on the Sedona engine (geobase.analysis.engines)."""
    from geobase.analysis.input import parse_geojson
    from geobase.errors import InvalidInput
    from geobase.security import visible_layers

    vis = await visible_layers(conn, operator, registry)
    work = settings.data_path / "exports"
    work.mkdir(parents=True, exist_ok=True)
    if process == "tabulate":
        from geobase.analysis.engines import sedona

        if body.class_a or body.class_b:
            raise InvalidInput("--engine sedona tabulates by the layers' class fields", parameter="engine")
        aoi = parse_geojson(body.geometry, settings, crs=body.crs) if body.geometry else None
        return await sedona.tabulate(conn, settings, registry, vis, body.layer_a, body.layer_b, aoi=aoi,
                                     aoi_code=body.aoi, principal=operator, workdir=work)
    if process == "steep-farmland":
        from geobase.analysis.engines import sedona_steep

        if body.geometry is not None:
            raise InvalidInput("--engine sedona: steep farmland runs on the whole layer", parameter="engine")
        return await sedona_steep.steep_farmland(conn, settings, registry, vis, threshold_deg=body.threshold_deg,
                                                 min_share=body.min_share, principal=operator, workdir=work)
    raise InvalidInput(f"--engine sedona: {process} runs on PostGIS only", parameter="engine")


@analysis_app.command("site-check")
def site_check(site: Path = typer.Argument(..., help="Site: .geojson, zipped shapefile, or .gpkg"),
               crs: str = typer.Option(None, help="CRS of a GeoJSON site (CRS84 default, EPSG:4490, 4527, ...)"),
               project_type: str = typer.Option("construction", help="Project type the rules apply to"),
               repair: bool = typer.Option(False, help="Repair self-intersections instead of refusing"),
               out: Path = OUT) -> None:
    """Site compliance check of a project red line against every layer and the declared rules."""
    if site.suffix.lower() in (".geojson", ".json"):
        _run("site-check", {"geometry": _geometry_arg(str(site)), "crs": crs, "project_type": project_type,
                            "repair": repair}, out)
    else:
        _run("site-check", {"project_type": project_type, "repair": repair}, out, upload=site)


@analysis_app.command("tabulate")
def tabulate(layer_a: str = typer.Argument("land_use"), layer_b: str = typer.Argument("planning_zones"),
             aoi: str = typer.Option(None, help="Division code of the area of interest (default: whole county)"),
             geometry: str = typer.Option(None, help="GeoJSON file of the area of interest"),
             crs: str = typer.Option(None), engine: str = ENGINE, out: Path = OUT) -> None:
    """Areas by class of layer A x class of layer B."""
    _run("tabulate", {"layer_a": layer_a, "layer_b": layer_b, "aoi": aoi, "geometry": _geometry_arg(geometry),
                      "crs": crs}, out, engine=_engine(engine))


@analysis_app.command("conflicts")
def conflicts(rule: list[str] = typer.Option(None, "--rule", help="Only these rule ids (repeatable)"),
              out: Path = OUT) -> None:
    """Plan conflicts (多规合一) of layers/rules/conflicts.yaml for the whole county."""
    _run("conflicts", {"rules": rule or None}, out)


@analysis_app.command("steep-farmland")
def steep_farmland(threshold: float = typer.Option(25.0, help="Slope threshold in degrees"),
                   min_share: float = typer.Option(None, help="Steep if this share of cells exceeds the threshold "
                                                              "(default: mean slope)"),
                   engine: str = ENGINE, out: Path = OUT) -> None:
    """Farmland (DLBM 0101-0103) on slopes steeper than the threshold, from the DEM."""
    _run("steep-farmland", {"threshold_deg": threshold, "min_share": min_share}, out, engine=_engine(engine))


@analysis_app.command("change")
def change(layer: str = typer.Argument("land_use"), v1: int = typer.Option(..., help="Earlier version"),
           v2: int = typer.Option(..., help="Later version"), out: Path = OUT) -> None:
    """Transition matrix of areas between classes of two versions of a layer."""
    _run("change", {"layer": layer, "v1": v1, "v2": v2}, out)


@analysis_app.command("buffer")
def buffer(distance: float = typer.Option(..., "--distance", help="Distance in metres (ellipsoidal)"),
           layer: str = typer.Option("land_use", help="Layer whose features are checked"),
           water: list[str] = typer.Option(None, "--water", help="Water layers (default rivers, water_areas)"),
           out: Path = OUT) -> None:
    """Features within a distance of rivers and water areas."""
    _run("buffer", {"layer": layer, "distance_m": distance, "water_layers": water or None}, out)


def register(app: typer.Typer) -> None:
    app.add_typer(analysis_app, name="analysis")

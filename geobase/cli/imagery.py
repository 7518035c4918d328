"""``geobase imagery add``: ingest a multiband GeoTIFF scene as a COG and a STAC Item
(:mod:`geobase.imagery.ingest`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

imagery_app = typer.Typer(help="Imagery: multiband scenes as COGs catalogued with STAC.", no_args_is_help=True)


@imagery_app.command("add")
def add(
    file: Path = typer.Argument(..., help="A GeoTIFF scene (any CRS, any band count, 8/16-bit or float32)"),
    collection: str = typer.Option(..., "--collection", help="The STAC collection id (created when new)"),
    when: str = typer.Option(None, "--datetime", help="Acquisition date/time, ISO 8601 (required)"),
    sensor: str = typer.Option(None, "--sensor", help="Instrument, e.g. 'etm+'"),
    cloud_cover: float = typer.Option(None, "--cloud-cover", help="Cloud cover in percent (0..100)"),
    bands: str = typer.Option(None, "--bands", help="EO common names: b1=blue,b2=green,b3=red,b4=nir,..."),
    item_id: str = typer.Option(None, "--id", help="Item id (default: from the file name)"),
    nodata: float = typer.Option(None, "--nodata", help="Nodata value when the file declares none"),
) -> None:
    """Convert the scene to a COG under the data directory and record it as a STAC Item."""
    from geobase.imagery.ingest import add_image
    from geobase.settings import get_settings

    notes: list[str] = []
    item = add_image(get_settings(), file, collection, when=when, sensor=sensor, cloud_cover=cloud_cover,
                     bands=bands, item_id=item_id, nodata=nodata, notes=notes)
    typer.echo(json.dumps({"collection": collection, "id": item["id"], "bbox": item["bbox"],
                           "datetime": item["properties"]["datetime"], "notes": notes}, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    app.add_typer(imagery_app, name="imagery")

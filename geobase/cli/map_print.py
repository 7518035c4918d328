"""``geobase map print layout.json -o sheet.pdf``: a thematic map sheet from a layout file, the
same layout and drawing as ``POST /maps/print`` (:mod:`geobase.printing`).

The CLI runs as the operator (admin principal: it has the database URL anyway); the format is
the layout's ``format``, or the output file's suffix (``.pdf``/``.png``) when the layout names
none. The file is written whole or not at all."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import typer

from geobase.errors import InvalidInput

map_app = typer.Typer(help="Thematic map sheets (专题制图).", no_args_is_help=True)


def _layout(path: Path, out: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"layout: cannot read {path.name}: {exc}", parameter="layout") from None
    if isinstance(data, dict) and "format" not in data and out.suffix.lower() in (".pdf", ".png"):
        data["format"] = out.suffix.lower()[1:]
    return data


@map_app.command("print")
def print_sheet_cmd(layout: Path = typer.Argument(..., exists=True, dir_okay=False, help="layout JSON file"),
                    out: Path = typer.Option(..., "-o", "--out", help="the sheet file to write (.pdf or .png)")) -> None:
    """Render a map sheet (PDF or PNG) from a declarative layout (title, layers, extent, paper, dpi...)."""
    import psycopg

    from geobase.db import database_url
    from geobase.printing.service import print_sheet
    from geobase.security import Principal
    from geobase.settings import get_settings
    from geobase.specs import get_registry

    settings = get_settings()
    registry = get_registry(settings)
    operator = Principal(name="cli", role="admin", key_id="cli")
    data = _layout(layout, out)

    async def go() -> tuple[bytes, str, dict]:
        async with await psycopg.AsyncConnection.connect(database_url(settings), autocommit=True) as conn:
            return await print_sheet(conn, registry, operator, settings, data)

    body, media, info = asyncio.run(go())
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(body)
    os.replace(tmp, out)
    typer.echo(f"{out}: {media}, {len(body):,} bytes, scale 1:{info['scale']:,.0f}, "
               f"features {sum(info['features'].values()):,}")


def register(app: typer.Typer) -> None:
    app.add_typer(map_app, name="map")

"""``geobase edit apply``: scripted corrections from a GeoJSON file of changes, one version.

A thin adapter over :func:`geobase.editing.batch.apply_changes`: the operator acts as an admin
(the CLI has database access), the file's changes are checked like HTTP edits and committed as one
edit session with the message given, or nothing is (exit code 2 names the change and the check).
The run is written to the audit log as principal ``cli:<os user>`` with its message."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import typer

from geobase.settings import get_settings

edit_app = typer.Typer(help="Change features: a GeoJSON file of changes as one version.", no_args_is_help=True)


@edit_app.command("apply")
def apply_cmd(layer: str = typer.Argument(..., help="The layer to change"),
              file: Path = typer.Argument(..., exists=True, dir_okay=False, help="GeoJSON FeatureCollection: each "
                                          "feature with op create|replace|update|delete and id"),
              message: str = typer.Option(..., "--message", "-m", help="Why: kept with the version"),
              crs: str = typer.Option(None, help="CRS of the file's coordinates (default CRS84), e.g. EPSG:4527"),
              as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Apply the changes in FILE to LAYER as one new version (all of them or none)."""
    from geobase import audit
    from geobase.crs import parse_crs
    from geobase.db import connect
    from geobase.editing.batch import apply_changes
    from geobase.editing.service import Actor
    from geobase.errors import InvalidInput
    from geobase.security import Principal
    from geobase.specs import get_registry

    settings = get_settings()
    registry = get_registry(settings)
    spec = registry.layer(layer)
    if spec.kind != "vector":
        raise InvalidInput(f"{layer!r} is a raster: it has no features to edit", parameter="layer")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{file}: not a UTF-8 JSON file ({exc})", parameter="file") from None
    try:
        user = f"cli:{getpass.getuser()}"
    except Exception:
        user = "cli:unknown"
    out = apply_changes(settings, spec, registry, doc, actor=Actor(user, None, None, True), message=message,
                        crs=parse_crs(crs, "--crs"))
    with connect(settings) as conn:
        audit.record(conn, principal=Principal(name=user, role="admin", key_id=None), action="edit.apply",
                     layers=[layer], params={"reason": message, "file": file.name, "version": out["version"],
                                             "session": out["session"], "changes": out["changes"]})
        conn.commit()
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False))
    else:
        typer.echo(f"{layer}: version {out['version']} ({out['changes']} changes, session {out['session']})")


def register(app: typer.Typer) -> None:
    app.add_typer(edit_app, name="edit")

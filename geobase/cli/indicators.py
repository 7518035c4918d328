"""``geobase indicators``: list the indicator models and their latest values, recompute them for
the queued layer versions (the job the server runs by itself), show one indicator's series, and
import a planning-target table from CSV (``targets import``, all rows or none)."""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path

import typer

from geobase.settings import get_settings

indicators_app = typer.Typer(help="Indicator models: values per township and version, targets, warnings.",
                             no_args_is_help=True)
targets_app = typer.Typer(help="Planning targets per indicator and division.", no_args_is_help=True)
indicators_app.add_typer(targets_app, name="targets")


def _user() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli:unknown"


async def _with_conn(fn):
    import psycopg

    from geobase.db import database_url

    async with await psycopg.AsyncConnection.connect(database_url(get_settings()), autocommit=True) as conn:
        return await fn(conn)


def _echo(doc, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(doc, ensure_ascii=False, default=str) if as_json else text)


@indicators_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Every indicator with its latest value per division."""
    from geobase.indicators import service
    from geobase.indicators.spec import get_indicators
    from geobase.specs import get_registry

    registry = get_registry(get_settings())
    doc = asyncio.run(_with_conn(lambda c: service.overview(c, registry, get_indicators(registry))))
    lines = []
    for ind in doc["indicators"]:
        vals = ", ".join(f"{v['division']}={'-' if v['value'] is None else round(v['value'], 4)}" for v in ind["values"])
        lines.append(f"{ind['id']} {ind['name_zh']} ({ind['unit']}): {vals}")
    _echo(doc, as_json, "\n".join(lines))


@indicators_app.command("recompute")
def recompute_cmd(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Recompute the indicators for every queued layer version now (a recorded job)."""
    from geobase.indicators.monitor import run_job
    from geobase.specs import get_registry

    settings = get_settings()
    out = asyncio.run(run_job(settings, get_registry(settings), created_by=_user()))
    steps = out["result"]["steps"]
    _echo(out, as_json, f"job {out['id']}: " + ("; ".join(
        f"{s.get('layer', 'all')} v{s.get('version', '-')} {s['kind']}: {len(s['divisions'])} division(s)"
        for s in steps) or "nothing queued"))


@indicators_app.command("show")
def show_cmd(indicator: str = typer.Argument(..., help="Indicator id"),
             division: str = typer.Option(None, help="One division code"),
             csv_out: bool = typer.Option(False, "--csv", help="Print the series as CSV (UTF-8 with BOM)."),
             as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """One indicator's series by division and version."""
    from geobase.indicators import service
    from geobase.indicators.spec import get_indicators
    from geobase.specs import get_registry

    registry = get_registry(get_settings())
    doc = asyncio.run(_with_conn(lambda c: service.detail(c, registry, get_indicators(registry), indicator, division)))
    if csv_out:
        typer.echo(service.detail_csv(doc), nl=False)
        return
    _echo(doc, as_json, "\n".join(f"{d['division']} {d['name']}: {d['value']} (target {d['target']}, "
                                  f"{d['status'] or 'ok'}; {len(d['series'])} values)" for d in doc["divisions"]))


@targets_app.command("import")
def targets_import_cmd(file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                                   help="CSV with columns indicator,division,target"),
                       as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Import planning targets (all rows or none; a bad row is an error naming it)."""
    from geobase.errors import InvalidInput
    from geobase.indicators import targets
    from geobase.indicators.spec import get_indicators
    from geobase.specs import get_registry

    registry = get_registry(get_settings())
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{file}: not UTF-8 (save it as 'CSV UTF-8' in Excel)", parameter="file") from None
    out = asyncio.run(_with_conn(lambda c: targets.import_targets(
        c, registry, get_indicators(registry), text, source=file.name, user=_user())))
    _echo(out, as_json, f"{out['imported']} target(s) imported; warnings raised {out['raised']}, "
                        f"cleared {out['cleared']}")


def register(app: typer.Typer) -> None:
    app.add_typer(indicators_app, name="indicators")

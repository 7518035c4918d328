"""``geobase ingest``, ``geobase sample generate`` and ``geobase layers versions|diff|rollback``.

Exit codes: 0 loaded (or dry run passed), 2 refused input (bad file, bad parameter; the
message says what and where), 1 failures (database, bugs), others as in geobase/errors.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from geobase.cli.layers import layers_app
from geobase.settings import get_settings
from geobase.vocab import INGEST_MODES

sample_app = typer.Typer(help="The synthetic sample county (or province).", no_args_is_help=True)


def _console():
    from rich.console import Console

    return Console()


def print_report(result: dict, console=None) -> None:
    """The readable summary: what was loaded, and a table of problems with examples."""
    from rich.table import Table

    from geobase.ingest.report import describe_category

    console = console or _console()
    rep = result.get("report") or {}
    head = Table(title=f"ingest {result['layer']} <- {result['source_name']}", show_header=False)
    head.add_column("", style="bold")
    head.add_column("")
    refused = result.get("refused")
    status = ("refused: nothing written, the current version is unchanged" if refused else
              "dry run: nothing written" if result.get("dry_run") else
              "skipped: same file as the current version" if result.get("skipped") else
              f"version {result.get('version')} ({result.get('mode')})")
    diff = (f"{result.get('rows_total')} current; +{result.get('added')} added, -{result.get('removed')} removed, "
            f"~{result.get('changed')} changed")
    if result.get("dry_run"):
        diff = f"would be {diff}"
    for k, v in [
        ("result", status),
        *([] if refused else [("rows", diff)]),
        ("read / loaded / skipped", f"{rep.get('rows_read')} / {rep.get('rows_loaded')} / {rep.get('rows_skipped')}"),
        ("format", f"{rep.get('driver')}" + (f", layer {rep.get('source_layer')}" if rep.get("source_layer") else "")),
        ("encoding", f"{rep.get('encoding')} ({rep.get('encoding_how')})"),
        ("CRS", f"{rep.get('crs')} ({rep.get('crs_how')}) -> EPSG:4490"),
        ("checksum", (result.get("checksum") or "")[:16]),
        ("time", f"{result.get('seconds')} s"),
    ]:
        head.add_row(k, str(v))
    console.print(head)
    issues = {**(rep.get("errors") or {}), **(rep.get("warnings") or {})}
    if issues:
        t = Table(title="quality checks")
        for c in ("check", "severity", "count", "first example"):
            t.add_column(c)
        for cat, n in issues.items():
            sev = "error" if cat in (rep.get("errors") or {}) else "warning"
            ex = (rep.get("samples") or {}).get(cat) or []
            first = ""
            if ex:
                e = ex[0]
                where = [f"row {e['row']}"] if e.get("row") is not None else []
                where += [f"key {e['key']}"] if e.get("key") is not None else []
                first = f"{' '.join(where)}: {e.get('message')}" if where else str(e.get("message"))
            if cat == "area_deviation" and (rep.get("checks") or {}).get("area", {}).get("samples"):
                s = rep["checks"]["area"]["samples"][0]
                first = f"key {s['key']}: stated {s['stated_m2']} m², ellipsoidal {s['ellipsoidal_m2']} m²"
            if cat in ("coverage_overlap", "coverage_gap"):
                cov = (rep.get("checks") or {}).get("coverage", {})
                samples = cov.get("overlap_samples" if cat == "coverage_overlap" else "gap_samples") or []
                if samples:
                    first = json.dumps(samples[0], ensure_ascii=False)
            t.add_row(describe_category(cat), sev, str(n), first[:120])
        console.print(t)
    for note in rep.get("notes") or []:
        console.print(f"note: {note}")


def _pandas_absent_in_own_process() -> None:
    """Mark pandas absent for a ``geobase ingest`` process of its own.

    Why: a vector ingest reads and converts through arrow and numpy and never needs pandas,
    but when pandas is installed pyarrow imports it on its first conversion of a numpy array and
    pyogrio imports it (and geopandas) on import: ~0.2 CPU-s of a 200k-parcel ingest's ~3 s in
    Python. Only when this process is the ``geobase`` command (``python -m geobase.cli`` or the
    script) and nothing imported pandas yet: a program that runs the command inside itself (a
    test, the server) keeps its pandas. A code path that did need it would fail with an
    ImportError naming pandas, never silently."""
    if _own_process() and "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())


def _own_process() -> bool:
    """Whether this process is the ``geobase`` command (``python -m geobase.cli`` or the script),
    not a program that runs the command inside itself (a test, the server)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return (spec is not None and spec.name == "geobase.cli.__main__") or Path(sys.argv[0]).name == "geobase"


def _freeze_imported() -> None:
    """Move every object alive now (the ~0.5 s of modules the load imported: numpy, arrow,
    shapely, pyproj, psycopg, the layer registry) out of the garbage collector's sight, in a
    ``geobase ingest`` process of its own. Why: they live as long as the process, yet each full
    collection the load's allocations trigger walked them all again (two per 200,000-parcel
    ingest, ~30 ms each on the thread that normalises the batches); the CLI does the same for
    its own imports (geobase/cli/__init__.py)."""
    if _own_process():
        import gc

        gc.freeze()


def _one_blas_thread() -> None:
    """One OpenBLAS thread in a ``geobase ingest`` process of its own (unless the environment
    says otherwise), set before numpy is imported. Why: the load makes no matrix products worth
    a thread, but numpy's OpenBLAS starts a thread per core whose busy waiting took ~1% of the
    load's CPU (perf: ``blas_thread_server``) from the reader and normalising threads."""
    if _own_process() and "numpy" not in sys.modules:
        import os

        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


class _NoPandas:
    """A meta path finder under which ``import pandas`` (and geopandas) is an ImportError
    (a ``None`` in ``sys.modules`` is not enough: pyarrow's compiled import returns it)."""

    def find_spec(self, name: str, path=None, target=None):
        if name.split(".")[0] in ("pandas", "geopandas"):
            raise ModuleNotFoundError(f"pandas is not used by `geobase ingest` ({name})", name=name)
        return None


def ingest_cmd(
    layer: str = typer.Argument(..., help="Target layer (see `geobase layers list`)."),
    path: Path = typer.Argument(..., help="File, folder, .zip or .gdb to load."),
    mode: str = typer.Option("replace", "--mode", help=" | ".join(INGEST_MODES)),
    crs: str = typer.Option(None, "--crs", help="CRS of the file when it states none (e.g. EPSG:4527)."),
    encoding: str = typer.Option(None, "--encoding", help="Text encoding of a .dbf (overrides .cpg / detection)."),
    source_layer: str = typer.Option(None, "--layer", help="Layer inside a GeoPackage/FileGDB/zip."),
    on_error: str = typer.Option("reject", "--on-error", help="reject (refuse the file) | skip (drop bad rows) | keep"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and report without writing."),
    coverage: bool = typer.Option(None, "--coverage/--no-coverage",
                                  help="Check overlaps/gaps of coverage layers (default: automatic up to 20,000 rows)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts)."),
    division: str = typer.Option(None, "--division",
                                 help="County code (6 digits) of the delivery, for rows whose own division field "
                                      "(ZLDWDM, XZQDM, XIAN) is empty or a layer without one."),
) -> None:
    """Load a department's delivery as a new version of LAYER, with checks and a quality report."""
    _pandas_absent_in_own_process()
    _one_blas_thread()
    if _own_process():  # the delivery is hashed while the load's modules are imported
        from geobase.ingest.sources import start_checksum

        start_checksum(path)
    from geobase.errors import GeobaseError
    from geobase.ingest.pipeline import ingest

    _freeze_imported()
    settings = get_settings()
    import getpass

    user = getpass.getuser()
    if as_json:
        try:
            res = ingest(settings, layer, path, mode=mode, crs=crs, encoding=encoding, source_layer=source_layer,
                         on_error=on_error, dry_run=dry_run, user=user, coverage=coverage, division=division)
        except GeobaseError as exc:
            typer.echo(json.dumps({"error": exc.code, "message": exc.message, "parameter": exc.parameter,
                                   "report": exc.details.get("report")}, ensure_ascii=False, default=str))
            raise
        typer.echo(json.dumps(res.as_dict(), ensure_ascii=False, default=str, indent=2))
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = _console()  # rich.progress only for the progress bar (~0.05 CPU-s to import): not with --json
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f} features"),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as prog:
        task = prog.add_task(f"{layer} <- {path.name}", total=None, rate="")

        def progress(done: int, total: int | None) -> None:
            elapsed = prog.tasks[0].elapsed or 1e-9
            prog.update(task, completed=done, total=total, rate=f"{done / elapsed:,.0f} features/s")

        try:
            res = ingest(settings, layer, path, mode=mode, crs=crs, encoding=encoding, source_layer=source_layer,
                         on_error=on_error, dry_run=dry_run, user=user, progress=progress, coverage=coverage,
                         division=division)
        except GeobaseError as exc:
            rep = exc.details.get("report")
            prog.stop()
            if rep and (rep.get("errors") or rep.get("warnings")):
                print_report({"layer": layer, "source_name": path.name, "report": rep, "refused": True}, console)
            raise
    print_report(res.as_dict(), console)


def versions_cmd(layer: str = typer.Argument(...),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON."),
                 division: str = typer.Option(None, "--division", help="Only the versions that changed this county.")
                 ) -> None:
    """List the versions of LAYER (source file, checksum, counts, counties, who, when)."""
    from rich.table import Table

    from geobase.catalog.history import dumps, list_versions

    rows = list_versions(get_settings(), layer, division)
    if as_json:
        typer.echo(dumps(rows))
        return
    t = Table(title=f"versions of {layer}")
    for c in ("version", "mode", "source", "checksum", "rows", "+", "-", "~", "counties", "by", "created", "problems"):
        t.add_column(c)
    for r in rows:
        probs = sum((r.get("errors") or {}).values()) + sum((r.get("warnings") or {}).values())
        t.add_row(f"{r['version']}{' *' if r['current'] else ''}", r["mode"] + (f" of {r['restored_from']}" if r["restored_from"] else ""),
                  r["source_name"] or "", (r["source_checksum"] or "")[:12], str(r["rows_total"]), str(r["rows_added"]),
                  str(r["rows_removed"]), str(r["rows_changed"]), ",".join(r.get("touched") or []) or "-", r["created_by"],
                  r["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
                  str(probs))
    _console().print(t)


def diff_cmd(layer: str = typer.Argument(...), v1: int = typer.Argument(...), v2: int = typer.Argument(...),
             as_json: bool = typer.Option(False, "--json", help="Print JSON."),
             division: str = typer.Option(None, "--division", help="Compare one county's rows only.")) -> None:
    """Compare two versions: added/removed/changed features and area moving between classes."""
    from rich.table import Table

    from geobase.catalog.history import diff, dumps

    d = diff(get_settings(), layer, v1, v2, division)
    if as_json:
        typer.echo(dumps(d))
        return
    typer.echo(f"{layer} v{v1} -> v{v2}: +{d.get('added')} added, -{d.get('removed')} removed, "
               f"~{d.get('changed')} changed, {d.get('unchanged')} unchanged")
    if d.get("class_changes"):
        t = Table(title=f"area moving between {d['class_field']} classes (m², ellipsoidal)")
        for c in ("from", "to", "area m²", "mu"):
            t.add_column(c)
        for r in d["class_changes"]:
            t.add_row(str(r["from"]), str(r["to"]), f"{r['area_m2']:,.2f}", f"{r['area_m2'] * 15 / 10000:,.2f}")
        _console().print(t)


def rollback_cmd(layer: str = typer.Argument(...), version: int = typer.Argument(...),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON."),
                 division: str = typer.Option(None, "--division",
                                              help="Restore this county only; the other counties stay as they are.")
                 ) -> None:
    """Create a new version of LAYER whose content equals VERSION (of every county, or of one)."""
    import getpass

    from geobase.catalog.history import dumps, rollback

    r = rollback(get_settings(), layer, version, user=getpass.getuser(), division=division)
    if as_json:
        typer.echo(dumps(r))
        return
    typer.echo(f"{layer}: version {r['version']} restores version {version} "
               f"(+{r.get('added', 0)} -{r.get('removed', 0)} ~{r.get('changed', 0)})")


@sample_app.command("generate")
def sample_generate(
    parcels: int = typer.Option(8000, "--parcels", help="Number of land-use parcels (one county)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (same seed, same files); default 20261122 for "
                                                  "the county, 20261206 for a province."),
    out: Path = typer.Option(Path("sample_data/county"), "--out", help="Output directory."),
    counties: int = typer.Option(None, "--counties", min=1, max=99,
                                 help="Make a province of this many adjacent counties (one folder each, "
                                      "named by its 6-digit code) instead of the one sample county."),
    parcels_per_county: int = typer.Option(20000, "--parcels-per-county", min=100,
                                           help="About this many parcels per county (with --counties)."),
    first_code: int = typer.Option(339901, "--first-code", help="Code of the first county (with --counties)."),
) -> None:
    """Generate the synthetic sample county, or with ``--counties N`` a province (deterministic)."""
    if counties is None:
        from geobase.sample_data.generate import generate

        m = generate(out, parcels=parcels, seed=20261122 if seed is None else seed)
        typer.echo(f"sample county written to {out} ({json.dumps(m.get('counts'), ensure_ascii=False)})")
        return
    from geobase.sample_data.province import generate_province

    def progress(code: str, i: int, n: int) -> None:
        if i == n:
            typer.echo(f"  county {code}: {n} blocks", err=True)

    m = generate_province(out, counties=counties, parcels_per_county=parcels_per_county,
                          seed=20261206 if seed is None else seed, first_code=first_code, progress=progress)
    total = sum(c["counts"]["DLTB"] for c in m["counties"])
    typer.echo(f"province of {counties} counties written to {out}: "
               f"{', '.join(c['code'] for c in m['counties'])}; {total} parcels")


@sample_app.command("ingest")
def sample_ingest(directory: Path = typer.Option(None, "--dir", help="County directory (default: the shipped one).")) -> None:
    """Ingest the sample county (skips files already loaded)."""
    from geobase.ingest.sample import ingest_sample_county

    ingest_sample_county(get_settings(), echo=typer.echo, directory=directory)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_cmd)
    app.add_typer(sample_app, name="sample")
    layers_app.command("versions")(versions_cmd)
    layers_app.command("diff")(diff_cmd)
    layers_app.command("rollback")(rollback_cmd)

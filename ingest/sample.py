"""The sample county: load every layer of ``sample_data/county/`` (the main job of ``geobase demo``).

Runs on first start and again on every ``geobase demo``: a file whose checksum equals the one of
the layer's current version is skipped, so a second run does nothing and a regenerated county
loads as new versions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from geobase.ingest.sources import sha256_files

from geobase.settings import Settings

#: (layer, file under sample_data/county, source layer in the file)
SAMPLE_FILES: list[tuple[str, str, str | None]] = [
    ("admin_divisions", "admin.gpkg", "XZQ"),
    ("land_use", "DLTB.zip", None),
    ("forest", "forest.gpkg", "XB"),
    ("water_areas", "water.geojson", None),
    ("rivers", "rivers.geojson", None),
    ("planning_zones", "planning.gdb.zip", "GHFQ"),
    ("control_lines", "planning.gdb.zip", "KZX"),
    ("dem", "dem.tif", None),
]


def sample_dir() -> Path:
    import geobase.sample_data as pkg

    return Path(pkg.__file__).parent / "county"


def ingest_sample_county(settings: Settings, echo: Callable[..., None] = print, *, directory: Path | None = None) -> list:
    """Ingest every sample layer not already loaded from the same file; returns the results."""
    from geobase.ingest.pipeline import current_checksum, ingest

    from geobase.db import prepare_database

    directory = Path(directory) if directory else sample_dir()
    if not directory.is_dir():
        echo(f"sample county not found in {directory}; generate it with `geobase sample generate`")
        return []
    # idempotent: migrations and catalog sync (the template database already has them)
    prepare_database(settings, start_local=settings.uses_local_cluster)
    results = []
    for layer, fname, source_layer in SAMPLE_FILES:
        path = directory / fname
        if not path.exists():
            echo(f"  {layer:16s} skipped: {fname} not in the sample county")
            continue
        if current_checksum(settings, layer) == sha256_files([path]):
            echo(f"  {layer:16s} up to date ({fname})")
            continue
        res = ingest(settings, layer, path, source_layer=source_layer, on_error="skip", user="sample")
        results.append(res)
        warn = res.report.get("warnings") or {}
        errs = res.report.get("errors") or {}
        extra = ""
        if errs or warn:
            extra = "  [" + ", ".join(f"{k} {v}" for k, v in {**errs, **warn}.items()) + "]"
        echo(f"  {layer:16s} v{res.version}: {res.rows_total} rows from {fname} in {res.seconds:.1f}s{extra}")
    return results

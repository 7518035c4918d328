"""The sample county: load every layer of ``sample_data/county/`` (the main job of ``geobase demo``).

Runs on first start and again on every ``geobase demo``, and must never replace data it did
not create: each version it loads records where it came from (``metadata.sample``: the sample
file and the checksum of the sample file it was made from). A sample file is loaded into a
layer only when

* the layer has no version yet, or
* the layer's current version came from the sample itself (the same file or an earlier step of
  that layer's sample sequence) and the sample changed since, or its COG is gone or altered
  (``make clean`` removes ``.geobase/`` while a cluster elsewhere keeps the catalog).

A version a steward loaded (or a rollback, or anything whose origin is not recorded) stays
current: the demo says so and moves on. A second run with nothing changed does nothing.

The demo (``with_changes=True``) also loads a second, realistic version of ``land_use``: the
"2026 annual change delivery" made from the sample by :func:`make_land_use_changes` (a few
farmland parcels become rural homesteads, one parcel is split in two), so that time travel,
diffs and the change feed have something to show.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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

#: the demo's second land-use version: its name in the provenance, the file it is made from
CHANGE_DELIVERY = "DLTB_2026_change.gpkg"
CHANGE_BASE = "DLTB.zip"
#: bump when make_land_use_changes changes, so that a demo loads the new delivery
CHANGE_GENERATOR = 1


def sample_dir() -> Path:
    import geobase.sample_data as pkg

    return Path(pkg.__file__).parent / "county"


@dataclass
class Step:
    """One sample load: ``file`` is the provenance name; ``made_from`` the sample file whose
    checksum identifies it (the file itself, or the base of a generated delivery)."""

    layer: str
    file: str
    source_layer: str | None
    made_from: Path
    generated: bool = False

    def checksum(self) -> str:
        base = sha256_files([self.made_from])
        return f"{base}+gen{CHANGE_GENERATOR}" if self.generated else base


def current_origin(settings: Settings, layer: str) -> dict | None:
    """The current version of ``layer`` and its sample provenance (None: no version yet).

    Versions written by demos before the provenance was recorded (created by ``sample`` with
    no metadata) count as sample versions of the file they name."""
    from geobase.catalog.deliveries import current_origin_row
    from geobase.db import connect

    with connect(settings) as conn:
        row = current_origin_row(conn, layer)
    if row is None:
        return None
    version, source_name, source_checksum, created_by, restored_from, metadata = (
        row["version"], row["source_name"], row["source_checksum"], row["created_by"], row["restored_from"],
        row["metadata"])
    metadata = metadata or {}
    sample = metadata.get("sample")
    if sample is None and created_by == "sample" and restored_from is None and "sample" not in metadata:
        sample = {"file": source_name, "checksum": source_checksum, "legacy": True}
    return {"version": version, "source_name": source_name, "created_by": created_by, "sample": sample,
            "metadata": metadata}


def raster_file_problem(metadata: dict) -> str | None:
    """Why the COG a raster version points to cannot be served (None: it is there, unaltered)."""
    path = metadata.get("path")
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        return f"its COG {p} is missing"
    expected = metadata.get("cog_sha256")
    if expected and sha256_files([p]) != expected:
        return f"its COG {p} was changed on disk"
    return None


def plan_layer(settings: Settings, steps: list[Step]) -> tuple[list[Step], str]:
    """Which of a layer's sample steps to load now, and why (for the demo's output)."""
    origin = current_origin(settings, steps[0].layer)
    if origin is None:
        return steps, "no version yet"
    sample = origin["sample"]
    if not sample:
        return [], (f"v{origin['version']} ({origin['source_name'] or 'rollback'}, by {origin['created_by']}) "
                    "is not from the sample: kept")
    names = [s.file for s in steps]
    if sample.get("file") not in names:
        return [], f"v{origin['version']} came from {sample.get('file')}, not from this sample: kept"
    at = names.index(sample["file"])
    step = steps[at]
    if sample.get("legacy"):
        same = sample.get("checksum") == sha256_files([step.made_from]) if not step.generated else False
    else:
        same = sample.get("checksum") == step.checksum()
    if not same:
        return steps, f"the sample changed since v{origin['version']}"
    problem = raster_file_problem(origin["metadata"])
    if problem:
        return steps[at:], f"v{origin['version']} is in the catalog but {problem}"
    if at + 1 < len(steps):
        return steps[at + 1:], f"v{origin['version']} is from {step.file}; next sample step"
    return [], f"up to date (v{origin['version']} from {step.file})"


def sample_steps(directory: Path, *, with_changes: bool) -> dict[str, list[Step]]:
    steps: dict[str, list[Step]] = {}
    for layer, fname, source_layer in SAMPLE_FILES:
        steps.setdefault(layer, []).append(Step(layer, fname, source_layer, directory / fname))
    if with_changes and (directory / CHANGE_BASE).exists():
        steps["land_use"].append(Step("land_use", CHANGE_DELIVERY, None, directory / CHANGE_BASE, generated=True))
    return steps


def ingest_sample_county(settings: Settings, echo: Callable[..., None] = print, *, directory: Path | None = None,
                         with_changes: bool = False) -> list:
    """Ingest the sample layers the rules above allow; returns the results.

    ``with_changes`` (the demo) adds the land-use change delivery as a second version."""
    from geobase.ingest.pipeline import ingest

    from geobase.db import prepare_database

    directory = Path(directory) if directory else sample_dir()
    if not directory.is_dir():
        echo(f"sample county not found in {directory}; generate it with `geobase sample generate`")
        return []
    # idempotent: migrations and catalog sync (the template database already has them)
    prepare_database(settings, start_local=settings.uses_local_cluster)
    results = []
    for layer, layer_steps in sample_steps(directory, with_changes=with_changes).items():
        missing = [s.made_from.name for s in layer_steps if not s.made_from.exists()]
        if missing:
            echo(f"  {layer:16s} skipped: {', '.join(missing)} not in the sample county")
            continue
        todo, why = plan_layer(settings, layer_steps)
        if not todo:
            echo(f"  {layer:16s} {why}")
            continue
        for i, step in enumerate(todo):
            if i:
                why = "next sample step"
            path = make_land_use_changes(settings, step.made_from) if step.generated else step.made_from
            res = ingest(settings, layer, path, source_layer=step.source_layer, on_error="skip", user="sample",
                         provenance={"file": step.file, "checksum": step.checksum()})
            results.append(res)
            warn = res.report.get("warnings") or {}
            errs = res.report.get("errors") or {}
            extra = ""
            if errs or warn:
                extra = "  [" + ", ".join(f"{k} {v}" for k, v in {**errs, **warn}.items()) + "]"
            echo(f"  {layer:16s} v{res.version}: {res.rows_total} rows from {step.file} in {res.seconds:.1f}s"
                 f" ({why}){extra}")
    if with_changes:  # the demo: the imagery series as a STAC collection (missing scenes only)
        from geobase.imagery.sample import ingest_sample_imagery

        ingest_sample_imagery(settings, directory, echo)
    return results


#: the parcels the change delivery reclassifies (farmland → rural homestead) and the one it splits
_RECLASSIFY_COUNT = 12
_NEW_CLASS = ("0702", "农村宅基地")


def make_land_use_changes(settings: Settings, base: Path) -> Path:
    """Write the "2026 annual change delivery" of the sample land use: ``base`` with the
    12 smallest dry-land (0103) parcels reclassified to rural homestead (0702) and the largest
    paddy (0101) parcel split in two along its centre meridian (the west half keeps its BSM, the
    east half gets a new one; each states its own ellipsoidal area). Deterministic: the same
    base gives the same parcels. Returns the GeoPackage path (under the data directory)."""
    import geopandas as gpd
    import pyogrio
    from pyproj import Geod
    from shapely.geometry import box

    df = pyogrio.read_dataframe(base)
    geod = Geod(ellps="GRS80")

    def area_m2(geom) -> float:
        g = gpd.GeoSeries([geom], crs=df.crs).to_crs(4490).iloc[0]
        return abs(geod.geometry_area_perimeter(g)[0])

    dry = df[df["DLBM"] == "0103"].copy()
    dry["_a"] = dry.geometry.area
    picked = dry.sort_values(["_a", "BSM"]).head(_RECLASSIFY_COUNT).index
    df.loc[picked, "DLBM"] = _NEW_CLASS[0]
    df.loc[picked, "DLMC"] = _NEW_CLASS[1]
    for col, value in (("GDLX", None), ("GDPDJB", None), ("KCXS", 0.0), ("KCMJ", 0.0)):
        if col in df.columns:
            df.loc[picked, col] = value
    if "TBDLMJ" in df.columns and "TBMJ" in df.columns:
        df.loc[picked, "TBDLMJ"] = df.loc[picked, "TBMJ"]
    if "SJNF" in df.columns:
        df.loc[picked, "SJNF"] = 2026

    paddy = df[df["DLBM"] == "0101"]
    big = paddy.geometry.area.sort_values(ascending=False).index[0]
    geom = df.loc[big, "geometry"]
    minx, miny, maxx, maxy = geom.bounds
    mid = (minx + maxx) / 2
    west = geom.intersection(box(minx - 1, miny - 1, mid, maxy + 1))
    east = geom.intersection(box(mid, miny - 1, maxx + 1, maxy + 1))
    east_row = df.loc[[big]].copy()
    east_row["BSM"] = str(df["BSM"].astype(str).map(lambda s: int(s) if s.isdigit() else 0).max() + 1).zfill(
        len(str(df.loc[big, "BSM"])))
    df.loc[big, "geometry"] = west
    east_row["geometry"] = [east]
    for frame, idx, g in ((df, big, west), (east_row, east_row.index[0], east)):
        a = round(area_m2(g), 2)
        if "TBMJ" in frame.columns:
            frame.loc[idx, "TBMJ"] = a
        if "KCXS" in frame.columns and "KCMJ" in frame.columns:
            frame.loc[idx, "KCMJ"] = round(a * float(frame.loc[idx, "KCXS"] or 0), 2)
        if "TBDLMJ" in frame.columns:
            frame.loc[idx, "TBDLMJ"] = round(a - float(frame.loc[idx, "KCMJ"] or 0), 2)
    import pandas as pd

    out_df = gpd.GeoDataFrame(pd.concat([df, east_row], ignore_index=True), crs=df.crs)
    out_df["geometry"] = out_df.geometry.apply(
        lambda g: g if g.geom_type == "MultiPolygon" else __import__("shapely").geometry.MultiPolygon(
            [p for p in getattr(g, "geoms", [g]) if p.geom_type == "Polygon"]))
    out = settings.data_path / "sample" / CHANGE_DELIVERY
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.gpkg")
    tmp.unlink(missing_ok=True)
    pyogrio.write_dataframe(out_df, tmp, layer="DLTB", driver="GPKG")
    tmp.replace(out)
    (out.parent / (CHANGE_DELIVERY + ".json")).write_text(json.dumps(
        {"made_from": base.name, "reclassified": [str(df.loc[i, "BSM"]) for i in picked],
         "split": str(df.loc[big, "BSM"]), "new": str(east_row["BSM"].iloc[0])}, ensure_ascii=False, indent=2))
    return out

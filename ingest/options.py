"""What an ingest is asked to do (:class:`IngestOptions`) and what it did (:class:`IngestResult`).

Why a module of its own: the vector pipeline (ingest/pipeline.py) and the raster loader
(ingest/raster.py) both take the options and return the result; with these here neither needs
to import the other (the raster loader used to import the pipeline from inside a function).
The options are checked once, when they are made: a bad mode or error policy is refused before
any file is opened, with the same message the CLI and the API have always shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from geobase.vocab import INGEST_MODES
from geobase.errors import InvalidInput
from geobase.storage import check_division

#: what a new version does with the delivered rows (the version writer defines them)
MODES = INGEST_MODES
#: what happens to rows that fail a check: refuse the file, drop the rows, or keep them with a warning
POLICIES = ("reject", "skip", "keep")

ProgressFn = Callable[[int, int | None], None]


@dataclass(frozen=True)
class IngestOptions:
    """One delivered file for one layer, and how to load it.

    ``provenance`` (only the sample loader sets it) is stored in the version's metadata under
    ``sample``: the demo replaces nothing but the versions it made itself (ingest/sample.py).
    ``direct`` False forbids the straight-into-the-table first load (the retry after a
    :class:`~geobase.ingest.loader.RedoWithStaging`). ``division``: the county (6-digit code) the
    delivery is for: rows whose own division field is empty, or all rows of a layer without one,
    belong to it, and a row whose field names another county is refused (geobase/storage.py)."""

    layer: str
    path: Path
    mode: str = "replace"
    crs: str | None = None
    encoding: str | None = None
    source_layer: str | None = None
    on_error: str = "reject"
    dry_run: bool = False
    user: str = "cli"
    progress: ProgressFn | None = None
    field_map: dict[str, str] | None = None
    job_id: str | None = None
    coverage: bool | None = None
    direct: bool = True
    provenance: dict | None = None
    division: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.division is not None:
            object.__setattr__(self, "division", check_division(self.division, "division"))
        if self.mode not in MODES:
            raise InvalidInput(f"--mode: {self.mode!r} is not one of {', '.join(MODES)}", parameter="mode")
        if self.on_error not in POLICIES:
            raise InvalidInput(f"--on-error: {self.on_error!r} is not one of {', '.join(POLICIES)}",
                               parameter="on_error")


@dataclass
class IngestResult:
    layer: str
    version: int | None
    mode: str
    source_name: str
    checksum: str
    rows_total: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    extent: list[float] | None = None
    dry_run: bool = False
    skipped: bool = False  # same checksum as the current version
    seconds: float = 0.0
    report: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    divisions: list[str] = field(default_factory=list)  # the counties the version is for

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "layer", "version", "mode", "source_name", "checksum", "rows_total", "added", "removed", "changed",
            "extent", "dry_run", "skipped", "seconds", "report", "metadata", "divisions")}

"""What the steps of one ingest hand to each other: :class:`IngestContext` (the file, what was
decided about it, the report) and :class:`LoadTarget` (where the rows go: staging or, for a big
first load, the layer table itself).

Why: the pipeline was one 255-line function carrying fifteen values; each step now names what
it reads and writes on these two objects, and can be read (and tested) on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import psycopg
import pyarrow as pa
from geobase.ingest.area import AREA_TOLERANCE
from geobase.ingest.encoding import EncodingSniffer
from geobase.ingest.loader import DirectLoad
from geobase.ingest.normalize import BatchNormalizer, FieldPlan
from geobase.ingest.options import IngestOptions
from geobase.ingest.report import QualityReport
from geobase.ingest.sources import Source
from geobase.ingest.staging import Staging
from pyproj import CRS

from geobase.errors import InvalidInput
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry


@dataclass
class IngestContext:
    """One file on its way to a version: filled in step by step (None: not decided yet)."""

    settings: Settings
    opts: IngestOptions
    spec: LayerSpec
    registry: Registry
    src: Source
    report: QualityReport
    checksum: Callable[[], str]  # waits for the checksum thread
    t0: float = field(default_factory=time.monotonic)
    gdal_encoding: str | None = None
    sniffer: EncodingSniffer | None = None
    info: dict = field(default_factory=dict)
    src_crs: CRS | None = None
    plan: FieldPlan | None = None
    norm: BatchNormalizer | None = None
    total_features: int | None = None
    source_cols: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The delivered file's name, as messages and the version row give it."""
        return self.opts.path.name

    def seconds(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def refuse(self) -> NoReturn:
        """Refuse the file (``--on-error reject`` and problems found): nothing is written."""
        problems = "; ".join(self.report.first_problems())
        raise InvalidInput(
            f"{self.name}: refused ({self.report.error_count} problem(s), --on-error reject): {problems}. "
            "Fix the file, or use --on-error skip to load the good rows",
            parameter="path", details={"report": self.report.as_dict()})

    def record_area(self, n_dev: int, devs: list[dict]) -> None:
        """The stated-vs-ellipsoidal area check's outcome, in the report."""
        self.report.checks["area"] = {"tolerance": AREA_TOLERANCE, "deviating": n_dev, "samples": devs,
                                      "field": self.spec.stated_area_field, "unit": self.spec.stated_area_unit}
        self.report.add_count("area_deviation", n_dev)


@dataclass
class LoadTarget:
    """Where the rows are COPYed: a staging table, or the layer table itself (``direct``)."""

    conn: psycopg.Connection
    stg: Staging
    direct: DirectLoad | None = None
    staged_keys: list[pa.Array] = field(default_factory=list)
    features_read: int = 0

    @property
    def staging(self) -> bool:
        return self.direct is None

    def copy(self, values_of: Callable[[], list[pa.Array]]):
        """The COPY writer of the target; ``values_of()``: the attribute values of the batch
        being written (a direct load derives each row's county from them)."""
        return (self.direct or self.stg).copy(values_of)

    def close(self) -> None:
        """Drop the staging table, or roll back a direct load that did not commit."""
        if self.direct is not None:
            self.direct.abort()
        else:
            self.stg.drop()

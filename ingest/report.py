"""The quality report of one ingest: what was read, what was wrong, what was repaired.

Stored as JSON in ``catalog.layer_versions.report``, printed as a table by the CLI and returned
by the jobs API. Issues are counted per category with a bounded number of examples (row number,
feature key, message, location) so a million-row file with one systematic error still produces a
report a person can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_SAMPLES_PER_CATEGORY = 20

#: Categories that make a row unusable: under --on-error reject the whole file is refused.
ERROR_CATEGORIES = {
    "required_missing": "required attribute missing",
    "bad_type": "value does not fit the attribute type",
    "unknown_code": "code not in the layer's code list",
    "code_not_assignable": "code is a group heading that features may not carry",
    "wrong_geometry_type": "geometry type does not fit the layer",
    "empty_geometry": "empty or missing geometry",
    "invalid_unrepairable": "invalid geometry that could not be repaired",
    "bad_text_encoding": "text not decodable in the detected encoding",
    "duplicate_key": "feature key occurs more than once in the file",
    "unknown_key": "key to delete is not a current feature",
    "coordinates_impossible": "coordinates are not valid longitude/latitude after transformation (wrong CRS?)",
    "existing_key": "append: key is already a current feature (use --mode upsert)",
    "division": "row belongs to no county of the delivery (division field, --division)",
}
#: Categories reported but not refused.
WARNING_CATEGORIES = {
    "invalid_repaired": "invalid geometry repaired (make_valid)",
    "outside_crs_area": "coordinates outside the CRS's area of use (check the CRS)",
    "area_deviation": "stated area deviates from the ellipsoidal area by more than the tolerance",
    "coverage_overlap": "features of a coverage layer overlap",
    "coverage_gap": "gap inside a coverage layer",
    "geometry_parts_dropped": "non-polygonal parts dropped after repair",
}


@dataclass
class QualityReport:
    source: str = ""
    driver: str = ""
    source_layer: str | None = None
    encoding: str | None = None
    encoding_how: str | None = None
    crs: str | None = None
    crs_how: str | None = None
    field_map: dict[str, str] = field(default_factory=dict)
    ignored_fields: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_loaded: int = 0
    rows_skipped: int = 0
    on_error: str = "reject"
    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def add(self, category: str, row: int | None, key: str | None, message: str, **extra: Any) -> None:
        self.counts[category] = self.counts.get(category, 0) + 1
        bucket = self.samples.setdefault(category, [])
        if len(bucket) < MAX_SAMPLES_PER_CATEGORY:
            item = {"row": row, "key": key, "message": message}
            item.update(extra)
            bucket.append(item)

    def add_count(self, category: str, n: int) -> None:
        if n:
            self.counts[category] = self.counts.get(category, 0) + n

    def add_sampled(self, category: str, total: int, examples: list[tuple[int | None, str, str]]) -> None:
        """A check that counted ``total`` findings in SQL and fetched a few ``(row, key, message)``
        examples: each example as a sample, the rest as a count, so the total stays exact."""
        for row, key, message in examples:
            self.add(category, row, key, message)
        if total > len(examples):
            self.add_count(category, total - len(examples))

    @property
    def error_count(self) -> int:
        return sum(n for c, n in self.counts.items() if c in ERROR_CATEGORIES)

    def errors(self) -> dict[str, int]:
        return {c: n for c, n in self.counts.items() if c in ERROR_CATEGORIES}

    def warnings(self) -> dict[str, int]:
        return {c: n for c, n in self.counts.items() if c not in ERROR_CATEGORIES}

    def first_problems(self, limit: int = 5) -> list[str]:
        """Short human lines for an error message: category, count and the first example."""
        out = []
        for cat, n in self.errors().items():
            ex = self.samples.get(cat, [{}])[0] if self.samples.get(cat) else {}
            where = f"row {ex.get('row')}" + (f" (key {ex['key']})" if ex.get("key") else "") if ex else ""
            out.append(f"{n} x {ERROR_CATEGORIES.get(cat, cat)}" + (f", e.g. {where}: {ex.get('message')}" if ex else ""))
            if len(out) >= limit:
                break
        return out

    def as_dict(self) -> dict:
        return {
            "source": self.source, "driver": self.driver, "source_layer": self.source_layer,
            "encoding": self.encoding, "encoding_how": self.encoding_how, "crs": self.crs, "crs_how": self.crs_how,
            "field_map": self.field_map, "ignored_fields": self.ignored_fields,
            "rows_read": self.rows_read, "rows_loaded": self.rows_loaded, "rows_skipped": self.rows_skipped,
            "on_error": self.on_error, "errors": self.errors(), "warnings": self.warnings(),
            "samples": self.samples, "notes": self.notes, "checks": self.checks,
        }


def describe_category(cat: str) -> str:
    return ERROR_CATEGORIES.get(cat) or WARNING_CATEGORIES.get(cat) or cat

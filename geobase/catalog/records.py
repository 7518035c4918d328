"""Catalog records: one per layer and raster, generated from the specs, the versions (extent,
lineage), the last ingest's report (quality) and the admin-editable metadata of
``catalog.record_meta``; plus metadata-only records an admin registers for resources that are
not layers of this database (an imagery archive, a statistics table).

This module owns the SQL of ``catalog.record_meta`` and the grade/openness overrides of
``catalog.layers``. It builds plain records (dicts with the keys of :data:`RECORD_KEYS`); who may
see one is decided in :mod:`geobase.security` (:func:`~geobase.security.record_visible`) and
the standard encodings (OGC API - Records, DCAT, CSV, CSW) live in :mod:`geobase.opendata`.

The records are built once per catalog state and kept (:class:`RecordCache`): a search over
10,000 records filters a list in memory instead of rebuilding them per request; the state is a
cheap stamp (:data:`STAMP_SQL`: the layers' access facts and versions, a counter every metadata
write moves), read on every request after it arrived (concurrent searches share one read), so
an edit, a grade or sharing change or an ingest shows on the very next request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from geobase.catalog.imagery_records import STAMP_PART as IMAGERY_STAMP
from geobase.catalog.imagery_records import imagery_records
from geobase.catalog.layers import GRADE_SQL
from geobase.errors import InvalidInput, NotFound
from geobase.opendata.classes import DataClass, Level
from geobase.opendata.grades import GRADES, OPENNESS
from geobase.specs import LayerSpec, Registry
from geobase.vocab import NAME_PATTERN

#: download formats of a vector layer (items' ``f=``) and their media types
VECTOR_FORMATS: dict[str, str] = {
    "geojson": "application/geo+json", "csv": "text/csv", "gpkg": "application/geopackage+sqlite3",
    "fgb": "application/flatgeobuf", "parquet": "application/vnd.apache.parquet",
}

RECORD_KEYS = ("id", "type", "kind", "title", "abstract", "data_class", "level", "themes", "tags", "keywords",
               "department", "contact", "licence", "update_frequency", "bbox", "interval", "lineage", "quality",
               "grade", "openness", "distributions", "updated", "access")


class RecordMeta(BaseModel):
    """What an admin may set on a record (all optional: unset falls back to the spec)."""

    # defer_build: its schema is built by its first use, not by every server start (issue #15)
    model_config = ConfigDict(defer_build=True, extra="forbid")

    title_zh: str | None = Field(default=None, max_length=300)
    title_en: str | None = Field(default=None, max_length=300)
    abstract_zh: str | None = Field(default=None, max_length=5000)
    abstract_en: str | None = Field(default=None, max_length=5000)
    data_class: DataClass | None = None
    level: Level | None = None
    themes: list[str] = Field(default_factory=list, max_length=50)
    tags: list[str] = Field(default_factory=list, max_length=100)
    keywords: list[str] = Field(default_factory=list, max_length=100)
    contact: str | None = Field(default=None, max_length=300)
    licence: str | None = Field(default=None, max_length=300)
    update_frequency: str | None = Field(default=None, max_length=40)
    # only for metadata-only records (resources that are not layers here)
    department: str | None = Field(default=None, pattern=NAME_PATTERN)
    grade: Literal["general", "important", "core"] | None = None
    openness: Literal["open", "conditional", "closed"] | None = None
    bbox: list[float] | None = Field(default=None, min_length=4, max_length=4)
    interval: list[str | None] | None = Field(default=None, min_length=2, max_length=2)
    links: list[dict[str, str]] = Field(default_factory=list, max_length=50)


_LAYERS_SQL = """
    SELECT l.name, l.department, l.sharing, l.shared_with, coalesce(l.grade, l.spec->>'grade') AS grade,
           coalesce(l.openness, l.spec->>'openness') AS openness, l.current_version,
           l.updated_at, v.extent, v.created_at AS current_at, v.report, v.rows_total,
           (SELECT min(created_at) FROM catalog.layer_versions f WHERE f.layer = l.name) AS first_at,
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'version', h.version, 'created_at', h.created_at, 'source', h.source_name,
                'format', h.source_format, 'mode', h.mode, 'by', h.created_by, 'rows', h.rows_total,
                'restored_from', h.restored_from) ORDER BY h.version DESC), '[]'::jsonb)
              FROM (SELECT * FROM catalog.layer_versions x WHERE x.layer = l.name
                    ORDER BY x.version DESC LIMIT 20) h) AS lineage,
           m.meta, m.updated_at AS meta_at
    FROM catalog.layers l
    LEFT JOIN catalog.layer_versions v ON v.layer = l.name AND v.version = l.current_version
    LEFT JOIN catalog.record_meta m ON m.dataset = l.name
    ORDER BY l.name
"""
_EXTRA_SQL = ("SELECT dataset, meta, updated_at FROM catalog.record_meta m "
              "WHERE NOT EXISTS (SELECT 1 FROM catalog.layers l WHERE l.name = m.dataset) ORDER BY dataset")
#: the catalog state the kept records belong to: every access fact of every layer (owner,
#: sharing, grade, openness, current version: however changed), the versions, the metadata and
#: the departments
STAMP_SQL = """SELECT (SELECT md5(string_agg(concat_ws('|', name, department, sharing, shared_with::text, grade,
                                                        openness, spec_hash, current_version, updated_at), ','
                                              ORDER BY name)) FROM catalog.layers),
                      (SELECT count(*) FROM catalog.layer_versions),
                      (SELECT n FROM catalog.catalog_stamp), """ + IMAGERY_STAMP
# ``catalog_stamp`` (migration 0012): a counter every committed write of record_meta or
# departments moves (a scan of 10,000 metadata rows per request was most of a search's time)


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else value


def _quality(report: dict | None) -> dict | None:
    """The last ingest's report, summarised: rows read/loaded/skipped, error and warning counts."""
    if not report:
        return None
    return {k: report.get(k) for k in ("rows_read", "rows_loaded", "rows_skipped", "errors", "warnings",
                                        "crs", "encoding") if k in report}


def layer_record(spec: LayerSpec, row: dict, department: dict | None) -> dict:
    """A layer's record from its spec, its catalog row and its admin metadata."""
    meta = RecordMeta.model_validate(row.get("meta") or {})
    cat = spec.catalog  # the spec's class, level and themes; the admin's metadata overrides them
    kind = spec.kind
    dists = []
    if kind == "vector":
        for f, media in VECTOR_FORMATS.items():
            dists.append({"format": f, "media_type": media, "href": f"/collections/{spec.name}/items?f={f}",
                          "title": f"{spec.title.en} ({f})"})
        dists.append({"format": "ogcapi-features", "media_type": "application/json",
                      "href": f"/collections/{spec.name}", "title": "OGC API - Features collection"})
        dists.append({"format": "mvt", "media_type": "application/vnd.mapbox-vector-tile",
                      "href": f"/tiles/{spec.name}.json", "title": "Vector tiles (TileJSON)"})
    else:
        dists.append({"format": "geotiff", "media_type": "image/tiff; application=geotiff",
                      "href": f"/collections/{spec.name}/coverage", "title": "Coverage (GeoTIFF)"})
    return {
        "id": spec.name, "type": "dataset", "kind": kind,
        "title": {"zh": meta.title_zh or spec.title.zh, "en": meta.title_en or spec.title.en},
        "abstract": {"zh": meta.abstract_zh or spec.description.strip(), "en": meta.abstract_en or spec.description.strip()},
        "data_class": meta.data_class or (cat.data_class if cat else "status"),
        "level": meta.level or (cat.level if cat else "county"),
        "themes": meta.themes or (list(cat.themes) if cat else []), "tags": meta.tags,
        "keywords": list(dict.fromkeys(spec.keywords + meta.keywords)),
        "department": department or {"code": spec.department},
        "contact": meta.contact or spec.contact, "licence": meta.licence or spec.licence,
        "update_frequency": meta.update_frequency or spec.update_frequency,
        "bbox": list(row["extent"]) if row.get("extent") else None,
        "interval": [_iso(row.get("first_at")), _iso(row.get("current_at"))] if row.get("first_at") else None,
        "lineage": [{k: _iso(v) for k, v in h.items()} for h in row.get("lineage") or []],
        "quality": _quality(row.get("report")),
        "grade": row.get("grade"), "openness": row.get("openness"),
        "distributions": dists, "updated": _iso(max(t for t in (row.get("updated_at"), row.get("meta_at"),
                                                                   row.get("current_at")) if t is not None)),
        "access": (row["name"], row["department"], row["sharing"], tuple(row["shared_with"] or ())),
    }


def extra_record(dataset: str, meta_doc: dict, updated: Any, department: dict | None) -> dict:
    """A metadata-only record (a resource that is not a layer here): everything from its meta."""
    meta = RecordMeta.model_validate(meta_doc)
    return {
        "id": dataset, "type": "dataset", "kind": "external",
        "title": {"zh": meta.title_zh or dataset, "en": meta.title_en or dataset},
        "abstract": {"zh": meta.abstract_zh or "", "en": meta.abstract_en or ""},
        "data_class": meta.data_class or "status", "level": meta.level or "county",
        "themes": meta.themes, "tags": meta.tags, "keywords": meta.keywords,
        "department": department or {"code": meta.department}, "contact": meta.contact, "licence": meta.licence,
        "update_frequency": meta.update_frequency, "bbox": meta.bbox, "interval": meta.interval,
        "lineage": [], "quality": None, "grade": meta.grade, "openness": meta.openness,
        "distributions": [{"format": "link", "media_type": ln.get("type", "text/html"), "href": ln.get("href", ""),
                           "title": ln.get("title", "")} for ln in meta.links],
        "updated": _iso(updated), "access": (dataset, meta.department or "", "public", ()),
    }


async def _departments(conn: psycopg.AsyncConnection) -> dict[str, dict]:
    cur = await conn.execute("SELECT code, name_zh, name_en, contact FROM catalog.departments")
    return {c: {"code": c, "name_zh": zh, "name_en": en, "contact": ct} for c, zh, en, ct in await cur.fetchall()}


async def build_records(conn: psycopg.AsyncConnection, registry: Registry) -> list[dict]:
    """Every record (layers in the registry, then metadata-only ones), in id order."""
    depts = await _departments(conn)
    async with conn.cursor(row_factory=dict_row) as cur:
        rows = await (await cur.execute(_LAYERS_SQL)).fetchall()
        extras = await (await cur.execute(_EXTRA_SQL)).fetchall()
    out = [layer_record(registry.layers[r["name"]], r, depts.get(r["department"]))
           for r in rows if r["name"] in registry.layers]
    for e in extras:
        try:
            out.append(extra_record(e["dataset"], e["meta"], e["updated_at"], depts.get(e["meta"].get("department"))))
        except ValueError:
            continue  # a metadata document a newer release wrote: not listed (never half-listed)
    out += await imagery_records(conn, out)  # scenes: one search finds them with the datasets
    return sorted(out, key=lambda r: r["id"])


async def read_stamp(conn: psycopg.AsyncConnection) -> tuple:
    """The catalog state's stamp (:data:`STAMP_SQL`): one small query (a few index reads)."""
    return tuple(await (await conn.execute(STAMP_SQL)).fetchone())


class RecordCache:
    """The records of one catalog state, rebuilt when the state's stamp changes, and each
    caller's view of them (the records ``visible`` lets through, per ``view``: what decides them,
    the caller's role flags, department, scope and the zone)."""

    def __init__(self) -> None:
        self._stamp: tuple | None = None
        self._records: list[dict] = []
        self._views: dict[tuple, list[dict]] = {}
        self._building = asyncio.Lock()

    async def records(self, conn: psycopg.AsyncConnection, registry: Registry, stamp: tuple | None = None
                      ) -> list[dict]:
        """The records of the state ``stamp`` (read on ``conn`` when not given), built on ``conn``
        if the kept ones belong to another state."""
        stamp = (await read_stamp(conn) if stamp is None else stamp) + (id(registry),)
        if stamp != self._stamp:
            async with self._building:   # one build per state, not one per request waiting for it
                if stamp != self._stamp:
                    self._records, self._stamp, self._views = await build_records(conn, registry), stamp, {}
        return self._records

    def kept_view(self, stamp: tuple, registry: Registry, view: tuple, visible) -> list[dict] | None:
        """The view of the state ``stamp`` if its records are kept (None: build them first)."""
        if stamp + (id(registry),) != self._stamp:
            return None
        got = self._views.get(view)
        if got is None:
            if len(self._views) > 256:
                self._views.clear()
            got = self._views[view] = [r for r in self._records if visible(r)]
        return got

    async def view(self, conn: psycopg.AsyncConnection, registry: Registry, view: tuple, visible,
                   stamp: tuple | None = None) -> list[dict]:
        """:meth:`kept_view` of the state ``stamp`` (read on ``conn`` when not given), building
        its records on ``conn`` first if need be."""
        stamp = await read_stamp(conn) if stamp is None else stamp
        await self.records(conn, registry, stamp)
        got = self.kept_view(stamp, registry, view, visible)
        # a build of a newer state came between: that state's view (its stamp read after ours)
        return got if got is not None else [r for r in self._records if visible(r)]


def _check_dataset(conn: psycopg.Connection, dataset: str, registry: Registry, meta: RecordMeta) -> None:
    if dataset in registry.layers:
        if meta.grade or meta.openness or meta.bbox or meta.department:
            raise InvalidInput("grade, openness, bbox and department of a layer's record come from its spec and "
                               "versions (use the grade endpoint for an override)", parameter="meta")
        return
    import re

    if not re.fullmatch(NAME_PATTERN, dataset):
        raise InvalidInput(f"dataset: not a name ({NAME_PATTERN})", parameter="dataset")
    if not (meta.department and meta.grade and meta.openness and meta.title_zh):
        raise InvalidInput("a metadata-only record needs department, grade, openness and title_zh", parameter="meta")


def save_meta(conn: psycopg.Connection, registry: Registry, dataset: str, doc: dict, by: str) -> dict:
    """Store the admin metadata of a record (replacing the previous document)."""
    try:
        meta = RecordMeta.model_validate(doc)
    except ValueError as exc:
        raise InvalidInput(f"meta: {str(exc)[:500]}", parameter="meta") from None
    _check_dataset(conn, dataset, registry, meta)
    conn.execute(
        """INSERT INTO catalog.record_meta (dataset, meta, updated_at, updated_by) VALUES (%s, %s, now(), %s)
           ON CONFLICT (dataset) DO UPDATE SET meta = EXCLUDED.meta, updated_at = now(),
               updated_by = EXCLUDED.updated_by""",
        (dataset, Jsonb(meta.model_dump(exclude_defaults=True)), by))
    return meta.model_dump(exclude_defaults=True)


def set_grade(conn: psycopg.Connection, registry: Registry, layer: str, grade: str | None,
              openness: str | None) -> dict:
    """An admin's override of a layer's grade and openness (None: back to the spec's)."""
    if layer not in registry.layers:
        raise NotFound(f"layer {layer!r} not found", parameter="layer")
    if grade is not None and grade not in GRADES:
        raise InvalidInput(f"grade must be one of {', '.join(GRADES)}", parameter="grade")
    if openness is not None and openness not in OPENNESS:
        raise InvalidInput(f"openness must be one of {', '.join(OPENNESS)}", parameter="openness")
    row = conn.execute(
        "UPDATE catalog.layers SET grade = %s, openness = %s, updated_at = now() WHERE name = %s "
        "RETURNING " + GRADE_SQL, (grade, openness, layer)).fetchone()
    if row is None:
        raise NotFound(f"layer {layer!r} not in the catalog", parameter="layer")
    return {"layer": layer, "grade": row[0], "openness": row[1], "override": {"grade": grade, "openness": openness}}

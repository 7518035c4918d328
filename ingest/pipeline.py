"""The ingest pipeline: one delivered file -> checked, normalised -> a new version of one layer.

    resolve source -> encoding & CRS -> stream arrow batches -> normalise (map, type, check,
    repair, promote, reproject) -> COPY into staging -> SQL checks (duplicate keys, areas,
    coverage) -> policy -> ONE transaction: retire / insert / version row / current_version

A big first load (the layer table has never held a row) skips staging: it COPYs straight into
the layer table inside the one transaction that commits the version (``DirectLoad``).

Memory stays bounded by the batch size whatever the file size: GDAL streams arrow record
batches (``pyogrio.open_arrow``; a plain Shapefile's attributes come from its .dbf via
:mod:`geobase.ingest.dbf`), read in a background thread; each batch is normalised and COPYed
before the next is read. The source checksum is hashed in another thread meanwhile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyogrio
from geobase.ingest import crs as crsmod
from geobase.ingest import dbf
from geobase.ingest.encoding import EncodingSniffer, check_encoding_name, cpg_encoding, dbf_ldid
from geobase.ingest.area import AREA_TOLERANCE
from geobase.ingest.loader import (
    COVERAGE_AUTO_LIMIT,
    DirectLoad,
    RedoWithStaging,
    Staging,
    area_deviation,
    drop_leftover_staging,
    staging_name,
)
from geobase.ingest.normalize import FID_COLUMN, BatchNormalizer, plan_fields
from geobase.ingest.report import QualityReport
from geobase.ingest.sources import RASTER_SUFFIXES, resolve, sha256_files
from pyproj import CRS

from geobase.catalog import sync_catalog
from geobase.catalog.layers import current_layers_sync
from geobase.catalog.versions import write_version
from geobase.db import connect
from geobase.errors import GeobaseError, InvalidInput, NotFound
from geobase.settings import Settings
from geobase.specs import get_registry

MODES = ("replace", "append", "upsert", "delete")
POLICIES = ("reject", "skip", "keep")
BATCH_SIZE = 20_000
#: Files with at least this many features load straight into an empty layer table (DirectLoad).
DIRECT_MIN_ROWS = 50_000

ProgressFn = Callable[[int, int | None], None]


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

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "layer", "version", "mode", "source_name", "checksum", "rows_total", "added", "removed", "changed",
            "extent", "dry_run", "skipped", "seconds", "report", "metadata")}


def _ensure_catalog(conn, settings: Settings, layer: str) -> None:
    if layer not in current_layers_sync(conn, [layer]):
        sync_catalog(conn, settings)
        conn.commit()


def ingest(settings: Settings, layer: str, path: str | Path, **options) -> IngestResult:
    """Load one delivered file as a new version of ``layer`` (see :func:`_ingest` for the options).

    A lost database connection (server restart, network) is a failure (exit code 1), not a
    refusal: nothing was committed and the same file can simply be ingested again."""
    try:
        try:
            return _ingest(settings, layer, path, **options)
        except RedoWithStaging:  # rolled back: the staging path reports what the direct load cannot
            return _ingest(settings, layer, path, direct=False, **options)
    except psycopg.OperationalError as exc:
        raise GeobaseError(f"ingest of {Path(path).name} into {layer!r} failed: the database connection was lost "
                           f"({str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}); nothing was "
                           "committed, the previous version is unchanged: run the same command again") from None


def _ingest(settings: Settings, layer: str, path: str | Path, *, mode: str = "replace", crs: str | None = None,
           encoding: str | None = None, source_layer: str | None = None, on_error: str = "reject",
           dry_run: bool = False, user: str = "cli", progress: ProgressFn | None = None,
           field_map: dict[str, str] | None = None, job_id: str | None = None,
           coverage: bool | None = None, direct: bool = True, provenance: dict | None = None) -> IngestResult:
    """Load one delivered file as a new version of ``layer`` (see module docstring).

    ``provenance`` (only the sample loader sets it) is stored in the version's metadata under
    ``sample``: the demo replaces nothing but the versions it made itself (ingest/sample.py).

    Raises InvalidInput (refused input, exit code 2) with the quality report in ``details``."""
    t0 = time.monotonic()
    registry = get_registry(settings)
    spec = registry.layer(layer)
    if mode not in MODES:
        raise InvalidInput(f"--mode: {mode!r} is not one of {', '.join(MODES)}", parameter="mode")
    if on_error not in POLICIES:
        raise InvalidInput(f"--on-error: {on_error!r} is not one of {', '.join(POLICIES)}", parameter="on_error")
    path = Path(path)
    if spec.kind == "raster" or path.suffix.lower() in RASTER_SUFFIXES:
        if spec.kind != "raster":
            raise InvalidInput(f"{path.name}: a raster cannot be loaded into vector layer {layer!r}", parameter="path")
        from geobase.ingest.raster import ingest_raster

        return ingest_raster(settings, spec, path, crs=crs, dry_run=dry_run, user=user, provenance=provenance)

    src = resolve(path, source_layer=source_layer, preferred_layers=spec.source_layers)
    # the checksum is only needed at the end: hashed in a thread (hashlib releases the GIL) while loading
    checksum_job = _in_thread(sha256_files, src.files)
    report = QualityReport(source=path.name, driver=src.driver, source_layer=src.layer, on_error=on_error)

    # -- encoding ------------------------------------------------------------------------
    gdal_encoding: str | None = None
    sniffer: EncodingSniffer | None = None
    if encoding:
        gdal_encoding = check_encoding_name(encoding)
        report.encoding, report.encoding_how = encoding, "--encoding"
    elif src.is_shapefile:
        cpg = cpg_encoding(src.shapefile_members.get(".cpg"))
        ldid = dbf_ldid(src.shapefile_members.get(".dbf"))
        if cpg:
            gdal_encoding = cpg
            report.encoding, report.encoding_how = cpg, ".cpg"
        elif ldid:
            report.encoding_how = f"dbf language driver id {ldid}"
        else:
            gdal_encoding = "ISO-8859-1"
            sniffer = EncodingSniffer()
            report.encoding_how = "detected (no .cpg, no language driver id)"
    else:
        report.encoding, report.encoding_how = "UTF-8", f"{src.driver} text is UTF-8"

    try:
        info = pyogrio.read_info(src.gdal_path, layer=src.layer, encoding=gdal_encoding, force_total_bounds=True,
                                 **src.open_options)
    except Exception as exc:
        raise InvalidInput(f"{path.name}: cannot be read: {str(exc).strip().splitlines()[0]}", parameter="path") from None
    if report.encoding is None and sniffer is None:
        report.encoding = info.get("encoding")

    # -- CRS -----------------------------------------------------------------------------
    src_crs: CRS | None
    if crs:
        src_crs = crsmod.parse_user_crs(crs)
        report.crs_how = "--crs"
    else:
        src_crs = crsmod.file_crs(info.get("crs"), src.shapefile_members.get(".prj"))
        report.crs_how = "file"
        if src_crs is None:
            hint = crsmod.suggest_from_bounds(info.get("total_bounds"))
            missing_prj = " (no .prj)" if src.is_shapefile and src.shapefile_members.get(".prj") is None else ""
            raise InvalidInput(f"{path.name}: the file states no coordinate reference system{missing_prj}; {hint}",
                               parameter="crs", details={"report": report.as_dict()})
    report.crs = crsmod.describe(src_crs)

    # -- geometry family check (whole file) -----------------------------------------------
    gtype = (info.get("geometry_type") or "").replace(" Z", "").replace(" M", "").replace("3D ", "")
    if spec.geometry == "MultiPolygon" and gtype in ("LineString", "MultiLineString", "Point", "MultiPoint"):
        raise InvalidInput(f"{path.name}: the file holds {gtype} geometries; layer {layer!r} takes polygons "
                           "(MultiPolygon)", parameter="path", details={"report": report.as_dict()})
    if spec.geometry == "MultiLineString" and gtype in ("Polygon", "MultiPolygon", "Point", "MultiPoint"):
        raise InvalidInput(f"{path.name}: the file holds {gtype} geometries; layer {layer!r} takes lines "
                           "(MultiLineString)", parameter="path", details={"report": report.as_dict()})
    if spec.geometry == "MultiPoint" and gtype in ("Polygon", "MultiPolygon", "LineString", "MultiLineString"):
        raise InvalidInput(f"{path.name}: the file holds {gtype} geometries; layer {layer!r} takes points",
                           parameter="path", details={"report": report.as_dict()})

    fields = [str(f) for f in info.get("fields", [])]
    plan = plan_fields(spec, fields, field_map)
    report.field_map = dict(plan.columns)
    report.ignored_fields = plan.ignored
    total_features = info.get("features") if info.get("features", -1) >= 0 else None

    norm = BatchNormalizer(spec, registry, plan, src_crs, report, sniffer)
    source_cols = sorted(set(plan.columns.values()) - {FID_COLUMN})
    if plan.uses_fid:
        report.notes.append("feature key taken from the file's feature ids (no key field delivered): "
                            "keys may change when the supplier re-exports the file")
    job = job_id or uuid.uuid4().hex
    with connect(settings) as conn:
        conn.execute("SET application_name = 'geobase-ingest'")
        _ensure_catalog(conn, settings, layer)
        conn.commit()
        dropped = drop_leftover_staging(conn)
        if dropped:
            report.notes.append(f"dropped {len(dropped)} leftover staging table(s) of interrupted ingests")
        # a big first load goes straight into the layer table (DirectLoad), everything else via staging
        dl: DirectLoad | None = None
        if direct and _direct_candidate(spec, mode, dry_run, coverage, total_features):
            dl = DirectLoad(conn, spec, job)
            if not dl.begin():
                dl = None
        stg = Staging(conn, spec, staging_name(layer, job))
        if dl is None:
            stg.create()
        try:
            done = 0
            writing = True
            staged_keys: list[pa.Array] = []
            with (dl or stg).copy() as cp:
                try:
                    with dbf.open_arrow(src.gdal_path, layer=src.layer, encoding=gdal_encoding,
                                        columns=source_cols, batch_size=BATCH_SIZE, return_fids=plan.uses_fid,
                                        is_shapefile=src.is_shapefile and sniffer is None,
                                        expected_records=total_features,
                                        open_options=src.open_options) as (_meta, reader):
                        geom_col = _meta.get("geometry_name") or "wkb_geometry"
                        fid_col = _meta.get("fid_column") or "OGC_FID"
                        for batch, parsed in prefetch(reader, lambda b: norm.parse_geometry(b.column(geom_col))):
                            cols = {c: batch.column(c) for c in source_cols}
                            if plan.uses_fid:
                                cols[FID_COLUMN] = batch.column(fid_col)
                            fields, n_rows, _bad = norm.process(cols, batch.column(geom_col), parsed)
                            report.rows_read += batch.num_rows
                            if on_error == "reject" and report.error_count:
                                writing = False  # refused anyway: keep reading for the report only
                            if writing:
                                cp.write(fields)
                                report.rows_loaded += n_rows
                                staged_keys.append(norm.last_keys)
                            done += batch.num_rows
                            if progress:
                                progress(done, total_features)
                except (InvalidInput, psycopg.Error):
                    raise
                except UnicodeDecodeError as exc:
                    raise InvalidInput(
                        f"{path.name}: text is not valid {gdal_encoding or report.encoding} "
                        f"(as {report.encoding_how or 'stated'}): {exc.reason} at byte {exc.start} of {exc.object[:20]!r}; "
                        "pass --encoding (e.g. --encoding GBK)", parameter="encoding",
                        details={"report": report.as_dict()}) from None
                except Exception as exc:
                    raise InvalidInput(f"{path.name}: reading failed after {done} features: "
                                       f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                                       parameter="path", details={"report": report.as_dict()}) from None
            if dl is None:
                stg.fill_missing_areas()
                conn.commit()
            if sniffer is not None:
                report.encoding = sniffer.encoding or "ASCII"
            report.checks["geometry_types"] = norm.type_counts
            _whole_file_crs_check(report, norm, src_crs, info, path)
            if report.error_count and on_error == "reject":
                _refuse(report, path)
            if dl is None:
                stg.analyze()
            if _keys_unique(staged_keys, report.rows_loaded):
                dups, examples = 0, []  # the common case, decided in memory without a GROUP BY in SQL
            elif dl is not None:
                raise RedoWithStaging()
            else:
                dups, examples = stg.duplicate_keys()
            for key, count, rows_ in examples:
                report.add("duplicate_key", rows_[0], key, f"key {key!r} occurs {count} times (rows {rows_})")
            if dups > len(examples):
                report.add_count("duplicate_key", dups - len(examples))
            if dups:
                if on_error == "reject":
                    _refuse(report, path)
                report.notes.append(f"kept the first of each duplicated key, dropped {stg.drop_duplicates()} rows")
            if mode == "delete":
                n_unknown, unk = stg.unknown_keys()
                for k in unk:
                    report.add("unknown_key", None, k, f"no current feature has key {k!r}")
                if n_unknown > len(unk):
                    report.add_count("unknown_key", n_unknown - len(unk))
                if n_unknown and on_error == "reject":
                    _refuse(report, path)
            if mode == "append" and dl is None:  # a direct load is a first load: no key exists yet
                n_exist, ex = stg.existing_keys()
                for k in ex:
                    report.add("existing_key", None, k, f"key {k!r} is already a current feature")
                if n_exist > len(ex):
                    report.add_count("existing_key", n_exist - len(ex))
                if n_exist:
                    if on_error == "reject":
                        _refuse(report, path)
                    report.notes.append(f"append: dropped {stg.drop_keys_existing()} rows whose key already exists")
            def record_area(n_dev: int, devs: list[dict]) -> None:
                report.checks["area"] = {"tolerance": AREA_TOLERANCE, "deviating": n_dev, "samples": devs,
                                         "field": spec.stated_area_field, "unit": spec.stated_area_unit}
                report.add_count("area_deviation", n_dev)

            run_coverage = spec.coverage and mode == "replace" and (
                coverage if coverage is not None else report.rows_loaded <= COVERAGE_AUTO_LIMIT)
            if run_coverage and dl is not None:
                raise RedoWithStaging()
            if run_coverage:
                cov = stg.coverage()
                report.checks["coverage"] = cov
                report.add_count("coverage_overlap", cov.get("overlaps", 0))
                report.add_count("coverage_gap", cov.get("gaps", 0))
            elif spec.coverage and mode == "replace":
                report.checks["coverage"] = {"skipped": True, "rows": report.rows_loaded}
                report.notes.append(f"coverage check (overlaps/gaps) skipped for {report.rows_loaded} rows "
                                    f"(automatic up to {COVERAGE_AUTO_LIMIT}); pass --coverage to run it")
            report.rows_skipped = report.rows_read - report.rows_loaded
            if dl is None:  # every row of the file, dry run or not: the same file, the same report
                record_area(*stg.area_deviation())
            if dry_run:
                total, added, removed, changed = stg.diff(mode)
                return IngestResult(layer, None, mode, path.name, checksum_job(), rows_total=total, added=added,
                                    removed=removed, changed=changed, dry_run=True,
                                    seconds=round(time.monotonic() - t0, 3), report=report.as_dict())

            def after_insert(conn_, v: int) -> dict:
                from psycopg import sql as _sql

                from geobase.storage import table_ident

                check = norm.area_check
                if dl is not None:  # a first load: every row is new, the normaliser saw them all
                    if check is not None and check.pending_keys:  # but left these areas to the database
                        check.merge(*area_deviation(conn_, spec, table_ident(spec), _sql.SQL("_key = ANY({})").format(
                            _sql.Literal(check.pending_keys)), _sql.SQL("_area_m2")))
                    record_area(*(check.result() if check is not None else (0, [])))  # (0, []): no stated area
                return report.as_dict()

            checksum = checksum_job()
            version_row = {"source_name": path.name, "source_checksum": checksum, "source_format": src.driver,
                           "created_by": user, "report": report.as_dict(),
                           "metadata": {"sample": provenance} if provenance else None}
            if dl is not None:
                committed = dl.finish(report.rows_loaded, mode=mode, version_row=version_row, after_insert=after_insert,
                                      extent=norm.extent if spec.geometry != "MultiPoint" else None)
            else:
                committed = write_version(conn, spec, stg.ident, mode=mode, after_insert=after_insert,
                                          version_row=version_row)
        finally:
            if dl is not None:
                dl.abort()
            else:
                stg.drop()
    return IngestResult(layer, committed.version, mode, path.name, checksum, committed.rows_total, committed.added,
                        committed.removed, committed.changed, committed.extent, seconds=round(time.monotonic() - t0, 3),
                        report=report.as_dict())


def _in_thread(fn, *args):
    """Start ``fn(*args)`` in a daemon thread; returns a function that waits for its result."""
    import threading

    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller of the result
            box["error"] = exc

    t = threading.Thread(target=run, name="ingest-checksum", daemon=True)
    t.start()

    def result():
        t.join()
        if "error" in box:
            raise box["error"]
        return box["value"]
    return result


def _direct_candidate(spec, mode: str, dry_run: bool, coverage: bool | None, total_features: int | None) -> bool:
    """Whether a load may go straight into the layer table (if it turns out to be the first):
    a big file, a mode that only adds rows, and no coverage check to run on staging."""
    if dry_run or mode == "delete" or total_features is None or total_features < DIRECT_MIN_ROWS:
        return False
    if spec.coverage and mode == "replace":
        return coverage is False or (coverage is None and total_features > COVERAGE_AUTO_LIMIT)
    return True


def _keys_unique(keys: list[pa.Array], rows: int) -> bool:
    """True when the staged keys are all distinct (arrow hash table, ~50 ms for a million keys)."""
    if not keys:
        return rows == 0
    chunked = pa.chunked_array(keys, pa.string())
    return len(chunked) == rows and len(pc.unique(chunked)) == rows


def prefetch(reader, prepare: Callable | None = None, depth: int = 2):
    """Read arrow batches in a background thread (GDAL and arrow release the GIL while reading),
    so the next batch is decoded while this one is normalised and COPYed: two cores, bounded
    memory (at most ``depth`` batches ahead). With ``prepare``, yields ``(batch, prepare(batch))``,
    the thread doing that work as well (GEOS parsing: shapely releases the GIL too)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for batch in reader:
                if prepare is not None:
                    batch = (batch, prepare(batch))
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    t = threading.Thread(target=work, name="ingest-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=10)


def _whole_file_crs_check(report: QualityReport, norm: BatchNormalizer, src_crs: CRS, info: dict, path: Path) -> None:
    """All coordinates outside the stated CRS's area: the CRS is wrong; say what they suggest."""
    if norm.rows_with_geom and norm.rows_outside >= norm.rows_with_geom:
        hint = crsmod.suggest_from_bounds(info.get("total_bounds"))
        raise InvalidInput(
            f"{path.name}: no coordinate lies inside the area of use of the stated CRS {report.crs} "
            f"(file bounds {tuple(round(b, 3) for b in info.get('total_bounds') or ())}); the CRS is wrong: {hint}",
            parameter="crs", details={"report": report.as_dict()})


def _refuse(report: QualityReport, path: Path) -> None:
    problems = "; ".join(report.first_problems())
    raise InvalidInput(
        f"{path.name}: refused ({report.error_count} problem(s), --on-error reject): {problems}. "
        "Fix the file, or use --on-error skip to load the good rows",
        parameter="path", details={"report": report.as_dict()})


def find_layer_or_404(settings: Settings, layer: str):
    registry = get_registry(settings)
    if layer not in registry.layers:
        raise NotFound(f"unknown layer {layer!r}")
    return registry.layers[layer]

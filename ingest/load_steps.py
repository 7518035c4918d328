"""The steps of an ingest that load the rows and decide on them: COPY every batch into staging
(or, for a big first load, into the layer table), run the SQL checks (duplicate keys, the keys a
delete or an append refers to, coverage, stated areas), then either report what a dry run would
do or have the core write the version (:func:`geobase.catalog.versions.write_version`).

Each step reads and fills the :class:`~geobase.ingest.context.IngestContext` and works on the
:class:`~geobase.ingest.context.LoadTarget`.
"""

from __future__ import annotations

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyogrio
from geobase.ingest.normalize import FID_COLUMN
from geobase.ingest.context import IngestContext, LoadTarget
from geobase.ingest.leftover_loads import drop_leftover_loads
from geobase.ingest.loader import DirectLoad, RedoWithStaging
from geobase.ingest.staging import area_deviation
from geobase.ingest.options import IngestResult
from geobase.ingest.reader import open_batches
from geobase.ingest.staging import COVERAGE_AUTO_LIMIT, Staging, drop_leftover_staging, staging_name
from geobase.ingest.threads import Prefetch
from psycopg import sql

from geobase import crs as crsmod
from geobase.catalog import layers as layer_catalog
from geobase.catalog import sync_catalog
from geobase.catalog.versions import CommitResult, write_version
from geobase.db import database_url
from geobase.errors import InvalidInput
from geobase.storage import UNASSIGNED, division_field, division_filter, division_values, table_ident

BATCH_SIZE = 20_000


def open_target(ctx: IngestContext, conn: psycopg.Connection, job: str, direct: bool) -> LoadTarget:
    """Register the layer if it is new, drop staging tables of interrupted ingests, and open
    where the rows go: the layer table when ``direct`` and it has never held a row, else staging."""
    conn.execute("SET application_name = 'geobase-ingest'")
    if ctx.opts.layer not in layer_catalog.current_layers_sync(conn, [ctx.opts.layer]):
        sync_catalog(conn, ctx.settings)
        conn.commit()
    conn.commit()
    dropped = drop_leftover_staging(conn)
    if dropped:
        ctx.report.notes.append(f"dropped {len(dropped)} leftover staging table(s) of interrupted ingests")
    loads = drop_leftover_loads(conn)
    if loads:
        ctx.report.notes.append(f"dropped {len(loads)} leftover load table(s) of interrupted first loads")
    dl: DirectLoad | None = None
    if direct:
        url = database_url(ctx.settings)
        dl = DirectLoad(conn, ctx.spec, job, ctx.opts.division,
                        first_county=None if ctx.opts.division else first_row_county(ctx),
                        connect_more=lambda: psycopg.connect(url, autocommit=True, connect_timeout=10))
        if not dl.begin():
            dl = None
    target = LoadTarget(conn, Staging(conn, ctx.spec, staging_name(ctx.opts.layer, job), ctx.opts.division), dl)
    if target.staging:
        target.stg.create()
    return target


def first_row_county(ctx: IngestContext) -> str | None:
    """The county the file's first row names (its division field, read alone: milliseconds), so
    that a county's first delivery into a layer holding other counties can load straight into
    its new partition (:class:`DirectLoad`); None when the layer or the file has no such field,
    the file is empty or the value names no county. Only a hint: the load checks every row."""
    field = division_field(ctx.spec)
    column = ctx.plan.columns.get(field) if field else None
    if not column or column == FID_COLUMN:
        return None
    src = ctx.src
    try:
        _meta, table = pyogrio.read_arrow(src.gdal_path, layer=src.layer, encoding=ctx.gdal_encoding,
                                          columns=[column], read_geometry=False, max_features=1, **src.open_options)
    except Exception:  # noqa: BLE001 -- only a hint: the load itself reads the file and says what is wrong
        return None
    if table.num_rows == 0 or column not in table.column_names:
        return None
    county = division_values(table.column(column), None)[0].as_py()
    return county if county and county != UNASSIGNED else None


def _read_failure(ctx: IngestContext, exc: Exception, done: int) -> InvalidInput:
    """What a failure while reading the file means for the person who delivered it."""
    report = ctx.report
    if isinstance(exc, UnicodeDecodeError):
        return InvalidInput(
            f"{ctx.name}: text is not valid {ctx.gdal_encoding or report.encoding} "
            f"(as {report.encoding_how or 'stated'}): {exc.reason} at byte {exc.start} of {exc.object[:20]!r}; "
            "pass --encoding (e.g. --encoding GBK)", parameter="encoding", details={"report": report.as_dict()})
    return InvalidInput(f"{ctx.name}: reading failed after {done} features: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                        parameter="path", details={"report": report.as_dict()})


def reading(ctx: IngestContext) -> Prefetch:
    """The file's batches (:func:`geobase.ingest.reader.open_batches`), read and their
    geometries parsed in a background thread from now on (:class:`Prefetch`): made before the
    load's database set-up, so the first batches are read meanwhile. Close it (``with``)."""
    src, plan, norm = ctx.src, ctx.plan, ctx.norm

    def open_reader():
        return open_batches(src.gdal_path, layer=src.layer, encoding=ctx.gdal_encoding, columns=ctx.source_cols,
                            batch_size=BATCH_SIZE, return_fids=plan.uses_fid,
                            is_shapefile=src.is_shapefile and ctx.sniffer is None,
                            expected_records=ctx.total_features, open_options=src.open_options)
    return Prefetch(open_reader, lambda b: norm.parse_geometry(b[1]))


def _copy_batches(ctx: IngestContext, target: LoadTarget, cp, batches: Prefetch) -> None:
    """Normalise and COPY every batch, counting in ``target.features_read``. Under
    ``--on-error reject`` the writing stops at the first problem: the file is refused anyway,
    the rest is read for the report only."""
    norm, report, opts = ctx.norm, ctx.report, ctx.opts
    writing = True
    for (cols, geometry), parsed in batches:
        fields, n_rows, _bad = norm.process(cols, geometry, parsed)
        n_read = len(geometry)
        report.rows_read += n_read
        if opts.on_error == "reject" and report.error_count:
            writing = False
        if writing:
            cp.write(fields)
            report.rows_loaded += n_rows
            target.staged_keys.append(norm.last_keys)
        target.features_read += n_read
        if opts.progress:
            opts.progress(target.features_read, ctx.total_features)


def copy_rows(ctx: IngestContext, target: LoadTarget, batches: Prefetch | None = None) -> None:
    """Stream the file into the target, batch by batch (memory bounded by the batch size);
    ``batches``: :func:`reading` of the file, started already (else started here)."""
    if batches is None:
        with reading(ctx) as batches:
            return copy_rows(ctx, target, batches)
    try:
        with target.copy(lambda: ctx.norm.last_values) as cp:
            try:
                _copy_batches(ctx, target, cp, batches)
            except (InvalidInput, RedoWithStaging, psycopg.Error):
                raise
            except Exception as exc:
                raise _read_failure(ctx, exc, target.features_read) from None
    except psycopg.errors.CheckViolation:
        if target.staging:
            raise
        raise RedoWithStaging() from None  # a row of another county than the first row's: staging reports it
    if target.staging:
        target.stg.fill_missing_areas(ctx.norm.areas_missing)
        target.conn.commit()


def check_whole_file(ctx: IngestContext, target: LoadTarget) -> None:
    """What only the whole file tells: its encoding (detected), its geometry types, whether any
    coordinate lies where the stated CRS is used; refuse it if rows failed under reject."""
    report, norm = ctx.report, ctx.norm
    if ctx.sniffer is not None:
        report.encoding = ctx.sniffer.encoding or "ASCII"
    report.checks["geometry_types"] = norm.type_counts
    if norm.rows_with_geom and norm.rows_outside >= norm.rows_with_geom:
        info = ctx.info
        hint = crsmod.suggest_from_bounds(info.get("total_bounds"))
        raise InvalidInput(
            f"{ctx.name}: no coordinate lies inside the area of use of the stated CRS {report.crs} "
            f"(file bounds {tuple(round(b, 3) for b in info.get('total_bounds') or ())}); the CRS is wrong: {hint}",
            parameter="crs", details={"report": report.as_dict()})
    if report.error_count and ctx.opts.on_error == "reject":
        ctx.refuse()
    if target.staging:
        target.stg.analyze()


def keys_unique(keys: list[pa.Array], rows: int) -> bool:
    """True when the staged keys are all distinct (arrow hash table, ~50 ms for a million keys)."""
    if not keys:
        return rows == 0
    chunked = pa.chunked_array(keys, pa.string())
    return len(chunked) == rows and len(pc.unique(chunked)) == rows


def _division_findings(ctx: IngestContext, stg: Staging, counts: dict[str, int]) -> list[tuple[str, str]]:
    """(division, why) of every staged county whose rows cannot be placed."""
    field = division_field(ctx.spec) or "division"
    named = ctx.opts.division
    bad = []
    if counts.get(""):
        bad.append(("", f"{field} does not begin with a 6-digit county code (行政区划代码)"))
    if named:
        bad += [(d, f"{field} names county {d}, not --division {named}") for d in counts if d and d != named]
    elif UNASSIGNED in counts and len(counts) > 1:
        bad.append((UNASSIGNED, f"{field} is empty while other rows name their county: fill it or pass --division"))
    return bad


def check_divisions(ctx: IngestContext, target: LoadTarget) -> None:
    """Every row must belong to a county: its division field's first 6 digits, else
    ``--division``; a delivery whose rows name no county at all goes to the unassigned partition
    (000000, e.g. a layer without a division field). A row whose field names no county, names
    another county than ``--division``, or is empty while other rows name theirs is refused
    under reject (the field named), dropped under skip or keep: a row cannot be placed in no
    county. A direct load checks the same when it attaches its table (RedoWithStaging else)."""
    if not target.staging:
        return
    stg, report = target.stg, ctx.report
    counts = stg.division_counts()
    report.checks["divisions"] = {d or "(none)": n for d, n in sorted(counts.items())}
    findings = _division_findings(ctx, stg, counts)
    for division, why in findings:
        examples = [(row, key, f"{why} (value {value!r})") for row, key, value in stg.rows_of_division(division)]
        report.add_sampled("division", counts[division], examples)
    if findings and ctx.opts.on_error == "reject":
        ctx.refuse()
    for division, _why in findings:
        report.notes.append(f"dropped {stg.drop_division(division)} rows that belong to no county of this delivery")
    if UNASSIGNED in counts and len(counts) == 1 and not ctx.opts.division:
        report.notes.append(f"no row names its county ({division_field(ctx.spec) or 'the layer has no division field'}):"
                            f" loaded as unassigned ({UNASSIGNED}); pass --division to place the delivery in a county")


def check_duplicate_keys(ctx: IngestContext, target: LoadTarget) -> None:
    """A key twice in the file: refused under reject, else the first of each is kept."""
    report = ctx.report
    if keys_unique(target.staged_keys, report.rows_loaded):
        dups, examples = 0, []  # the common case, decided in memory without a GROUP BY in SQL
    elif not target.staging:
        raise RedoWithStaging()
    else:
        dups, examples = target.stg.duplicate_keys()
    report.add_sampled("duplicate_key", dups, [(rows_[0], key, f"key {key!r} occurs {count} times (rows {rows_})")
                                               for key, count, rows_ in examples])
    if dups:
        if ctx.opts.on_error == "reject":
            ctx.refuse()
        report.notes.append(f"kept the first of each duplicated key, dropped {target.stg.drop_duplicates()} rows")


def check_mode_keys(ctx: IngestContext, target: LoadTarget) -> None:
    """A delete names keys that must be current features; an append, keys that must not be."""
    report, mode, stg = ctx.report, ctx.opts.mode, target.stg
    if mode == "delete":
        n_unknown, unk = stg.unknown_keys()
        report.add_sampled("unknown_key", n_unknown, [(None, k, f"no current feature has key {k!r}") for k in unk])
        if n_unknown and ctx.opts.on_error == "reject":
            ctx.refuse()
    if mode == "append" and target.staging:  # a direct load is a first load: no key exists yet
        n_exist, ex = stg.existing_keys()
        report.add_sampled("existing_key", n_exist, [(None, k, f"key {k!r} is already a current feature") for k in ex])
        if n_exist:
            if ctx.opts.on_error == "reject":
                ctx.refuse()
            report.notes.append(f"append: dropped {stg.drop_keys_existing()} rows whose key already exists")


def check_coverage(ctx: IngestContext, target: LoadTarget) -> None:
    """Overlaps and gaps of a coverage layer's replacement (automatic up to COVERAGE_AUTO_LIMIT rows)."""
    report, spec, opts = ctx.report, ctx.spec, ctx.opts
    run = spec.coverage and opts.mode == "replace" and (
        opts.coverage if opts.coverage is not None else report.rows_loaded <= COVERAGE_AUTO_LIMIT)
    if run and not target.staging:
        raise RedoWithStaging()
    if run:
        cov = target.stg.coverage()
        report.checks["coverage"] = cov
        report.add_count("coverage_overlap", cov.get("overlaps", 0))
        report.add_count("coverage_gap", cov.get("gaps", 0))
    elif spec.coverage and opts.mode == "replace":
        report.checks["coverage"] = {"skipped": True, "rows": report.rows_loaded}
        report.notes.append(f"coverage check (overlaps/gaps) skipped for {report.rows_loaded} rows "
                            f"(automatic up to {COVERAGE_AUTO_LIMIT}); pass --coverage to run it")


def check_areas(ctx: IngestContext, target: LoadTarget) -> None:
    """Stated vs ellipsoidal areas of every staged row, dry run or not: the same file, the same
    report (a direct load checks them as it commits, see :func:`_after_insert`)."""
    ctx.report.rows_skipped = ctx.report.rows_read - ctx.report.rows_loaded
    if target.staging:
        ctx.record_area(*target.stg.area_deviation())


#: in order, after the rows are in: each may refuse the file or ask for a RedoWithStaging
CHECK_STEPS = (check_whole_file, check_divisions, check_duplicate_keys, check_mode_keys, check_coverage, check_areas)


def dry_run_result(ctx: IngestContext, target: LoadTarget) -> IngestResult:
    """What the version would be, computed from staging without writing."""
    opts = ctx.opts
    total, added, removed, changed = target.stg.diff(opts.mode)
    return IngestResult(opts.layer, None, opts.mode, ctx.name, ctx.checksum(), rows_total=total, added=added,
                        removed=removed, changed=changed, dry_run=True, seconds=ctx.seconds(),
                        report=ctx.report.as_dict(), divisions=target.stg.scope())


def _after_insert(ctx: IngestContext, target: LoadTarget):
    """The report stored with the version, completed once the rows are in: a first load's
    areas were checked by the normaliser, except those it left to the database."""
    spec = ctx.spec

    def after_insert(conn: psycopg.Connection, v: int) -> dict:
        check = ctx.norm.area_check
        if not target.staging:  # a first load: every row is new, the normaliser saw them all
            ctx.report.checks["divisions"] = {target.direct.division: ctx.report.rows_loaded}
            if check is not None and check.pending_keys:  # but left these areas to the database
                check.merge(*area_deviation(conn, spec, table_ident(spec), sql.SQL("{} AND _key = ANY({})").format(
                    division_filter(target.direct.division), sql.Literal(check.pending_keys)), sql.SQL("_area_m2")))
            ctx.record_area(*(check.result() if check is not None else (0, [])))  # (0, []): no stated area
        return ctx.report.as_dict()
    return after_insert


def commit(ctx: IngestContext, target: LoadTarget) -> IngestResult:
    """Write the version: the core's writer for staged rows, the direct load's own commit else."""
    opts, spec = ctx.opts, ctx.spec
    checksum = ctx.checksum()
    version_row = {"source_name": ctx.name, "source_checksum": checksum, "source_format": ctx.src.driver,
                   "created_by": opts.user, "report": ctx.report.as_dict(),
                   "metadata": {"sample": opts.provenance} if opts.provenance else None}
    after_insert = _after_insert(ctx, target)
    committed: CommitResult
    if target.direct is not None:
        committed = target.direct.finish(ctx.report.rows_loaded, mode=opts.mode, version_row=version_row,
                                         after_insert=after_insert,
                                         extent=ctx.norm.extent if spec.geometry != "MultiPoint" else None)
        scope = [target.direct.division]
    else:
        scope = target.stg.scope()
        committed = write_version(target.conn, spec, target.stg.ident, mode=opts.mode, version_row=version_row,
                                  after_insert=after_insert, divisions=scope)
    return IngestResult(opts.layer, committed.version, opts.mode, ctx.name, checksum, committed.rows_total,
                        committed.added, committed.removed, committed.changed, committed.extent,
                        seconds=ctx.seconds(), report=ctx.report.as_dict(), divisions=scope)

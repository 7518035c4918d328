"""The ingest pipeline: one delivered file -> checked, normalised -> a new version of one layer.

A sequence of named steps over :class:`~geobase.ingest.options.IngestOptions` (what was asked)
and an :class:`~geobase.ingest.context.IngestContext` (what was found out so far)::

    options checked
    source steps  (ingest/source_steps.py): resolve the delivery, encoding, file info, CRS,
                  geometry family, field plan and normaliser
    open_target   staging table, or the layer table itself for a big first load (DirectLoad)
    copy_rows     stream arrow batches -> normalise (map, type, check, repair, promote,
                  reproject) -> binary COPY
    check steps   (ingest/load_steps.py): whole file, duplicate keys, keys of a delete/append,
                  coverage, stated areas
    dry run       -> what the version would be; else
    commit        the core writes the version (geobase/catalog/versions.py): ONE transaction,
                  retire / insert / version row / current_version

A raster layer's file goes to ingest/raster.py instead. Memory stays bounded by the batch size
whatever the file size: batches come from :mod:`geobase.ingest.reader` (a plain polygon
Shapefile, on disk or zipped, read with numpy: geometries from the .shp via
:mod:`geobase.ingest.shp`, attributes from the .dbf via :mod:`geobase.ingest.dbf`; anything else
as GDAL's arrow record batches, ``pyogrio.open_arrow``), read in a background thread; each batch is normalised and COPYed before the next is read. The source checksum is
hashed in another thread meanwhile (ingest/threads.py).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import psycopg
from geobase.ingest.context import IngestContext
from geobase.ingest.load_steps import CHECK_STEPS, commit, copy_rows, dry_run_result, open_target, reading
from geobase.ingest.loader import RedoWithStaging
from geobase.ingest.options import IngestOptions, IngestResult
from geobase.ingest.source_steps import SOURCE_STEPS, open_source
from geobase.ingest.sources import RASTER_SUFFIXES
from geobase.ingest.staging import COVERAGE_AUTO_LIMIT

from geobase.db import connect
from geobase.db.shards import shard_unavailable
from geobase.errors import GeobaseError, InvalidInput, ShardUnavailable
from geobase.settings import Settings
from geobase.specs import LayerSpec, get_registry

#: Files with at least this many features load straight into an empty layer table (DirectLoad).
DIRECT_MIN_ROWS = 50_000


def ingest(settings: Settings, layer: str, path: str | Path, **options) -> IngestResult:
    """Load one delivered file as a new version of ``layer``; ``options`` are the fields of
    :class:`IngestOptions` (mode, crs, encoding, source_layer, on_error, dry_run, user, ...).

    Raises InvalidInput (refused input, exit code 2) with the quality report in ``details``.
    A lost database connection (server restart, network) is a failure (exit code 1), not a
    refusal: nothing was committed and the same file can simply be ingested again."""
    get_registry(settings).layer(layer)  # an unknown layer is named before a bad option
    opts = IngestOptions(layer=layer, path=Path(path), **options)
    try:
        try:
            return run(settings, opts)
        except RedoWithStaging:  # rolled back: the staging path reports what the direct load cannot
            return run(settings, dataclasses.replace(opts, direct=False))
    except psycopg.OperationalError as exc:
        shard = shard_unavailable(exc)  # the county's partition is on a shard that does not answer
        if shard is not None:
            raise ShardUnavailable(f"ingest of {opts.path.name} into {layer!r} failed: {shard.message}; nothing was "
                                   "committed, the previous version is unchanged", shard=shard.shard) from None
        raise GeobaseError(f"ingest of {opts.path.name} into {layer!r} failed: the database connection was lost "
                           f"({str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}); nothing was "
                           "committed, the previous version is unchanged: run the same command again") from None


def use_system_allocator() -> None:
    """Have arrow allocate with the C library's malloc instead of its default, mimalloc.

    Why: each batch allocates and frees some hundred MB of arrow buffers (field encodings, the
    joined COPY rows). mimalloc hands freed memory back to the kernel within milliseconds
    (``madvise(MADV_DONTNEED)``), so the next batch faults the same memory in again and the
    kernel zeroes it, in 2 MiB transparent huge pages: a fifth of the client's CPU of a
    200,000-parcel ingest was ``clear_page`` (perf), ~1 CPU-s in all. glibc's malloc keeps its
    heap: system time 1.1-1.6 s -> 0.3 s, peak RSS 400 -> 320 MiB, the rows unchanged. The
    pool is process-wide; only buffers allocated after the switch use it (arrow frees each
    buffer through the pool that allocated it)."""
    import pyarrow as pa

    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


def run(settings: Settings, opts: IngestOptions) -> IngestResult:
    """The steps of one ingest, in order (see the module docstring)."""
    t0 = time.monotonic()
    use_system_allocator()
    registry = get_registry(settings)
    spec = registry.layer(opts.layer)
    if spec.kind == "raster" or opts.path.suffix.lower() in RASTER_SUFFIXES:
        if spec.kind != "raster":
            raise InvalidInput(f"{opts.path.name}: a raster cannot be loaded into vector layer {opts.layer!r}",
                               parameter="path")
        from geobase.ingest.raster import ingest_raster  # rasterio (~0.1 s to import) only for rasters

        return ingest_raster(settings, spec, opts.path, crs=opts.crs, dry_run=opts.dry_run, user=opts.user,
                             provenance=opts.provenance)
    ctx = open_source(settings, opts, spec, registry)
    ctx.t0 = t0
    for step in SOURCE_STEPS:
        step(ctx)
    # the reader starts now: the first batches are read while the database is set up
    with reading(ctx) as batches, connect(settings) as conn:
        target = open_target(ctx, conn, opts.job_id or uuid.uuid4().hex, _direct_candidate(ctx))
        try:
            copy_rows(ctx, target, batches)
            for check in CHECK_STEPS:
                check(ctx, target)
            return dry_run_result(ctx, target) if opts.dry_run else commit(ctx, target)
        finally:
            target.close()


def _direct_candidate(ctx: IngestContext) -> bool:
    """Whether a load may go straight into the layer table (if it turns out to be the first):
    a big file, a mode that only adds rows, and no coverage check to run on staging."""
    opts, spec, total = ctx.opts, ctx.spec, ctx.total_features
    return opts.direct and _direct_allowed(spec, opts.mode, opts.dry_run, opts.coverage, total)


def _direct_allowed(spec: LayerSpec, mode: str, dry_run: bool, coverage: bool | None, total: int | None) -> bool:
    if dry_run or mode == "delete" or total is None or total < DIRECT_MIN_ROWS:
        return False
    if spec.coverage and mode == "replace":
        return coverage is False or (coverage is None and total > COVERAGE_AUTO_LIMIT)
    return True

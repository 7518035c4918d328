"""Output formats of the features API, all streamed with flat memory.

* GeoJSON: PostGIS renders each feature as text; rows come from a server-side (named)
  cursor in batches and Python only concatenates them between a head and a tail (links,
  counts), so a million-feature export starts sending at once and never sits in memory.
* CSV: ``COPY (query) TO STDOUT`` — PostgreSQL writes the CSV (geometry as WKT).
* GeoPackage / FlatGeobuf: complete files for GIS desktops. Rows are read from a named
  cursor in a worker thread as Arrow batches (WKB geometry) and written by GDAL through
  ``pyogrio.write_arrow`` into a temporary file, which is then streamed and deleted.

The database connection of a stream is held by the stream and given back to the pool when
the body ends or the client goes away. This module makes bytes and async iterators of bytes;
the API wraps them in HTTP responses (``api/streaming.py``).
"""

from __future__ import annotations

import asyncio
import codecs
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import psycopg
from psycopg import sql

from geobase.errors import InvalidInput

BATCH = 2000
MEDIA = {
    "geojson": "application/geo+json",
    "json": "application/geo+json",
    "csv": "text/csv; charset=utf-8",
    "gpkg": "application/geopackage+sqlite3",
    "fgb": "application/flatgeobuf",
    "parquet": "application/vnd.apache.parquet",
    "html": "text/html; charset=utf-8",
}
EXTENSIONS = {"geojson": "geojson", "json": "geojson", "csv": "csv", "gpkg": "gpkg", "fgb": "fgb", "parquet": "parquet"}

#: PostgreSQL errors caused by what the client sent (a bad literal, a bad geometry)
CLIENT_ERRORS = (psycopg.errors.DataError, psycopg.errors.InvalidParameterValue,
                 psycopg.errors.InvalidTextRepresentation, psycopg.errors.UndefinedFunction)


def client_error(exc: Exception, parameter: str = "filter") -> InvalidInput:
    diag = getattr(exc, "diag", None)
    msg = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
    return InvalidInput(f"{parameter}: the database refused a value: {msg}", parameter=parameter)


async def give_back(pool, conn: psycopg.AsyncConnection) -> None:
    """End the read-only transaction and return the connection to the pool — shielded, as
    this runs when a client hung up and the request's task is being cancelled; a connection
    broken by the cancellation is closed and the pool replaces it."""
    with anyio.CancelScope(shield=True):
        try:
            if not conn.closed:
                await conn.execute("ROLLBACK")
        except BaseException:  # noqa: BLE001 - whatever happened, the connection must go back
            try:
                await conn.close()
            except BaseException:  # noqa: BLE001
                pass
        await pool.putconn(conn)


class RowStream:
    """A server-side cursor on a connection taken from the pool, with the first batch read.

    Executing and reading the first batch before the HTTP response starts turns query errors
    into proper 4xx/503 responses; the rest is read while the body is sent."""

    def __init__(self, pool, query: sql.Composable, *, timeout_ms: int, batch: int = BATCH,
                 pool_timeout: float = 5.0, fast_start: bool = True):
        self.pool = pool
        self.query = query
        self.timeout_ms = timeout_ms
        self.batch = batch
        self.pool_timeout = pool_timeout
        self.fast_start = fast_start
        self.conn: psycopg.AsyncConnection | None = None
        self.cur = None
        self.first: list[tuple] = []
        self.done = False

    async def open(self) -> RowStream:
        self.conn = await self.pool.getconn(timeout=self.pool_timeout)
        try:
            await self.conn.execute("BEGIN READ ONLY")
            await self.conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(self.timeout_ms))))
            if not self.fast_start:
                # a page (LIMIT n) is read whole: plan for all its rows, not for the first 10%
                # (PostgreSQL's cursor default would walk the _key index through a big layer
                # instead of taking the few bbox/filter matches from the spatial index)
                await self.conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")
            self.cur = self.conn.cursor(name="gb_features")
            self.cur.itersize = self.batch
            try:
                await self.cur.execute(self.query)
                self.first = await self.cur.fetchmany(self.batch)
            except CLIENT_ERRORS as exc:
                raise client_error(exc) from None
            self.done = len(self.first) < self.batch
            return self
        except BaseException:
            await self.close()
            raise

    async def batches(self) -> AsyncIterator[list[tuple]]:
        try:
            if self.first:
                yield self.first
            while not self.done:
                rows = await self.cur.fetchmany(self.batch)
                if len(rows) < self.batch:
                    self.done = True
                if rows:
                    yield rows
        finally:
            await self.close()

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await give_back(self.pool, conn)


async def geojson_body(head: bytes, rows: AsyncIterator[str], tail: Callable[[], bytes]) -> AsyncIterator[bytes]:
    """``head`` + features joined by commas + ``tail()`` (called last: it may use counts and the
    last row seen)."""
    try:
        yield head
        first = True
        buf: list[str] = []
        size = 0
        async for text in rows:
            if not first:
                buf.append(",")
            first = False
            buf.append(text)
            size += len(text)
            if size > 256 * 1024:
                yield "".join(buf).encode()
                buf, size = [], 0
        if buf:
            yield "".join(buf).encode()
        yield tail()
    finally:
        await rows.aclose()


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when the client takes gzip (and did not refuse it with q=0)."""
    for part in (accept_encoding or "").lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() not in ("gzip", "*"):
            continue
        q = params.replace(" ", "").removeprefix("q=")
        try:
            if params and float(q) == 0:
                continue
        except ValueError:
            pass
        return True
    return False


#: two threads for compression (not the default pool of dozens: every thread that allocates
#: gets its own malloc arena, and the server's resident memory grows with their number)
_GZIP_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gb-gzip")


async def gzipped(body: AsyncIterator[bytes], level: int = 3) -> AsyncIterator[bytes]:
    """gzip a streamed body chunk by chunk at a fast level, compressing big chunks in a worker
    thread (zlib releases the GIL) so the event loop keeps reading the next rows. The app's
    GZip middleware leaves responses that already carry Content-Encoding alone; its level 9
    costs three times the whole query on large pages."""
    import zlib

    z = zlib.compressobj(level, zlib.DEFLATED, 31)
    loop = asyncio.get_running_loop()
    try:
        async for chunk in body:
            out = (await loop.run_in_executor(_GZIP_POOL, z.compress, chunk) if len(chunk) > 64 * 1024
                   else z.compress(chunk))
            if out:
                yield out
        yield z.flush()
    finally:
        await body.aclose()


async def csv_body(pool, query: sql.Composable, *, timeout_ms: int, pool_timeout: float,
                   bom: bool = False) -> AsyncIterator[bytes]:
    """CSV written by PostgreSQL (COPY ... TO STDOUT), streamed as it comes.

    ``bom``: start with the UTF-8 byte order mark. Excel opens a CSV without one in the
    machine's ANSI code page (GBK on a Chinese Windows) and shows UTF-8 Chinese text garbled;
    with it, Excel (and every reader that sniffs a BOM) decodes UTF-8."""
    conn = await pool.getconn(timeout=pool_timeout)
    try:
        if bom:
            yield codecs.BOM_UTF8
        await conn.execute("BEGIN READ ONLY")
        await conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(timeout_ms))))
        # the answer has started (its query runs as the body is sent): no failure could be
        # answered by the primary now, so on a replica it waits out replay's lock instead of
        # failing at the replicas' lock timeout (geobase.pool.server_pool)
        await conn.execute("SET LOCAL lock_timeout = 0")
        async with conn.cursor() as cur:
            async with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(query)) as copy:
                async for chunk in copy:
                    yield bytes(chunk)
    finally:
        await give_back(pool, conn)


_ARROW_TYPES = {"text": "string", "integer": "int64", "number": "float64", "boolean": "bool",
                "date": "date32", "datetime": "timestamp_tz"}


def write_file(conninfo: str, query: sql.Composable, columns: list[tuple[str, str]], geometry: bool,
               driver: str, path: Path, layer: str, srid: int, timeout_ms: int, geometry_type: str | None,
               encoding: str = "UTF-8") -> int:
    """Run ``query`` (id, columns..., geometry WKB) on its own connection and write the rows
    through GDAL batch by batch. Returns the feature count. Runs in a worker thread."""
    import pyarrow as pa
    import pyogrio

    def arrow_type(t: str):
        return {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(),
                "date32": pa.date32(), "timestamp_tz": pa.timestamp("us", tz="UTC")}[_ARROW_TYPES[t]]

    fields = [pa.field("id", pa.string())] + [pa.field(n, arrow_type(t)) for n, t in columns]
    if geometry:
        fields.append(pa.field("geometry", pa.binary(), metadata={"ARROW:extension:name": "geoarrow.wkb"}))
    schema = pa.schema(fields)
    count = 0

    with psycopg.connect(conninfo) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(timeout_ms))))
        cur = conn.cursor(name="gb_export")
        cur.itersize = BATCH
        cur.execute(query)

        def batches():
            nonlocal count
            while True:
                rows = cur.fetchmany(BATCH)
                if not rows:
                    break
                count += len(rows)
                cols = list(zip(*rows))
                arrays = []
                for i, f in enumerate(schema):
                    data = cols[i]
                    if f.name == "geometry":
                        data = [bytes(x) if x is not None else None for x in data]
                    arrays.append(pa.array(data, type=f.type))
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)

        reader = pa.RecordBatchReader.from_batches(schema, batches())
        kwargs: dict[str, Any] = {}
        if driver == "FlatGeobuf":
            kwargs["layer_options"] = {"SPATIAL_INDEX": "NO"}
        pyogrio.write_arrow(reader, str(path), layer=layer, driver=driver,
                            geometry_name="geometry" if geometry else None,
                            geometry_type=(geometry_type or "Unknown") if geometry else None,
                            crs=f"EPSG:{srid}" if geometry else None, encoding=encoding, **kwargs)
    return count


async def file_body(path: Path, chunk: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """Stream a finished temporary file and delete it afterwards."""
    try:
        with open(path, "rb") as fh:
            while True:
                data = await asyncio.to_thread(fh.read, chunk)
                if not data:
                    break
                yield data
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def temp_path(directory: Path, suffix: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix="." + suffix, dir=directory)
    os.close(fd)
    os.unlink(name)  # GDAL creates the file itself
    return Path(name)

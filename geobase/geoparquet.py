"""GeoParquet (1.1) bulk downloads, streamed: ``f=parquet`` on items and the change feed.

Why here and not through GDAL like GeoPackage: GDAL's Parquet driver needs Arrow inside GDAL,
which neither Debian 12's GDAL nor the pyogrio wheel carries; pyarrow (already a dependency)
writes Parquet itself. And unlike a GeoPackage, a Parquet file can be sent while it is being
written: row groups come first, the footer (schema, the ``geo`` metadata) last. So rows are
read from a server-side cursor a batch at a time, each batch turned into Arrow columns at once
(compact, unlike rows of Python objects) and gathered into row groups of about
:data:`ROW_GROUP_ROWS` rows or :data:`ROW_GROUP_BYTES` bytes; a row group is encoded in a worker
thread into an in-memory sink that is emptied into the response at once: memory is bounded by
one row group, whatever the size of the export.

The ``geo`` metadata (GeoParquet 1.1.0) is written into the footer when the last row is known:
the primary column ``geometry`` (WKB), the CRS of the output as PROJJSON (omitted for
OGC:CRS84, the GeoParquet default, as the spec recommends), the geometry types actually seen
and the bounding box of all geometries. WKB keeps x/y = easting/longitude first whatever the
CRS's axis order, as GeoParquet requires (the same rows the GeoPackage export writes).

The columns are the caller's view (:meth:`geobase.features.FeatureQuery.export_columns`):
masked attributes are not in the query and so not in the file."""

from __future__ import annotations

import asyncio
import decimal
import json
from collections.abc import AsyncIterator
from typing import Any

MEDIA_TYPE = "application/vnd.apache.parquet"
GEOPARQUET_VERSION = "1.1.0"
ROW_GROUP_ROWS = 20_000
ROW_GROUP_BYTES = 16 * 1024 * 1024
_TYPE_NAMES = {1: "Point", 2: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
               6: "MultiPolygon", 7: "GeometryCollection"}


class _Sink:
    """A write-only file object that keeps what was written until :meth:`drain` takes it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.pos = 0
        self.closed = False

    def write(self, data) -> int:
        b = bytes(data)
        self.chunks.append(b)
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks = []
        return out


def arrow_schema(columns: list[tuple[str, str]], geometry: bool):
    """The Arrow schema of an export: ``id``, the properties with their spec types, ``geometry``."""
    import pyarrow as pa

    types = {"text": pa.string(), "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_(),
             "date": pa.date32(), "datetime": pa.timestamp("us", tz="UTC")}
    fields = [pa.field("id", pa.string())] + [pa.field(n, types.get(t, pa.string())) for n, t in columns]
    if geometry:
        fields.append(pa.field("geometry", pa.binary()))
    return pa.schema(fields)


def crs_projjson(srid: int | None) -> dict | None:
    """PROJJSON of the output CRS; None for OGC:CRS84 (the GeoParquet default)."""
    if srid is None:
        return None
    import pyproj

    return pyproj.CRS.from_epsg(srid).to_json_dict()


class GeoParquetEncoder:
    """Encodes batches of rows (id, properties..., WKB) into GeoParquet, one row group at a time.

    Not thread-safe; each call is made from one worker thread at a time."""

    def __init__(self, columns: list[tuple[str, str]], geometry: bool, srid: int | None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.schema = arrow_schema(columns, geometry)
        self.geometry = geometry
        self.srid = srid
        self.numeric = [i for i, f in enumerate(self.schema) if f.type in (pa.float64(), pa.int64())]
        self.sink = _Sink()
        self.writer = pq.ParquetWriter(pa.PythonFile(self.sink, mode="w"), self.schema, compression="zstd",
                                       write_statistics=True, store_schema=False)
        self.pending: list = []
        self.pending_rows = 0
        self.pending_bytes = 0
        self.types: set[str] = set()
        self.bbox: list[float] | None = None
        self.count = 0

    def _arrays(self, rows: list[tuple]) -> list:
        import pyarrow as pa

        cols = list(zip(*rows))
        arrays = []
        for i, f in enumerate(self.schema):
            data: Any = cols[i]
            if i in self.numeric:
                data = [float(x) if isinstance(x, decimal.Decimal) else x for x in data]
                if f.type == pa.int64():
                    data = [int(x) if x is not None else None for x in data]
            elif f.name == "geometry" and self.geometry:
                data = [bytes(x) if x is not None else None for x in data]
                self._note_geometries(data)
            arrays.append(pa.array(data, type=f.type))
        return arrays

    def _note_geometries(self, wkbs: list[bytes | None]) -> None:
        """Remember the geometry types and the bounding box for the footer's ``geo`` metadata."""
        import numpy as np
        import shapely

        geoms = shapely.from_wkb([w for w in wkbs if w is not None])
        if not len(geoms):
            return
        ids = np.unique(shapely.get_type_id(geoms))
        has_z = bool(shapely.has_z(geoms).any())
        for t in ids:
            name = _TYPE_NAMES.get(int(t))
            if name:
                self.types.add(name + (" Z" if has_z else ""))
        b = shapely.total_bounds(geoms)
        if not np.isnan(b).any():
            b = [float(v) for v in b]
            self.bbox = b if self.bbox is None else [min(self.bbox[0], b[0]), min(self.bbox[1], b[1]),
                                                     max(self.bbox[2], b[2]), max(self.bbox[3], b[3])]

    def add(self, rows: list[tuple]) -> bytes:
        """Take a batch of rows (as Arrow columns); returns the bytes of a row group when the
        rows gathered reach :data:`ROW_GROUP_ROWS` or :data:`ROW_GROUP_BYTES`, else nothing."""
        import pyarrow as pa

        if rows:
            batch = pa.RecordBatch.from_arrays(self._arrays(rows), schema=self.schema)
            self.pending.append(batch)
            self.pending_rows += batch.num_rows
            self.pending_bytes += batch.nbytes
            self.count += batch.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS or self.pending_bytes >= ROW_GROUP_BYTES:
            return self.flush()
        return b""

    def flush(self) -> bytes:
        """The rows gathered so far as one row group; returns the bytes it produced."""
        import pyarrow as pa

        if self.pending:
            table = pa.Table.from_batches(self.pending, schema=self.schema)
            self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
            self.writer.write_table(table, row_group_size=table.num_rows)
        return self.sink.drain()

    def geo_metadata(self) -> dict:
        col: dict[str, Any] = {"encoding": "WKB", "geometry_types": sorted(self.types)}
        crs = crs_projjson(self.srid)
        if crs is not None:
            col["crs"] = crs
        if self.bbox is not None:
            col["bbox"] = self.bbox
        return {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": col}}

    def finish(self) -> bytes:
        """The last row group and the footer (with the ``geo`` metadata); returns the last bytes.

        The writer does not store the serialized Arrow schema (``store_schema=False``): readers
        then take the schema's metadata from the footer's key-value pairs, which is where
        ``geo`` is added once the bounding box and the geometry types are known."""
        out = self.flush()
        if self.geometry:
            self.writer.add_key_value_metadata({"geo": json.dumps(self.geo_metadata())})
        self.writer.close()
        return out + self.sink.drain()

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - the response is being torn down; nothing to report to
            pass


async def parquet_body(batches: AsyncIterator[list[tuple]], columns: list[tuple[str, str]], geometry: bool,
                       srid: int | None) -> AsyncIterator[bytes]:
    """GeoParquet bytes of the rows of ``batches`` (each a list of (id, properties..., WKB)),
    streamed row group by row group; closes ``batches`` when done or abandoned."""
    enc = await asyncio.to_thread(GeoParquetEncoder, columns, geometry, srid)
    finished = False
    try:
        async for batch in batches:
            out = await asyncio.to_thread(enc.add, batch)
            if out:
                yield out
        tail = await asyncio.to_thread(enc.finish)
        finished = True
        yield tail
    finally:
        if not finished:
            enc.abort()
        await batches.aclose()


def write_geoparquet_file(conninfo: str, query, columns: list[tuple[str, str]], geometry: bool, srid: int | None,
                          path, timeout_ms: int, batch: int = 5000) -> int:
    """The same GeoParquet as :func:`parquet_body`, written to ``path`` from a query run on a
    connection of its own (batch engines read these exports); returns the row count."""
    import psycopg
    from psycopg import sql

    enc = GeoParquetEncoder(columns, geometry, srid)
    with psycopg.connect(conninfo) as conn, open(path, "wb") as out:
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(timeout_ms))))
        cur = conn.cursor(name="gb_parquet")
        cur.itersize = batch
        cur.execute(query)
        while rows := cur.fetchmany(batch):
            out.write(enc.add(rows))
        out.write(enc.finish())
    return enc.count

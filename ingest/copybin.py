"""PostgreSQL binary COPY payloads built from arrow arrays, a whole batch at a time.

Why: ``Copy.write_row`` formats every value of every row in Python (about 20 µs a row for the
land-use layer), which made the per-row loop the ingest's bottleneck. Here each column is turned
into its binary-COPY field encoding (4-byte big-endian length + value, or length -1 for NULL)
with numpy/arrow kernels, the fields of a row are joined with ``binary_join_element_wise`` and
the batch goes to the server as one ``bytes`` block (``Copy.write``): no Python per value.

The same field encodings are what the content hash (``_hash``) is computed over, so hashing
needs no per-value string formatting either.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Binary COPY file header (signature, flags, header extension length) and trailer.
SIGNATURE = b"PGCOPY\n\xff\r\n\0" + b"\0\0\0\0" + b"\0\0\0\0"
TRAILER = b"\xff\xff"
_NULL = pa.scalar(b"\xff\xff\xff\xff", pa.binary())
_PG_EPOCH_DAYS = (dt.date(2000, 1, 1) - dt.date(1970, 1, 1)).days
_PG_EPOCH_US = _PG_EPOCH_DAYS * 86_400 * 1_000_000

#: Arrow type each PostgreSQL column type is staged from.
ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "int8": pa.int64(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "bytea": pa.binary(),
}


def arrow_type(pg_type: str) -> pa.DataType:
    return ARROW_TYPES[pg_type]


def from_numpy(values: np.ndarray, type: pa.DataType | None = None, *, nan_is_null: bool = False) -> pa.Array:
    """A numeric (or boolean) numpy array as an arrow array, without ``pa.array``: that checks
    every numpy argument against ``numpy.ma.MaskedArray``, and the first such check imports
    numpy.ma (~0.1 CPU-s, in the middle of the first batch). ``nan_is_null``: NaN -> null (what
    ``pa.array(..., from_pandas=True)`` does)."""
    values = np.asarray(values)
    if values.dtype == np.bool_:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    type = type or pa.from_numpy_dtype(values.dtype)
    values = np.ascontiguousarray(values, dtype=type.to_pandas_dtype())
    validity = None
    if nan_is_null:
        nan = np.isnan(values)
        if nan.any():
            validity = pa.py_buffer(np.packbits(~nan, bitorder="little"))
    return pa.Array.from_buffers(type, len(values), [validity, pa.py_buffer(values)],
                                 null_count=-1 if validity is not None else 0)


def _fixed(values: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """Fields of a fixed-width type: ``values`` already big-endian (``>i8``, ``>f8``, ...)."""
    n = len(values)
    width = values.dtype.itemsize
    rec = np.empty(n, dtype=[("len", ">i4"), ("v", values.dtype)])
    rec["len"] = width
    rec["v"] = values
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 + width), n, [None, pa.py_buffer(rec.tobytes())])
    arr = arr.cast(pa.binary())
    if valid is not None and not valid.all():
        arr = pc.if_else(from_numpy(valid), arr, _NULL)
    return arr


def _varlen_parts(arr: pa.Array) -> list[pa.Array]:
    """Fields of a variable-length type (text as UTF-8, bytea as is), as two arrays whose
    row-wise concatenation they are: the 4-byte length prefixes (-1: NULL) and the values."""
    if not pa.types.is_binary(arr.type):
        arr = arr.cast(pa.binary())
    n = len(arr)
    lens = pc.binary_length(arr).fill_null(-1).to_numpy(zero_copy_only=False).astype(">i4")
    prefix = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4), n, [None, pa.py_buffer(lens.tobytes())])
    return [prefix.cast(pa.binary()), arr.fill_null(b"") if arr.null_count else arr]


def _varlen(arr: pa.Array) -> pa.Array:
    """Fields of a variable-length type (text as UTF-8, bytea as is)."""
    return pc.binary_join_element_wise(*_varlen_parts(arr), b"")


def _is_varlen(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def field_parts(arr: pa.Array) -> list[pa.Array]:
    """:func:`encode_field` of a column as arrays whose row-wise concatenation it is (a
    variable-length column: its length prefixes and its values), for :func:`join_fields` to
    join with the other columns' parts in one pass. Why: joining each text column with its
    prefixes, then all the columns, copied every value twice, one small copy at a time (the
    joins were a tenth of the client's CPU)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return _varlen_parts(arr) if _is_varlen(arr.type) else [encode_field(arr)]


def encode_field(arr: pa.Array) -> pa.Array:
    """One column -> binary array of its binary-COPY field encodings (length-prefixed values)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if _is_varlen(t):
        return _varlen(arr)
    valid = None if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_int32(t):  # PostgreSQL integer
        return _fixed(arr.fill_null(0).to_numpy().astype(">i4"), valid)
    if pa.types.is_integer(t):  # PostgreSQL bigint
        return _fixed(arr.cast(pa.int64()).fill_null(0).to_numpy().astype(">i8"), valid)
    if pa.types.is_floating(t):
        return _fixed(arr.cast(pa.float64()).fill_null(0.0).to_numpy().astype(">f8"), valid)
    if pa.types.is_boolean(t):
        return _fixed(arr.fill_null(False).to_numpy(zero_copy_only=False).astype("u1"), valid)
    if pa.types.is_date32(t):
        days = arr.cast(pa.int32()).fill_null(0).to_numpy() - _PG_EPOCH_DAYS
        return _fixed(days.astype(">i4"), valid)
    if pa.types.is_timestamp(t):
        us = arr.cast(pa.timestamp("us", tz=t.tz)).cast(pa.int64()).fill_null(0).to_numpy() - _PG_EPOCH_US
        return _fixed(us.astype(">i8"), valid)
    raise TypeError(f"no binary COPY encoding for arrow type {t}")


def join_fields(fields: list[pa.Array]) -> pa.Array:
    """Concatenate per-row field encodings (binary arrays of equal length) row by row."""
    if len(fields) == 1:
        return fields[0]
    return pc.binary_join_element_wise(*fields, b"")


def rows_payload(fields: list[pa.Array], ncols: int) -> memoryview:
    """The binary-COPY tuples of a batch: the column count + the already-encoded fields of each
    row (``fields`` may hold several columns joined already, hence ``ncols``), as a view of the
    joined array's data (no copy: psycopg sends a large block in 128 KiB slices, which of a
    ``bytes`` would each be copied, of a memoryview are views)."""
    n = len(fields[0]) if fields else 0
    if n == 0:
        return memoryview(b"")
    head = pa.repeat(pa.scalar(ncols.to_bytes(2, "big", signed=True), pa.binary()), n)
    rows = pc.binary_join_element_wise(head, *fields, b"")
    return _buffer_bytes(rows)


def value_offsets(arr: pa.Array) -> np.ndarray:
    """The ``len(arr) + 1`` value offsets of a binary or string array (int32 offsets) into its
    data buffer, slice offset included, without copying."""
    return np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)


def _buffer_bytes(arr: pa.Array) -> memoryview:
    """The values of a null-free binary array as one contiguous block (a view of its buffer,
    which it keeps alive)."""
    data = arr.buffers()[2]
    off = value_offsets(arr)
    return memoryview(data)[off[0]:off[-1]] if data is not None else memoryview(b"")


def content_hash(messages: pa.Array) -> pa.Array:
    """The content hash of each row: XXH3-128 of its binary value, as 32 hex digits.

    Why XXH3 and not md5: the hash only tells whether a row changed between two deliveries
    (no adversary picks the inputs), and at ~0.3 µs a row instead of ~2 µs it stopped being the
    largest per-row cost of normalising a batch. Rows loaded before (md5) count as changed once
    on their layer's next ``replace``."""
    import xxhash

    h = xxhash.xxh3_128_hexdigest
    offsets = value_offsets(messages).tolist()
    data = memoryview(messages.buffers()[2] or b"")
    return pa.array([h(data[a:b]) for a, b in zip(offsets[:-1], offsets[1:])], pa.string())

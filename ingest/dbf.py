"""Attributes of an on-disk Shapefile read straight from its ``.dbf`` with numpy.

Why: GDAL decodes a ``.dbf`` field by field and recodes every text value separately (GBK ->
UTF-8 through iconv); for the 19-field land-use layer that was ~80 % of the reading time, more
than everything else the ingest does. A dBase file is fixed-width records, so each needed
column is sliced out of a whole batch of records at once, its trailing blanks dropped, the
non-ASCII text of the column decoded in one call and turned into an arrow array without a
Python object per value. Geometries (and feature ids) still come from GDAL, which reads them
without the attributes in a fraction of the time; records are matched by feature id.

Only the plain cases take this path: a ``.dbf`` on disk, a known encoding, character and numeric
fields, a consistent header. Anything else (zip members, sniffed encodings, dates, memo fields,
truncated files) is read by GDAL as before. Values are what GDAL's Shapefile driver produces:
character fields as text, numeric fields as int32 (N, no decimals, width < 10), int64 (width
< 19) or float64, blank or ``*``-filled numbers as NULL.
"""

from __future__ import annotations

import codecs
import re
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyogrio
from geobase.ingest.blob import FileBlob, ZipBlob
from geobase.ingest.copybin import value_offsets

_SPACE, _NL, _DELETED = 0x20, 0x0A, 0x2A
_INT_PREFIX = re.compile(r"\s*[+-]?\d+")
_FLOAT_PREFIX = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass
class DbfField:
    name: str
    type: str
    offset: int
    width: int
    decimals: int

    @property
    def arrow_type(self) -> pa.DataType:
        if self.type == "C":
            return pa.string()
        if self.type == "N" and self.decimals == 0 and self.width < 10:
            return pa.int32()
        if self.type == "N" and self.decimals == 0 and self.width < 19:
            return pa.int64()
        return pa.float64()


class DbfTable:
    """The records of one ``.dbf`` (read a batch at a time) and the layout of the wanted fields."""

    def __init__(self, blob: FileBlob | ZipBlob, codec: str, fields: dict[str, DbfField], n_records: int,
                 header_len: int, record_len: int):
        self.codec = codec
        self.fields = fields
        self.n_records = n_records
        self.blob = blob
        self.header_len = header_len
        self.record_len = record_len

    @classmethod
    def open(cls, path: Path | FileBlob | ZipBlob, encoding: str, columns: list[str], expected_records: int | None
             ) -> DbfTable | None:
        """The table when every wanted column can be read here, else None (GDAL reads it).
        ``path``: the .dbf on disk, or its bytes as :mod:`geobase.ingest.blob` reads them."""
        try:
            codec = codecs.lookup(encoding).name
            blob = FileBlob(path) if isinstance(path, Path) else path
            size = blob.size
            head = blob.read_at(0, 32)
            if len(head) < 32:
                return None
            n_records, header_len, record_len = struct.unpack("<IHH", head[4:12])
            desc = blob.read_at(32, max(header_len - 32, 0))
        except (OSError, LookupError, struct.error, zipfile.BadZipFile):
            return None
        if n_records == 0 or (expected_records is not None and expected_records != n_records):
            return None
        if size < header_len + n_records * record_len:
            return None  # truncated: GDAL's reader says what is wrong
        fields: dict[str, DbfField] = {}
        offset = 1  # the deletion flag
        for i in range(0, len(desc) - 31, 32):
            d = desc[i:i + 32]
            if d[0] == 0x0D:
                break
            raw_name = d[:11].split(b"\0")[0]
            if not raw_name.isascii():
                return None
            name = raw_name.decode("ascii")
            f = DbfField(name, chr(d[11]), offset, d[16], d[17])
            if name in fields:
                return None
            fields[name] = f
            offset += f.width
        if offset != record_len:
            return None
        wanted = {}
        for c in columns:
            f = fields.get(c)
            if f is None or f.type not in ("C", "N", "F"):
                return None
            wanted[c] = f
        return cls(blob, codec, wanted, n_records, header_len, record_len)

    def columns(self, fids: np.ndarray) -> dict[str, pa.Array]:
        """The wanted columns of the records ``fids`` (0-based record numbers)."""
        if len(fids) and (fids.min() < 0 or fids.max() >= self.n_records):
            raise ValueError("feature ids beyond the .dbf's records")
        return self._columns(self._records(fids))

    def batch(self, lo: int, hi: int) -> tuple[np.ndarray, dict[str, pa.Array]]:
        """The records ``lo``..``hi - 1`` that are not deleted (their ids) and their wanted columns.

        Deleted records are skipped as GDAL's Shapefile driver skips them: a deletion flag of
        ``*`` marks the record deleted, any other byte (blank, NUL, ...) keeps it."""
        recs = self._records(np.arange(lo, hi, dtype=np.int64))
        live = recs[:, 0] != _DELETED
        if live.all():
            return np.arange(lo, hi, dtype=np.int64), self._columns(recs)
        return lo + np.flatnonzero(live).astype(np.int64), self._columns(recs[live])

    def _columns(self, recs: np.ndarray) -> dict[str, pa.Array]:
        # the smallest and largest byte of each byte column of the batch tell which fields hold
        # control bytes (NULs, line breaks: value by value semantics) or non-ASCII bytes (text to
        # decode), and how much of a wide text field is blank in every record (not copied); the
        # rest is sliced, trimmed and converted by arrow kernels, with no per-field masks
        if len(recs) == 0:
            return {name: pa.array([], f.arrow_type) for name, f in self.fields.items()}
        lo, hi = recs.min(axis=0), recs.max(axis=0)
        blank = (lo == _SPACE) & (hi == _SPACE)
        out = {}
        for name, f in self.fields.items():
            end = f.offset + f.width
            if f.type == "C":  # drop the byte columns blank in every record of the batch
                used = np.flatnonzero(~blank[f.offset:end])
                end = f.offset + (int(used[-1]) + 1 if len(used) else 0)
            cols = slice(f.offset, end)
            raw = np.ascontiguousarray(recs[:, cols])
            careful, non_ascii = bool((lo[cols] < _SPACE).any()), bool((hi[cols] >= 0x80).any())
            out[name] = self._text(raw, careful, non_ascii) if f.type == "C" else _number(raw, f, careful or non_ascii)
        return out

    def _records(self, fids: np.ndarray) -> np.ndarray:
        """The records of ``fids``, read as one span (GDAL returns them in file order); plain
        reads rather than a memory map so the process's resident size stays at one batch."""
        if len(fids) == 0:
            return np.zeros((0, self.record_len), dtype=np.uint8)
        lo, hi = int(fids.min()), int(fids.max()) + 1
        data = self.blob.read_at(self.header_len + lo * self.record_len, (hi - lo) * self.record_len)
        span = np.frombuffer(data, dtype=np.uint8)
        if len(span) != (hi - lo) * self.record_len:
            raise ValueError(f"{self.blob.name}: records {lo}..{hi - 1} are beyond the end of the file")
        span = span.reshape(hi - lo, self.record_len)
        if hi - lo == len(fids) and (np.diff(fids) == 1).all():
            return span  # the usual case: a batch is a run of consecutive records
        return span[fids - lo]

    def _text(self, raw: np.ndarray, careful: bool = True, non_ascii: bool = True) -> pa.Array:
        """A character column: values without their trailing blanks, decoded from the codec."""
        n, w = raw.shape
        if n == 0 or w == 0:  # every value blank
            return pa.StringArray.from_buffers(n, pa.py_buffer(np.zeros(n + 1, dtype=np.int32)), pa.py_buffer(b""))
        if careful:  # C-string semantics or line breaks: value by value
            return pa.array([_c_string(bytes(r), self.codec) for r in raw], pa.string())
        # trailing blanks are 0x20 bytes, never part of a multibyte character (GBK/GB18030 trail
        # bytes are >= 0x30, UTF-8's >= 0x80): trimming the raw bytes is right in every codec
        arr = pc.ascii_rtrim(_fixed_width(raw), characters=" ")
        if not non_ascii:
            return arr
        if self.codec == "utf-8":
            try:
                arr.validate(full=True)
            except pa.ArrowInvalid:
                for r in raw:  # raise the UnicodeDecodeError of the first bad value
                    bytes(r).decode(self.codec)
                raise
            return arr
        # non-ASCII text in another encoding: decode the column in one call, values separated by \n
        off = value_offsets(arr)
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[off[0]:off[-1]]
        blob = np.insert(data, off[1:] - off[0], _NL).tobytes()
        try:
            utf8 = blob.decode(self.codec).encode("utf-8")
        except UnicodeDecodeError:
            for r in raw:  # raise the error of the first undecodable value (names it, not the blob)
                bytes(r).rstrip(b" ").decode(self.codec)
            raise
        data = np.frombuffer(utf8, dtype=np.uint8)
        ends = np.flatnonzero(data == _NL)
        if len(ends) != n:  # pragma: no cover - a codec that maps bytes onto \n
            return pa.array([_c_string(bytes(r), self.codec) for r in raw], pa.string())
        offsets = np.zeros(n + 1, dtype=np.int32)
        offsets[1:] = ends - np.arange(n)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data[data != _NL].tobytes()))


def _fixed_width(raw: np.ndarray) -> pa.StringArray:
    """The rows of a (n, w) byte matrix as a string array, without copying (not validated:
    callers trim, decode or validate)."""
    n, w = raw.shape
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(raw)))


def _c_string(raw: bytes, codec: str) -> str:
    return raw.split(b"\0", 1)[0].rstrip(b" ").decode(codec)


def _number(raw: np.ndarray, f: DbfField, careful: bool = True) -> pa.Array:
    """A numeric column as GDAL reads it: NULL when blank or starting with '*', else the number.
    ``careful``: the column holds NULs or non-ASCII bytes (atoi/atof semantics value by value)."""
    n, w = raw.shape
    target = f.arrow_type
    if n == 0:
        return pa.array([], target)
    text = pc.ascii_trim_whitespace(_fixed_width(raw))
    null = (raw[:, 0] == ord("*")) | (pc.binary_length(text).to_numpy(zero_copy_only=False) == 0)
    if careful:
        return _number_slow(raw, null, target)
    if null.any():
        text = pc.if_else(pa.array(null), pa.scalar(None, pa.string()), text)
    try:
        return text.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _number_slow(raw, null, target)


def _number_slow(raw: np.ndarray, null: np.ndarray, target: pa.DataType) -> pa.Array:
    """atoi/atof semantics (the longest numeric prefix, else 0) value by value."""
    is_int = pa.types.is_integer(target)
    out = []
    for r, isnull in zip(raw, null):
        s = bytes(r).split(b"\0", 1)[0].decode("latin-1")
        if isnull or not s.strip():
            out.append(None)
            continue
        m = (_INT_PREFIX if is_int else _FLOAT_PREFIX).match(s)
        out.append((int(m.group(0)) if is_int else float(m.group(0))) if m else (0 if is_int else 0.0))
    return pa.array(out, target)


def _dbf_path(gdal_path: str) -> Path | None:
    if gdal_path.startswith("/vsi"):
        return None
    shp = Path(gdal_path)
    if shp.suffix.lower() != ".shp":
        return None
    for suffix in (".dbf", ".DBF", ".Dbf"):
        cand = shp.with_suffix(suffix)
        if cand.exists():
            return cand
    return None


@contextmanager
def open_arrow(gdal_path: str, *, layer: str | None, encoding: str | None, columns: list[str], batch_size: int,
               return_fids: bool, is_shapefile: bool, expected_records: int | None, open_options: dict):
    """``pyogrio.open_arrow`` (yields ``(meta, reader)`` of record batches with the wanted
    columns, the geometry and, if asked, the feature ids), reading the attributes of a plain
    on-disk Shapefile from its ``.dbf`` with numpy (see module docstring)."""
    dbf = None
    if is_shapefile and encoding and columns and not open_options:
        path = _dbf_path(gdal_path)
        if path is not None:
            dbf = DbfTable.open(path, encoding, columns, expected_records)
    if dbf is None:
        with pyogrio.open_arrow(gdal_path, layer=layer, encoding=encoding, columns=columns, batch_size=batch_size,
                                use_pyarrow=True, return_fids=return_fids, **open_options) as (meta, reader):
            yield meta, reader
        return
    with pyogrio.open_arrow(gdal_path, layer=layer, encoding=encoding, columns=[], batch_size=batch_size,
                            use_pyarrow=True, return_fids=True) as (meta, reader):
        yield meta, _with_attributes(reader, dbf, meta, columns)


def _with_attributes(reader, dbf: DbfTable, meta: dict, columns: list[str]) -> Iterator[pa.RecordBatch]:
    fid_col = meta.get("fid_column") or "OGC_FID"
    for batch in reader:
        fids = batch.column(fid_col).to_numpy(zero_copy_only=False).astype(np.int64)
        cols = dbf.columns(fids)
        names = list(batch.schema.names) + columns
        arrays = [batch.column(i) for i in range(batch.num_columns)] + [cols[c] for c in columns]
        yield pa.RecordBatch.from_arrays(arrays, names=names)

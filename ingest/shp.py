"""Polygons of a Shapefile (on disk or zipped, :mod:`geobase.ingest.blob`) read straight from its
``.shp`` with numpy.

Why: GDAL builds an OGR geometry object per feature, exports it as WKB and shapely parses that
WKB again into a GEOS object: for the land-use delivery that was the largest part of reading.
A ``.shp`` is simple (a 100-byte header, then records: a big-endian record header, the shape
type, a bounding box, part and point counts, part starts, points), and the ``.shx`` gives the
offset of every record, so a whole batch of records is sliced with numpy and its polygons are
built in one ``shapely.from_ragged_array`` call.

Only the plain records take this path: a 2D Polygon record (type 5) with exactly one part
(GDAL turns such a record into a Polygon with that ring, points as stored), closed, at least
four points, its lengths consistent with the ``.shx`` and the record header. Every other record
(several parts: GDAL sorts outer rings and holes; null shapes; unclosed or short rings; anything
inconsistent) is read by GDAL itself, by feature id, so the geometry is GDAL's in every case.
A file that is not a plain 2D polygon Shapefile (Z/M, multipatch, points, lines, a ``.shx`` that
does not describe the ``.shp``) is not read here at all (:meth:`ShpPolygons.open` returns None).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from geobase.ingest.blob import FileBlob, ZipBlob

#: Shapefile shape type of a 2D polygon (5); the only file type read here.
POLYGON = 5
_FILE_CODE = 9994
_VERSION = 1000
#: content bytes of a one-part polygon record before its points: type, box, counts, part start
_ONE_PART_HEAD = 4 + 32 + 4 + 4 + 4
#: zero bytes after a batch's records, so the fixed fields of every record can be read unchecked
_PAD = 64


@dataclass
class ShapeBatch:
    """The geometries of a batch of records: GEOS polygons (None where GDAL found no geometry)
    and, when every record was plain, their coordinates and ring offsets (one ring each)."""

    geoms: np.ndarray
    coords: np.ndarray | None  # (N, 2) float64 of all rings, None unless every record is plain
    ring_off: np.ndarray | None  # int64 start of each ring (= record) + end

    def __len__(self) -> int:
        return len(self.geoms)


class ShpPolygons:
    """The records of one plain 2D polygon ``.shp``, located by its ``.shx``."""

    def __init__(self, blob: FileBlob | ZipBlob, offsets: np.ndarray, lengths: np.ndarray):
        self.blob = blob
        self.offsets = offsets  # byte offset of each record header
        self.lengths = lengths  # content bytes of each record
        self.n_records = len(offsets)

    @classmethod
    def open(cls, shp: Path | FileBlob | ZipBlob, expected_records: int | None,
             shx: Path | FileBlob | ZipBlob | None = None) -> ShpPolygons | None:
        """The reader when ``shp`` is a plain 2D polygon Shapefile whose ``.shx`` (beside it on
        disk, or ``shx``) describes it (records in order, inside the file, not overlapping),
        else None (GDAL reads it)."""
        if shx is None:
            shx = _sidecar(shp, ".shx") if isinstance(shp, Path) else None
            if shx is None:
                return None
        try:
            shp = FileBlob(shp) if isinstance(shp, Path) else shp
            shx = FileBlob(shx) if isinstance(shx, Path) else shx
            head, size = shp.read_at(0, 100), shp.size
            shx_head = shx.read_at(0, 100)
            raw = shx.read_at(100, max(shx.size - 100, 0))
            index = np.frombuffer(raw[: len(raw) // 4 * 4], dtype=">i4")
        except (OSError, zipfile.BadZipFile):
            return None
        if not (_plain_header(head) and _plain_header(shx_head)):
            return None
        if len(index) % 2 or (expected_records is not None and len(index) // 2 != expected_records):
            return None
        pairs = index.reshape(-1, 2).astype(np.int64) * 2  # 16-bit words -> bytes
        offsets, lengths = pairs[:, 0], pairs[:, 1]
        if len(offsets) == 0 or offsets[0] < 100 or (lengths < 4).any():
            return None
        ends = offsets + 8 + lengths
        if ends[-1] > size or (offsets[1:] < ends[:-1]).any():
            return None
        return cls(shp, offsets, lengths)

    def read(self, fids: np.ndarray, gdal_path: str) -> ShapeBatch:
        """The geometries of records ``fids`` (0-based, increasing): plain ones from the bytes,
        the others from GDAL (``gdal_path``: the same .shp) by feature id."""
        n = len(fids)
        if n == 0:
            return ShapeBatch(np.empty(0, dtype=object), np.zeros((0, 2)), np.zeros(1, dtype=np.int64))
        offsets, lengths = self.offsets[fids], self.lengths[fids]
        base = int(offsets[0])
        span = int(offsets[-1] + 8 + lengths[-1]) - base
        data = np.zeros(span + _PAD, dtype=np.uint8)  # the padding: fixed fields of a short record read as 0
        got = self.blob.read_at(base, span)
        data[: len(got)] = np.frombuffer(got, dtype=np.uint8)
        if len(got) != span:
            raise ValueError(f"{self.blob.name}: records {int(fids[0])}..{int(fids[-1])} are beyond the end of the file")
        pos = offsets - base
        plain, npts = _plain_records(data, pos, lengths, fids)
        geoms = np.empty(n, dtype=object)
        coords = ring_off = None
        if plain.any():
            k = np.flatnonzero(plain)
            counts = npts[k]
            ring_off = np.zeros(len(k) + 1, dtype=np.int64)
            np.cumsum(counts, out=ring_off[1:])
            first = pos[k] + 8 + _ONE_PART_HEAD
            at = np.repeat(first - 16 * ring_off[:-1], counts) + 16 * np.arange(ring_off[-1], dtype=np.int64)
            coords = _at(data, "V16")[at].view("<f8").reshape(-1, 2)
            geoms[k] = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords,
                                                 (ring_off, np.arange(len(k) + 1, dtype=np.int64)))
        if not plain.all():
            other = np.flatnonzero(~plain)
            geoms[other] = gdal_geometries(gdal_path, fids[other])
            coords = ring_off = None
        return ShapeBatch(geoms, coords, ring_off)


def gdal_geometries(gdal_path: str, fids: np.ndarray) -> np.ndarray:
    """GDAL's geometries of the records ``fids``, parsed as the arrow path parses them
    (:func:`geobase.ingest.normalize_geometry.parse_geometry`: unparseable WKB -> None)."""
    from pyogrio.raw import read

    _meta, _fids, wkb, _fields = read(gdal_path, columns=[], fids=np.asarray(fids, dtype=np.int64))
    return shapely.from_wkb(np.asarray(wkb, dtype=object), on_invalid="ignore")


def _plain_records(data: np.ndarray, pos: np.ndarray, lengths: np.ndarray, fids: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Which records are plain one-part polygons (see the module docstring), and the point
    count of each (meaningful where plain)."""
    rec_no = _at(data, ">i4")[pos]
    rec_len = _at(data, ">i4")[pos + 4].astype(np.int64) * 2
    c = pos + 8
    stype = _at(data, "<i4")[c]
    nparts = _at(data, "<i4")[c + 36]
    npts = _at(data, "<i4")[c + 40].astype(np.int64)
    part0 = _at(data, "<i4")[c + 44]  # beyond a short record: its neighbour or the padding, masked below
    plain = ((rec_no == fids + 1) & (rec_len == lengths) & (stype == POLYGON) & (nparts == 1) & (part0 == 0)
             & (npts >= 4) & (lengths == _ONE_PART_HEAD + 16 * npts))
    if plain.any():  # closed rings: first point == last point, compared as GEOS does (NaN never closes)
        k = np.flatnonzero(plain)
        first = _at(data, "V16")[c[k] + _ONE_PART_HEAD].view("<f8").reshape(-1, 2)
        last = _at(data, "V16")[c[k] + _ONE_PART_HEAD + 16 * (npts[k] - 1)].view("<f8").reshape(-1, 2)
        plain[k] = (first == last).all(axis=1)
    return plain, npts


def _at(buf: np.ndarray, dtype: str) -> np.ndarray:
    """A view of ``buf`` with an item of ``dtype`` starting at every byte (unaligned reads of
    whole values at arbitrary byte positions with one fancy index)."""
    size = np.dtype(dtype).itemsize
    return np.ndarray(shape=(max(len(buf) - size + 1, 0),), dtype=dtype, buffer=buf, strides=(1,))


def _plain_header(head: bytes) -> bool:
    """A main file header (.shp or .shx) of a 2D polygon Shapefile."""
    if len(head) < 100:
        return False
    code = int.from_bytes(head[0:4], "big")
    version = int.from_bytes(head[28:32], "little")
    stype = int.from_bytes(head[32:36], "little")
    return code == _FILE_CODE and version == _VERSION and stype == POLYGON


def _sidecar(shp: Path, suffix: str) -> Path | None:
    for cand in (shp.with_suffix(suffix), shp.with_suffix(suffix.upper())):
        if cand.exists():
            return cand
    for cand in shp.parent.iterdir():
        if cand.stem == shp.stem and cand.suffix.lower() == suffix:
            return cand
    return None

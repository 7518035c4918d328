"""WKB of many MultiPolygons written straight from coordinate arrays (numpy, no GEOS objects).

Why: after the checks, the ingest only needs the reprojected coordinates of each geometry twice
(EPSG:4490 and EPSG:3857) as WKB. Rebuilding shapely geometries for that (``set_coordinates``
on copies, ``multipolygons`` to promote, ``set_srid``, ``to_wkb``) cost more than everything
else in the batch. Here the layout (headers, ring counts) is computed once per batch from the
ragged offsets and the coordinates are scattered into it: the bytes are identical to
``shapely.to_wkb`` of the promoted MultiPolygon (little-endian, 2D, no SRID: the staging
columns' typmod supplies the SRID).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from geobase.ingest.copybin import value_offsets


@dataclass
class MultiPolygonLayout:
    """Byte layout of a batch of MultiPolygons: where each header, ring and coordinate goes."""

    header: np.ndarray  # uint8 buffer with every header and count filled in, coordinates zero
    coord_pos: np.ndarray  # byte position of each coordinate pair
    offsets: np.ndarray  # int32 start of each geometry + total length

    def wkb(self, x: np.ndarray, y: np.ndarray) -> pa.Array:
        """Arrow binary array of the WKB of every geometry with these coordinates."""
        buf = self.header.copy()
        xy = np.empty((len(x), 2), dtype="<f8")
        xy[:, 0] = x
        xy[:, 1] = y
        _at(buf, "V16")[self.coord_pos] = xy.view("V16").ravel()
        return pa.BinaryArray.from_buffers(pa.binary(), len(self.offsets) - 1,
                                           [None, pa.py_buffer(self.offsets), pa.py_buffer(buf)])


def _at(buf: np.ndarray, dtype: str) -> np.ndarray:
    """A view of ``buf`` with an item of ``dtype`` starting at every byte (unaligned writes and
    reads of whole values at arbitrary byte positions with one fancy index)."""
    size = np.dtype(dtype).itemsize
    return np.ndarray(shape=(max(len(buf) - size + 1, 0),), dtype=dtype, buffer=buf, strides=(1,))


def _put_u32(buf: np.ndarray, pos: np.ndarray, values: np.ndarray | int) -> None:
    _at(buf, "<u4")[pos] = values


def multipolygon_layout(ring_off: np.ndarray, poly_off: np.ndarray, geom_off: np.ndarray) -> MultiPolygonLayout | None:
    """Layout from ragged offsets (coordinates per ring, rings per polygon, polygons per geometry,
    as ``shapely.to_ragged_array`` returns them). None when a polygon or geometry is empty."""
    nring_pts = np.diff(ring_off)
    rings_per_poly = np.diff(poly_off)
    polys_per_geom = np.diff(geom_off)
    if not (len(polys_per_geom) and (rings_per_poly > 0).all() and (polys_per_geom > 0).all()):
        return None
    n_geom, n_poly = len(polys_per_geom), len(rings_per_poly)
    ring_size = 4 + 16 * nring_pts.astype(np.int64)
    ring_cum = np.zeros(len(ring_size) + 1, dtype=np.int64)
    np.cumsum(ring_size, out=ring_cum[1:])
    poly_of_ring = np.repeat(np.arange(n_poly), rings_per_poly)
    geom_of_poly = np.repeat(np.arange(n_geom), polys_per_geom)
    # bytes before a ring: headers of the geometries and polygons up to its own + earlier rings
    ring_start = 9 * (geom_of_poly[poly_of_ring] + 1) + 9 * (poly_of_ring + 1) + ring_cum[:-1]
    poly_start = ring_start[poly_off[:-1]] - 9
    geom_start = poly_start[geom_off[:-1]] - 9
    total = int(9 * n_geom + 9 * n_poly + ring_cum[-1])
    if total >= 2**31:  # pragma: no cover - batches are far smaller
        return None
    buf = np.zeros(total, dtype=np.uint8)
    buf[geom_start] = 1
    _put_u32(buf, geom_start + 1, 6)
    _put_u32(buf, geom_start + 5, polys_per_geom)
    buf[poly_start] = 1
    _put_u32(buf, poly_start + 1, 3)
    _put_u32(buf, poly_start + 5, rings_per_poly)
    _put_u32(buf, ring_start, nring_pts)
    n = int(ring_off[-1])
    coord_pos = np.repeat(ring_start + 4 - 16 * ring_off[:-1].astype(np.int64), nring_pts) + 16 * np.arange(n)
    offsets = np.append(geom_start, total).astype(np.int32)
    return MultiPolygonLayout(buf, coord_pos, offsets)


def _u32(data: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return _at(data, "<u4")[pos]


def single_ring_polygons(wkb: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """Coordinates (N, 2) and ring offsets of a batch of WKB Polygons that each have exactly
    one ring (little-endian, 2D: what GDAL delivers for most Shapefile parcels), parsed with
    numpy; None for anything else (the caller asks shapely). Same values as
    ``shapely.to_ragged_array`` of those polygons, without a pass over GEOS objects."""
    if isinstance(wkb, pa.ChunkedArray):
        wkb = wkb.combine_chunks()
    if not pa.types.is_binary(wkb.type) or wkb.null_count or len(wkb) == 0:
        return None
    n = len(wkb)
    off = value_offsets(wkb).astype(np.int64)
    data = np.frombuffer(wkb.buffers()[2], dtype=np.uint8)
    starts, lens = off[:-1], np.diff(off)
    if (lens < 13).any() or not (data[starts] == 1).all():
        return None
    if not ((_u32(data, starts + 1) == 3).all() and (_u32(data, starts + 5) == 1).all()):
        return None
    npts = _u32(data, starts + 9).astype(np.int64)
    if not (lens == 13 + 16 * npts).all():
        return None
    ring_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(npts, out=ring_off[1:])
    k = np.arange(ring_off[-1], dtype=np.int64) - np.repeat(ring_off[:-1], npts)
    pos = np.repeat(starts + 13, npts) + 16 * k
    coords = _at(data, "V16")[pos].view("<f8").reshape(-1, 2)
    return coords, ring_off

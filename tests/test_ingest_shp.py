"""The numpy ``.shp`` reader (geobase.ingest.shp) reads exactly what GDAL's Shapefile driver reads.

Compared record by record, through the batches the load reads (:func:`open_batches` with and
without numpy shapes), on real deliveries from ../shared/realdata and on hostile files written
byte by byte here: holes, holes written before their outer ring, several outer rings, an "inner"
ring outside its outer one (GDAL's slow method), null shapes, a polygon of no parts, unclosed,
short, NaN and self-crossing rings, a polyline record in a polygon file, padded records,
deleted ``.dbf`` records, several batch sizes. Files the reader must not take at all (PolygonZ,
lines, a ``.shx`` that does not describe the ``.shp``) are left to GDAL whole.
"""

from __future__ import annotations

import math
import struct
import zipfile
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyogrio
import pytest
import shapely
from geobase.ingest.normalize import FID_COLUMN
from geobase.ingest.reader import open_batches
from geobase.ingest.shp import ShapeBatch, ShpPolygons

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

SQUARE = [(0, 0), (0, 10), (10, 10), (10, 0), (0, 0)]  # clockwise: an outer ring
HOLE = [(2, 2), (4, 2), (4, 4), (2, 4), (2, 2)]  # counter-clockwise: a hole
FAR = [(20, 0), (20, 5), (25, 5), (25, 0), (20, 0)]  # another outer ring
HOLE_FAR = [(21, 1), (22, 1), (22, 2), (21, 2), (21, 1)]
OUTSIDE_CCW = [(30, 30), (32, 30), (32, 32), (30, 32), (30, 30)]  # "hole" outside: GDAL's slow method


def _polygon(rings: list[list[tuple[float, float]]], parts: list[int] | None = None, pad: bytes = b"",
             stype: int = 5) -> bytes:
    pts = [p for r in rings for p in r]
    if parts is None:
        parts, at = [], 0
        for r in rings:
            parts.append(at)
            at += len(r)
    xs = [p[0] for p in pts] or [0.0]
    ys = [p[1] for p in pts] or [0.0]
    box = (min(xs), min(ys), max(xs), max(ys)) if pts else (0.0, 0.0, 0.0, 0.0)
    body = struct.pack("<i4d2i", stype, *box, len(parts), len(pts))
    body += struct.pack(f"<{len(parts)}i", *parts) + b"".join(struct.pack("<2d", *p) for p in pts)
    return body + pad


NULL = struct.pack("<i", 0)

HOSTILE = [
    _polygon([SQUARE]),
    _polygon([SQUARE, HOLE]),
    _polygon([HOLE, SQUARE]),  # the hole before its outer ring
    _polygon([SQUARE, FAR]),  # two outer rings
    _polygon([SQUARE, FAR, HOLE_FAR]),
    _polygon([FAR, SQUARE, HOLE]),
    _polygon([SQUARE, OUTSIDE_CCW]),
    NULL,
    _polygon([]),  # a polygon of no parts
    _polygon([SQUARE[:-1]]),  # not closed
    _polygon([[(0, 0), (1, 1), (0, 0)]]),  # three points
    _polygon([[(0, 0), (0, math.nan), (1, 1), (1, 0), (0, 0)]]),
    _polygon([[(math.nan, 0), (0, 1), (1, 1), (math.nan, 0)]]),  # NaN never closes a ring
    _polygon([[(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)]]),  # a bow tie: invalid, read all the same
    _polygon([list(reversed(SQUARE))]),  # one ring, counter-clockwise: kept as stored
    _polygon([[(-0.0, 0), (0, 5), (5, 5), (5, 0), (0.0, 0)]]),  # -0.0 == 0.0 closes it
    _polygon([SQUARE], pad=b"\0" * 16),  # a record longer than its points
    _polygon([SQUARE], parts=[1]),  # a part that does not start at the first point
    _polygon([[(0, 0), (5, 5)]], stype=3),  # a polyline record in a polygon file
    _polygon([SQUARE]),
]


def _write(base: Path, records: list[bytes], *, file_type: int = 5, deleted: dict[int, bytes] | None = None,
           shx_offsets: list[int] | None = None) -> Path:
    """A Shapefile (.shp, .shx, .dbf with NAME and N, .cpg, .prj) of raw record contents."""
    deleted = deleted or {}
    body, index = b"", []
    offset = 100
    for i, content in enumerate(records):
        rec = struct.pack(">2i", i + 1, len(content) // 2) + content
        index.append((offset // 2, len(content) // 2))
        body += rec
        offset += len(rec)
    if shx_offsets is not None:
        index = [(o // 2, n) for o, (_old, n) in zip(shx_offsets, index)]

    def header(length: int) -> bytes:
        return (struct.pack(">7i", 9994, 0, 0, 0, 0, 0, length // 2) + struct.pack("<2i", 1000, file_type)
                + struct.pack("<8d", 0, 0, 40, 40, 0, 0, 0, 0))

    shp = base.with_suffix(".shp")
    shp.write_bytes(header(100 + len(body)) + body)
    base.with_suffix(".shx").write_bytes(header(100 + 8 * len(index)) + b"".join(struct.pack(">2i", *e) for e in index))
    fields = [(b"NAME", b"C", 12, 0), (b"N", b"N", 6, 0)]
    rec_len = 1 + sum(f[2] for f in fields)
    head_len = 32 + 32 * len(fields) + 1
    dbf = struct.pack("<4BIHH20x", 3, 126, 1, 1, len(records), head_len, rec_len)
    for name, ftype, width, dec in fields:
        dbf += name.ljust(11, b"\0") + ftype + b"\0" * 4 + bytes([width, dec]) + b"\0" * 14
    dbf += b"\r"
    for i in range(len(records)):
        dbf += deleted.get(i, b" ") + f"rec {i}".encode().ljust(12) + str(i * 7).encode().rjust(6)
    base.with_suffix(".dbf").write_bytes(dbf + b"\x1a")
    base.with_suffix(".cpg").write_text("UTF-8")
    base.with_suffix(".prj").write_text('GEOGCS["CGCS2000",DATUM["D_China_2000",SPHEROID["CGCS2000",6378137.0,'
                                        '298.257222101]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]')
    return shp


def _read(shp: Path | str, batch_size: int, numpy_shapes: bool, encoding: str = "UTF-8", columns: list | None = None):
    """(fids, attribute table, geometries) of the whole file as the load reads it."""
    info = pyogrio.read_info(shp, encoding=encoding)
    cols = [str(c) for c in info["fields"]] if columns is None else columns
    fids, tables, geoms, kinds = [], [], [], set()
    with open_batches(str(shp), layer=None, encoding=encoding, columns=cols, batch_size=batch_size, return_fids=True,
                      is_shapefile=True, expected_records=info["features"], open_options={},
                      numpy_shapes=numpy_shapes) as batches:
        for cols_of, geometry in batches:
            fids.append(cols_of.pop(FID_COLUMN).to_numpy(zero_copy_only=False))
            tables.append(pa.table(cols_of))
            kinds.add(type(geometry))
            geoms.append(geometry.geoms if isinstance(geometry, ShapeBatch) else
                         shapely.from_wkb(geometry.to_numpy(zero_copy_only=False), on_invalid="ignore"))
    if not fids:  # every record deleted
        return np.zeros(0, dtype=np.int64), pa.table({}), np.empty(0, dtype=object), kinds
    return np.concatenate(fids), pa.concat_tables(tables), np.concatenate(geoms), kinds


def _wkb(geoms: np.ndarray) -> list:
    return [None if g is None else shapely.to_wkb(g, output_dimension=2) for g in geoms]


def _assert_same_as_gdal(shp: Path | str, batch_size: int, encoding: str = "UTF-8", columns: list | None = None) -> None:
    fids, table, geoms, kinds = _read(shp, batch_size, True, encoding, columns)
    ref_fids, ref_table, ref_geoms, _ = _read(shp, batch_size, False, encoding, columns)
    assert kinds == {ShapeBatch}, "the numpy reader took the file"
    assert fids.tolist() == ref_fids.tolist()
    assert table.equals(ref_table)
    assert _wkb(geoms) == _wkb(ref_geoms)
    # and GDAL's own arrow stream, without any of our readers
    meta, tab = pyogrio.read_arrow(shp, encoding=encoding, return_fids=True, columns=columns)
    assert fids.tolist() == tab.column(meta["fid_column"] or "OGC_FID").to_pylist()
    gdal = shapely.from_wkb(tab.column(meta["geometry_name"] or "wkb_geometry").to_numpy(zero_copy_only=False),
                            on_invalid="ignore")
    assert _wkb(geoms) == _wkb(gdal)


@pytest.mark.parametrize("batch_size", [1, 3, 7, 1000])
def test_hostile_records_read_as_gdal_reads_them(tmp_path, batch_size):
    shp = _write(tmp_path / "hostile", HOSTILE, deleted={2: b"*", 5: b"*"})
    _assert_same_as_gdal(shp, batch_size)
    _fids, _t, geoms, _k = _read(shp, batch_size, True)
    # what GDAL makes of them: holes assigned, outer rings collected, nothing lost
    assert shapely.get_type_id(geoms[1]) == 3 and shapely.get_num_interior_rings(geoms[1]) == 1
    assert shapely.get_type_id(geoms[2]) == 6  # record 3 (two outer rings); record 2 is deleted
    assert sum(g is None for g in geoms) >= 3  # null shape, no parts, unclosed ring


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_zipped_delivery_read_in_place(tmp_path, method):
    """A zipped Shapefile is read by the numpy readers from the archive (no extraction), record
    for record what GDAL reads through /vsizip/, whatever the case of the members' names."""
    shp = _write(tmp_path / "hostile", HOSTILE * 3, deleted={4: b"*"})
    archive = tmp_path / "delivery.zip"
    with zipfile.ZipFile(archive, "w", method) as zf:
        for f in sorted(tmp_path.glob("hostile.*")):
            zf.write(f, f"DLTB/{f.stem}{f.suffix.upper() if f.suffix == '.dbf' else f.suffix}")
    for batch_size in (4, 1000):
        _assert_same_as_gdal(f"/vsizip/{archive}/DLTB/hostile.shp", batch_size)
    assert _read(f"/vsizip/{archive}/DLTB/hostile.shp", 4, True)[0].tolist() == _read(shp, 4, True)[0].tolist()


def test_plain_records_come_from_the_bytes(tmp_path):
    """A file of plain one-ring polygons is read without GDAL: coordinates kept for the fast
    path, the same polygons as GDAL's."""
    records = [_polygon([[(x, y), (x, y + 1), (x + 1, y + 1), (x + 1, y), (x, y)]]) for x in range(9) for y in range(7)]
    shp = _write(tmp_path / "plain", records)
    reader = ShpPolygons.open(shp, len(records))
    batch = reader.read(np.arange(len(records)), "/nonexistent/not-read.shp")  # GDAL never asked
    assert batch.coords is not None and len(batch.ring_off) == len(records) + 1
    assert np.array_equal(batch.coords, shapely.get_coordinates(batch.geoms))
    _assert_same_as_gdal(shp, 10)


def test_files_left_to_gdal_whole(tmp_path):
    square = _polygon([SQUARE])
    z = _write(tmp_path / "z", [square], file_type=15)
    assert ShpPolygons.open(z, 1) is None  # PolygonZ
    lines = _write(tmp_path / "lines", [_polygon([[(0, 0), (1, 1)]], stype=3)], file_type=3)
    assert ShpPolygons.open(lines, 1) is None
    ok = _write(tmp_path / "ok", [square, square])
    assert ShpPolygons.open(ok, 2) is not None
    assert ShpPolygons.open(ok, 3) is None  # GDAL counted other records than the .shx holds
    overlap = _write(tmp_path / "overlap", [square, square], shx_offsets=[100, 110])
    assert ShpPolygons.open(overlap, 2) is None  # records overlapping: the .shx does not describe the .shp
    beyond = _write(tmp_path / "beyond", [square, square], shx_offsets=[100, 10_000])
    assert ShpPolygons.open(beyond, 2) is None
    _fids, _t, geoms, kinds = _read(z, 10, True)  # read by GDAL through the same interface
    assert kinds == {pa.BinaryArray} and len(geoms) == 1


def test_deleted_flags_as_gdal(tmp_path):
    """Records flagged ``*`` are skipped, as GDAL skips them; any other flag byte keeps the record."""
    square = _polygon([SQUARE])
    shp = _write(tmp_path / "del", [square] * 6, deleted={0: b"*", 3: b"\0", 5: b"D"})
    _assert_same_as_gdal(shp, 2)
    fids, _t, _g, _k = _read(shp, 2, True)
    assert fids.tolist() == [1, 2, 3, 4, 5]
    every = _write(tmp_path / "every", [square] * 2, deleted={0: b"*", 1: b"*"})
    fids, table, geoms, _k = _read(every, 5, True)
    assert len(fids) == len(geoms) == table.num_rows == 0


REAL = sorted(p for p in REALDATA.glob("**/*.shp")) if REALDATA.exists() else []


@pytest.mark.skipif(not REAL, reason="../shared/realdata is not on this machine")
def test_real_deliveries_read_as_gdal_reads_them():
    taken = 0
    for shp in REAL:
        info = pyogrio.read_info(shp)
        if ShpPolygons.open(shp, info["features"]) is None:
            continue
        for batch_size in (64,):  # geometries only: the .dbf reader has tests of its own
            _assert_same_as_gdal(shp, batch_size, "ISO-8859-1", columns=[])
        taken += 1
    assert taken >= 10


def _mixed_land_use(folder: Path) -> Path:
    """A land-use delivery whose records take every route: plain squares (numpy), a parcel with
    a hole and a two-part parcel (GDAL), an empty record and a bow tie (reported), in GK zone 39."""
    import geopandas as gpd
    from shapely.geometry import MultiPolygon, Polygon, box

    x0, y0 = 39_500_000.0, 3_300_000.0
    geoms = [box(x0 + 100 * i, y0, x0 + 100 * (i + 1), y0 + 100) for i in range(12)]
    geoms[3] = Polygon(geoms[3].exterior, [box(x0 + 320, y0 + 20, x0 + 340, y0 + 40).exterior])
    geoms[5] = MultiPolygon([box(x0 + 500, y0, x0 + 550, y0 + 100), box(x0 + 560, y0, x0 + 600, y0 + 100)])
    geoms[7] = None
    geoms[9] = Polygon([(x0 + 900, y0), (x0 + 1000, y0 + 100), (x0 + 1000, y0), (x0 + 900, y0 + 100)])
    gdf = gpd.GeoDataFrame({"BSM": [f"{i + 1:08d}" for i in range(12)], "DLBM": ["0101"] * 12,
                            "DLMC": ["水田"] * 12, "TBMJ": [10_000.0] * 12, "ZLDWMC": ["示范村"] * 12},
                           geometry=geoms, crs="EPSG:4527")
    folder.mkdir()
    shp = folder / "DLTB.shp"
    gdf.to_file(shp, encoding="GBK", engine="pyogrio")
    return shp


def test_ingest_with_numpy_shapes_equals_gdal_reading(new_db, tmp_path, monkeypatch):
    """Through the whole pipeline: same rows, geometries, hashes, areas and report."""
    import functools

    from geobase.ingest import load_steps, reader
    from geobase.ingest.pipeline import ingest

    shp = _mixed_land_use(tmp_path / "mixed")
    rows = ("SELECT _key, _hash, _area_m2, ST_AsEWKB(geom), ST_AsEWKB(geom_3857) FROM data.land_use "
            "WHERE _vto IS NULL ORDER BY _key")
    seen = set()
    real = reader.ShpPolygons.open

    def spy(*a, **k):
        got = real(*a, **k)
        seen.add(got is not None)
        return got

    monkeypatch.setattr(reader.ShpPolygons, "open", spy)
    results = []
    for numpy_shapes in (True, False):
        monkeypatch.setattr(load_steps, "open_batches", functools.partial(reader.open_batches, numpy_shapes=numpy_shapes))
        settings = new_db()
        res = ingest(settings, "land_use", shp, on_error="skip", coverage=False)
        with psycopg.connect(settings.database_url) as conn:
            results.append((res.report["errors"], res.report["rows_read"], res.report["rows_loaded"],
                            conn.execute(rows).fetchall()))
    assert seen == {True}  # the numpy reader took the file
    _errors, read, loaded, got = results[0]
    assert (read, loaded, len(got)) == (12, 11, 11)  # the empty record is not loaded; the bow tie is repaired
    assert results[1] == results[0]

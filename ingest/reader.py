"""The batches of a delivered file, as the load reads them: ``(columns, geometry)`` pairs.

``columns`` maps each wanted source field (and :data:`~geobase.ingest.normalize.FID_COLUMN`
when the feature ids are asked for) to an arrow array; ``geometry`` is either GDAL's WKB (an
arrow binary array) or, for a plain polygon Shapefile (on disk or zipped), a
:class:`~geobase.ingest.shp.ShapeBatch` read with numpy (:mod:`geobase.ingest.shp`, with its
attributes from the ``.dbf`` by :mod:`geobase.ingest.dbf`): no GDAL feature objects at all on
that path, GDAL only for the records the numpy reader leaves to it.

Why a module of its own: the load loop (:func:`geobase.ingest.load_steps.copy_rows`) should not
know which reader produced a batch; the geometry normaliser takes either form.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
from geobase.ingest import dbf
from geobase.ingest.blob import sidecars
from geobase.ingest.copybin import from_numpy
from geobase.ingest.normalize import FID_COLUMN
from geobase.ingest.shp import ShapeBatch, ShpPolygons

Batch = tuple[dict[str, pa.Array], "pa.Array | ShapeBatch"]


@contextmanager
def open_batches(gdal_path: str, *, layer: str | None, encoding: str | None, columns: list[str], batch_size: int,
                 return_fids: bool, is_shapefile: bool, expected_records: int | None, open_options: dict,
                 numpy_shapes: bool = True):
    """Yields an iterator of :data:`Batch` over the file (see the module docstring).
    ``numpy_shapes=False`` reads every geometry through GDAL (the comparison the tests make)."""
    plain = _plain_shapefile(gdal_path, encoding, columns, is_shapefile, expected_records, open_options,
                             numpy_shapes)
    if plain is not None:
        shp, table = plain
        try:
            yield _numpy_batches(gdal_path, shp, table, columns, batch_size, return_fids)
        finally:
            shp.blob.close()
            table.blob.close()
        return
    with dbf.open_arrow(gdal_path, layer=layer, encoding=encoding, columns=columns, batch_size=batch_size,
                        return_fids=return_fids, is_shapefile=is_shapefile, expected_records=expected_records,
                        open_options=open_options) as (meta, reader):
        yield _gdal_batches(reader, meta, columns, return_fids)


def _plain_shapefile(gdal_path: str, encoding: str | None, columns: list[str], is_shapefile: bool,
                     expected_records: int | None, open_options: dict, numpy_shapes: bool
                     ) -> tuple[ShpPolygons, dbf.DbfTable] | None:
    """The numpy readers of a plain 2D polygon Shapefile (on disk or in a zip) whose attributes
    the numpy .dbf reader takes too, else None."""
    if not (numpy_shapes and is_shapefile and encoding and not open_options) or expected_records is None:
        return None
    files = sidecars(gdal_path, (".shp", ".shx", ".dbf"))
    if files is None:
        return None
    shp = ShpPolygons.open(files[".shp"], expected_records, files[".shx"])
    files[".shx"].close()  # read whole by open()
    table = dbf.DbfTable.open(files[".dbf"], encoding, columns, expected_records) if shp is not None else None
    if shp is None or table is None:
        files[".shp"].close()
        files[".dbf"].close()
        return None
    return shp, table


def _numpy_batches(gdal_path: str, shp: ShpPolygons, table: dbf.DbfTable, columns: list[str], batch_size: int,
                   return_fids: bool) -> Iterator[Batch]:
    for lo in range(0, shp.n_records, batch_size):
        fids, cols = table.batch(lo, min(lo + batch_size, shp.n_records))
        if len(fids) == 0:
            continue
        out = {c: cols[c] for c in columns}
        if return_fids:
            out[FID_COLUMN] = from_numpy(fids, pa.int64())
        yield out, shp.read(fids, gdal_path)


def _gdal_batches(reader, meta: dict, columns: list[str], return_fids: bool) -> Iterator[Batch]:
    geom_col = meta.get("geometry_name") or "wkb_geometry"
    fid_col = meta.get("fid_column") or "OGC_FID"
    for batch in reader:
        out = {c: batch.column(c) for c in columns}
        if return_fids:
            out[FID_COLUMN] = batch.column(fid_col)
        yield out, batch.column(geom_col)


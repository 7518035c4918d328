"""The ingest's fast paths give exactly what the general paths give.

- the numpy ``.dbf`` reader vs GDAL's Shapefile driver (text, numbers, blanks, ``*`` fills, deleted
  records, GBK), and the fallback to GDAL where it does not apply;
- the numpy WKB writer vs ``shapely.to_wkb`` of the promoted MultiPolygon;
- a first load straight into the layer table (DirectLoad) vs the staging path: same rows, hashes,
  areas, indexes and report; refusals roll back; duplicate keys are reported via staging.
"""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyogrio
import pytest
import shapely
from conftest import SAMPLE
from geobase.ingest import dbf, pipeline
from geobase.ingest.pipeline import ingest
from geobase.ingest.wkb import multipolygon_layout
from shapely.geometry import box
from test_ingest import db_state, land_use_gdf, query, write_shp

from geobase.errors import InvalidInput


def _norm(a: pa.Array) -> pa.Array:
    """What the normaliser makes of a text value: trimmed, empty = NULL."""
    if pa.types.is_string(a.type):
        a = pc.utf8_trim_whitespace(a)
        return pc.if_else(pc.equal(pc.utf8_length(a), 0), pa.scalar(None, pa.string()), a)
    return a


def _read_both(shp, encoding: str = "GBK"):
    info = pyogrio.read_info(shp, encoding=encoding)
    cols = [str(c) for c in info["fields"]]
    with dbf.open_arrow(str(shp), layer=None, encoding=encoding, columns=cols, batch_size=7, return_fids=False,
                        is_shapefile=True, expected_records=info["features"], open_options={}) as (_m, r):
        fast = pa.Table.from_batches(list(r))
    with pyogrio.open_arrow(str(shp), encoding=encoding, columns=cols, batch_size=7, use_pyarrow=True) as (_m, r):
        ref = pa.Table.from_batches(list(r))
    return cols, fast, ref


def test_dbf_reader_matches_gdal(tmp_path):
    gdf = land_use_gdf(40)
    gdf["DLMC"] = [" 水田 ", "", None, "旱地（坡）", "a\u3000b"] * 8
    gdf["TBMJ"] = [1.5, None, 0.0, -2.25, 1e7] * 8
    gdf["SJNF"] = [2019, None, 2020, 0, -1] * 8
    gdf["KCXS"] = [0.1234, None, 1.0, 0.0, 0.5] * 8
    gdf["BZ"] = [None] * 40  # a text field blank in every record
    gdf["ZLDWMC"] = ["示范村", "村\t", "x\ty", "示范村 ", "  "] * 8  # tabs: the value-by-value path
    shp = write_shp(gdf, tmp_path / "a", cpg=True)
    # a blank and a '*'-filled number, as other writers leave them
    raw = bytearray(shp.with_suffix(".dbf").read_bytes())
    _n, hlen, rlen = struct.unpack("<IHH", raw[4:12])
    fields, off = {}, 1
    for i in range(32, hlen - 1, 32):
        if raw[i] == 0x0D:
            break
        fields[raw[i:i + 11].split(b"\0")[0].decode()] = (off, raw[i + 16])
        off += raw[i + 16]
    o, w = fields["TBMJ"]
    raw[hlen + 3 * rlen + o: hlen + 3 * rlen + o + w] = b"*" * w
    o, w = fields["SJNF"]
    raw[hlen + 4 * rlen + o: hlen + 4 * rlen + o + w] = b" " * w
    raw[hlen + 5 * rlen] = ord("*")  # record 5 deleted
    shp.with_suffix(".dbf").write_bytes(bytes(raw))
    assert dbf.DbfTable.open(shp.with_suffix(".dbf"), "GBK", ["DLMC"], None) is not None
    cols, fast, ref = _read_both(shp)
    assert fast.num_rows == ref.num_rows
    for c in cols:
        a, b = _norm(fast.column(c).combine_chunks()), _norm(ref.column(c).combine_chunks())
        assert a.type == b.type and a.equals(b), (c, a, b)
    assert fast.column("wkb_geometry").equals(ref.column("wkb_geometry"))


def test_dbf_reader_declines_what_it_does_not_read(tmp_path):
    shp = write_shp(land_use_gdf(5), tmp_path / "a", cpg=True)
    path = shp.with_suffix(".dbf")
    assert dbf.DbfTable.open(path, "GBK", ["NOPE"], None) is None  # unknown field
    assert dbf.DbfTable.open(path, "no-such-codec", ["DLMC"], None) is None
    assert dbf.DbfTable.open(path, "GBK", ["DLMC"], 6) is None  # record count differs from the .shp
    path.write_bytes(path.read_bytes()[:-50])
    assert dbf.DbfTable.open(path, "GBK", ["DLMC"], None) is None  # truncated: GDAL says what is wrong


def test_dbf_reader_undecodable_text_names_the_value(tmp_path):
    gdf = land_use_gdf(5)
    shp = write_shp(gdf, tmp_path / "a", encoding="GBK", cpg=True)
    with pytest.raises(UnicodeDecodeError):
        _read_both(shp, encoding="UTF-8")


def test_wkb_writer_is_byte_identical_to_shapely():
    geoms = np.array([box(0, 0, 1, 1), shapely.from_wkt(
        "MULTIPOLYGON(((0 0,10 0,10 10,0 10,0 0),(1 1,2 1,2 2,1 1)),((20 20,21 20,21 21,20 20)))"),
        shapely.from_wkt("POLYGON((0 0,4 0,4 4,0 4,0 0),(1 1,2 1,2 2,1 1),(3 3,3.5 3,3.5 3.5,3 3))")], dtype=object)
    _t, coords, (ring_off, poly_off, geom_off) = shapely.to_ragged_array(geoms)
    out = multipolygon_layout(ring_off, poly_off, geom_off).wkb(coords[:, 0], coords[:, 1]).to_pylist()
    parts, idx = shapely.get_parts(geoms, return_index=True)
    assert out == list(shapely.to_wkb(shapely.multipolygons(parts, indices=idx)))


def _dltb(tmp_path):
    with zipfile.ZipFile(SAMPLE / "DLTB.zip") as zf:
        zf.extractall(tmp_path / "dltb")
    return tmp_path / "dltb" / "DLTB.shp"


ROWS = ("SELECT _key, _hash, _vfrom, _vto, bsm, dlbm, dlmc, tbmj, sjnf, _area_m2, ST_AsEWKB(geom), "
        "ST_AsEWKB(geom_3857) FROM data.land_use ORDER BY _key")


def test_direct_first_load_equals_staging_load(new_db, tmp_path, monkeypatch):
    shp = _dltb(tmp_path)
    staged = new_db()
    a = ingest(staged, "land_use", shp, coverage=False, direct=False)
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 0)
    direct = new_db()
    b = ingest(direct, "land_use", shp, coverage=False)
    assert (a.version, a.rows_total, a.added, a.extent) == (b.version, b.rows_total, b.added, b.extent)
    for k in ("errors", "warnings", "samples", "checks", "rows_read", "rows_loaded", "encoding"):
        assert a.report[k] == b.report[k], k
    assert b.report["checks"]["area"]["deviating"] > 0  # the stated-area check found the same rows
    assert query(staged, ROWS) == query(direct, ROWS)
    idx = "SELECT indexname FROM pg_indexes WHERE schemaname = 'data' AND tablename = 'land_use' ORDER BY 1"
    assert query(staged, idx) == query(direct, idx)
    assert query(direct, "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                         "WHERE c.relname = 'land_use' AND NOT t.tgisinternal")[0][0] == 0
    assert query(direct, "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                         "WHERE n.nspname = 'staging'")[0][0] == 0
    # a second load of the same file is a replace via staging: nothing changed
    c = ingest(direct, "land_use", shp, coverage=False)
    assert (c.added, c.removed, c.changed) == (0, 0, 0)


def test_direct_load_refused_rolls_back_everything(new_db, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 0)
    settings = new_db()
    gdf = land_use_gdf(30)
    gdf.loc[7, "DLBM"] = "9999"
    shp = write_shp(gdf, tmp_path / "bad", cpg=True)
    idx = "SELECT count(*) FROM pg_indexes WHERE schemaname = 'data' AND tablename = 'land_use'"
    before, n_idx = db_state(settings, "land_use"), query(settings, idx)
    with pytest.raises(InvalidInput, match="9999"):
        ingest(settings, "land_use", shp, coverage=False)
    assert db_state(settings, "land_use") == before
    assert query(settings, idx) == n_idx


def test_direct_load_with_duplicate_keys_reports_them_via_staging(new_db, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 0)
    settings = new_db()
    gdf = land_use_gdf(30)
    gdf.loc[9, "BSM"] = gdf.loc[3, "BSM"]
    shp = write_shp(gdf, tmp_path / "dup", cpg=True)
    res = ingest(settings, "land_use", shp, coverage=False, on_error="skip")
    assert res.rows_total == 29 and res.report["errors"]["duplicate_key"] == 1
    assert res.report["samples"]["duplicate_key"][0]["row"] == 4
    assert any("kept the first" in n for n in res.report["notes"])


def test_single_ring_wkb_parser_matches_shapely():
    from geobase.ingest.wkb import single_ring_polygons

    geoms = [box(i, 0, i + 1, 1 + i / 7) for i in range(20)]
    wkb = pa.array(list(shapely.to_wkb(np.array(geoms, dtype=object))), pa.binary()).slice(3, 12)
    coords, ring_off = single_ring_polygons(wkb)
    _t, ref, offs = shapely.to_ragged_array(np.array(geoms[3:15], dtype=object))
    assert np.array_equal(coords, ref) and np.array_equal(ring_off, offs[0])
    holed = shapely.from_wkt("POLYGON((0 0,4 0,4 4,0 4,0 0),(1 1,2 1,2 2,1 1))")
    assert single_ring_polygons(pa.array([shapely.to_wkb(holed)], pa.binary())) is None
    assert single_ring_polygons(pa.array([shapely.to_wkb(shapely.multipolygons([box(0, 0, 1, 1)]))],
                                         pa.binary())) is None


def test_content_hash_is_xxh3_of_each_row_value():
    import xxhash
    from geobase.ingest.copybin import content_hash

    values = [b"", b"a", "水田".encode(), bytes(range(256)) * 3]
    arr = pa.array(values * 3, pa.binary())
    for a in (arr, arr.slice(5, 6)):  # a slice starts inside the offsets buffer
        assert content_hash(a).to_pylist() == [xxhash.xxh3_128_hexdigest(v) for v in a.to_pylist()]
    assert content_hash(pa.array([], pa.binary())).to_pylist() == []


def _earlier_layer_table(settings, tmp_path, *old_ddl: str):
    """A land-use layer loaded, then made to look like an earlier geobase's table (keys in the
    database collation, plus ``old_ddl``), then the catalog synced as a server start does.
    Returns the delivered frame."""
    import psycopg
    from geobase.catalog import sync_catalog

    gdf = land_use_gdf(30)
    ingest(settings, "land_use", write_shp(gdf, tmp_path / "v1", cpg=True), coverage=False)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute('ALTER TABLE data.land_use ALTER COLUMN _key TYPE text COLLATE "default"')
        for ddl in old_ddl:
            conn.execute(ddl)
        conn.commit()
        sync_catalog(conn, settings)
        conn.commit()
    return gdf


def _key_collation(settings) -> str:
    return query(settings, "SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation "
                           "WHERE a.attrelid = 'data.land_use'::regclass AND a.attname = '_key'")[0][0]


def test_layer_tables_of_earlier_versions_are_upgraded_in_place(new_db, tmp_path):
    """A layer table made by an earlier geobase (keys in the database collation, a GiST on
    geom_3857) gets byte-ordered keys and loses that index when the catalog is synced; its rows
    stay, and the next replace diffs against them as before."""
    settings = new_db()
    gdf = _earlier_layer_table(settings, tmp_path, "CREATE INDEX land_use_cur_geom3857 ON data.land_use "
                                                   "USING gist (geom_3857) WHERE _vto IS NULL")
    idx = {r[0] for r in query(settings, "SELECT indexname FROM pg_indexes WHERE tablename = 'land_use'")}
    assert _key_collation(settings) == "C"
    assert "land_use_cur_geom3857" not in idx and {"land_use_cur_key", "land_use_cur_geom"} <= idx
    gdf.loc[4, "DLBM"] = "0102"
    res = ingest(settings, "land_use", write_shp(gdf, tmp_path / "v2", cpg=True), coverage=False)
    assert (res.added, res.removed, res.changed, res.rows_total) == (0, 0, 1, 30)


def test_a_view_on_an_old_layer_table_keeps_its_key_collation_and_ingest_still_works(new_db, tmp_path, caplog):
    """Someone's view on a layer (a QGIS project, a tipg collection) blocks converting its keys:
    the catalog sync goes on (the server starts), says why in the log, and replaces still diff."""
    settings = new_db()
    gdf = _earlier_layer_table(settings, tmp_path, "CREATE VIEW public.my_parcels AS SELECT _key, dlbm, geom "
                                                   "FROM data.land_use WHERE _vto IS NULL")
    assert _key_collation(settings) == "default"
    assert "keep collation default" in caplog.text and "my_parcels" in caplog.text
    gdf.loc[7, "DLBM"] = "0102"
    res = ingest(settings, "land_use", write_shp(gdf, tmp_path / "v2", cpg=True), coverage=False)
    assert (res.added, res.removed, res.changed) == (0, 0, 1)
    assert query(settings, "SELECT count(*) FROM public.my_parcels")[0][0] == 30

"""GeoParquet downloads (``f=parquet``): read back by geopandas (and by GDAL's Parquet driver
where the installed GDAL has one) and compared value by value with the items API, with the same
filters, CRS, masks and limits as the other download formats; streamed row group by row group."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import uuid

import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq
import psycopg
import pyogrio
import pytest
import shapely
from conftest import LiveServer, create_database, drop_database, settings_for
from test_features import _load

from geobase import geoparquet
from geobase.keys import create_key

GK = "http://www.opengis.net/def/crs/EPSG/0/4527"


@pytest.fixture(scope="module")
def server(pg_server, template_db, tmp_path_factory):
    name = f"gb_gpq_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, name, template_db)
    _load(url)
    with psycopg.connect(url, autocommit=True) as conn:
        token = create_key(conn, name="gpq-admin", role="admin", department=None).token
    srv = LiveServer(settings_for(url, tmp_path_factory.mktemp("gpq")))
    yield srv, token
    srv.stop()
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def http(server):
    with server[0].client() as c:
        yield c


def _parquet(http, tmp_path, **params):
    r = http.get("/collections/land_use/items", params={"f": "parquet", **params})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    assert "attachment" in r.headers["content-disposition"] and ".parquet" in r.headers["content-disposition"]
    path = tmp_path / f"x{uuid.uuid4().hex[:6]}.parquet"
    path.write_bytes(r.content)
    return path


def _items(http, **params) -> dict:
    r = http.get("/collections/land_use/items", params={"limit": 10000, **params})
    assert r.status_code == 200, r.text
    return {f["id"]: f for f in r.json()["features"]}


def _same_values(gdf, items: dict) -> None:
    assert sorted(gdf["id"]) == sorted(items)
    for row in gdf.to_dict("records"):
        fid = row["id"]
        props = items[fid]["properties"]
        assert set(props) == set(row) - {"id", "geometry"}, fid
        for k, v in props.items():
            got = row[k]
            if v is None:
                assert got is None or pd.isna(got), (fid, k, got)
            elif isinstance(v, float):
                assert got == pytest.approx(v, rel=1e-12), (fid, k)
            else:
                assert got == v, (fid, k, got, v)
        ref = shapely.geometry.shape(items[fid]["geometry"])
        assert row["geometry"].equals_exact(ref, 1e-7), fid


def test_geoparquet_matches_items_with_masks_and_filters(http, tmp_path):
    path = _parquet(http, tmp_path)
    meta = json.loads(pq.read_schema(path).metadata[b"geo"])
    assert meta["version"] == "1.1.0" and meta["primary_column"] == "geometry"
    col = meta["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["MultiPolygon"]
    assert "crs" not in col  # OGC:CRS84, the GeoParquet default
    assert col["bbox"] == pytest.approx([117.0, 31.0, 117.1, 31.104])
    gdf = gpd.read_parquet(path)
    assert gdf.crs.to_string() == "OGC:CRS84" and len(gdf) == 2500
    # the caller's view: the masked owner column is not there, like in every other format
    assert "qsdwmc" not in gdf.columns and "dlbm" in gdf.columns
    _same_values(gdf, _items(http))
    # a filter, a bbox and a limit are applied as for the other formats
    flt = gpd.read_parquet(_parquet(http, tmp_path, filter="dlbm = '0103'", bbox="117,31,117.05,31.05"))
    _same_values(flt, _items(http, filter="dlbm = '0103'", bbox="117,31,117.05,31.05"))
    assert 0 < len(flt) < 2500 and set(flt["dlbm"]) == {"0103"}
    lim = gpd.read_parquet(_parquet(http, tmp_path, limit=7))
    assert len(lim) == 7
    # an earlier version (time travel) and the projected CRS (x = easting, PROJJSON in the file)
    r = http.get("/collections/land_use").json()
    t1 = r["extent"]["temporal"]["interval"][0][0]
    old = gpd.read_parquet(_parquet(http, tmp_path, datetime=t1))
    _same_values(old, _items(http, datetime=t1))
    gk_path = _parquet(http, tmp_path, crs=GK, filter="bsm = 'P00000'")
    gk = gpd.read_parquet(gk_path)
    assert gk.crs.to_epsg() == 4527 and len(gk) == 1
    x, y = gk.geometry.iloc[0].geoms[0].exterior.coords[0]
    assert 39_400_000 < x < 39_600_000 and 3_000_000 < y < 4_000_000


def test_geoparquet_masked_fields_stay_masked_for_the_public(http, tmp_path):
    """The public caller's schema and an explicit ``properties`` asking for the masked field:
    refused like an unknown property, as for GeoJSON."""
    r = http.get("/collections/land_use/items", params={"f": "parquet", "properties": "bsm,qsdwmc"})
    assert r.status_code == 400 and "qsdwmc" in r.text
    gdf = gpd.read_parquet(_parquet(http, tmp_path, properties="bsm,dlbm"))
    assert [c for c in gdf.columns if c != "geometry"] == ["id", "bsm", "dlbm"]


def test_geoparquet_shows_a_masked_field_to_a_caller_who_may_read_it(server, tmp_path):
    srv, token = server
    with srv.client(headers={"Authorization": f"Bearer {token}"}) as c:
        gdf = gpd.read_parquet(_parquet(c, tmp_path))
        assert "qsdwmc" in gdf.columns and len(gdf) == 2500
        _same_values(gdf, _items(c))


def test_geoparquet_changes_and_negotiation(http, tmp_path):
    r = http.get("/collections/land_use/changes", params={"from": "1", "f": "parquet"})
    assert r.status_code == 200
    gdf = gpd.read_parquet(io.BytesIO(r.content))
    assert sorted(gdf["change"].value_counts().items()) == [("added", 100), ("changed", 100), ("removed", 100)]
    r = http.get("/collections/land_use/items", headers={"Accept": "application/vnd.apache.parquet"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    links = http.get("/collections/land_use").json()["links"]
    assert any(l["type"] == "application/vnd.apache.parquet" for l in links)


def _gdal_parquet() -> list[str] | None:
    """A GDAL with the Parquet driver: pyogrio's, else the system's ogr2ogr."""
    if "Parquet" in pyogrio.list_drivers():
        return []
    if shutil.which("ogrinfo"):
        out = subprocess.run(["ogrinfo", "--formats"], capture_output=True, text=True, check=True).stdout
        if "Parquet" in out:
            return ["ogr2ogr"]
    return None


def test_geoparquet_read_by_gdal(http, tmp_path):
    how = _gdal_parquet()
    if how is None:
        pytest.skip("neither pyogrio's GDAL nor the system GDAL (Debian 12: 3.6 without Arrow) has the "
                    "Parquet driver; geopandas/pyarrow read the files in the other tests")
    path = _parquet(http, tmp_path)
    if how:
        subprocess.run(["ogr2ogr", "-f", "GPKG", str(tmp_path / "g.gpkg"), str(path)], check=True)
        df = pyogrio.read_dataframe(tmp_path / "g.gpkg")
    else:
        df = pyogrio.read_dataframe(path)
    _same_values(df, _items(http))


def test_parquet_body_streams_row_groups_before_the_rows_end(monkeypatch):
    """Bytes leave before the cursor is exhausted (a row group at a time), and the file is
    complete GeoParquet at the end."""
    monkeypatch.setattr(geoparquet, "ROW_GROUP_ROWS", 100)
    consumed = {"n": 0}
    wkb = shapely.to_wkb(shapely.box(0, 0, 1, 1))

    async def batches():
        for b in range(10):
            consumed["n"] += 1
            yield [(f"k{b}-{i}", float(i), wkb) for i in range(50)]

    async def run():
        chunks, seen_at = [], []
        async for chunk in geoparquet.parquet_body(batches(), [("v", "number")], True, 4490):
            chunks.append(chunk)
            seen_at.append(consumed["n"])
        return chunks, seen_at

    chunks, seen_at = asyncio.run(run())
    assert len(chunks) >= 5 and seen_at[0] <= 2
    f = pq.ParquetFile(io.BytesIO(b"".join(chunks)))
    assert f.metadata.num_rows == 500 and f.metadata.num_row_groups == 5
    geo = json.loads(f.schema_arrow.metadata[b"geo"])
    assert geo["columns"]["geometry"]["crs"]["id"] == {"authority": "EPSG", "code": 4490}
    assert geo["columns"]["geometry"]["geometry_types"] == ["Polygon"]

"""Full downloads (issue 19 item 5): the zipped Shapefile read back by GDAL with the exact values
(Chinese text too) and its 10-character field names mapped in fields.csv; GeoParquet with every
row; prepared once per version (same file, same checksum), served with Range requests and a
SHA-256 that matches the bytes; masked attributes are not in the file."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile

import pyarrow.parquet as pq
import pyogrio


def test_shapefile_zip_read_back(county_server, tmp_path):
    with county_server.client() as c:
        r = c.get("/catalog/items/land_use/download", params={"f": "shp"})
        assert r.status_code == 200, r.text
        assert r.headers["x-checksum-sha256"] == hashlib.sha256(r.content).hexdigest()
        again = c.get("/catalog/items/land_use/download", params={"f": "shp"})
        assert again.headers["etag"] == r.headers["etag"] and again.content == r.content   # prepared once
        part = c.get("/catalog/items/land_use/download", params={"f": "shp"}, headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == r.content[100:1100]
        items = c.get("/collections/land_use/items", params={"limit": 10000}).json()
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(z.namelist())
    assert {"land_use.shp", "land_use.shx", "land_use.dbf", "land_use.prj", "land_use.cpg", "fields.csv"} <= names
    assert z.read("land_use.cpg").decode().strip().upper().replace("-", "") in ("UTF8", "65001")
    mapping = dict(csv.reader(io.StringIO(z.read("fields.csv").decode("utf-8-sig"))))
    assert mapping.pop("field") == "shapefile_field"
    assert all(len(short) <= 10 for short in mapping.values())
    assert "qsdwmc" not in mapping   # hidden from the public: not in the file
    path = tmp_path / "lu.zip"
    path.write_bytes(r.content)
    df = pyogrio.read_dataframe(f"/vsizip/{path}/land_use.shp")
    assert len(df) == items["numberMatched"] == len(items["features"])
    by_id = {f["id"]: f["properties"] for f in items["features"]}
    short = mapping
    chinese = 0
    for _, row in df.iterrows():
        props = by_id[row[short["id"]]]
        for full in ("dlbm", "dlmc", "zldwmc", "tbmj"):
            want, got = props.get(full), row[short[full]]
            if isinstance(want, float):
                assert abs(got - want) < 1e-6 * max(1, abs(want))
            else:
                assert (got or None) == want, (full, got, want)
        chinese += any("\u4e00" <= ch <= "\u9fff" for ch in (props.get("dlmc") or ""))
    assert chinese > 0   # the Chinese names came back as written


def test_geoparquet_full_download(county_server, tmp_path):
    with county_server.client() as c:
        r = c.get("/catalog/items/rivers/download", params={"f": "parquet"})
        n = c.get("/collections/rivers/items", params={"limit": 1}).json()["numberMatched"]
        bad = c.get("/catalog/items/rivers/download", params={"f": "xls"})
        raster = c.get("/catalog/items/dem/download", params={"f": "shp"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    p = tmp_path / "r.parquet"
    p.write_bytes(r.content)
    t = pq.read_table(p)
    assert t.num_rows == n and b"geo" in t.schema.metadata
    assert bad.status_code == 400 and raster.status_code == 400


def test_short_names_unique_and_at_most_ten():
    from geobase.opendata.bulk import short_names

    names = short_names(["id", "you_shi_sz_mc", "you_shi_sz", "you_shi_sz_x", "mei_gq_xj"])
    assert names["id"] == "id" and names["mei_gq_xj"] == "mei_gq_xj"
    assert all(len(s) <= 10 for s in names.values())
    assert len({s.lower() for s in names.values()}) == len(names)
    assert names["you_shi_sz_mc"] == "you_shi_sz" and names["you_shi_sz"] == "you_shi__1"


def test_shapefile_in_gbk(county_server, tmp_path):
    """For desktop GIS that read only GBK: the same values, the .cpg naming the code page."""
    with county_server.client() as c:
        r = c.get("/catalog/items/land_use/download", params={"f": "shp-gbk"})
        items = c.get("/collections/land_use/items", params={"limit": 10000}).json()
    assert r.status_code == 200, r.text
    z = zipfile.ZipFile(io.BytesIO(r.content))
    cpg = z.read("land_use.cpg").decode().strip().upper()
    assert cpg in ("GBK", "936", "CP936"), cpg
    dbf = z.read("land_use.dbf")
    names = [f["properties"]["dlmc"] for f in items["features"] if f["properties"].get("dlmc")]
    assert names[0].encode("gbk") in dbf and names[0].encode("utf-8") not in dbf
    path = tmp_path / "lu.zip"
    path.write_bytes(r.content)
    df = pyogrio.read_dataframe(f"/vsizip/{path}/land_use.shp")
    by_id = {f["id"]: f["properties"] for f in items["features"]}
    assert all((row["dlmc"] or None) == by_id[row["id"]]["dlmc"] for _, row in df.iterrows())

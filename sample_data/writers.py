"""Delivery formats of the synthetic county, written byte-reproducibly: a streaming Shapefile
writer with an exact DBF schema (GBK, fixed date), deterministic zips, GeoJSON (RFC 7946, 1e-8
degree coordinates), GeoPackage and FileGDB through pyogrio with GDAL's dates and UUIDs fixed,
and the DEM as a tiled DEFLATE GeoTIFF.

Same input, same bytes: no timestamps, no dict-order or platform dependence; the committed sample
county and its manifest checksums depend on it."""
from __future__ import annotations

import hashlib
import json
import math
import struct
import zipfile
from pathlib import Path

import numpy as np
import shapely
import shapely.geometry
from pyproj import CRS

from geobase.sample_data.codes import DBF_DATE, EPSG_GEO, EPSG_GK, GDAL_FIXED_DATE, ZIP_DATE
from geobase.sample_data.geo import geo_geoms, local_from_lonlat
from geobase.sample_data.world import World


class ShapefileWriter:
    """Polygon Shapefile (.shp/.shx/.dbf/.prj/.cpg) written in batches, headers patched on close.

    ``fields``: (name, type C/N, width, decimals); a number that does not fit its width raises
    rather than being truncated."""

    def __init__(self, base: Path, fields, encoding="GBK", ldid=0x4D):
        self.base = base
        self.fields = fields
        self.enc = encoding
        self.shp = open(base.with_suffix(".shp"), "wb")
        self.shx = open(base.with_suffix(".shx"), "wb")
        self.dbf = open(base.with_suffix(".dbf"), "wb")
        self.shp.write(b"\0" * 100)
        self.shx.write(b"\0" * 100)
        self.reclen = 1 + sum(f[2] for f in fields)
        self.hlen = 32 + 32 * len(fields) + 1
        self.ldid = ldid
        self.dbf.write(b"\0" * self.hlen)
        self.n = 0
        self.offset = 50  # in 16-bit words
        self.bbox = [np.inf, np.inf, -np.inf, -np.inf]

    def write(self, geoms, cols: dict):
        geoms = shapely.orient_polygons(np.asarray(geoms, dtype=object), exterior_cw=True)
        _, coords, (ring_off, poly_off) = shapely.to_ragged_array(geoms)
        shp_parts, shx_parts = [], []
        cstart = ring_off[poly_off[:-1]]
        bxmin = np.minimum.reduceat(coords[:, 0], cstart)
        bymin = np.minimum.reduceat(coords[:, 1], cstart)
        bxmax = np.maximum.reduceat(coords[:, 0], cstart)
        bymax = np.maximum.reduceat(coords[:, 1], cstart)
        allpts = coords.astype("<f8").tobytes()
        ring_rel = ring_off.astype("<i4")
        for i in range(len(geoms)):
            r0, r1 = poly_off[i], poly_off[i + 1]
            c0, c1 = ring_off[r0], ring_off[r1]
            xmin, ymin, xmax, ymax = bxmin[i], bymin[i], bxmax[i], bymax[i]
            content = (struct.pack("<i4d2i", 5, xmin, ymin, xmax, ymax, r1 - r0, c1 - c0)
                       + (ring_rel[r0:r1] - c0).tobytes() + allpts[16 * c0:16 * c1])
            nw = len(content) // 2
            self.n += 1
            shp_parts.append(struct.pack(">2i", self.n, nw))
            shp_parts.append(content)
            shx_parts.append(struct.pack(">2i", self.offset, nw))
            self.offset += 4 + nw
            b = self.bbox
            b[0], b[1], b[2], b[3] = min(b[0], xmin), min(b[1], ymin), max(b[2], xmax), max(b[3], ymax)
        self.shp.write(b"".join(shp_parts))
        self.shx.write(b"".join(shx_parts))
        # dbf, column-wise
        n = len(geoms)
        colbytes = [np.full((n, 1), 0x20, dtype=np.uint8)]
        for name, typ, ln, dec in self.fields:
            vals = cols[name]
            if typ == "C":
                cache: dict = {}
                out = []
                for v in vals:
                    b = cache.get(v)
                    if b is None:
                        b = (v or "").encode(self.enc)[:ln].ljust(ln, b" ")
                        cache[v] = b
                    out.append(b)
            else:
                arr = np.round(np.asarray(vals, dtype=np.float64), dec)
                txt = (np.char.mod(f"%{ln}.{dec}f", arr) if dec
                       else np.char.mod(f"%{ln}d", arr.astype(np.int64)))
                out = [t.encode("ascii") for t in txt.tolist()]
                if any(len(o) != ln for o in out):
                    raise ValueError(f"numeric overflow in field {name}")
            colbytes.append(np.frombuffer(b"".join(out), dtype=np.uint8).reshape(n, ln))
        self.dbf.write(np.hstack(colbytes).tobytes())

    def close(self):
        flen_shp = self.shp.tell() // 2
        flen_shx = self.shx.tell() // 2
        bb = self.bbox if self.n else [0, 0, 0, 0]
        for f, flen in ((self.shp, flen_shp), (self.shx, flen_shx)):
            f.seek(0)
            f.write(struct.pack(">7i", 9994, 0, 0, 0, 0, 0, flen) + struct.pack("<2i", 1000, 5)
                    + struct.pack("<8d", bb[0], bb[1], bb[2], bb[3], 0, 0, 0, 0))
            f.close()
        self.dbf.write(b"\x1a")
        self.dbf.seek(0)
        hdr = struct.pack("<B3BIHH", 3, *DBF_DATE, self.n, self.hlen, self.reclen)
        hdr += b"\0" * 17 + bytes([self.ldid]) + b"\0\0"
        for name, typ, ln, dec in self.fields:
            hdr += (name.encode("ascii").ljust(11, b"\0") + typ.encode() + b"\0" * 4 + bytes([ln, dec])
                    + b"\0" * 14)
        hdr += b"\x0d"
        assert len(hdr) == self.hlen
        self.dbf.write(hdr)
        self.dbf.close()
        wkt = CRS.from_epsg(EPSG_GK).to_wkt("WKT1_ESRI")
        assert "CGCS2000_3_Degree_GK_Zone_39" in wkt
        self.base.with_suffix(".prj").write_text(wkt, encoding="ascii")
        self.base.with_suffix(".cpg").write_text(self.enc, encoding="ascii")


def zip_deterministic(zpath: Path, root: Path, names: list[str]):
    """Zip ``names`` (relative to ``root``; "x/" = directory entry) sorted, with a fixed date and modes."""
    with zipfile.ZipFile(zpath, "w") as zf:
        for name in sorted(names):
            zi = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            zi.create_system = 3
            if name.endswith("/"):
                zi.external_attr = (0o40755 << 16) | 0x10
                zf.writestr(zi, b"")
            else:
                zi.external_attr = 0o100644 << 16
                zi.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(zi, (root / name).read_bytes(), compresslevel=6)


def round_coords(obj, nd=8):
    """GeoJSON coordinates rounded to ``nd`` decimals, 2-D"""
    if isinstance(obj, (list, tuple)):
        if obj and isinstance(obj[0], (int, float)):
            return [round(float(v), nd) for v in obj[:2]]
        return [round_coords(o, nd) for o in obj]
    return obj


def geojson_geom(g_lonlat, multi=True):
    """RFC 7946 geometry: counter-clockwise exteriors, polygons as MultiPolygon when ``multi``"""
    g = g_lonlat
    if g.geom_type in ("Polygon", "MultiPolygon"):
        g = shapely.orient_polygons(g, exterior_cw=False)
    if multi and g.geom_type == "Polygon":
        g = shapely.MultiPolygon([g])
    m = shapely.geometry.mapping(g)
    return {"type": m["type"], "coordinates": round_coords(m["coordinates"])}


def write_geojson(path: Path, name: str, features: list):
    """A FeatureCollection (no crs member: RFC 7946 means CRS84), compact, UTF-8."""
    fc = {"type": "FeatureCollection", "name": name, "features": features}
    path.write_text(json.dumps(fc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def sha256(p: Path) -> str:
    """hex SHA-256 of a file, streamed"""
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gdal_config():
    """Fix GDAL's current date and FileGDB UUIDs (reproducible GPKG/FileGDB); returns the old values."""
    import pyogrio
    keys = {"OGR_CURRENT_DATE": GDAL_FIXED_DATE, "OPENFILEGDB_REPRODUCIBLE_UUID": "YES"}
    old = {k: pyogrio.get_gdal_config_option(k) for k in keys}
    pyogrio.set_gdal_config_options(keys)
    return old


def write_dem(world: World, path: Path):
    """1 arc-second float32 DEM of the world's terrain over the county (+ margin), nodata outside."""
    return write_dem_of(geo_geoms(world.county), lambda lon, lat: world.elev(*local_from_lonlat(lon, lat)), path)


def write_dem_of(area_ll, elev_lonlat, path: Path):
    """1 arc-second float32 DEM of ``elev_lonlat(lon, lat)`` over ``area_ll`` (+ margin), nodata
    outside; elevations rounded to 1/32 m."""
    import rasterio
    from rasterio.features import geometry_mask
    from rasterio.transform import Affine
    minx, miny, maxx, maxy = area_ll.bounds
    res = 1 / 3600
    m = 0.003
    x0 = math.floor((minx - m) * 3600) / 3600
    y1 = math.ceil((maxy + m) * 3600) / 3600
    nx = int(math.ceil((maxx + m - x0) * 3600))
    ny = int(math.ceil((y1 - (miny - m)) * 3600))
    tr = Affine(res, 0.0, x0, 0.0, -res, y1)
    lon = x0 + (np.arange(nx) + 0.5) * res
    lat = y1 - (np.arange(ny) + 0.5) * res
    dem = np.empty((ny, nx), dtype=np.float32)
    for j0 in range(0, ny, 128):
        LON, LAT = np.meshgrid(lon, lat[j0:j0 + 128])
        e = elev_lonlat(LON, LAT)
        dem[j0:j0 + 128] = (np.round(e * 32) / 32).astype(np.float32)
    outside = geometry_mask([area_ll.buffer(0.001)], out_shape=(ny, nx), transform=tr)
    dem[outside] = -9999.0
    prof = dict(driver="GTiff", width=nx, height=ny, count=1, dtype="float32",
                crs=CRS.from_epsg(EPSG_GEO).to_wkt(), transform=tr, nodata=-9999.0, compress="deflate",
                predictor=3, tiled=True, blockxsize=256, blockysize=256, zlevel=6)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(dem, 1)
    return dict(width=nx, height=ny, transform=list(tr)[:6])


def write_gpkg(path: Path, layer: str, records: list[dict], geoms_ll):
    """One MultiPolygon layer in EPSG:4490 as a fresh GeoPackage."""
    import geopandas as gpd
    from pyogrio import write_dataframe
    gdf = gpd.GeoDataFrame(records, geometry=list(geoms_ll), crs=f"EPSG:{EPSG_GEO}")
    if path.exists():
        path.unlink()
    write_dataframe(gdf, path, layer=layer, driver="GPKG", promote_to_multi=True,
                    geometry_type="MultiPolygon")

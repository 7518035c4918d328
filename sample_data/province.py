"""Deterministic generator of a synthetic province: N adjacent counties, each delivered as the
one-county sample is (same files, formats, layers and field schemas), in its own folder.

Writes into ``out_dir``::

    <code>/DLTB.zip           land-use parcels, zipped GBK Shapefile, EPSG:4527
    <code>/forest.gpkg        layer XB (one sub-compartment per forest parcel), EPSG:4490
    <code>/water.geojson      water areas of the county (rivers cut at its border, its lake), RFC 7946
    <code>/rivers.geojson     river centre lines inside the county, RFC 7946
    <code>/planning.gdb.zip   layers GHFQ (zones) and KZX (control lines), EPSG:4490
    <code>/admin.gpkg         layer XZQ: the county and its townships, EPSG:4490
    <code>/dem.tif            1 arc-second float32 DEM of the county
    manifest.json             parameters, counties (code, name, counts, areas), checksums

Every row carries its county: DLTB's ZLDWDM/QSDWDM and BSM, XB's XIAN, GHFQ/KZX/XZQ's XZQDM,
water and rivers' XZQDM all start with the 6-digit county code, so an ingest can route a row to
its county's partition. Counties share their borders exactly (one coverage, see
:mod:`province_world`); parcels are cells of one Voronoi diagram across the counties (see
:mod:`province_parcels`), streamed county by county and block by block (memory stays flat).
Same arguments, same bytes (zips, GeoPackages and FileGDB with GDAL's dates and UUIDs fixed).

Run: ``geobase sample generate --counties 10 --parcels-per-county 200000 --out DIR``."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import shapely
import shapely.geometry
from geobase.sample_data.codes import DLTB_FIELDS, EPSG_GEO, EPSG_GK, GENERATOR_VERSION, GHFQ_CODES, KZX_CODES
from geobase.sample_data.deliveries import _write_gdb
from geobase.sample_data.forest import _inventory
from geobase.sample_data.geo import GEOD, explode_polygons, geod_area, make_rng
from geobase.sample_data.province_parcels import ProvinceParcels, classify, dltb_columns, is_forest
from geobase.sample_data.province_world import Province
from geobase.sample_data.writers import (
    ShapefileWriter,
    gdal_config,
    geojson_geom,
    round_coords,
    sha256,
    write_dem_of,
    write_geojson,
    write_gpkg,
    zip_deterministic,
)

DLTB_PARTS = [f"DLTB{s}" for s in (".shp", ".shx", ".dbf", ".prj", ".cpg")]
LIN_BAN = 1600.0
BATCH = 20_000  # forest rows per GeoPackage append


def generate_province(out_dir: Path, *, counties: int = 10, parcels_per_county: int = 20000, seed: int = 20261206,
                      first_code: int = 339901, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Generate the province into ``out_dir``; returns the manifest (also ``manifest.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old_cfg = gdal_config()
    try:
        pv = Province(seed, counties, first_code)
        pp = ProvinceParcels(pv, parcels_per_county, seed)
        entries = []
        for c in range(pv.n):
            d = out_dir / pv.codes[c]
            if d.exists():
                shutil.rmtree(d)
            d.mkdir()
            counts = _write_county(pv, pp, c, d, seed, progress)
            files = {f"{pv.codes[c]}/{p.name}": sha256(p) for p in sorted(d.iterdir())}
            area = round(geod_area(pv.gk_to_geo(pv.to_gk(pv.counties[c]))), 2)
            entries.append(dict(code=pv.codes[c], name=pv.names[c], area_m2=area, counts=counts, sha256=files))
        manifest = dict(generator="geobase.sample_data.province", generator_version=GENERATOR_VERSION,
                        parameters=dict(seed=seed, counties=counties, parcels_per_county=parcels_per_county,
                                        first_code=first_code),
                        crs=dict(DLTB=f"EPSG:{EPSG_GK}", others=f"EPSG:{EPSG_GEO}", geojson="OGC:CRS84"),
                        routing="the first 6 digits of DLTB.ZLDWDM, XB.XIAN and every XZQDM are the county code",
                        counties=entries)
        (out_dir / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n",
                                               encoding="utf-8")
        return manifest
    finally:
        import pyogrio
        pyogrio.set_gdal_config_options(old_cfg)


def _write_county(pv: Province, pp: ProvinceParcels, c: int, d: Path, seed: int, progress) -> dict:
    """All layers of county ``c`` into folder ``d``; returns the counts."""
    n_dltb, n_xb, steep = _write_parcels(pv, pp, c, d, seed, progress)
    counts = dict(DLTB=n_dltb, XB=n_xb, steep_farmland_candidates=steep)
    counts["water"], counts["rivers"] = _write_water(pv, c, d)
    counts["GHFQ"], counts["KZX"] = _write_planning(pv, c, d)
    counts["XZQ"] = _write_admin(pv, c, d)
    county_ll = pv.gk_to_geo(pv.to_gk(pv.counties[c]))
    write_dem_of(county_ll, lambda lon, lat: pv.elev(*pv.local_from_lonlat(lon, lat)), d / "dem.tif")
    return counts


def _write_parcels(pv: Province, pp: ProvinceParcels, c: int, d: Path, seed: int, progress):
    """DLTB.zip and forest.gpkg of county ``c``, streamed block by block; returns
    (parcels, forest stands, farmland parcels on slopes above 25 degrees)."""
    tmp = d / ".DLTB.tmp"
    tmp.mkdir()
    writer = ShapefileWriter(tmp / "DLTB", DLTB_FIELDS)
    forest = _ForestWriter(pv, c, d / "forest.gpkg", seed)
    blocks = pp.county_blocks(c)
    n = steep = 0
    for k, (bi, bj) in enumerate(blocks):
        geoms, vill, u, water = pp.pieces(c, bi, bj)
        if len(geoms):
            dl, slope, elev = classify(pv, geoms, vill, u, water)
            gk = pv.to_gk(geoms)
            gk, keep = _polygons(gk)
            vill, u, dl, slope, elev = vill[keep], u[keep], dl[keep], slope[keep], elev[keep]
            ll = pv.gk_to_geo(gk)
            cols, tbmj = dltb_columns(pv, c, n, gk, ll, vill, dl, slope, u)
            writer.write(gk, cols)
            forest.add(cols["BSM"], ll, vill, dl, elev, tbmj, u)
            n += len(gk)
            steep += int(((slope > 25) & np.isin(dl, ("0101", "0102", "0103"))).sum())
        if progress:
            progress(pv.codes[c], k + 1, len(blocks))
    writer.close()
    zip_deterministic(d / "DLTB.zip", tmp, DLTB_PARTS)
    shutil.rmtree(tmp)
    return n, forest.close(), steep


def _polygons(gk):
    """Polygons with area after the 1 mm rounding (a sliver can collapse, a thin waist can
    split), and the index of the piece each came from."""
    return explode_polygons(gk)


class _ForestWriter:
    """forest.gpkg layer XB, appended batch by batch: one sub-compartment per forest parcel,
    numbered by township, 1.6 km compartment (林班) and order of appearance."""

    def __init__(self, pv: Province, c: int, path: Path, seed: int):
        self.pv, self.c, self.path = pv, c, path
        self.rng = make_rng(seed, 121, c)
        self.numbers: dict[tuple, int] = {}
        self.recs: list[dict] = []
        self.geoms: list = []
        self.n = 0
        if path.exists():
            path.unlink()

    def add(self, bsm, ll, vill, dl, elev, tbmj, u) -> None:
        idx = np.flatnonzero(is_forest(dl))
        if not len(idx):
            return
        rp = shapely.get_coordinates(shapely.point_on_surface(ll[idx]))
        x, _ = self.pv.local_from_lonlat(rp[:, 0], rp[:, 1])
        for j, i in enumerate(idx):
            v = self.pv.villages[vill[i]]
            lb = f"{int(x[j] // LIN_BAN) % 1000:03d}"
            key = (v["tcode"], lb)
            self.numbers[key] = self.numbers.get(key, 0) + 1
            xb = f"{self.numbers[key] % 10000:04d}"
            ha = round(float(tbmj[i]) / 10000.0, 4)
            rec = dict(XIAN=self.pv.codes[self.c], XIANG=v["tcode"], CUN=v["code"], LIN_BAN=lb, XIAO_BAN=xb,
                       XBH=f"{v['tcode']}{lb}{xb}", DLBM=dl[i], BSM_DLTB=bsm[i])
            rec.update(_inventory(dl[i], float(elev[i]), False, self.rng.random(8), ha))
            self.recs.append(rec)
            self.geoms.append(ll[i])
        if len(self.recs) >= BATCH:
            self._append()

    def _append(self) -> None:
        """Write the records gathered so far (a batch: GDAL's per-call cost is high)."""
        import geopandas as gpd
        from pyogrio import write_dataframe

        gdf = gpd.GeoDataFrame(self.recs, geometry=self.geoms, crs=f"EPSG:{EPSG_GEO}")
        write_dataframe(gdf, self.path, layer="XB", driver="GPKG", promote_to_multi=True,
                        geometry_type="MultiPolygon", append=self.n > 0)
        self.n += len(self.recs)
        self.recs, self.geoms = [], []

    def close(self) -> int:
        if self.recs:
            self._append()
        if self.n == 0:
            write_gpkg(self.path, "XB", [], [])
        return self.n


def _write_water(pv: Province, c: int, d: Path) -> tuple[int, int]:
    """water.geojson (the water areas inside the county) and rivers.geojson (centre lines)."""
    code, county = pv.codes[c], pv.counties[c]
    wf = []
    for k, (kind, name, g) in enumerate(pv.water):
        part = shapely.intersection(g, county, grid_size=0.001)
        if part.is_empty or part.area < 1.0:
            continue
        gl = pv.gk_to_geo(pv.to_gk(part))
        props = dict(BSM=f"{code}4{k + 1:011d}", XZQDM=code, HYDC=f"AFD{k:04d}", NAME=name, TYPE=kind,
                     DLBM="1102" if kind == "lake" else "1101", AREA_M2=round(geod_area(gl), 2))
        wf.append({"type": "Feature", "properties": props, "geometry": geojson_geom(gl)})
    write_geojson(d / "water.geojson", "water", wf)
    rf = []
    for k, (name, line, grade) in enumerate(pv.river_lines):
        part = shapely.intersection(line, county)
        if part.is_empty or part.length < 1.0:
            continue
        gl = pv.gk_to_geo(pv.to_gk(part))
        m = shapely.geometry.mapping(gl)
        rf.append({"type": "Feature", "properties": dict(BSM=f"{code}5{k + 1:011d}", XZQDM=code, HYDC=f"AFD{k:04d}",
                                                          NAME=name, GRADE=grade, BAS="AFD",
                                                          LENGTH_M=round(GEOD.geometry_length(gl), 2)),
                   "geometry": {"type": m["type"], "coordinates": round_coords(m["coordinates"])}})
    write_geojson(d / "rivers.geojson", "rivers", rf)
    return len(wf), len(rf)


def _parts(geom) -> list:
    """polygon parts of ``geom`` with area, north to south then west to east"""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and p.area > 0]
    return sorted(parts, key=lambda g: (-round(g.centroid.y, 1), round(g.centroid.x, 1)))


def _write_planning(pv: Province, c: int, d: Path) -> tuple[int, int]:
    """planning.gdb.zip: GHFQ (the zones of the county, one feature per part) and KZX (red line
    = 010, basic farmland = 030, urban boundary = 041)."""
    code, name, zones = pv.codes[c], pv.names[c], pv.zones[c]
    ghfq, ghfq_g, kzx, kzx_g = [], [], [], []
    for zc in sorted(zones):
        for p in _parts(zones[zc]):
            gl = pv.gk_to_geo(pv.to_gk(p))
            ghfq.append(dict(BSM=f"{code}2{len(ghfq) + 1:011d}", XZQDM=code, XZQMC=name, GHFQDM=zc,
                             GHFQMC=GHFQ_CODES[zc], MJ=round(geod_area(gl), 2)))
            ghfq_g.append(gl)
    for kind, zc in (("STBHHX", "010"), ("YJJBNT", "030"), ("CZKFBJ", "041")):
        for p in _parts(zones.get(zc, shapely.Polygon())):
            gl = pv.gk_to_geo(pv.to_gk(p))
            kzx.append(dict(BSM=f"{code}3{len(kzx) + 1:011d}", KZXLX=kind, KZXMC=name + KZX_CODES[kind],
                            XZQDM=code, MJ=round(geod_area(gl), 2)))
            kzx_g.append(gl)
    _write_gdb(d, [("GHFQ", ghfq, ghfq_g), ("KZX", kzx, kzx_g)])
    return len(ghfq), len(kzx)


def _write_admin(pv: Province, c: int, d: Path) -> int:
    """admin.gpkg layer XZQ: the county, then its townships, with ellipsoidal areas."""
    county_ll = pv.gk_to_geo(pv.to_gk(pv.counties[c]))
    recs = [dict(XZQDM=pv.codes[c], XZQMC=pv.names[c], JB="county", MJ=round(geod_area(county_ll), 2))]
    geoms = [county_ll]
    for t in pv.townships:
        if t["county"] == c:
            g = pv.gk_to_geo(pv.to_gk(t["geom"]))
            recs.append(dict(XZQDM=t["code"], XZQMC=t["name"], JB="township", MJ=round(geod_area(g), 2)))
            geoms.append(g)
    write_gpkg(d / "admin.gpkg", "XZQ", recs, geoms)
    return len(recs)

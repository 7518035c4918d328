"""Deterministic generator of a realistic synthetic Chinese county (示范县, XZQDM 339901).

Writes into ``out_dir``:

* ``DLTB.zip``       land-use parcels (地类图斑), zipped GBK Shapefile, EPSG:4527 (zone-prefixed eastings)
* ``forest.gpkg``    layer ``XB`` forest sub-compartments (森林资源小班), EPSG:4490
* ``water.geojson``  water areas (rivers, lake, reservoir, ponds, canal), RFC 7946
* ``rivers.geojson`` river centre lines, RFC 7946
* ``planning.gdb.zip`` zipped FileGDB with layers ``GHFQ`` (规划分区) and ``KZX`` (三区三线), EPSG:4490
* ``admin.gpkg``     layer ``XZQ`` county + 6 townships, EPSG:4490
* ``dem.tif``        1 arc-second float32 DEM, EPSG:4490
* ``imagery_<date>.tif`` a three-date 6-band imagery series (``imagery``: planted idle/converted farmland)
* ``demo_site.geojson`` the proposed-project polygon of the site-check demo
* ``manifest.json``  parameters, checksums, counts, code lists, analysis rules and planted facts

Everything is a pure function of ``(seed, parcels)``: same arguments give byte-identical files.
All geometry is built in EPSG:4527 metres (a local frame offset by an integer origin) and transformed with
pyproj (``always_xy=True``) where another CRS is needed.  Parcels are produced block by block (a Voronoi
diagram of density-weighted random points; every block sees the points of its neighbours, so the cells are
the cells of one global diagram) and streamed to a hand-written Shapefile writer, so memory stays flat.

This module is the orchestration and the command line; the parts live beside it: ``world`` (terrain),
``admin`` (outline, villages, townships), ``water`` (rivers, lakes, ponds, roads), ``planning`` (zones,
control lines, planted conflicts), ``parcels`` + ``landuse`` (DLTB), ``forest`` (XB), ``deliveries`` (the
other layers), ``writers`` (file formats), ``manifest``; ``codes`` and ``geo`` are shared by all.

Run: ``python -m geobase.sample_data.generate --parcels 8000 --seed 20261122 --out DIR``
(or ``geobase sample generate``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from geobase.sample_data.admin import build_admin
from geobase.sample_data.codes import DLTB_FIELDS, EPSG_GEO, EPSG_GK
from geobase.sample_data.deliveries import (
    write_admin, write_demo_site, write_planning, write_rivers, write_water,
)
from geobase.sample_data.forest import write_forest
from geobase.sample_data.imagery import write_imagery
from geobase.sample_data.manifest import write_manifest
from geobase.sample_data.parcels import ParcelGenerator
from geobase.sample_data.planning import build_planning
from geobase.sample_data.water import build_water_and_roads
from geobase.sample_data.world import World
from geobase.sample_data.writers import ShapefileWriter, gdal_config, write_dem, zip_deterministic

CRS84, GEOJSON = "OGC:CRS84", "GeoJSON (RFC 7946)"
DLTB_PARTS = [f"DLTB{s}" for s in (".shp", ".shx", ".dbf", ".prj", ".cpg")]


def build_world(seed: int) -> World:
    """Everything that does not depend on the parcel count, built in a fixed order (each part
    reads the ones before it and draws from its own random stream)."""
    w = World(seed)
    build_admin(w)
    build_water_and_roads(w)
    build_planning(w)
    return w


def generate(out_dir: Path, *, parcels: int = 8000, seed: int = 20261122,
             progress: Callable[[int, int], None] | None = None, zip_dltb: bool = True) -> dict:
    """Generate the synthetic county into ``out_dir``; returns the manifest (also manifest.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old_cfg = gdal_config()
    t0 = time.time()
    try:
        w = build_world(seed)
        pg, files = _write_dltb(w, out_dir, parcels, seed, progress, zip_dltb)
        n_stands = write_forest(w, pg, out_dir / "forest.gpkg", seed)
        files["forest.gpkg"] = dict(crs=f"EPSG:{EPSG_GEO}", format="GPKG", layers={"XB": n_stands})
        n_water = write_water(w, out_dir)
        files["water.geojson"] = dict(crs=CRS84, format=GEOJSON, layers={"water": n_water})
        n_rivers = write_rivers(w, out_dir)
        files["rivers.geojson"] = dict(crs=CRS84, format=GEOJSON, layers={"rivers": n_rivers})
        plan_info = write_planning(w, out_dir)
        files["planning.gdb.zip"] = dict(crs=f"EPSG:{EPSG_GEO}", format="OpenFileGDB (zipped)",
                                         layers={"GHFQ": plan_info["n_ghfq"], "KZX": plan_info["n_kzx"]})
        recs = write_admin(w, out_dir)
        files["admin.gpkg"] = dict(crs=f"EPSG:{EPSG_GEO}", format="GPKG", layers={"XZQ": len(recs)})
        dem_info = write_dem(w, out_dir / "dem.tif")
        files["dem.tif"] = dict(crs=f"EPSG:{EPSG_GEO}",
                                format="GeoTIFF float32 DEFLATE predictor 3, 256x256 tiles",
                                size=[dem_info["width"], dem_info["height"]], pixel_deg=1 / 3600,
                                nodata=-9999.0)
        img_files, img_section = write_imagery(out_dir, out_dir / next(iter(files)), seed)
        files.update(img_files)
        demo_feat = write_demo_site(w, out_dir)
        files["demo_site.geojson"] = dict(crs=CRS84, format=GEOJSON, layers={"demo_site": 1})
        counts = dict(DLTB=pg.bsm, XB=n_stands, water=n_water, rivers=n_rivers, GHFQ=plan_info["n_ghfq"],
                      KZX=plan_info["n_kzx"], XZQ=len(recs))
        manifest = write_manifest(out_dir, w, pg, seed=seed, parcels=parcels, files=files, counts=counts,
                                  admin_recs=recs, plan_info=plan_info, demo_feat=demo_feat,
                                  imagery=img_section)
        manifest["_elapsed_s"] = round(time.time() - t0, 2)
        return manifest
    finally:
        import pyogrio
        pyogrio.set_gdal_config_options(old_cfg)


def _write_dltb(w: World, out_dir: Path, parcels: int, seed: int, progress, zip_dltb: bool):
    """DLTB as a zipped Shapefile (or a DLTB/ folder); returns the parcel generator and the files entry."""
    tmp = out_dir / ("DLTB" if not zip_dltb else ".DLTB.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    writer = ShapefileWriter(tmp / "DLTB", DLTB_FIELDS)
    pg = ParcelGenerator(w, parcels, seed)
    pg.run(writer, progress)
    writer.close()
    files = {}
    if zip_dltb:
        zip_deterministic(out_dir / "DLTB.zip", tmp, DLTB_PARTS)
        shutil.rmtree(tmp)
        files["DLTB.zip"] = dict(crs=f"EPSG:{EPSG_GK}", format="ESRI Shapefile (zipped), GBK",
                                 layers={"DLTB": pg.bsm})
    else:
        files["DLTB/DLTB.shp"] = dict(crs=f"EPSG:{EPSG_GK}", format="ESRI Shapefile, GBK",
                                      layers={"DLTB": pg.bsm})
    return pg, files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate the synthetic county 示范县 (339901).")
    ap.add_argument("--parcels", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "county")
    ap.add_argument("--no-zip", action="store_true", help="write DLTB/ as an unzipped shapefile folder")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)

    def prog(i, n):
        if not a.quiet and (i == n or i % max(1, n // 20) == 0):
            print(f"  blocks {i}/{n}", file=sys.stderr, flush=True)

    m = generate(a.out, parcels=a.parcels, seed=a.seed, progress=prog, zip_dltb=not a.no_zip)
    print(json.dumps(dict(out=str(a.out), counts=m["counts"], elapsed_s=m["_elapsed_s"],
                          steep_farmland=len(m["steep_farmland"]),
                          share=m["landuse_share_first_level"]), ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The county's layers other than DLTB and forest, as an authority would deliver them: water areas
and river centre lines (GeoJSON), planning zones and control lines (a zipped FileGDB),
administrative divisions (GeoPackage) and the demo site (GeoJSON), all in EPSG:4490 / CRS84.

Each writer returns what the manifest records about its file (counts, planted facts)."""
from __future__ import annotations

import shutil
from pathlib import Path

import shapely
import shapely.geometry

from geobase.sample_data.codes import EPSG_GEO, GHFQ_CODES, KZX_CODES, XZQDM, XZQMC
from geobase.sample_data.geo import GEOD, geo_geoms, geod_area
from geobase.sample_data.world import World
from geobase.sample_data.writers import (
    geojson_geom, round_coords, write_geojson, write_gpkg, zip_deterministic,
)

WATER_DLBM = {"river": "1101", "lake": "1102", "reservoir": "1103", "pond": "1104", "canal": "1107"}


def write_water(w: World, out_dir: Path) -> int:
    """water.geojson: one feature per named water cut-out (ponds stay separate); returns the count."""
    wf = []
    for code, g, feat in w.cuts:
        if feat is None:
            continue
        gl = geo_geoms(g)
        props = dict(feat)
        props["DLBM"] = WATER_DLBM[feat["TYPE"]]
        props["AREA_M2"] = round(geod_area(gl), 2)
        wf.append({"type": "Feature", "properties": props, "geometry": geojson_geom(gl)})
    write_geojson(out_dir / "water.geojson", "water", wf)
    return len(wf)


def write_rivers(w: World, out_dir: Path) -> int:
    """rivers.geojson: river centre lines with their geodesic lengths; returns the count."""
    rf = []
    for rl in w.river_lines:
        gl = geo_geoms(rl["line"])
        if gl.geom_type == "MultiLineString" and len(gl.geoms) == 1:
            gl = gl.geoms[0]
        props = dict(HYDC=rl["HYDC"], NAME=rl["NAME"], GRADE=rl["GRADE"], BAS=rl["BAS"],
                     LENGTH_M=round(GEOD.geometry_length(gl), 2))
        m = shapely.geometry.mapping(gl)
        rf.append({"type": "Feature", "properties": props,
                   "geometry": {"type": m["type"], "coordinates": round_coords(m["coordinates"])}})
    write_geojson(out_dir / "rivers.geojson", "rivers", rf)
    return len(rf)


def write_admin(w: World, out_dir: Path) -> list[dict]:
    """admin.gpkg layer XZQ: the county then its townships, with ellipsoidal areas; returns the records."""
    recs, gl = [], []
    county_ll = geo_geoms(w.county)
    recs.append(dict(XZQDM=XZQDM, XZQMC=XZQMC, JB="county", MJ=round(geod_area(county_ll), 2)))
    gl.append(county_ll)
    for t in w.townships:
        g = geo_geoms(t["geom"])
        recs.append(dict(XZQDM=t["code"], XZQMC=t["name"], JB="township", MJ=round(geod_area(g), 2)))
        gl.append(g)
    write_gpkg(out_dir / "admin.gpkg", "XZQ", recs, gl)
    return recs


def write_demo_site(w: World, out_dir: Path) -> dict:
    """demo_site.geojson: the proposed project of the site-check demo; returns its feature."""
    demo_ll = geo_geoms(w.demo_site)
    props = {"name": "示范县城北物流园（拟建）", "area_m2": round(geod_area(demo_ll), 2)}
    demo_feat = {"type": "Feature", "properties": props, "geometry": geojson_geom(demo_ll, multi=False)}
    write_geojson(out_dir / "demo_site.geojson", "demo_site", [demo_feat])
    return demo_feat


def _parts_north_to_south(geom) -> list:
    """polygon parts of ``geom`` with positive area, north to south then west to east"""
    parts = sorted(shapely.get_parts(geom), key=lambda g: (-round(g.centroid.y, 1), round(g.centroid.x, 1)))
    return [p for p in parts if p.geom_type == "Polygon" and p.area > 0]


def write_planning(w: World, out_dir: Path) -> dict:
    """planning.gdb.zip with layers GHFQ (zones) and KZX (control lines), and the facts about them
    the manifest lists: counts, the BSMs and areas of the planted conflicts, zone areas."""
    ghfq_recs, ghfq_geoms = [], []
    n = 0
    for code in sorted(w.zones):
        for p in _parts_north_to_south(w.zones[code]):
            n += 1
            gl = geo_geoms(p)
            ghfq_recs.append(dict(BSM=f"{XZQDM}2{n:011d}", XZQDM=XZQDM, XZQMC=XZQMC, GHFQDM=code,
                                  GHFQMC=GHFQ_CODES[code], MJ=round(geod_area(gl), 2)))
            ghfq_geoms.append(gl)
    kzx_recs, kzx_geoms, kzx_local = [], [], []
    n = 0
    for kind, geom in (("STBHHX", w.stbhhx), ("YJJBNT", w.yjjbnt), ("CZKFBJ", w.czkfbj)):
        for p in _parts_north_to_south(geom):
            n += 1
            gl = geo_geoms(p)
            kzx_recs.append(dict(BSM=f"{XZQDM}3{n:011d}", KZXLX=kind, KZXMC=XZQMC + KZX_CODES[kind],
                                 XZQDM=XZQDM, MJ=round(geod_area(gl), 2)))
            kzx_geoms.append(gl)
            kzx_local.append(p)
    _write_gdb(out_dir, [("GHFQ", ghfq_recs, ghfq_geoms), ("KZX", kzx_recs, kzx_geoms)])
    facts = _planted_planning_facts(w, kzx_recs, kzx_local)
    manifest = dict(planning=dict(
        GHFQ_rule="GHFQ is an exact coverage of the county; codes in code_lists.GHFQDM (our own list).",
        KZX_rule="STBHHX = GHFQ 010 plus the C4 patch; YJJBNT = GHFQ 030; "
                 "CZKFBJ = GHFQ 041+042+043 plus the C2 patch.",
        zone_area_m2={c: round(geod_area(geo_geoms(w.zones[c])), 2) for c in sorted(w.zones)},
    ))
    return dict(n_ghfq=len(ghfq_recs), n_kzx=len(kzx_recs), **facts,
                ghfq041=[r["BSM"] for r in ghfq_recs if r["GHFQDM"] == "041"], manifest=manifest)


def _write_gdb(out_dir: Path, layers: list[tuple[str, list, list]]) -> None:
    """Zipped FileGDB planning.gdb.zip of MultiPolygon layers (name, records, lon/lat geometries)."""
    import geopandas as gpd
    from pyogrio import write_dataframe
    tmp = out_dir / ".planning.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    gdb = tmp / "planning.gdb"
    for name, recs, geoms in layers:
        write_dataframe(gpd.GeoDataFrame(recs, geometry=geoms, crs=f"EPSG:{EPSG_GEO}"), gdb, layer=name,
                        driver="OpenFileGDB", promote_to_multi=True, geometry_type="MultiPolygon")
    names = ["planning.gdb/"] + [f"planning.gdb/{f.name}" for f in sorted(gdb.iterdir())]
    zip_deterministic(out_dir / "planning.gdb.zip", tmp, names)
    shutil.rmtree(tmp)


def _planted_planning_facts(w: World, kzx_recs: list[dict], kzx_local: list) -> dict:
    """KZX BSMs of conflicts C2 (urban boundary over basic farmland), C4 (red line over urban
    boundary) with their areas, and of the red-line features holding the C1 construction sites."""

    def bsm_hit(kind, geom):
        out = []
        for r, g in zip(kzx_recs, kzx_local):
            if r["KZXLX"] == kind and g.intersects(geom) and g.intersection(geom).area > 1.0:
                out.append(r["BSM"])
        return out

    c2_geom = shapely.intersection(w.czkfbj, w.yjjbnt, grid_size=0.001)
    c4_geom = shapely.intersection(w.stbhhx, w.czkfbj, grid_size=0.001)
    pts = shapely.points([(a[0], a[1]) for a in w.plant_a])
    c1 = [r["BSM"] for r, g in zip(kzx_recs, kzx_local)
          if r["KZXLX"] == "STBHHX" and shapely.intersects(g, pts).any()]
    return dict(c2=bsm_hit("CZKFBJ", c2_geom) + bsm_hit("YJJBNT", c2_geom),
                c2_area=round(geod_area(geo_geoms(c2_geom)), 2),
                c4=bsm_hit("STBHHX", c4_geom) + bsm_hit("CZKFBJ", c4_geom),
                c4_area=round(geod_area(geo_geoms(c4_geom)), 2), c1_kzx_bsm=c1)

"""manifest.json of the synthetic county: parameters, per-file checksums, counts, land-use
statistics, code lists, notes on how values were computed, and the planted facts (conflicts C1-C4,
steep farmland, the demo site) that the analysis tests check the service against.

The key order is part of the committed bytes: keep it."""
from __future__ import annotations

import json
from pathlib import Path

import shapely

from geobase.sample_data.codes import (
    BH_DJ, CONSTRUCTION, FARMLAND, FIRST_LEVEL, FOREST, FOREST_DI_LEI, GB21010, GENERATOR_VERSION, GHFQ_CODES,
    KZX_CODES, LIN_ZHONG, LING_ZU, QI_YUAN, SEN_LIN_LB, SPECIES, XZQDM, XZQMC,
)
from geobase.sample_data.parcels import ParcelGenerator
from geobase.sample_data.world import World
from geobase.sample_data.writers import sha256

NOTES = dict(
    DLTB="TBMJ = ellipsoidal area (pyproj Geod GRS80) of the parcel in lon/lat, 0.01 m2; "
         "KCMJ = round(TBMJ*KCXS,2); TBDLMJ = TBMJ-KCMJ. "
         "Parcels form an exact coverage of the county outline (XZQ JB=county). "
         "Coordinates rounded to 1 mm in EPSG:4527.",
    slope="GDPDJB from the mean slope of the parcel (4x4 sample grid + representative point) of the same "
          "elevation function that dem.tif samples; grades 1 <=2, 2 2-6, 3 6-15, 4 15-25, 5 >25 degrees.",
    XB="Stands = dissolved groups of adjacent forest parcels (same village, same DLBM); MIAN_JI in hectares "
       "(ellipsoidal), XIAOBAN_XJ = MEI_GQ_XJ * MIAN_JI.",
    water="water.geojson polygons are exactly the areas from which the DLTB 1101/1102/1103/1104/1107 parcels "
          "were cut (union of those parcels == water.geojson up to coordinate rounding).",
)

ANALYSIS_GUARANTEES = [
    "Apart from C2 and C4 the three KZX kinds do not overlap each other (overlap area 0 up to 1 m2).",
    "No DLTB parcel with a construction DLBM intersects STBHHX with area > 1 m2 except those of C1.",
    "No DLTB parcel with a forest DLBM intersects GHFQ 041 with area > 1 m2 except those of C3.",
    "steep_farmland lists every DLTB farmland (0101/0102/0103) parcel whose mean slope exceeds 25 degrees "
    "(all planted on three steep hills, each with mean slope >= 27 and minimum sampled slope >= 25.5).",
]


def write_manifest(out_dir: Path, w: World, pg: ParcelGenerator, *, seed: int, parcels: int, files: dict,
                   counts: dict, admin_recs: list[dict], plan_info: dict, demo_feat: dict,
                   imagery: dict | None = None) -> dict:
    """Assemble the manifest, checksum every file in ``files`` and write manifest.json; returns it."""
    manifest = dict(
        name="示范县 synthetic county", generator="geobase.sample_data.generate",
        generator_version=GENERATOR_VERSION,
        parameters=dict(seed=seed, parcels=parcels),
        county=dict(XZQDM=XZQDM, XZQMC=XZQMC, area_m2_ellipsoidal=admin_recs[0]["MJ"],
                    area_m2_planar_epsg4527=round(shapely.area(w.county), 3),
                    townships=[dict(XZQDM=t["code"], XZQMC=t["name"]) for t in w.townships],
                    villages=[dict(code=v["code"], name=v["name"], township=v["tcode"]) for v in w.villages]),
        files={},
        counts=counts,
        **_land_use_statistics(pg),
        code_lists=_code_lists(),
        notes=NOTES,
        **plan_info["manifest"],
        steep_farmland=sorted(pg.steep),
    )
    manifest["conflicts"] = _conflicts(pg, plan_info)
    manifest["analysis_guarantees"] = ANALYSIS_GUARANTEES
    manifest["demo_site"] = dict(file="demo_site.geojson", feature=demo_feat,
                                 description="proposed project polygon touching farmland, forest, YJJBNT and "
                                             "partly outside CZKFBJ")
    if imagery is not None:
        manifest["imagery"] = imagery
    for name in sorted(files):
        p = out_dir / name
        entry = dict(files[name])
        if p.exists():
            entry["sha256"] = sha256(p)
            entry["bytes"] = p.stat().st_size
        manifest["files"][name] = entry
    (out_dir / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n",
                                           encoding="utf-8")
    return manifest


def _land_use_statistics(pg: ParcelGenerator) -> dict:
    """DLTB counts and areas per class, and the share of each first-level class in the total."""
    total = sum(pg.stats_area.values())
    share1: dict[str, float] = {}
    for c, a in pg.stats_area.items():
        share1[c[:2]] = share1.get(c[:2], 0.0) + a
    return dict(
        dltb_count_by_dlbm={c: pg.stats_count[c] for c in sorted(pg.stats_count)},
        landuse_area_m2_by_dlbm={c: round(pg.stats_area[c], 2) for c in sorted(pg.stats_area)},
        landuse_share_first_level={c: dict(name=FIRST_LEVEL[c], share=round(share1[c] / total, 5))
                                   for c in sorted(share1)},
    )


def _code_lists() -> dict:
    return dict(DLBM_GB_T_21010_2017=GB21010, GHFQDM=GHFQ_CODES, KZXLX=KZX_CODES,
                XB_DI_LEI=FOREST_DI_LEI, XB_LIN_ZHONG=LIN_ZHONG, XB_SEN_LIN_LB=SEN_LIN_LB,
                XB_QI_YUAN=QI_YUAN, XB_YOU_SHI_SZ=SPECIES, XB_LING_ZU=LING_ZU, XB_BH_DJ=BH_DJ,
                CZCSXM={"201": "城市", "202": "建制镇", "203": "村庄"},
                construction_dlbm=list(CONSTRUCTION), forest_dlbm=list(FOREST), farmland_dlbm=list(FARMLAND))


def _conflicts(pg: ParcelGenerator, plan_info: dict) -> list[dict]:
    """The planted conflicts C1-C4: the rule each breaks and exactly the features that break it."""
    return [
        dict(id="C1", rule="construction_in_ecological_red_line",
             description="DLTB parcels with DLBM in code_lists.construction_dlbm whose intersection "
                         "with a KZX feature KZXLX='STBHHX' has area > 1 m2",
             dltb_bsm=sorted(pg.planted["a"]), kzx_bsm=plan_info["c1_kzx_bsm"]),
        dict(id="C2", rule="urban_boundary_overlaps_basic_farmland",
             description="intersection of KZX KZXLX='CZKFBJ' and KZX KZXLX='YJJBNT' with area > 1 m2",
             kzx_bsm=plan_info["c2"], area_m2=plan_info["c2_area"]),
        dict(id="C3", rule="forest_in_planned_construction_zone",
             description="DLTB parcels with DLBM in code_lists.forest_dlbm whose intersection with GHFQ "
                         "GHFQDM='041' has area > 1 m2 (one entry per patch)",
             patches=[dict(dltb_bsm=sorted(pg.planted["c0"])), dict(dltb_bsm=sorted(pg.planted["c1"]))],
             ghfq_bsm=plan_info["ghfq041"]),
        dict(id="C4", rule="red_line_overlaps_urban_boundary",
             description="intersection of KZX KZXLX='STBHHX' and KZX KZXLX='CZKFBJ' with area > 1 m2",
             kzx_bsm=plan_info["c4"], area_m2=plan_info["c4_area"]),
    ]

"""Land-use classification of one block's parcels (GB/T 21010-2017 DLBM).

A parcel's class is drawn from a weighted table chosen by its terrain (valley floor, slopes,
steep land, summits), then overridden by settlements (villages, the town's core, outer ring and
industry), the quarry and the water/road cut-outs; finally the planted facts are placed
(steep farmland on the planting hills, forest patches in zone 041, construction in the red line)
and every other parcel is kept clear of the conflicts the manifest promises not to contain."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from geobase.sample_data.codes import CONSTRUCTION, FARMLAND, FOREST
from geobase.sample_data.geo import OX, OY, phi
from geobase.sample_data.world import World

# class tables: (DLBM, weight)
TOWN_CORE = [("0701", 40), ("0501", 14), ("0505", 9), ("0801", 7), ("0803", 5), ("1004", 13), ("0810", 5),
             ("0805", 2), ("0807", 2), ("0504", 3)]
TOWN_OUTER = [("0701", 42), ("1004", 10), ("0803", 5), ("0810", 5), ("0809", 3), ("0805", 2), ("1201", 3),
              ("0604", 3), ("0808", 2), ("0501", 5), ("1005", 2), ("0806", 1), ("0601", 17)]
TOWN_INDUSTRY = [("0601", 70), ("0604", 15), ("1004", 8), ("0809", 4), ("1201", 3)]
VILLAGE = [("0702", 68), ("1006", 5), ("0803", 3), ("1202", 5), ("0801", 2), ("0904", 1), ("0601", 4),
           ("0101", 5), ("0810", 1), ("0905", 1), ("0201", 2)]
VALLEY = [("0101", 70), ("0102", 6), ("0103", 6), ("1202", 3), ("1203", 1), ("0201", 3),
          ("0404", 2), ("0307", 3), ("0301", 3), ("0702", 2), ("1006", 1)]
MID = [("0103", 19), ("0101", 4), ("0201", 4), ("0202", 6), ("0404", 6), ("0307", 6), ("0305", 4),
       ("0302", 9), ("0301", 40)]
SLOPE = [("0202", 6), ("0201", 2), ("0103", 5), ("0404", 7), ("0307", 6), ("0305", 9), ("0302", 11),
         ("0301", 51)]
STEEP = [("0305", 14), ("0307", 5), ("0302", 6), ("0301", 75)]
TOP = [("1207", 14), ("1206", 8), ("0404", 20), ("0305", 28), ("0301", 30)]


def choose(q, table):
    """table: list of (code, weight); q uniform [0,1) -> code array"""
    codes = np.array([c for c, _ in table])
    w = np.array([p for _, p in table], dtype=float)
    cum = np.cumsum(w) / w.sum()
    return codes[np.minimum(np.searchsorted(cum, q, side="right"), len(codes) - 1)]


@dataclass
class Classes:
    """The land use of one block's parcels and the facts about them the manifest records."""

    dlbm: np.ndarray      # DLBM per parcel (object array of str)
    czcs: np.ndarray      # CZCSXM: "202" town, "203" village, "" elsewhere
    intown: np.ndarray    # inside the county town (state-owned construction land)
    planted: np.ndarray   # any planted fact (steep farmland, forest patch, red-line construction)
    plant_a: np.ndarray   # planted construction inside the red line (conflict C1)
    plant_c: np.ndarray   # index of the planted forest patch in zone 041 (conflict C3), -1 if none


def classify(w: World, geoms, cut, rx, ry, slope, slope_min, elev, u, u2) -> Classes:
    """Classes of the parcels ``geoms`` (EPSG:4527) with representative points (rx, ry) in the local
    frame, their mean/min slope and elevation, cut-out index (-1: land) and two uniform draws."""
    n = len(geoms)
    dlbm = _terrain_classes(w, rx, ry, slope, elev, u)
    czcs, intown, invill = _settlement_classes(w, dlbm, rx, ry, u, n)
    # cut-outs keep their class
    iscut = cut >= 0
    dlbm[iscut] = np.array([w.cut_codes[c] for c in cut[iscut]], dtype=object)
    land = ~iscut
    planted = _plant_steep_farmland(w, dlbm, land & ~intown & ~invill, rx, ry, slope, slope_min, u2)
    # non-planted farmland must not be steeper than 24 degrees
    isfarm = np.isin(dlbm, FARMLAND)
    m = isfarm & ~planted & (slope > 24.0)
    dlbm[m] = np.where(u2[m] < 0.7, "0301", "0305")
    plant_c = _plant_forest_patches(w, geoms, dlbm, land, rx, ry)
    planted |= plant_c >= 0
    # (a) planted construction parcels deep inside the red line
    plant_a = np.zeros(n, bool)
    for (ax, ay, code) in w.plant_a:
        m = land & shapely.contains_xy(geoms, ax + OX, ay + OY)
        dlbm[m] = code
        plant_a |= m
    planted |= plant_a
    _keep_conflicts_planted_only(w, geoms, dlbm, planted, plant_a)
    return Classes(dlbm, czcs, intown, planted, plant_a, plant_c)


def _terrain_classes(w: World, rx, ry, slope, elev, u) -> np.ndarray:
    """Classes by terrain: valley floor, mid slopes, slopes, steep land, summits."""
    n = len(rx)
    nl = phi(w.noise_lu(rx, ry))
    q = np.clip(0.65 * nl + 0.35 * u, 0, 0.999999)
    dlbm = np.empty(n, dtype=object)
    dlbm[:] = choose(q, MID)
    valley = (elev < 160) & (slope < 6)
    dlbm[valley] = choose(q[valley], VALLEY)
    m = (slope >= 12) & ~valley
    dlbm[m] = choose(q[m], SLOPE)
    m = slope >= 20
    dlbm[m] = choose(q[m], STEEP)
    m = elev > 740
    dlbm[m] = choose(q[m], TOP)
    return dlbm


def _settlement_classes(w: World, dlbm, rx, ry, u, n):
    """Villages, the town (core, outer ring, industry to the east) and the quarry override the
    terrain classes; returns (CZCSXM, in town, in a village)."""
    czcs = np.full(n, "", dtype=object)
    dv = np.hypot(rx[:, None] - w.cl_x[None, :-1], ry[:, None] - w.cl_y[None, :-1])
    near = np.argmin(dv / w.cl_r[None, :-1], axis=1)
    rel = dv[np.arange(n), near] / w.cl_r[near] * (1 + 0.12 * w.noise_lu2(rx, ry))
    invill = rel < 1.0
    dlbm[invill] = choose(u[invill], VILLAGE)
    czcs[invill] = np.where(w.cl_kind[near[invill]] == 1, "202", "203")
    tx, ty = w.town
    dt = np.hypot(rx - tx, ry - ty) / (1650 * (1 + 0.1 * w.noise_lu2(rx, ry)))
    intown = dt < 1.0
    core = dt < 0.45
    ang = np.arctan2(ry - ty, rx - tx)
    industry = intown & ~core & (np.cos(ang - 0.3) > 0.55)
    dlbm[intown] = choose(u[intown], TOWN_OUTER)
    dlbm[core] = choose(u[core], TOWN_CORE)
    dlbm[industry] = choose(u[industry], TOWN_INDUSTRY)
    czcs[intown] = "202"
    qx, qy = w.quarry
    mq = np.hypot(rx - qx, ry - qy) < 260
    dlbm[mq] = "0602"
    return czcs, intown, invill


def _plant_steep_farmland(w: World, dlbm, free, rx, ry, slope, slope_min, u2) -> np.ndarray:
    """Steep farmland (> 25 degrees everywhere sampled) planted on the planting hills' upper faces;
    ``free`` = land outside settlements.  Returns the planted mask."""
    planted = np.zeros(len(dlbm), bool)
    for cx, cy, *_ in w.plant_hills:
        ang_h = np.arctan2(ry - cy, rx - cx)
        m = free & (np.hypot(rx - cx, ry - cy) < 900) & (np.sin(ang_h) > -0.6) & (slope >= 27.0) & \
            (slope_min >= 25.5)
        dlbm[m] = np.where(u2[m] < 0.15, "0101", "0103")
        planted |= m
    return planted


def _plant_forest_patches(w: World, geoms, dlbm, land, rx, ry) -> np.ndarray:
    """(c) forest parcels of the planted patches inside zone 041; returns the patch index or -1."""
    plant_c = np.full(len(dlbm), -1)
    for pc, (cx, cy, r) in enumerate(w.patch_c):
        m = land & ((np.hypot(rx - cx, ry - cy) < r) | shapely.contains_xy(geoms, cx + OX, cy + OY))
        if m.any():
            m[m] &= shapely.within(geoms[m], w.zones_gk["041"])
        dlbm[m] = "0301"
        plant_c[m] = pc
    return plant_c


def _keep_conflicts_planted_only(w: World, geoms, dlbm, planted, plant_a) -> None:
    """Forest land must not intersect zone 041 and construction land not the red line, except the
    planted parcels: reclassify the others (grass, forest)."""
    isfor = np.isin(dlbm, FOREST) & ~planted
    if isfor.any():
        idx = np.flatnonzero(isfor)
        hit = shapely.intersects(geoms[idx], w.zones_gk["041"])
        idx = idx[hit]
        if len(idx):
            ar = shapely.area(shapely.intersection(geoms[idx], w.zones_gk["041"]))
            idx = idx[ar > 0]
            dlbm[idx] = "0404"
    iscon = np.isin(dlbm, CONSTRUCTION) & ~plant_a
    if iscon.any():
        idx = np.flatnonzero(iscon)
        hit = shapely.intersects(geoms[idx], w.stbhhx_gk)
        idx = idx[hit]
        if len(idx):
            ar = shapely.area(shapely.intersection(geoms[idx], w.stbhhx_gk))
            idx = idx[ar > 0]
            dlbm[idx] = "0301"

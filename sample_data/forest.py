"""Forest sub-compartments (森林资源小班, layer XB of forest.gpkg) of the synthetic county.

Stands are dissolved groups of adjacent forest parcels (same village, same DLBM, same noise-warped
grid cell, collected by the parcel generator), so the forest layer agrees with DLTB; they are
numbered by forest compartment (林班, a 1.6 km grid per township) and sub-compartment (小班, north
to south, west to east), and get inventory attributes from their class, elevation and whether
they lie in the ecological red line."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import shapely

from geobase.sample_data.codes import SPECIES, XZQDM
from geobase.sample_data.geo import OX, OY, geod_area, gk_to_geo, make_rng
from geobase.sample_data.parcels import ParcelGenerator
from geobase.sample_data.world import World
from geobase.sample_data.writers import write_gpkg

LIN_BAN_SIZE = 1600.0  # metres: forest compartment grid


def write_forest(w: World, pg: ParcelGenerator, path: Path, seed: int) -> int:
    """Write forest.gpkg (layer XB) from the generator's forest parts; returns the stand count.

    Frees the parts.  Draws 8 numbers per stand from stream 21, in stand number order."""
    rng = make_rng(seed, 21)
    stands = []
    for key in sorted(pg.forest_parts):
        parts = shapely.from_wkb(pg.forest_parts[key])
        g = shapely.union_all(parts, grid_size=0.001)
        stands.append((key, g))
    pg.forest_parts = {}
    order, info, lb_num = _numbering(w, stands)
    recs, geoms = [], []
    xb_counter: dict = {}
    for i in order:
        key, g = stands[i]
        t, lbx, lby, _, _ = info[i]
        lb = lb_num[(t, lby, lbx)]
        xb_counter[(t, lb)] = xb_counter.get((t, lb), 0) + 1
        xb = xb_counter[(t, lb)]
        v = w.villages[key[0]]
        c = g.representative_point()
        e = float(w.lookup(w.g_elev, np.array([c.x - OX]), np.array([c.y - OY]))[0])
        red = w.stbhhx_gk.intersects(g) and w.stbhhx_gk.intersection(g).area > 0.5 * g.area
        gl = gk_to_geo(g)
        ha = round(geod_area(gl) / 10000.0, 4)
        rec = dict(XIAN=XZQDM, XIANG=v["tcode"], CUN=v["code"], LIN_BAN=f"{lb:03d}", XIAO_BAN=f"{xb:04d}",
                   XBH=f"{v['tcode']}{lb:03d}{xb:04d}", DLBM=key[3])
        rec.update(_inventory(key[3], e, red, rng.random(8), ha))
        recs.append(rec)
        geoms.append(gl)
    write_gpkg(path, "XB", recs, geoms)
    return len(recs)


def _numbering(w: World, stands: list) -> tuple[list[int], list[tuple], dict]:
    """(stand order, per stand (township, grid x, grid y, -y, x), compartment number per
    (township, grid y, grid x)): compartments numbered per township north to south, west to east."""
    info = []
    for key, g in stands:
        c = g.representative_point()
        x, y = c.x - OX, c.y - OY
        v = w.villages[key[0]]
        info.append((v["tcode"], int(math.floor(x / LIN_BAN_SIZE)), int(math.floor(y / LIN_BAN_SIZE)),
                     -round(y, 1), round(x, 1)))
    lb_keys = sorted({(i[0], -i[2], i[1]) for i in info})
    lb_num: dict = {}
    per_t: dict = {}
    for t, ny_, nx_ in lb_keys:
        per_t[t] = per_t.get(t, 0) + 1
        lb_num[(t, -ny_, nx_)] = per_t[t]
    order = sorted(range(len(stands)),
                   key=lambda i: (info[i][0], lb_num[(info[i][0], info[i][2], info[i][1])],
                                  info[i][3], info[i][4]))
    return order, info, lb_num


def _inventory(dl: str, e: float, red: bool, r: np.ndarray, ha: float) -> dict:
    """Inventory attributes of a stand of DLTB class ``dl`` at elevation ``e`` (red: in the red
    line) from the uniform draws ``r``; ``ha`` = ellipsoidal area in hectares."""
    if dl == "0302":
        di_lei, sp = "0120", "610000"
    elif dl == "0305":
        di_lei, sp = ("0131" if e > 500 else "0132"), "910000"
    elif dl == "0307":
        di_lei, sp = "0160", ("220000" if r[0] < 0.6 else "150000")
    else:
        di_lei = "0111"
        sp = "420000" if (e > 450 or r[0] < 0.25) else (
            "220000" if r[0] < 0.65 else ("150000" if r[0] < 0.9 else "230000"))
    if red:
        lb_, lz_, bh = "11", ("111" if r[1] < 0.7 else "121"), "1"
    elif e > 300:
        lb_, lz_, bh = "12", ("111" if r[1] < 0.5 else "112"), "2"
    else:
        lb_ = "21" if r[1] < 0.3 else "22"
        lz_, bh = ("231" if r[2] < 0.4 else "233"), "3"
    if di_lei == "0160":
        bh = "4"
        lzu, age = "1", int(2 + r[3] * 4)
    elif di_lei in ("0131", "0132"):
        lzu, age = "", 0
    else:
        lzu = str(int(1 + min(4, math.floor(r[3] * 5))))
        age = int({"1": 6, "2": 14, "3": 22, "4": 30, "5": 45}[lzu] + r[4] * 8)
    ybd = round(0.20 + 0.75 * r[5] if di_lei not in ("0160",) else 0.10 + 0.15 * r[5], 2)
    ybd = min(0.95, max(0.20, ybd)) if di_lei != "0160" else ybd
    mgq = round(15 + age * (2.2 + 2.5 * r[6]) * ybd, 1) if di_lei == "0111" else 0.0
    return dict(DI_LEI=di_lei, LIN_ZHONG=lz_, SEN_LIN_LB=lb_,
                QI_YUAN=("11" if (red or sp == "420000") else "21"), YOU_SHI_SZ=sp,
                YOU_SHI_SZ_MC=SPECIES[sp], LING_ZU=lzu, YU_BI_DU=ybd, PINGJUN_NL=age, MEI_GQ_XJ=mgq,
                XIAOBAN_XJ=round(mgq * ha, 1), MIAN_JI=ha, BH_DJ=bh)

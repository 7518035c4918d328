"""Deterministic generator of a realistic synthetic Chinese county (示范县, XZQDM 339901).

Writes into ``out_dir``:

* ``DLTB.zip``       land-use parcels (地类图斑), zipped GBK Shapefile, EPSG:4527 (zone-prefixed eastings)
* ``forest.gpkg``    layer ``XB`` forest sub-compartments (森林资源小班), EPSG:4490
* ``water.geojson``  water areas (rivers, lake, reservoir, ponds, canal), RFC 7946
* ``rivers.geojson`` river centre lines, RFC 7946
* ``planning.gdb.zip`` zipped FileGDB with layers ``GHFQ`` (规划分区) and ``KZX`` (三区三线), EPSG:4490
* ``admin.gpkg``     layer ``XZQ`` county + 6 townships, EPSG:4490
* ``dem.tif``        1 arc-second float32 DEM, EPSG:4490
* ``demo_site.geojson`` the proposed-project polygon of the site-check demo
* ``manifest.json``  parameters, checksums, counts, code lists, analysis rules and planted facts

Everything is a pure function of ``(seed, parcels)``: same arguments give byte-identical files.
All geometry is built in EPSG:4527 metres (a local frame offset by an integer origin) and transformed with
pyproj (``always_xy=True``) where another CRS is needed.  Parcels are produced block by block (a Voronoi
diagram of density-weighted random points; every block sees the points of its neighbours, so the cells are
the cells of one global diagram) and streamed to a hand-written Shapefile writer, so memory stays flat.

Run: ``python -m geobase.sample_data.generate --parcels 8000 --seed 20261122 --out DIR``
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import struct
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import shapely
import shapely.affinity
import shapely.geometry
from pyproj import CRS, Geod, Transformer

GENERATOR_VERSION = "1.0.0"
XZQDM = "339901"
XZQMC = "示范县"
EPSG_GK = 4527
EPSG_GEO = 4490
CENTER_LON, CENTER_LAT = 118.20, 29.125
ZIP_DATE = (2026, 1, 1, 0, 0, 0)
GDAL_FIXED_DATE = "2026-01-01T00:00:00Z"
DBF_DATE = (2026 - 1900, 1, 1)
SJNF = 2024
GEOD = Geod(ellps="GRS80")

# --------------------------------------------------------------------------------------------------
# code lists
# --------------------------------------------------------------------------------------------------
GB21010: dict[str, str] = {
    "0101": "水田", "0102": "水浇地", "0103": "旱地",
    "0201": "果园", "0202": "茶园", "0203": "橡胶园", "0204": "其他园地",
    "0301": "乔木林地", "0302": "竹林地", "0303": "红树林地", "0304": "森林沼泽", "0305": "灌木林地",
    "0306": "灌丛沼泽", "0307": "其他林地",
    "0401": "天然牧草地", "0402": "沼泽草地", "0403": "人工牧草地", "0404": "其他草地",
    "0501": "零售商业用地", "0502": "批发市场用地", "0503": "餐饮用地", "0504": "旅馆用地",
    "0505": "商务金融用地", "0506": "娱乐用地", "0507": "其他商服用地",
    "0601": "工业用地", "0602": "采矿用地", "0603": "盐田", "0604": "仓储用地",
    "0701": "城镇住宅用地", "0702": "农村宅基地",
    "0801": "机关团体用地", "0802": "新闻出版用地", "0803": "教育用地", "0804": "科研用地",
    "0805": "医疗卫生用地", "0806": "社会福利用地", "0807": "文化设施用地", "0808": "体育用地",
    "0809": "公用设施用地", "0810": "公园与绿地",
    "0901": "军事设施用地", "0902": "使领馆用地", "0903": "监教场所用地", "0904": "宗教用地",
    "0905": "殡葬用地", "0906": "风景名胜设施用地",
    "1001": "铁路用地", "1002": "轨道交通用地", "1003": "公路用地", "1004": "城镇村道路用地",
    "1005": "交通服务场站用地", "1006": "农村道路", "1007": "机场用地", "1008": "港口码头用地",
    "1009": "管道运输用地",
    "1101": "河流水面", "1102": "湖泊水面", "1103": "水库水面", "1104": "坑塘水面", "1105": "沿海滩涂",
    "1106": "内陆滩涂", "1107": "沟渠", "1108": "沼泽地", "1109": "水工建筑用地", "1110": "冰川及永久积雪",
    "1201": "空闲地", "1202": "设施农用地", "1203": "田坎", "1204": "盐碱地", "1205": "沙地",
    "1206": "裸土地", "1207": "裸岩石砾地",
}
FIRST_LEVEL = {
    "01": "耕地", "02": "园地", "03": "林地", "04": "草地", "05": "商服用地", "06": "工矿仓储用地",
    "07": "住宅用地", "08": "公共管理与公共服务用地", "09": "特殊用地", "10": "交通运输用地",
    "11": "水域及水利设施用地", "12": "其他土地",
}
FARMLAND = ("0101", "0102", "0103")
FOREST = ("0301", "0302", "0303", "0304", "0305", "0306", "0307")
# construction land = GB/T 21010-2017 Annex A class "建设用地" (C)
CONSTRUCTION = tuple(sorted(
    [c for c in GB21010 if c[:2] in ("05", "06", "07", "08", "09")]
    + ["1001", "1002", "1003", "1004", "1005", "1007", "1008", "1009", "1109", "1201"]))

GHFQ_CODES = {
    "010": "生态保护区", "020": "生态控制区", "030": "农田保护区", "041": "城镇集中建设区",
    "042": "城镇弹性发展区", "043": "特别用途区", "051": "村庄建设区", "052": "一般农业区",
    "053": "林业发展区", "070": "矿产能源发展区",
}
KZX_CODES = {"STBHHX": "生态保护红线", "YJJBNT": "永久基本农田", "CZKFBJ": "城镇开发边界"}
FOREST_DI_LEI = {"0111": "乔木林", "0120": "竹林", "0131": "国家特别规定灌木林", "0132": "其他灌木林",
                 "0160": "未成林造林地"}
LIN_ZHONG = {"111": "水源涵养林", "112": "水土保持林", "121": "自然保护区林", "231": "短轮伐期工业原料用材林",
             "233": "一般用材林", "250": "能源林"}
SEN_LIN_LB = {"11": "重点公益林", "12": "一般公益林", "21": "重点商品林", "22": "一般商品林"}
QI_YUAN = {"11": "天然下种", "13": "萌生", "21": "植苗", "23": "萌芽更新"}
SPECIES = {"220000": "杉木", "150000": "马尾松", "420000": "阔叶混", "610000": "毛竹", "910000": "灌木",
           "230000": "柳杉"}
LING_ZU = {"1": "幼龄林", "2": "中龄林", "3": "近熟林", "4": "成熟林", "5": "过熟林"}
BH_DJ = {"1": "Ⅰ级", "2": "Ⅱ级", "3": "Ⅲ级", "4": "Ⅳ级"}

TOWNSHIP_NAMES = ["城关镇", "清溪镇", "石门乡", "龙潭乡", "白沙镇", "桃源乡"]
_SYL1 = list("上下东西南北大小新老前后高黄石金")
_SYL2 = list("塘坑溪坞岭源湾桥坂畈坪田口圩岗垅")

# DLTB dbf schema: name, type, length, decimals
DLTB_FIELDS = [
    ("BSM", "C", 18, 0), ("YSDM", "C", 10, 0), ("TBBH", "C", 8, 0), ("DLBM", "C", 5, 0),
    ("DLMC", "C", 60, 0), ("QSXZ", "C", 2, 0), ("QSDWDM", "C", 19, 0), ("QSDWMC", "C", 60, 0),
    ("ZLDWDM", "C", 19, 0), ("ZLDWMC", "C", 60, 0), ("TBMJ", "N", 18, 2), ("KCXS", "N", 6, 4),
    ("KCMJ", "N", 18, 2), ("TBDLMJ", "N", 18, 2), ("GDLX", "C", 2, 0), ("GDPDJB", "C", 2, 0),
    ("CZCSXM", "C", 4, 0), ("SJNF", "N", 4, 0), ("BZ", "C", 254, 0),
]

_TO_GEO = Transformer.from_crs(EPSG_GK, EPSG_GEO, always_xy=True)
_TO_GK = Transformer.from_crs(EPSG_GEO, EPSG_GK, always_xy=True)
_ox, _oy = _TO_GK.transform(CENTER_LON, CENTER_LAT)
OX, OY = float(round(_ox)), float(round(_oy))  # integer origin of the local frame (EPSG:4527 metres)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _lonlat_from_local(x, y):
    return _TO_GEO.transform(np.asarray(x) + OX, np.asarray(y) + OY)


def _local_from_lonlat(lon, lat):
    x, y = _TO_GK.transform(lon, lat)
    return np.asarray(x) - OX, np.asarray(y) - OY


def _geo_geoms(geoms):
    """local-frame geometries -> EPSG:4490 lon/lat geometries"""
    def f(c):
        lon, lat = _TO_GEO.transform(c[:, 0] + OX, c[:, 1] + OY)
        return np.column_stack([lon, lat])
    return shapely.transform(geoms, f)


def _gk_to_geo(geoms):
    def f(c):
        lon, lat = _TO_GEO.transform(c[:, 0], c[:, 1])
        return np.column_stack([lon, lat])
    return shapely.transform(geoms, f)


def _geod_area(geom_lonlat) -> float:
    return abs(GEOD.geometry_area_perimeter(geom_lonlat)[0])


def _geod_areas(polys_lonlat) -> np.ndarray:
    """ellipsoidal areas (pyproj Geod GRS80) of an array of Polygons in lon/lat: exterior minus holes"""
    _, coords, (ring_off, poly_off) = shapely.to_ragged_array(np.asarray(polys_lonlat, dtype=object))
    ra = np.empty(len(ring_off) - 1)
    x, y = np.ascontiguousarray(coords[:, 0]), np.ascontiguousarray(coords[:, 1])
    for r in range(len(ra)):
        a, b = ring_off[r], ring_off[r + 1]
        ra[r] = abs(GEOD.polygon_area_perimeter(x[a:b], y[a:b])[0])
    first = np.zeros(len(ra), bool)
    first[poly_off[:-1]] = True
    signed = np.where(first, ra, -ra)
    return np.add.reduceat(signed, poly_off[:-1]) if len(ra) else np.zeros(0)


def _polys(geoms, idx=None):
    """explode to polygons with positive area; returns (polygons, source index)"""
    geoms = np.asarray(geoms, dtype=object)
    if idx is None:
        idx = np.arange(len(geoms))
    parts, pi = shapely.get_parts(geoms, return_index=True)
    # one more level for collections containing multipolygons
    parts2, pi2 = shapely.get_parts(parts, return_index=True)
    pi = pi[pi2]
    keep = (shapely.get_type_id(parts2) == 3) & (shapely.area(parts2) > 0)
    return parts2[keep], np.asarray(idx)[pi[keep]]


def _union(geoms, grid=0.001):
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return shapely.Polygon()
    return shapely.union_all(np.asarray(geoms, dtype=object), grid_size=grid)


def _blob(cx, cy, rx, ry, rng, n=48, amp=0.18, rot=0.0):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in (2, 3, 5):
        r += amp / k * 1.5 * np.sin(k * t + rng.uniform(0, 2 * np.pi))
    x, y = rx * r * np.cos(t), ry * r * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return shapely.Polygon(np.column_stack([cx + c * x - s * y, cy + s * x + c * y]))


class Noise:
    """smooth deterministic 2-D noise (sum of plane waves), values roughly N(0,1)"""

    def __init__(self, rng, n=8, lmin=1500.0, lmax=7000.0):
        ang = rng.uniform(0, 2 * np.pi, n)
        lam = np.exp(rng.uniform(math.log(lmin), math.log(lmax), n))
        k = 2 * np.pi / lam
        self.kx, self.ky = k * np.cos(ang), k * np.sin(ang)
        self.ph = rng.uniform(0, 2 * np.pi, n)
        self.a = np.sqrt(lam / lmax)
        self.norm = math.sqrt(float(np.sum(self.a ** 2)) / 2)

    def __call__(self, x, y):
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        out = np.zeros(np.broadcast(x, y).shape)
        for i in range(len(self.a)):
            out += self.a[i] * np.cos(self.kx[i] * x + self.ky[i] * y + self.ph[i])
        return out / self.norm


def _phi(z):
    """approximate standard normal cdf, vectorised"""
    return 0.5 * (1 + np.tanh(0.7978845608 * (z + 0.044715 * z ** 3)))


# --------------------------------------------------------------------------------------------------
# the world: everything that does not depend on the parcel count
# --------------------------------------------------------------------------------------------------
class World:
    GRID_RES = 20.0

    def __init__(self, seed: int):
        self.seed = seed
        rng = _rng(seed, 1)
        # ---- outline (polar function around the centre) ---------------------------------------
        xw, _ = _local_from_lonlat(118.05, CENTER_LAT)
        xe, _ = _local_from_lonlat(118.35, CENTER_LAT)
        _, ys = _local_from_lonlat(CENTER_LON, 29.00)
        _, yn = _local_from_lonlat(CENTER_LON, 29.25)
        self.rx, self.ry = (float(xe) - float(xw)) / 2 * 0.99, (float(yn) - float(ys)) / 2 * 0.99
        self.out_amp = [(k, rng.uniform(0.025, 0.07) / (1 + 0.3 * k), rng.uniform(0, 2 * np.pi))
                        for k in (2, 3, 4, 5, 7)]
        # ---- terrain parameters -------------------------------------------------------------------
        self.v_par = [rng.uniform(-1500, 500), rng.uniform(1200, 2200), rng.uniform(9000, 14000),
                      rng.uniform(0, 6.3), rng.uniform(400, 900), rng.uniform(3000, 5000), rng.uniform(0, 6.3)]
        self.noise_a = Noise(rng)
        self.noise_b = Noise(rng)
        self.noise_c = Noise(rng, lmin=800, lmax=3000)
        self.noise_lu = Noise(rng, n=10, lmin=600, lmax=2500)
        self.noise_lu2 = Noise(rng, n=10, lmin=500, lmax=2000)
        self.ripple = (rng.uniform(0, 6.3), rng.uniform(0, 6.3))
        # tributaries: x = xi + amp*sin(y/L + p), from the main river to side*length
        self.tribs = []
        xs_t = [-9500.0, -4200.0, 3800.0, 9000.0]
        sides = [1, -1, 1, -1]
        for i in range(4):
            self.tribs.append(dict(xi=xs_t[i] + rng.uniform(-800, 800), amp=rng.uniform(300, 800),
                                   L=rng.uniform(2000, 3500), p=rng.uniform(0, 6.3), side=sides[i],
                                   length=rng.uniform(8000, 11000), w=rng.uniform(700, 1100)))
        self.town = (-1500.0, self.v(-1500.0))
        hills = []
        # broad hills away from the main valley
        tries = 0
        while len(hills) < 27 and tries < 2000:
            tries += 1
            cx, cy = rng.uniform(-15000, 15000), rng.uniform(-14000, 14000)
            if abs(cy - self.v(cx)) < 2300 or math.hypot(cx - self.town[0], cy - self.town[1]) < 4000:
                continue
            hills.append((cx, cy, rng.uniform(250, 650), rng.uniform(900, 2300), rng.uniform(900, 2300)))
        # steep ridges (red line hills)
        steep = []
        tries = 0
        while len(steep) < 5 and tries < 2000:
            tries += 1
            cx, cy = rng.uniform(-13000, 13000), rng.uniform(-12000, 12000)
            if abs(cy - self.v(cx)) < 6000 or any(math.hypot(cx - a, cy - b) < 5000 for a, b, *_ in steep):
                continue
            steep.append((cx, cy, rng.uniform(650, 800), rng.uniform(650, 850), rng.uniform(650, 850)))
        self.hills = np.array(hills + steep)
        # planting hills: isolated steep cones near farmland (steep farmland is planted on them)
        self.plant_hills = []
        cands = []
        for xv in np.arange(-11000, 11001, 1000.0):
            for side in (1, -1):
                for off in (3000.0, 3500.0):
                    cands.append((xv, self.v(xv) + side * off))
        order = rng.permutation(len(cands))
        for k in order:
            cx, cy = cands[k]
            if math.hypot(cx - self.town[0], cy - self.town[1]) < 5000:
                continue
            if min(abs(cx - self.trib_x(t, cy)) for t in self.tribs) < 2200:
                continue
            if any(math.hypot(cx - a, cy - b) < 6000 for a, b, *_ in self.plant_hills):
                continue
            if self._outline_rho(cx, cy) > 0.75:
                continue
            self.plant_hills.append((cx, cy, 520.0, 430.0, 430.0))
            if len(self.plant_hills) == 3:
                break
        self.hills = np.vstack([self.hills, np.array(self.plant_hills)])
        self._build_grid()
        self._build_outline_and_admin()
        self._build_water_and_roads()
        self._build_planning()

    # ---- analytic pieces ------------------------------------------------------------------------
    def v(self, x):
        a0, a1, l1, p1, a2, l2, p2 = self.v_par
        return a0 + a1 * np.sin(np.asarray(x) / l1 + p1) + a2 * np.sin(np.asarray(x) / l2 + p2)

    @staticmethod
    def trib_x(t, y):
        return t["xi"] + t["amp"] * np.sin(np.asarray(y) / t["L"] + t["p"])

    def _outline_rho(self, x, y):
        th = np.arctan2(np.asarray(y) / self.ry, np.asarray(x) / self.rx)
        r = np.ones_like(th, dtype=float)
        for k, a, p in self.out_amp:
            r = r + a * np.sin(k * th + p)
        return np.hypot(np.asarray(x) / self.rx, np.asarray(y) / self.ry) / r

    def elev(self, x, y):
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        d = y - self.v(x)
        base = 32.0 + 28.0 * (1 - (x + 16000) / 32000) + 150.0 * (1 - np.exp(-(d / 3000) ** 2))
        h = np.zeros(np.broadcast(x, y).shape)
        for cx, cy, hh, sx, sy in self.hills:
            h += hh * np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
        h = 950.0 * np.tanh(h / 950.0)
        carve = np.ones_like(h)
        for t in self.tribs:
            s = t["side"] * (y - self.v(t["xi"]))
            taper = 1 / (1 + np.exp(-(s + 500) / 300)) * 1 / (1 + np.exp(-(t["length"] - s) / 600))
            carve *= 1 - 0.85 * np.exp(-0.5 * ((x - self.trib_x(t, y)) / t["w"]) ** 2) * taper
        mask = 1 - np.exp(-(d / 1100) ** 2)
        rip = 14.0 * np.sin(x / 900 + self.ripple[0]) * np.sin(y / 1100 + self.ripple[1])
        return base + mask * (carve * h + rip * (0.3 + 0.7 * np.minimum(h / 300, 1)))

    # ---- 20 m lookup grid of elevation and slope -------------------------------------------------
    def _build_grid(self):
        r = self.GRID_RES
        self.gx0, self.gy0 = -22000.0, -21000.0
        self.gnx, self.gny = int(44000 / r) + 1, int(42000 / r) + 1
        xs = self.gx0 + np.arange(self.gnx) * r
        ys = self.gy0 + np.arange(self.gny) * r
        e = np.empty((self.gny, self.gnx), dtype=np.float64)
        for j0 in range(0, self.gny, 256):
            yy = ys[j0:j0 + 256][:, None]
            e[j0:j0 + 256] = self.elev(xs[None, :], yy)
        gy, gx = np.gradient(e, r)
        self.g_elev = e.astype(np.float32)
        self.g_slope = np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)

    def lookup(self, grid, x, y):
        fx = (np.asarray(x) - self.gx0) / self.GRID_RES
        fy = (np.asarray(y) - self.gy0) / self.GRID_RES
        fx = np.clip(fx, 0, self.gnx - 1.001)
        fy = np.clip(fy, 0, self.gny - 1.001)
        i, j = fx.astype(np.int64), fy.astype(np.int64)
        tx, ty = fx - i, fy - j
        return ((grid[j, i] * (1 - tx) + grid[j, i + 1] * tx) * (1 - ty)
                + (grid[j + 1, i] * (1 - tx) + grid[j + 1, i + 1] * tx) * ty)

    # ---- outline, settlements, admin -----------------------------------------------------------
    def _build_outline_and_admin(self):
        rng = _rng(self.seed, 2)
        # candidate settlement sites in the valleys
        gx, gy = np.meshgrid(np.arange(-15000, 15001, 400.0), np.arange(-14000, 14001, 400.0))
        gx, gy = gx.ravel(), gy.ravel()
        e = self.lookup(self.g_elev, gx, gy)
        s = self.lookup(self.g_slope, gx, gy)
        dmain = np.abs(gy - self.v(gx))
        dtrib = np.min([np.abs(gx - self.trib_x(t, gy)) for t in self.tribs], axis=0)
        ok = (e < 200) & (s < 8) & (self._outline_rho(gx, gy) < 0.88) & (dmain > 300) & (dtrib > 250)
        ok &= np.hypot(gx - self.town[0], gy - self.town[1]) > 3800
        for cx, cy, *_ in self.plant_hills:
            ok &= np.hypot(gx - cx, gy - cy) > 1500
        cand = np.flatnonzero(ok)[rng.permutation(int(ok.sum()))]
        sites = []
        for k in cand:
            p = (float(gx[k]), float(gy[k]))
            if all(math.hypot(p[0] - a, p[1] - b) > 2700 for a, b in sites):
                sites.append(p)
            if len(sites) >= 27:
                break
        # township seats: town + 5 spread-out sites (farthest point sampling)
        seats = [self.town]
        pool = list(sites)
        while len(seats) < 6:
            dmin = [min(math.hypot(p[0] - a, p[1] - b) for a, b in seats) for p in pool]
            k = int(np.argmax(dmin))
            seats.append(pool.pop(k))
        # town communities (社区)
        tx, ty = self.town
        comm = [(tx + 900 * math.cos(a), ty + 900 * math.sin(a)) for a in (0.6, 2.2, 3.8, 5.3)]
        seeds = [(p, 1 if p in seats else 0) for p in pool] + [(p, 1) for p in seats[1:]]
        # clusters: (x, y, radius, kind)  kind 0 village, 1 township seat
        self.clusters = [(p[0], p[1], (430.0 if k else float(rng.uniform(200, 380))), k) for p, k in seeds]
        wa, wb = self.noise_a, self.noise_b

        def warped(x, y):
            return x + 650 * wa(x, y), y + 650 * wb(x, y)

        sx = np.array([p[0] for p in seats])
        sy = np.array([p[1] for p in seats])
        # village seeds: communities + settlement clusters
        vseeds = [(c[0], c[1]) for c in comm] + [(c[0], c[1]) for c in self.clusters]
        vx = np.array([p[0] for p in vseeds])
        vy = np.array([p[1] for p in vseeds])
        wvx, wvy = warped(vx, vy)
        wsx, wsy = warped(sx, sy)
        vt = np.argmin(np.hypot(wvx[:, None] - wsx[None, :], wvy[:, None] - wsy[None, :]), axis=1)
        vt[:len(comm)] = 0
        # raster labelling at 50 m
        res = 50.0
        x0, y0 = -17000.0, -16000.0
        nx, ny = int(34000 / res), int(32000 / res)
        cxs = x0 + (np.arange(nx) + 0.5) * res
        cys = y0 + (np.arange(ny) + 0.5) * res
        CX, CY = np.meshgrid(cxs, cys)
        inside = self._outline_rho(CX, CY) < 1.0
        WX, WY = warped(CX, CY)
        best = np.full(CX.shape, np.inf)
        lab = np.zeros(CX.shape, dtype=np.int32)
        for i in range(len(vx)):
            d = np.hypot(WX - wvx[i], WY - wvy[i])
            m = d < best
            best[m] = d[m]
            lab[m] = i
        from rasterio import features
        from rasterio.transform import Affine
        aff = Affine(res, 0, x0, 0, res, y0)
        polys: dict[int, list] = {}
        for geom, val in features.shapes(lab, mask=inside, transform=aff, connectivity=4):
            polys.setdefault(int(val), []).append(shapely.geometry.shape(geom))
        labels = sorted(polys)
        # union per label, then re-insert a vertex at every pixel corner so the coverage is fully noded
        cover = np.array([shapely.union_all(polys[k]) for k in labels], dtype=object)
        cover = shapely.segmentize(cover, res)
        cover = shapely.coverage_simplify(cover, 45.0)
        cover = shapely.make_valid(cover)
        # township codes: 001 = town township, then by seat position (north to south, west to east)
        order = [0] + sorted(range(1, 6), key=lambda i: (-round(sy[i], -2), sx[i]))
        tcode = {ti: f"{XZQDM}{n + 1:03d}" for n, ti in enumerate(order)}
        tname = {ti: TOWNSHIP_NAMES[n] for n, ti in enumerate(order)}
        name_pairs = [a + b for a in _SYL1 for b in _SYL2]
        name_pairs = [name_pairs[i] for i in rng.permutation(len(name_pairs))]
        villages = []
        for li, k in enumerate(labels):
            villages.append(dict(seed=k, t=int(vt[k]), geom=cover[li], comm=k < len(comm),
                                 x=float(vx[k]), y=float(vy[k])))
        villages.sort(key=lambda v: (tcode[v["t"]], not v["comm"], -round(v["y"], -2), v["x"]))
        counters: dict[int, int] = {}
        ni = 0
        for v in villages:
            t = v["t"]
            n = counters.get(t, 0) + 1
            counters[t] = n
            if v["comm"]:
                v["code"] = f"{tcode[t]}{n:03d}"
                v["name"] = ["城东", "城南", "城西", "城北"][n - 1] + "社区"
                v["owner"] = v["name"] + "居民委员会"
            else:
                ncom = sum(1 for w in villages if w["t"] == t and w["comm"])
                v["code"] = f"{tcode[t]}{200 + n - ncom:03d}"
                v["name"] = name_pairs[ni] + "村"
                ni += 1
                v["owner"] = v["name"] + "民委员会"
            v["tcode"], v["tname"] = tcode[t], tname[t]
        self.villages = villages
        self.v_geoms = np.array([v["geom"] for v in villages], dtype=object)
        shapely.prepare(self.v_geoms)
        self.v_tree = shapely.STRtree(self.v_geoms)
        self.county = shapely.coverage_union_all(self.v_geoms)
        if self.county.geom_type != "Polygon":
            self.county = max(shapely.get_parts(self.county), key=lambda g: g.area)
        shapely.prepare(self.county)
        self.townships = []
        for ti in order:
            g = shapely.coverage_union_all(np.array([v["geom"] for v in villages if v["t"] == ti], dtype=object))
            self.townships.append(dict(code=tcode[ti], name=tname[ti], geom=g))
        self.cl_x = np.array([c[0] for c in self.clusters] + [self.town[0]])
        self.cl_y = np.array([c[1] for c in self.clusters] + [self.town[1]])
        self.cl_r = np.array([c[2] for c in self.clusters] + [1500.0])
        self.cl_kind = np.array([c[3] for c in self.clusters] + [2])

    # ---- water and roads -------------------------------------------------------------------------
    def _line_main(self):
        xs = np.arange(-20000, 20001, 50.0)
        return shapely.LineString(np.column_stack([xs, self.v(xs)]))

    def _line_trib(self, t):
        y0 = self.v(t["xi"])
        ss = np.arange(-600, t["length"] + 1, 50.0)
        ys = y0 + t["side"] * ss
        xs = self.trib_x(t, ys)
        beyond = t["side"] * (ys - self.v(xs)) >= 0
        k = int(np.argmax(beyond))
        xs, ys = xs[k:], ys[k:]
        # start exactly on the main centre line
        xs = np.concatenate([[xs[0]], xs])
        ys = np.concatenate([[float(self.v(xs[0]))], ys])
        return shapely.LineString(np.column_stack([xs, ys])[::-1])  # flows downstream (to the main river)

    def _build_water_and_roads(self):
        rng = _rng(self.seed, 3)
        county = self.county
        main = self._line_main()
        tribs = [self._line_trib(t) for t in self.tribs]
        river_names = ["清溪", "龙潭溪", "石门溪", "桃源溪", "白沙溪"]
        self.river_lines = []
        self.river_lines.append(dict(HYDC="AFD1A000", NAME=river_names[0], GRADE=3, BAS="AFD1",
                                     line=shapely.intersection(main, county), width=90.0))
        for i, ln in enumerate(tribs):
            self.river_lines.append(dict(HYDC=f"AFD1A{i + 1}00", NAME=river_names[i + 1], GRADE=4 if i < 2 else 5,
                                         BAS="AFD1", line=shapely.intersection(ln, county),
                                         width=34.0 if i < 2 else 24.0))
        # reservoir on tributary 0 (60 % upstream), lake next to the main river east of the town
        t0 = tribs[0]
        pr = t0.interpolate(0.6, normalized=True)
        reservoir = _blob(pr.x, pr.y, 420, 900, rng, amp=0.2)
        xl = self.town[0] + 7000
        side = 1 if self.tribs[2]["xi"] > xl + 2500 or self.tribs[2]["xi"] < xl - 2500 else -1
        lake = _blob(xl, float(self.v(xl)) - 750, 620, 420, rng, amp=0.25)
        # canal parallel to the main river in the farmland south of it
        cx = np.arange(self.town[0] + 2600, self.town[0] + 13000, 50.0)
        canal_line = shapely.LineString(np.column_stack([cx, self.v(cx) - 950 + 120 * np.sin(cx / 1700)]))
        # roads
        hx = np.arange(-20000, 20001, 50.0)
        hw_line = shapely.LineString(np.column_stack([hx, self.v(hx) + 450 + 150 * np.sin(hx / 3000)]))
        south = min(self.clusters, key=lambda c: c[1] if c[3] == 1 else 1e9)
        n = 200
        tt = np.linspace(0, 1, n)
        rx = self.town[0] + (south[0] - self.town[0]) * tt + 500 * np.sin(np.pi * tt * 3) * np.sin(np.pi * tt)
        ry = self.town[1] + (south[1] - self.town[1]) * tt
        cr_line = shapely.LineString(np.column_stack([rx, ry]))
        self.road_lines = [("G330", "国道330线", hw_line), ("X101", "县道101线", cr_line)]
        # ponds in flat farmland
        gx, gy = np.meshgrid(np.arange(-15000, 15001, 150.0), np.arange(-14000, 14001, 150.0))
        gx, gy = gx.ravel(), gy.ravel()
        e = self.lookup(self.g_elev, gx, gy)
        s = self.lookup(self.g_slope, gx, gy)
        ok = (e < 115) & (s < 4) & (self._outline_rho(gx, gy) < 0.95)
        ok &= np.hypot(gx - self.town[0], gy - self.town[1]) > 2300
        dcl = np.min(np.hypot(gx[:, None] - self.cl_x[None, :-1], gy[:, None] - self.cl_y[None, :-1])
                     - self.cl_r[None, :-1], axis=1)
        ok &= dcl > 120
        cand = np.flatnonzero(ok)[rng.permutation(int(ok.sum()))]
        avoid = shapely.union_all([main.buffer(250), *[t.buffer(200) for t in tribs], hw_line.buffer(120),
                                   cr_line.buffer(100), canal_line.buffer(100), lake.buffer(300),
                                   reservoir.buffer(300)])
        shapely.prepare(avoid)
        ponds = []
        for k in cand:
            p = (float(gx[k]), float(gy[k]))
            if shapely.contains_xy(avoid, *p):
                continue
            if any(math.hypot(p[0] - a, p[1] - b) < 350 for a, b in ((q.centroid.x, q.centroid.y) for q in ponds)):
                continue
            r = float(rng.uniform(30, 75))
            ponds.append(_blob(p[0], p[1], r, r * rng.uniform(0.6, 1.0), rng, n=14, amp=0.2,
                               rot=float(rng.uniform(0, np.pi))))
            if len(ponds) >= 60:
                break
        # disjoint cut-outs by priority; each: (DLBM, geometry, water feature dict or None)
        raw = [("1103", reservoir, dict(HYDC="AFD1A1R1", NAME="青龙水库", TYPE="reservoir", GRADE=None, BAS="AFD1")),
               ("1102", lake, dict(HYDC="L33990100001", NAME="月亮湖", TYPE="lake", GRADE=None, BAS="AFD1"))]
        for rl, ln in zip(self.river_lines, [main] + tribs):
            raw.append(("1101", ln.buffer(rl["width"] / 2, cap_style="flat"),
                        dict(HYDC=rl["HYDC"], NAME=rl["NAME"], TYPE="river", GRADE=rl["GRADE"], BAS=rl["BAS"])))
        raw.append(("1107", canal_line.buffer(4.0, cap_style="flat"),
                    dict(HYDC=None, NAME="红旗渠", TYPE="canal", GRADE=None, BAS="AFD1")))
        for p in ponds:
            raw.append(("1104", p, dict(HYDC=None, NAME=None, TYPE="pond", GRADE=None, BAS="AFD1")))
        raw.append(("1003", hw_line.buffer(12.0, cap_style="flat"), None))
        raw.append(("1003", cr_line.buffer(5.0, cap_style="flat"), None))
        taken = shapely.Polygon()
        cuts = []
        for code, g, feat in raw:
            g = shapely.set_precision(g, 0.001)
            g = shapely.difference(shapely.intersection(g, county, grid_size=0.001), taken, grid_size=0.001)
            if g.is_empty or g.area < 1.0:
                continue
            taken = shapely.union(taken, g, grid_size=0.001)
            cuts.append((code, g, feat))
        self.cuts = cuts
        self.cut_geoms = np.array([c[1] for c in cuts], dtype=object)
        shapely.prepare(self.cut_geoms)
        self.cut_tree = shapely.STRtree(self.cut_geoms)
        self.cut_codes = [c[0] for c in cuts]
        self.water_all = taken
        self.roads = _union([hw_line.buffer(12.0), cr_line.buffer(5.0)])

    # ---- planning zones and control lines ---------------------------------------------------
    def _build_planning(self):
        rng = _rng(self.seed, 4)
        county = self.county
        G = 0.001
        tx, ty = self.town
        nz = self.noise_c
        # urban zones
        t = np.linspace(0, 2 * np.pi, 180, endpoint=False)

        def ring(r0, amp):
            px, py = tx + r0 * np.cos(t), ty + r0 * np.sin(t)
            r = r0 * (1 + amp * nz(px, py))
            return shapely.Polygon(np.column_stack([tx + r * np.cos(t), ty + r * np.sin(t)]))

        u041 = shapely.intersection(ring(1950, 0.05), county, grid_size=G)
        u042 = shapely.difference(shapely.intersection(ring(2700, 0.08), county, grid_size=G), u041, grid_size=G)
        a43 = math.atan2(1, 0)  # north (away from the river)
        u043 = _blob(tx + 2950 * math.cos(a43 + 0.5), ty + 2950 * math.sin(a43 + 0.5), 500, 380, rng)
        u043 = shapely.difference(shapely.intersection(u043, county, grid_size=G),
                                  shapely.union(u041, u042, grid_size=G), grid_size=G)
        urban = _union([u041, u042, u043])
        # village construction zones
        vz = []
        for (cx, cy, r, kind) in self.clusters:
            vz.append(_blob(cx, cy, r + 150, (r + 150) * 0.85, rng, n=32, amp=0.15, rot=float(rng.uniform(0, 3))))
        u051 = shapely.difference(shapely.intersection(_union(vz), county, grid_size=G), urban, grid_size=G)
        # mining zone on a hill, far from settlements and water
        gx, gy = np.meshgrid(np.arange(-14000, 14001, 500.0), np.arange(-13000, 13001, 500.0))
        gx, gy = gx.ravel(), gy.ravel()
        e = self.lookup(self.g_elev, gx, gy)
        ok = (e > 250) & (e < 450) & (self._outline_rho(gx, gy) < 0.85)
        ok &= np.min(np.hypot(gx[:, None] - self.cl_x[None, :], gy[:, None] - self.cl_y[None, :]), axis=1) > 2500
        for cx, cy, *_ in self.plant_hills:
            ok &= np.hypot(gx - cx, gy - cy) > 2500
        ok &= shapely.distance(self.water_all, shapely.points(gx, gy)) > 800
        k = np.flatnonzero(ok)[int(rng.integers(int(ok.sum())))]
        self.quarry = (float(gx[k]), float(gy[k]))
        u070 = shapely.difference(shapely.intersection(_blob(*self.quarry, 420, 330, rng), county, grid_size=G),
                                  _union([urban, u051]), grid_size=G)
        special = _union([urban, u051, u070])
        rest = shapely.difference(county, special, grid_size=G)
        # planning units for the rest: voronoi of 240 seeds classified by terrain
        pts = []
        minx, miny, maxx, maxy = county.bounds
        while len(pts) < 240:
            p = (float(rng.uniform(minx, maxx)), float(rng.uniform(miny, maxy)))
            if shapely.contains_xy(county, *p):
                pts.append(p)
        vor = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=county.envelope.buffer(5000),
                                                         ordered=True))
        units = shapely.intersection(vor, rest, grid_size=G)
        zone_units: dict[str, list] = {c: [] for c in ("010", "020", "030", "052", "053")}
        plant_disks = _union([shapely.Point(cx, cy).buffer(1500) for cx, cy, *_ in self.plant_hills])
        for u in units:
            if u.is_empty or u.area <= 0:
                continue
            b = u.bounds
            sx, sy = np.meshgrid(np.linspace(b[0], b[2], 9), np.linspace(b[1], b[3], 9))
            m = shapely.contains_xy(u, sx.ravel(), sy.ravel())
            if not m.any():
                c = u.representative_point()
                xs, ys = np.array([c.x]), np.array([c.y])
            else:
                xs, ys = sx.ravel()[m], sy.ravel()[m]
            e = float(np.mean(self.lookup(self.g_elev, xs, ys)))
            s = float(np.mean(self.lookup(self.g_slope, xs, ys)))
            if e >= 360 and s >= 12 and not u.intersects(plant_disks):
                code = "010"
            elif e >= 300 and s >= 14:
                code = "020"
            elif e >= 190 or s >= 12:
                code = "053"
            elif e < 125 and s < 6:
                code = "030"
            else:
                code = "052"
            zone_units[code].append(u)
        zones = {c: _union(g) for c, g in zone_units.items()}
        # keep the red line clear of settlements, roads and the valley floor
        excl = _union([u051.buffer(300), urban.buffer(800), self.roads.buffer(150), self.water_all.buffer(60)])
        moved = shapely.intersection(zones["010"], excl, grid_size=G)
        zones["010"] = shapely.difference(zones["010"], excl, grid_size=G)
        zones["020"] = _union([zones["020"], moved])
        zones.update({"041": u041, "042": u042, "043": u043, "051": u051, "070": u070})
        self.zones = {c: zones[c] for c in sorted(zones)}
        for g in self.zones.values():
            shapely.prepare(g)
        zone030 = self.zones["030"]
        czkfbj = _union([u041, u042, u043])
        # (b) urban boundary over permanent basic farmland: half-disk on the shared boundary
        shared = shapely.intersection(czkfbj.boundary, zone030.buffer(1.0), grid_size=G)
        best = None
        for ln in shapely.get_parts(shared):
            if ln.length < 300:
                continue
            for f in np.linspace(0.1, 0.9, 9):
                p = ln.interpolate(f, normalized=True)
                patch = shapely.intersection(p.buffer(190), zone030, grid_size=G)
                if patch.area > 0 and (best is None or patch.area > best[1].area + 1e-6):
                    best = (p, patch)
        self.patch_b = best[1]
        # (d) red line over the urban boundary: small disk on the boundary next to forest zones, far from 030/041
        forestz = _union([self.zones["010"], self.zones["020"], self.zones["053"]])
        bnd = czkfbj.exterior if czkfbj.geom_type == "Polygon" else max(shapely.get_parts(czkfbj), key=lambda g: g.area).exterior
        best = None
        for f in np.linspace(0, 1, 400, endpoint=False):
            p = bnd.interpolate(f, normalized=True)
            d = min(p.distance(zone030), p.distance(u041), p.distance(u051), p.distance(self.roads),
                    p.distance(self.water_all), 400.0)
            if p.distance(forestz) <= 1.0:
                d += 1000.0  # prefer a spot next to forest zones
            if p.distance(self.patch_b) < 800:
                continue
            if best is None or d > best[0] + 1e-6:
                best = (d, p)
        self.patch_d = shapely.intersection(best[1].buffer(75), county, grid_size=G)
        self.stbhhx = _union([self.zones["010"], self.patch_d])
        self.yjjbnt = zone030
        self.czkfbj = _union([czkfbj, self.patch_b])
        shapely.prepare(self.stbhhx)
        shapely.prepare(self.czkfbj)
        # (c) forest patches inside zone 041 (city hills)
        self.patch_c = []
        for ang, dist, r in ((-math.pi / 2 + 0.3, 1250.0, 160.0), (-math.pi / 2 - 0.9, 1350.0, 110.0)):
            self.patch_c.append((tx + dist * math.cos(ang), ty + dist * math.sin(ang), r))
        # (a) construction parcels deep inside the red line
        gx, gy = np.meshgrid(np.arange(-15000, 15001, 250.0), np.arange(-14000, 14001, 250.0))
        gx, gy = gx.ravel(), gy.ravel()
        P = shapely.points(gx, gy)
        inside = shapely.contains_xy(self.stbhhx, gx, gy)
        depth = np.where(inside, shapely.distance(self.stbhhx.boundary, P), 0.0)
        e = self.lookup(self.g_elev, gx, gy)
        s = self.lookup(self.g_slope, gx, gy)
        depth = np.where((s < 20) & (e < 600), depth, 0.0)
        order = np.lexsort((gx, gy, -np.round(depth, 3)))
        self.plant_a = []
        for k in order:
            if depth[k] <= 0:
                break
            p = (float(gx[k]), float(gy[k]))
            if all(math.hypot(p[0] - a, p[1] - b) > 4000 for a, b, _ in self.plant_a):
                self.plant_a.append((p[0], p[1], ["0702", "0601", "0702"][len(self.plant_a)]))
            if len(self.plant_a) == 3:
                break
        # demo site: rectangle on the urban boundary touching 030, forest zones and outside CZKFBJ
        best = None
        for f in np.linspace(0, 1, 200, endpoint=False):
            p = bnd.interpolate(f, normalized=True)
            if p.distance(self.patch_b) < 900 or p.distance(self.patch_d) < 900:
                continue
            rect = shapely.affinity.rotate(shapely.box(p.x - 750, p.y - 550, p.x + 750, p.y + 550), 20, origin=p)
            rect = shapely.intersection(rect, county, grid_size=G)
            a1 = rect.intersection(zone030).area
            a2 = rect.intersection(forestz).area
            a3 = rect.intersection(self.czkfbj).area
            a4 = rect.area - a3
            score = min(a1, a2, a3, a4)
            if best is None or score > best[0] + 1e-6:
                best = (score, rect)
        self.demo_site = best[1]


# --------------------------------------------------------------------------------------------------
# Shapefile writer (deterministic, streaming, exact DBF schema)
# --------------------------------------------------------------------------------------------------
class ShapefileWriter:
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
        gtype, coords, (ring_off, poly_off) = shapely.to_ragged_array(geoms)
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
                txt = np.char.mod(f"%{ln}.{dec}f", arr) if dec else np.char.mod(f"%{ln}d", arr.astype(np.int64))
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
            hdr += name.encode("ascii").ljust(11, b"\0") + typ.encode() + b"\0" * 4 + bytes([ln, dec]) + b"\0" * 14
        hdr += b"\x0d"
        assert len(hdr) == self.hlen
        self.dbf.write(hdr)
        self.dbf.close()
        wkt = CRS.from_epsg(EPSG_GK).to_wkt("WKT1_ESRI")
        assert "CGCS2000_3_Degree_GK_Zone_39" in wkt
        self.base.with_suffix(".prj").write_text(wkt, encoding="ascii")
        self.base.with_suffix(".cpg").write_text(self.enc, encoding="ascii")


def _zip_deterministic(zpath: Path, root: Path, names: list[str]):
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


# --------------------------------------------------------------------------------------------------
# parcels
# --------------------------------------------------------------------------------------------------
def _choose(q, table):
    """table: list of (code, weight); q uniform [0,1) -> code array"""
    codes = np.array([c for c, _ in table])
    w = np.array([p for _, p in table], dtype=float)
    cum = np.cumsum(w) / w.sum()
    return codes[np.minimum(np.searchsorted(cum, q, side="right"), len(codes) - 1)]


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
SLOPE = [("0202", 6), ("0201", 2), ("0103", 5), ("0404", 7), ("0307", 6), ("0305", 9), ("0302", 11), ("0301", 51)]
STEEP = [("0305", 14), ("0307", 5), ("0302", 6), ("0301", 75)]
TOP = [("1207", 14), ("1206", 8), ("0404", 20), ("0305", 28), ("0301", 30)]


class ParcelGenerator:
    def __init__(self, world: World, parcels: int, seed: int):
        self.w = world
        self.seed = seed
        self.N = parcels
        W = world
        # density calibration on a 200 m grid
        gx, gy = np.meshgrid(np.arange(-17000, 17001, 200.0), np.arange(-16000, 16001, 200.0))
        gx, gy = gx.ravel(), gy.ravel()
        inside = shapely.contains_xy(W.county, gx, gy)
        integral = float(self.weight(gx[inside], gy[inside]).sum()) * 200.0 * 200.0
        # parcels ~= points + 40*sqrt(points) + 270 (cells split by village borders, rivers and roads)
        sq = (-40.0 + math.sqrt(40.0 ** 2 + 4 * max(parcels - 270, 50))) / 2
        self.D = sq * sq / integral  # points per m2 per unit weight
        self.wmax = 9.0
        self.smax = 1 / math.sqrt(self.D)  # spacing at weight 1
        minx, miny, maxx, maxy = W.county.bounds
        band = 4 * self.smax
        self.rx0, self.ry0 = minx - band, miny - band
        wr, hr = maxx - minx + 2 * band, maxy - miny + 2 * band
        B = math.sqrt(1500 / (self.D * 2.5))
        self.nbx, self.nby = max(1, math.ceil(wr / B)), max(1, math.ceil(hr / B))
        self.bx, self.by = wr / self.nbx, hr / self.nby
        self.stand_S = math.sqrt(10 / self.D)
        self._pts_cache: dict = {}

    # density weight of the point process
    def weight(self, x, y):
        W = self.w
        e = W.lookup(W.g_elev, x, y)
        s = W.lookup(W.g_slope, x, y)
        w = np.ones(len(x))
        w[(s < 25) & (e < 450)] = 1.8
        w[(e < 160) & (s < 8)] = 3.5
        for cx, cy, *_ in W.plant_hills:
            w[np.hypot(x - cx, y - cy) < 900] = 9.0
        dv = np.min(np.hypot(x[:, None] - W.cl_x[None, :-1], y[:, None] - W.cl_y[None, :-1])
                    - W.cl_r[None, :-1], axis=1)
        w[dv < 200] = 7.0
        w[np.hypot(x - W.town[0], y - W.town[1]) < 2800] = 9.0
        return w

    def block_points(self, bi, bj):
        key = (bi, bj)
        if key in self._pts_cache:
            return self._pts_cache[key]
        rng = _rng(self.seed, 11, bi, bj)
        x0, y0 = self.rx0 + bi * self.bx, self.ry0 + bj * self.by
        n = int(rng.poisson(self.D * self.wmax * self.bx * self.by))
        x = x0 + rng.random(n) * self.bx
        y = y0 + rng.random(n) * self.by
        u = rng.random(n)
        keep = u * self.wmax < self.weight(x, y) if n else np.zeros(0, bool)
        pts = np.column_stack([x[keep], y[keep]])
        self._pts_cache[key] = pts
        return pts

    def block_cells(self, bi, bj):
        own = self.block_points(bi, bj)
        if len(own) == 0:
            return own, np.array([], dtype=object)
        x0, y0 = self.rx0 + bi * self.bx, self.ry0 + bj * self.by
        x1, y1 = x0 + self.bx, y0 + self.by
        m = 4 * self.smax
        for _attempt in range(6):
            rings = math.ceil(m / min(self.bx, self.by))
            halo = []
            for dj in range(-rings, rings + 1):
                for di in range(-rings, rings + 1):
                    if di == 0 and dj == 0:
                        continue
                    i, j = bi + di, bj + dj
                    if not (0 <= i < self.nbx and 0 <= j < self.nby):
                        continue
                    p = self.block_points(i, j)
                    sel = (p[:, 0] > x0 - m) & (p[:, 0] < x1 + m) & (p[:, 1] > y0 - m) & (p[:, 1] < y1 + m)
                    halo.append(p[sel])
            allp = np.vstack([own] + halo)
            env = shapely.box(x0 - 2 * m, y0 - 2 * m, x1 + 2 * m, y1 + 2 * m)
            vor = shapely.voronoi_polygons(shapely.multipoints(allp), extend_to=env, ordered=True)
            cells = shapely.get_parts(vor)[:len(own)]
            # validity check: every vertex circle of a relevant cell lies in the known region
            rel = shapely.intersects(cells, self.w.county)
            coords, ci = shapely.get_coordinates(cells, return_index=True)
            r = np.hypot(coords[:, 0] - own[ci, 0], coords[:, 1] - own[ci, 1])
            known = np.minimum.reduce([coords[:, 0] - (x0 - m), (x1 + m) - coords[:, 0],
                                       coords[:, 1] - (y0 - m), (y1 + m) - coords[:, 1]])
            bad = (r > known + 1e-6) & rel[ci]
            if not bad.any():
                return own, cells
            m *= 1.6
        raise RuntimeError("voronoi halo did not converge")

    def run(self, writer: ShapefileWriter, progress=None):
        W = self.w
        blocks = []
        for bj in range(self.nby):
            for bi in range(self.nbx):
                x0, y0 = self.rx0 + bi * self.bx, self.ry0 + bj * self.by
                if W.county.intersects(shapely.box(x0, y0, x0 + self.bx, y0 + self.by)):
                    blocks.append((bi, bj))
        self.stats_area: dict[str, float] = {}
        self.stats_count: dict[str, int] = {}
        self.tbbh: dict[int, int] = {}
        self.bsm = 0
        self.steep: list[str] = []
        self.planted = {"a": [], "c0": [], "c1": []}
        self.forest_parts: dict[tuple, list] = {}
        self.total_area_gk = 0.0
        self.total_tbmj = 0.0
        # water / road parcels: each cut-out split by village, written with the first block
        ci, vi = W.v_tree.query(W.cut_geoms, predicate="intersects")
        o = np.lexsort((vi, ci))
        ci, vi = ci[o], vi[o]
        cg, cidx = _polys(shapely.intersection(W.cut_geoms[ci], W.v_geoms[vi]))
        emit = (cg, vi[cidx], ci[cidx])
        for n, (bi, bj) in enumerate(blocks):
            self._do_block(bi, bj, writer, emit if n == 0 else None)
            # drop cached points of rows that can no longer be neighbours
            for k in [k for k in self._pts_cache if k[1] < bj - 3]:
                del self._pts_cache[k]
            if progress:
                progress(n + 1, len(blocks))

    def _do_block(self, bi, bj, writer, emit_cuts=None):
        W = self.w
        own, cells = self.block_cells(bi, bj)
        if len(cells) == 0:
            cells = np.array([], dtype=object)
        rng = _rng(self.seed, 12, bi, bj)
        if len(cells):
            env = shapely.box(*shapely.total_bounds(cells))
        else:
            env = shapely.Polygon()
        # villages (and cut-outs) clipped to the block envelope: cheap overlays, prepared predicates
        vc = np.sort(W.v_tree.query(env))
        vclip = shapely.intersection(W.v_geoms[vc], env)
        shapely.prepare(vclip)
        ci, vj = shapely.STRtree(vclip).query(cells)
        o = np.lexsort((vj, ci))
        ci, vj = ci[o], vj[o]
        cont = shapely.contains(vclip[vj], cells[ci])
        has_cont = np.zeros(len(cells), bool)
        has_cont[ci[cont]] = True
        todo = ~cont & ~has_cont[ci]
        pieces = np.empty(len(ci), dtype=object)
        pieces[cont] = cells[ci[cont]]
        pieces[todo] = shapely.intersection(cells[ci[todo]], vclip[vj[todo]])
        keep = cont | todo
        pieces, pidx = _polys(pieces[keep])
        pv = vc[vj[keep]][pidx]
        # cut-outs (water, roads): removed from the cells; they are emitted as parcels of their own
        kc = np.sort(W.cut_tree.query(env))
        cclip = shapely.intersection(W.cut_geoms[kc], env)
        shapely.prepare(cclip)
        pi_, kj = shapely.STRtree(cclip).query(pieces)
        if len(pi_):
            hit = shapely.intersects(cclip[kj], pieces[pi_])
            pi_, kj = pi_[hit], kj[hit]
        o = np.lexsort((kj, pi_))
        pi_, kj = pi_[o], kj[o]
        geoms = np.array(pieces, dtype=object)
        if len(pi_):
            up = np.unique(pi_)
            starts = np.searchsorted(pi_, up)
            ends = np.append(starts[1:], len(pi_))
            for p, a, b in zip(up, starts, ends):
                cutg = cclip[kj[a]] if b - a == 1 else shapely.union_all(cclip[kj[a:b]])
                geoms[p] = shapely.difference(pieces[p], cutg)
        geoms, gi = _polys(geoms)
        vill = pv[gi]
        cut = np.full(len(geoms), -1)
        if emit_cuts is not None:
            geoms = np.concatenate([emit_cuts[0], geoms])
            vill = np.concatenate([emit_cuts[1], vill])
            cut = np.concatenate([emit_cuts[2], cut])
        geoms = shapely.transform(geoms, lambda c: c + np.array([OX, OY]))
        geoms = shapely.set_precision(geoms, 0.001)
        geoms, gi = _polys(geoms)
        vill = np.asarray(vill)[gi]
        cut = np.asarray(cut)[gi]
        n = len(geoms)
        if n == 0:
            return
        rp = shapely.get_coordinates(shapely.point_on_surface(geoms))
        rx, ry = rp[:, 0] - OX, rp[:, 1] - OY
        # mean / min slope over a 4x4 sample grid (+ the representative point)
        b = shapely.bounds(geoms)
        k = 4
        f = (np.arange(k) + 0.5) / k
        sx = (b[:, 0:1] + (b[:, 2:3] - b[:, 0:1]) * f[None, :])[:, :, None].repeat(k, axis=2).reshape(n, -1)
        sy = (b[:, 1:2] + (b[:, 3:4] - b[:, 1:2]) * f[None, :])[:, None, :].repeat(k, axis=1).reshape(n, -1)
        inside = shapely.contains_xy(np.repeat(geoms, k * k), sx.ravel(), sy.ravel()).reshape(n, -1)
        sl = W.lookup(W.g_slope, sx - OX, sy - OY)
        sl_rp = W.lookup(W.g_slope, rx, ry)
        cnt = inside.sum(axis=1) + 1
        slope = (np.where(inside, sl, 0).sum(axis=1) + sl_rp) / cnt
        slope_min = np.minimum(np.where(inside, sl, 90).min(axis=1), sl_rp)
        elev = W.lookup(W.g_elev, rx, ry)
        # classification -------------------------------------------------------------------
        u = rng.random(n)
        u2 = rng.random(n)
        nl = _phi(W.noise_lu(rx, ry))
        q = np.clip(0.65 * nl + 0.35 * u, 0, 0.999999)
        dlbm = np.empty(n, dtype=object)
        dlbm[:] = _choose(q, MID)
        valley = (elev < 160) & (slope < 6)
        dlbm[valley] = _choose(q[valley], VALLEY)
        m = (slope >= 12) & ~valley
        dlbm[m] = _choose(q[m], SLOPE)
        m = slope >= 20
        dlbm[m] = _choose(q[m], STEEP)
        m = elev > 740
        dlbm[m] = _choose(q[m], TOP)
        # settlements
        czcs = np.full(n, "", dtype=object)
        dv = np.hypot(rx[:, None] - W.cl_x[None, :-1], ry[:, None] - W.cl_y[None, :-1])
        near = np.argmin(dv / W.cl_r[None, :-1], axis=1)
        rel = dv[np.arange(n), near] / W.cl_r[near] * (1 + 0.12 * W.noise_lu2(rx, ry))
        invill = rel < 1.0
        dlbm[invill] = _choose(u[invill], VILLAGE)
        czcs[invill] = np.where(W.cl_kind[near[invill]] == 1, "202", "203")
        tx, ty = W.town
        dt = np.hypot(rx - tx, ry - ty) / (1650 * (1 + 0.1 * W.noise_lu2(rx, ry)))
        intown = dt < 1.0
        core = dt < 0.45
        ang = np.arctan2(ry - ty, rx - tx)
        industry = intown & ~core & (np.cos(ang - 0.3) > 0.55)
        dlbm[intown] = _choose(u[intown], TOWN_OUTER)
        dlbm[core] = _choose(u[core], TOWN_CORE)
        dlbm[industry] = _choose(u[industry], TOWN_INDUSTRY)
        czcs[intown] = "202"
        qx, qy = W.quarry
        mq = np.hypot(rx - qx, ry - qy) < 260
        dlbm[mq] = "0602"
        # cut-outs keep their class
        iscut = cut >= 0
        dlbm[iscut] = np.array([W.cut_codes[c] for c in cut[iscut]], dtype=object)
        land = ~iscut
        planted = np.zeros(n, bool)
        # planted steep farmland on the planting hills
        for cx, cy, *_ in W.plant_hills:
            ang_h = np.arctan2(ry - cy, rx - cx)
            m = land & (np.hypot(rx - cx, ry - cy) < 900) & (np.sin(ang_h) > -0.6) & (slope >= 27.0) & \
                (slope_min >= 25.5) & ~intown & ~invill
            dlbm[m] = np.where(u2[m] < 0.15, "0101", "0103")
            planted |= m
        # non-planted farmland must not be steeper than 24 degrees
        isfarm = np.isin(dlbm, FARMLAND)
        m = isfarm & ~planted & (slope > 24.0)
        dlbm[m] = np.where(u2[m] < 0.7, "0301", "0305")
        # (c) planted forest patches inside zone 041
        z041 = W.zones["041"]
        plant_c = np.full(n, -1)
        for pc, (cx, cy, r) in enumerate(W.patch_c):
            m = land & ((np.hypot(rx - cx, ry - cy) < r) | shapely.contains_xy(geoms, cx + OX, cy + OY))
            if m.any():
                m[m] &= shapely.within(geoms[m], W.zones_gk["041"])
            dlbm[m] = "0301"
            plant_c[m] = pc
            planted |= m
        # (a) planted construction parcels deep inside the red line
        plant_a = np.zeros(n, bool)
        for (ax, ay, code) in W.plant_a:
            m = land & shapely.contains_xy(geoms, ax + OX, ay + OY)
            dlbm[m] = code
            plant_a |= m
        planted |= plant_a
        # forest land must not intersect zone 041 (except the planted patches)
        isfor = np.isin(dlbm, FOREST) & ~planted
        if isfor.any():
            idx = np.flatnonzero(isfor)
            hit = shapely.intersects(geoms[idx], W.zones_gk["041"])
            idx = idx[hit]
            if len(idx):
                ar = shapely.area(shapely.intersection(geoms[idx], W.zones_gk["041"]))
                idx = idx[ar > 0]
                dlbm[idx] = np.where(slope[idx] < 15, "0404", "0404")
        # construction land must not intersect the red line (except the planted ones)
        iscon = np.isin(dlbm, CONSTRUCTION) & ~plant_a
        if iscon.any():
            idx = np.flatnonzero(iscon)
            hit = shapely.intersects(geoms[idx], W.stbhhx_gk)
            idx = idx[hit]
            if len(idx):
                ar = shapely.area(shapely.intersection(geoms[idx], W.stbhhx_gk))
                idx = idx[ar > 0]
                dlbm[idx] = "0301"
        # attributes ---------------------------------------------------------------------------
        tbmj = np.round(_geod_areas(_gk_to_geo(geoms)), 2)
        isfarm = np.isin(dlbm, FARMLAND)
        grade = np.select([slope <= 2, slope <= 6, slope <= 15, slope <= 25], [1, 2, 3, 4], 5)
        kc_lo = np.array([0, 0.02, 0.03, 0.05, 0.08, 0.11])[grade]
        kcxs = np.where(isfarm, np.round(kc_lo + 0.03 * u2, 4), 0.0)
        kcmj = np.round(tbmj * kcxs, 2)
        tbdlmj = np.round(tbmj - kcmj, 2)
        gdpdjb = np.where(isfarm, grade.astype(str), "")
        gdlx = np.where(isfarm & (grade >= 2), np.where((dlbm == "0101") | ((grade >= 3) & (u2 < 0.4)), "TT", "PD"), "")
        state_water = np.isin(dlbm, ("1101", "1102", "1103"))
        state_use = (intown & np.isin(dlbm, CONSTRUCTION)) | (dlbm == "1003")
        qsxz = np.where(state_water, "10", np.where(state_use, "20", "30"))
        bz = np.where(dlbm == "1202", "设施农业大棚", "")
        cols = {k: [] for k, *_ in DLTB_FIELDS}
        for i in range(n):
            v = W.villages[vill[i]]
            self.bsm += 1
            t = self.tbbh.get(vill[i], 0) + 1
            self.tbbh[vill[i]] = t
            bsm = f"{XZQDM}{self.bsm:012d}"
            cols["BSM"].append(bsm)
            cols["TBBH"].append(str(t))
            if qsxz[i] == "30":
                cols["QSDWDM"].append(v["code"] + "0000000")
                cols["QSDWMC"].append(v["owner"])
            else:
                cols["QSDWDM"].append(XZQDM + "0" * 13)
                cols["QSDWMC"].append(XZQMC + "国有土地")
            cols["ZLDWDM"].append(v["code"] + "0000000")
            cols["ZLDWMC"].append(v["name"])
            if planted[i] and isfarm[i]:
                self.steep.append(bsm)
            if plant_a[i]:
                self.planted["a"].append(bsm)
            if plant_c[i] >= 0:
                self.planted[f"c{plant_c[i]}"].append(bsm)
            if isfarm[i] and slope[i] > 25 and not planted[i]:
                raise AssertionError("unplanted steep farmland")
        cols["YSDM"] = ["2001010100"] * n
        cols["DLBM"] = list(dlbm)
        cols["DLMC"] = [GB21010[c] for c in dlbm]
        cols["QSXZ"] = list(qsxz)
        cols["TBMJ"] = tbmj
        cols["KCXS"] = kcxs
        cols["KCMJ"] = kcmj
        cols["TBDLMJ"] = tbdlmj
        cols["GDLX"] = list(gdlx)
        cols["GDPDJB"] = list(gdpdjb)
        cols["CZCSXM"] = list(czcs)
        cols["SJNF"] = [SJNF] * n
        cols["BZ"] = list(bz)
        writer.write(geoms, cols)
        for c, a in zip(dlbm, tbmj):
            self.stats_area[c] = self.stats_area.get(c, 0.0) + a
            self.stats_count[c] = self.stats_count.get(c, 0) + 1
        self.total_area_gk += float(shapely.area(geoms).sum())
        self.total_tbmj += float(tbmj.sum())
        # forest parcels -> stands
        isfor = np.flatnonzero(np.isin(dlbm, FOREST))
        if len(isfor):
            S = self.stand_S
            wx = rx[isfor] + 0.35 * S * W.noise_a(rx[isfor], ry[isfor])
            wy = ry[isfor] + 0.35 * S * W.noise_b(rx[isfor], ry[isfor])
            kx, ky = np.floor(wx / S).astype(int), np.floor(wy / S).astype(int)
            wkb = shapely.to_wkb(geoms[isfor])
            for j, p in enumerate(isfor):
                key = (int(vill[p]), int(kx[j]), int(ky[j]), dlbm[p])
                self.forest_parts.setdefault(key, []).append(wkb[j])


# --------------------------------------------------------------------------------------------------
# writers for the other layers
# --------------------------------------------------------------------------------------------------
def _rnd_coords(obj, nd=8):
    if isinstance(obj, (list, tuple)):
        if obj and isinstance(obj[0], (int, float)):
            return [round(float(v), nd) for v in obj[:2]]
        return [_rnd_coords(o, nd) for o in obj]
    return obj


def _geojson_geom(g_lonlat, multi=True):
    g = shapely.orient_polygons(g_lonlat, exterior_cw=False) if g_lonlat.geom_type in ("Polygon", "MultiPolygon") else g_lonlat
    if multi and g.geom_type == "Polygon":
        g = shapely.MultiPolygon([g])
    m = shapely.geometry.mapping(g)
    return {"type": m["type"], "coordinates": _rnd_coords(m["coordinates"])}


def _write_geojson(path: Path, name: str, features: list):
    fc = {"type": "FeatureCollection", "name": name, "features": features}
    path.write_text(json.dumps(fc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _gdal_config():
    import pyogrio
    keys = {"OGR_CURRENT_DATE": GDAL_FIXED_DATE, "OPENFILEGDB_REPRODUCIBLE_UUID": "YES"}
    old = {k: pyogrio.get_gdal_config_option(k) for k in keys}
    pyogrio.set_gdal_config_options(keys)
    return old


def _write_dem(world: World, path: Path):
    import rasterio
    from rasterio.features import geometry_mask
    from rasterio.transform import Affine
    county_ll = _geo_geoms(world.county)
    minx, miny, maxx, maxy = county_ll.bounds
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
        x, y = _local_from_lonlat(LON, LAT)
        e = world.elev(x, y)
        dem[j0:j0 + 128] = (np.round(e * 32) / 32).astype(np.float32)
    outside = geometry_mask([county_ll.buffer(0.001)], out_shape=(ny, nx), transform=tr)
    dem[outside] = -9999.0
    prof = dict(driver="GTiff", width=nx, height=ny, count=1, dtype="float32", crs=CRS.from_epsg(EPSG_GEO).to_wkt(),
                transform=tr, nodata=-9999.0, compress="deflate", predictor=3, tiled=True, blockxsize=256,
                blockysize=256, zlevel=6)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(dem, 1)
    return dict(width=nx, height=ny, transform=list(tr)[:6])


def _write_gpkg(path: Path, layer: str, records: list[dict], geoms_ll):
    import geopandas as gpd
    from pyogrio import write_dataframe
    gdf = gpd.GeoDataFrame(records, geometry=list(geoms_ll), crs=f"EPSG:{EPSG_GEO}")
    if path.exists():
        path.unlink()
    write_dataframe(gdf, path, layer=layer, driver="GPKG", promote_to_multi=True, geometry_type="MultiPolygon")


# --------------------------------------------------------------------------------------------------
# main entry
# --------------------------------------------------------------------------------------------------
def generate(out_dir: Path, *, parcels: int = 8000, seed: int = 20261122,
             progress: Callable[[int, int], None] | None = None, zip_dltb: bool = True) -> dict:
    """Generate the synthetic county into ``out_dir`` and return the manifest (also written as manifest.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old_cfg = _gdal_config()
    t0 = time.time()
    try:
        W = World(seed)
        # GK (EPSG:4527) copies of zones used in parcel rules
        W.zones_gk = {c: shapely.transform(g, lambda c_: c_ + np.array([OX, OY])) for c, g in W.zones.items()}
        W.stbhhx_gk = shapely.transform(W.stbhhx, lambda c_: c_ + np.array([OX, OY]))
        for g in list(W.zones_gk.values()) + [W.stbhhx_gk]:
            shapely.prepare(g)
        # ---- DLTB --------------------------------------------------------------------------
        tmp = out_dir / ("DLTB" if not zip_dltb else ".DLTB.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        writer = ShapefileWriter(tmp / "DLTB", DLTB_FIELDS)
        pg = ParcelGenerator(W, parcels, seed)
        pg.run(writer, progress)
        writer.close()
        files = {}
        if zip_dltb:
            _zip_deterministic(out_dir / "DLTB.zip", tmp, [f"DLTB{s}" for s in (".shp", ".shx", ".dbf", ".prj", ".cpg")])
            shutil.rmtree(tmp)
            files["DLTB.zip"] = dict(crs=f"EPSG:{EPSG_GK}", format="ESRI Shapefile (zipped), GBK", layers={"DLTB": pg.bsm})
        else:
            files["DLTB/DLTB.shp"] = dict(crs=f"EPSG:{EPSG_GK}", format="ESRI Shapefile, GBK", layers={"DLTB": pg.bsm})
        # ---- forest sub-compartments -------------------------------------------------------
        n_stands = _write_forest(W, pg, out_dir / "forest.gpkg", seed)
        files["forest.gpkg"] = dict(crs=f"EPSG:{EPSG_GEO}", format="GPKG", layers={"XB": n_stands})
        # ---- water & rivers ----------------------------------------------------------------
        feats = []
        for code, g, feat in W.cuts:
            if feat is None:
                continue
            feats.append((feat, g))
        # merge per named feature (ponds stay separate)
        wf = []
        for feat, g in feats:
            gl = _geo_geoms(g)
            props = dict(feat)
            props["DLBM"] = {"river": "1101", "lake": "1102", "reservoir": "1103", "pond": "1104", "canal": "1107"}[feat["TYPE"]]
            props["AREA_M2"] = round(_geod_area(gl), 2)
            wf.append({"type": "Feature", "properties": props, "geometry": _geojson_geom(gl)})
        _write_geojson(out_dir / "water.geojson", "water", wf)
        files["water.geojson"] = dict(crs="OGC:CRS84", format="GeoJSON (RFC 7946)", layers={"water": len(wf)})
        rf = []
        for rl in W.river_lines:
            gl = _geo_geoms(rl["line"])
            if gl.geom_type == "MultiLineString" and len(gl.geoms) == 1:
                gl = gl.geoms[0]
            props = dict(HYDC=rl["HYDC"], NAME=rl["NAME"], GRADE=rl["GRADE"], BAS=rl["BAS"],
                         LENGTH_M=round(GEOD.geometry_length(gl), 2))
            m = shapely.geometry.mapping(gl)
            rf.append({"type": "Feature", "properties": props,
                       "geometry": {"type": m["type"], "coordinates": _rnd_coords(m["coordinates"])}})
        _write_geojson(out_dir / "rivers.geojson", "rivers", rf)
        files["rivers.geojson"] = dict(crs="OGC:CRS84", format="GeoJSON (RFC 7946)", layers={"rivers": len(rf)})
        # ---- planning ----------------------------------------------------------------------
        plan_info = _write_planning(W, out_dir)
        files["planning.gdb.zip"] = dict(crs=f"EPSG:{EPSG_GEO}", format="OpenFileGDB (zipped)",
                                         layers={"GHFQ": plan_info["n_ghfq"], "KZX": plan_info["n_kzx"]})
        # ---- admin -------------------------------------------------------------------------
        recs, gl = [], []
        county_ll = _geo_geoms(W.county)
        recs.append(dict(XZQDM=XZQDM, XZQMC=XZQMC, JB="county", MJ=round(_geod_area(county_ll), 2)))
        gl.append(county_ll)
        for t in W.townships:
            g = _geo_geoms(t["geom"])
            recs.append(dict(XZQDM=t["code"], XZQMC=t["name"], JB="township", MJ=round(_geod_area(g), 2)))
            gl.append(g)
        _write_gpkg(out_dir / "admin.gpkg", "XZQ", recs, gl)
        files["admin.gpkg"] = dict(crs=f"EPSG:{EPSG_GEO}", format="GPKG", layers={"XZQ": len(recs)})
        # ---- DEM ---------------------------------------------------------------------------
        dem_info = _write_dem(W, out_dir / "dem.tif")
        files["dem.tif"] = dict(crs=f"EPSG:{EPSG_GEO}", format="GeoTIFF float32 DEFLATE predictor 3, 256x256 tiles",
                                size=[dem_info["width"], dem_info["height"]], pixel_deg=1 / 3600, nodata=-9999.0)
        # ---- demo site ---------------------------------------------------------------------
        demo_ll = _geo_geoms(W.demo_site)
        demo_feat = {"type": "Feature", "properties": {"name": "示范县城北物流园（拟建）", "area_m2": round(_geod_area(demo_ll), 2)},
                     "geometry": _geojson_geom(demo_ll, multi=False)}
        _write_geojson(out_dir / "demo_site.geojson", "demo_site", [demo_feat])
        files["demo_site.geojson"] = dict(crs="OGC:CRS84", format="GeoJSON (RFC 7946)", layers={"demo_site": 1})
        # ---- manifest ----------------------------------------------------------------------
        total = sum(pg.stats_area.values())
        share1: dict[str, float] = {}
        for c, a in pg.stats_area.items():
            share1[c[:2]] = share1.get(c[:2], 0.0) + a
        manifest = dict(
            name="示范县 synthetic county", generator="geobase.sample_data.generate", generator_version=GENERATOR_VERSION,
            parameters=dict(seed=seed, parcels=parcels),
            county=dict(XZQDM=XZQDM, XZQMC=XZQMC, area_m2_ellipsoidal=recs[0]["MJ"],
                        area_m2_planar_epsg4527=round(shapely.area(W.county), 3),
                        townships=[dict(XZQDM=t["code"], XZQMC=t["name"]) for t in W.townships],
                        villages=[dict(code=v["code"], name=v["name"], township=v["tcode"]) for v in W.villages]),
            files={},
            counts=dict(DLTB=pg.bsm, XB=n_stands, water=len(wf), rivers=len(rf), GHFQ=plan_info["n_ghfq"],
                        KZX=plan_info["n_kzx"], XZQ=len(recs)),
            dltb_count_by_dlbm={c: pg.stats_count[c] for c in sorted(pg.stats_count)},
            landuse_area_m2_by_dlbm={c: round(pg.stats_area[c], 2) for c in sorted(pg.stats_area)},
            landuse_share_first_level={c: dict(name=FIRST_LEVEL[c], share=round(share1[c] / total, 5))
                                       for c in sorted(share1)},
            code_lists=dict(DLBM_GB_T_21010_2017=GB21010, GHFQDM=GHFQ_CODES, KZXLX=KZX_CODES,
                            XB_DI_LEI=FOREST_DI_LEI, XB_LIN_ZHONG=LIN_ZHONG, XB_SEN_LIN_LB=SEN_LIN_LB,
                            XB_QI_YUAN=QI_YUAN, XB_YOU_SHI_SZ=SPECIES, XB_LING_ZU=LING_ZU, XB_BH_DJ=BH_DJ,
                            CZCSXM={"201": "城市", "202": "建制镇", "203": "村庄"},
                            construction_dlbm=list(CONSTRUCTION), forest_dlbm=list(FOREST), farmland_dlbm=list(FARMLAND)),
            notes=dict(
                DLTB="TBMJ = ellipsoidal area (pyproj Geod GRS80) of the parcel in lon/lat, 0.01 m2; KCMJ = round(TBMJ*KCXS,2); "
                     "TBDLMJ = TBMJ-KCMJ. Parcels form an exact coverage of the county outline (XZQ JB=county). "
                     "Coordinates rounded to 1 mm in EPSG:4527.",
                slope="GDPDJB from the mean slope of the parcel (4x4 sample grid + representative point) of the same "
                      "elevation function that dem.tif samples; grades 1 <=2, 2 2-6, 3 6-15, 4 15-25, 5 >25 degrees.",
                XB="Stands = dissolved groups of adjacent forest parcels (same village, same DLBM); MIAN_JI in hectares "
                   "(ellipsoidal), XIAOBAN_XJ = MEI_GQ_XJ * MIAN_JI.",
                water="water.geojson polygons are exactly the areas from which the DLTB 1101/1102/1103/1104/1107 parcels "
                      "were cut (union of those parcels == water.geojson up to coordinate rounding).",
            ),
            **plan_info["manifest"],
            steep_farmland=sorted(pg.steep),
        )
        manifest["conflicts"] = [
            dict(id="C1", rule="construction_in_ecological_red_line",
                 description="DLTB parcels with DLBM in code_lists.construction_dlbm whose intersection with a KZX "
                             "feature KZXLX='STBHHX' has area > 1 m2",
                 dltb_bsm=sorted(pg.planted["a"]), kzx_bsm=plan_info["stbhhx_main_bsm_for_a"](pg)),
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
        manifest["analysis_guarantees"] = [
            "Apart from C2 and C4 the three KZX kinds do not overlap each other (overlap area 0 up to 1 m2).",
            "No DLTB parcel with a construction DLBM intersects STBHHX with area > 1 m2 except those of C1.",
            "No DLTB parcel with a forest DLBM intersects GHFQ 041 with area > 1 m2 except those of C3.",
            "steep_farmland lists every DLTB farmland (0101/0102/0103) parcel whose mean slope exceeds 25 degrees "
            "(all planted on three steep hills, each with mean slope >= 27 and minimum sampled slope >= 25.5).",
        ]
        manifest["demo_site"] = dict(file="demo_site.geojson", feature=demo_feat,
                                     description="proposed project polygon touching farmland, forest, YJJBNT and "
                                                 "partly outside CZKFBJ")
        for name in sorted(files):
            p = out_dir / name
            entry = dict(files[name])
            if p.exists():
                entry["sha256"] = _sha256(p)
                entry["bytes"] = p.stat().st_size
            manifest["files"][name] = entry
        (out_dir / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n",
                                               encoding="utf-8")
        manifest["_elapsed_s"] = round(time.time() - t0, 2)
        return manifest
    finally:
        import pyogrio
        pyogrio.set_gdal_config_options(old_cfg)


def _write_forest(W: World, pg: ParcelGenerator, path: Path, seed: int) -> int:
    rng = _rng(seed, 21)
    stands = []
    for key in sorted(pg.forest_parts):
        parts = shapely.from_wkb(pg.forest_parts[key])
        g = shapely.union_all(parts, grid_size=0.001)
        stands.append((key, g))
    pg.forest_parts = {}
    # lin ban grid 1.6 km, numbered per township
    S_lb = 1600.0
    recs, geoms = [], []
    info = []
    for key, g in stands:
        c = g.representative_point()
        x, y = c.x - OX, c.y - OY
        v = W.villages[key[0]]
        info.append((v["tcode"], int(math.floor(x / S_lb)), int(math.floor(y / S_lb)), -round(y, 1), round(x, 1)))
    lb_keys = sorted({(i[0], -i[2], i[1]) for i in info})
    lb_num: dict = {}
    per_t: dict = {}
    for t, ny_, nx_ in lb_keys:
        per_t[t] = per_t.get(t, 0) + 1
        lb_num[(t, -ny_, nx_)] = per_t[t]
    order = sorted(range(len(stands)), key=lambda i: (info[i][0], lb_num[(info[i][0], info[i][2], info[i][1])],
                                                       info[i][3], info[i][4]))
    xb_counter: dict = {}
    for i in order:
        key, g = stands[i]
        t, lbx, lby, _, _ = info[i]
        lb = lb_num[(t, lby, lbx)]
        xb_counter[(t, lb)] = xb_counter.get((t, lb), 0) + 1
        xb = xb_counter[(t, lb)]
        v = W.villages[key[0]]
        dl = key[3]
        c = g.representative_point()
        x, y = c.x - OX, c.y - OY
        e = float(W.lookup(W.g_elev, np.array([x]), np.array([y]))[0])
        red = W.stbhhx_gk.intersects(g) and W.stbhhx_gk.intersection(g).area > 0.5 * g.area
        r = rng.random(8)
        if dl == "0302":
            di_lei, sp = "0120", "610000"
        elif dl == "0305":
            di_lei, sp = ("0131" if e > 500 else "0132"), "910000"
        elif dl == "0307":
            di_lei, sp = "0160", ("220000" if r[0] < 0.6 else "150000")
        else:
            di_lei = "0111"
            sp = "420000" if (e > 450 or r[0] < 0.25) else ("220000" if r[0] < 0.65 else ("150000" if r[0] < 0.9 else "230000"))
        if red:
            lb_, lz_, bh = "11", ("111" if r[1] < 0.7 else "121"), "1"
        elif e > 300:
            lb_, lz_, bh = "12", ("111" if r[1] < 0.5 else "112"), "2"
        else:
            lb_ = "21" if r[1] < 0.3 else "22"
            lz_, bh = ("231" if r[2] < 0.4 else "233"), "3"
        if di_lei == "0160":
            bh = "4"
        if di_lei == "0160":
            lzu, age = "1", int(2 + r[3] * 4)
        elif di_lei in ("0131", "0132"):
            lzu, age = "", 0
        else:
            lzu = str(int(1 + min(4, math.floor(r[3] * 5))))
            age = int({"1": 6, "2": 14, "3": 22, "4": 30, "5": 45}[lzu] + r[4] * 8)
        ybd = round(0.20 + 0.75 * r[5] if di_lei not in ("0160",) else 0.10 + 0.15 * r[5], 2)
        ybd = min(0.95, max(0.20, ybd)) if di_lei != "0160" else ybd
        if di_lei == "0111":
            mgq = round(15 + age * (2.2 + 2.5 * r[6]) * ybd, 1)
        else:
            mgq = 0.0
        gl = _gk_to_geo(g)
        ha = round(_geod_area(gl) / 10000.0, 4)
        recs.append(dict(XIAN=XZQDM, XIANG=v["tcode"], CUN=v["code"], LIN_BAN=f"{lb:03d}", XIAO_BAN=f"{xb:04d}",
                         XBH=f"{v['tcode']}{lb:03d}{xb:04d}", DLBM=dl, DI_LEI=di_lei, LIN_ZHONG=lz_, SEN_LIN_LB=lb_,
                         QI_YUAN=("11" if (red or sp == "420000") else "21"), YOU_SHI_SZ=sp,
                         YOU_SHI_SZ_MC=SPECIES[sp], LING_ZU=lzu, YU_BI_DU=ybd, PINGJUN_NL=age, MEI_GQ_XJ=mgq,
                         XIAOBAN_XJ=round(mgq * ha, 1), MIAN_JI=ha, BH_DJ=bh))
        geoms.append(gl)
    _write_gpkg(path, "XB", recs, geoms)
    return len(recs)


def _write_planning(W: World, out_dir: Path) -> dict:
    import geopandas as gpd
    from pyogrio import write_dataframe
    ghfq_recs, ghfq_geoms, ghfq_local = [], [], []
    n = 0
    for code in sorted(W.zones):
        for p in sorted(shapely.get_parts(W.zones[code]), key=lambda g: (-round(g.centroid.y, 1), round(g.centroid.x, 1))):
            if p.geom_type != "Polygon" or p.area <= 0:
                continue
            n += 1
            gl = _geo_geoms(p)
            ghfq_recs.append(dict(BSM=f"{XZQDM}2{n:011d}", XZQDM=XZQDM, XZQMC=XZQMC, GHFQDM=code,
                                  GHFQMC=GHFQ_CODES[code], MJ=round(_geod_area(gl), 2)))
            ghfq_geoms.append(gl)
            ghfq_local.append(p)
    kzx_recs, kzx_geoms, kzx_local = [], [], []
    n = 0
    for kind, geom in (("STBHHX", W.stbhhx), ("YJJBNT", W.yjjbnt), ("CZKFBJ", W.czkfbj)):
        for p in sorted(shapely.get_parts(geom), key=lambda g: (-round(g.centroid.y, 1), round(g.centroid.x, 1))):
            if p.geom_type != "Polygon" or p.area <= 0:
                continue
            n += 1
            gl = _geo_geoms(p)
            kzx_recs.append(dict(BSM=f"{XZQDM}3{n:011d}", KZXLX=kind, KZXMC=XZQMC + KZX_CODES[kind], XZQDM=XZQDM,
                                 MJ=round(_geod_area(gl), 2)))
            kzx_geoms.append(gl)
            kzx_local.append(p)
    tmp = out_dir / ".planning.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    gdb = tmp / "planning.gdb"
    write_dataframe(gpd.GeoDataFrame(ghfq_recs, geometry=ghfq_geoms, crs=f"EPSG:{EPSG_GEO}"), gdb, layer="GHFQ",
                    driver="OpenFileGDB", promote_to_multi=True, geometry_type="MultiPolygon")
    write_dataframe(gpd.GeoDataFrame(kzx_recs, geometry=kzx_geoms, crs=f"EPSG:{EPSG_GEO}"), gdb, layer="KZX",
                    driver="OpenFileGDB", promote_to_multi=True, geometry_type="MultiPolygon")
    names = ["planning.gdb/"] + [f"planning.gdb/{f.name}" for f in sorted(gdb.iterdir())]
    _zip_deterministic(out_dir / "planning.gdb.zip", tmp, names)
    shutil.rmtree(tmp)

    def bsm_hit(recs, local, kind, geom):
        out = []
        for r, g in zip(recs, local):
            if (kind is None or r.get("KZXLX") == kind) and g.intersects(geom) and g.intersection(geom).area > 1.0:
                out.append(r["BSM"])
        return out

    c2_geom = shapely.intersection(W.czkfbj, W.yjjbnt, grid_size=0.001)
    c4_geom = shapely.intersection(W.stbhhx, W.czkfbj, grid_size=0.001)
    c2 = bsm_hit(kzx_recs, kzx_local, "CZKFBJ", c2_geom) + bsm_hit(kzx_recs, kzx_local, "YJJBNT", c2_geom)
    c4 = bsm_hit(kzx_recs, kzx_local, "STBHHX", c4_geom) + bsm_hit(kzx_recs, kzx_local, "CZKFBJ", c4_geom)
    ghfq041 = [r["BSM"] for r in ghfq_recs if r["GHFQDM"] == "041"]

    def a_bsm(pg):
        pts = shapely.points([(a[0], a[1]) for a in W.plant_a])
        out = []
        for r, g in zip(kzx_recs, kzx_local):
            if r["KZXLX"] == "STBHHX" and shapely.intersects(g, pts).any():
                out.append(r["BSM"])
        return out

    manifest = dict(planning=dict(
        GHFQ_rule="GHFQ is an exact coverage of the county; codes in code_lists.GHFQDM (our own list).",
        KZX_rule="STBHHX = GHFQ 010 plus the C4 patch; YJJBNT = GHFQ 030; CZKFBJ = GHFQ 041+042+043 plus the C2 patch.",
        zone_area_m2={c: round(_geod_area(_geo_geoms(W.zones[c])), 2) for c in sorted(W.zones)},
    ))
    return dict(n_ghfq=len(ghfq_recs), n_kzx=len(kzx_recs), c2=c2,
                c2_area=round(_geod_area(_geo_geoms(c2_geom)), 2), c4=c4,
                c4_area=round(_geod_area(_geo_geoms(c4_geom)), 2), ghfq041=ghfq041,
                stbhhx_main_bsm_for_a=a_bsm, manifest=manifest)


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

"""Land-use parcels (DLTB) and forest stands (XB) of the synthetic province, county by county.

The parcels of all counties are the cells of ONE Voronoi diagram of density-weighted random
points over the province, produced block by block (points of a block are a pure function of
(seed, block); each block's cells are computed with a halo of its neighbours' points grown until
every relevant cell is provably complete, as in :mod:`parcels`). A county's parcels are those
cells cut by its villages (an exact coverage shared with the neighbours) with the water taken
out; a cell on a county border is cut in two by the same border in both counties. Each county's
rows are streamed to its own Shapefile writer, so memory holds one block and its halo, whatever
the size of the province.

The point density is set per county so that each county gets about ``parcels_per_county``
parcels, and within a county it follows the terrain (dense on the flat valley floors and around
the villages, sparse on the hills)."""
from __future__ import annotations

import math

import numpy as np
import shapely
from geobase.sample_data.codes import CONSTRUCTION, DLTB_FIELDS, FARMLAND, FOREST, GB21010, SJNF
from geobase.sample_data.geo import explode_polygons, geod_areas, make_rng
from geobase.sample_data.province_world import Province

WMAX = 6.0
POINTS_PER_BLOCK = 1500


class ProvinceParcels:
    """The one global point process and its Voronoi cells; :meth:`run_county` writes a county."""

    def __init__(self, pv: Province, parcels_per_county: int, seed: int):
        self.pv, self.seed = pv, seed
        gx, gy = np.meshgrid(np.arange(0, pv.width, 250.0) + 125, np.arange(0, pv.height, 250.0) + 125)
        gx, gy = gx.ravel(), gy.ravel()
        lab = pv.county_label(gx, gy)
        w = self.weight(gx, gy, None)
        self.density = np.zeros(pv.n)
        for c in range(pv.n):
            integral = float(w[lab == c].sum()) * 250.0 * 250.0
            # cells cut by village borders and water add a few parcels: aim a little low
            self.density[c] = 0.93 * parcels_per_county / max(integral, 1.0)
        self.lmax = float(self.density.max()) * WMAX
        self.smax = 1 / math.sqrt(float(self.density.min()) * 1.0)
        self.B = math.sqrt(POINTS_PER_BLOCK / (float(self.density.mean()) * 2.0))
        minx, miny, maxx, maxy = pv.outline.bounds
        band = 2 * self.B
        self.x0, self.y0 = minx - band, miny - band
        self.nbx, self.nby = math.ceil((maxx - minx + 2 * band) / self.B), math.ceil((maxy - miny + 2 * band) / self.B)
        self._pts: dict = {}

    def weight(self, x, y, county):
        """relative point density: flat low land 3, gentle slopes 1.6, hills 1, villages 5, seats 6;
        times the county's density when ``county`` (labels) is given"""
        pv = self.pv
        e, s = pv.elev(x, y), pv.slope(x, y)
        w = np.where((e < 150) & (s < 8), 3.0, np.where(s < 15, 1.6, 1.0))
        vx = np.array([v["x"] for v in pv.villages])
        vy = np.array([v["y"] for v in pv.villages])
        for i in range(len(vx)):
            w[np.hypot(x - vx[i], y - vy[i]) < 500] = 5.0
        for sx, sy in pv.seats:
            w[np.hypot(x - sx, y - sy) < 1800] = WMAX
        if county is not None:
            # outside the province the points go on (at the lowest density): the cells on its
            # edge stay bounded, as the halo check needs
            w = w * np.where(county >= 0, self.density[np.maximum(county, 0)], self.density.min())
        return w

    def block_points(self, bi: int, bj: int):
        """(points, uniform draw per point) of block (bi, bj): a pure function of the seed"""
        key = (bi, bj)
        if key not in self._pts:
            rng = make_rng(self.seed, 111, bi, bj)
            x0, y0 = self.x0 + bi * self.B, self.y0 + bj * self.B
            n = int(rng.poisson(self.lmax * self.B * self.B))
            x, y, u, u2 = x0 + rng.random(n) * self.B, y0 + rng.random(n) * self.B, rng.random(n), rng.random(n)
            keep = u * self.lmax < self.weight(x, y, self.pv.county_label(x, y)) if n else np.zeros(0, bool)
            self._pts[key] = (np.column_stack([x[keep], y[keep]]), u2[keep])
            if len(self._pts) > 4 * (self.nbx + 8):
                self._pts.pop(next(iter(self._pts)))
        return self._pts[key]

    def block_cells(self, bi: int, bj: int):
        """Voronoi cells of the block's own points in the global diagram (halo grown until every
        vertex circle of a cell that reaches the province lies in the points' known region)."""
        own, u = self.block_points(bi, bj)
        if len(own) == 0:
            return np.array([], dtype=object), u
        x0, y0 = self.x0 + bi * self.B, self.y0 + bj * self.B
        x1, y1 = x0 + self.B, y0 + self.B
        m = 4 * self.smax
        for _ in range(8):
            rings = math.ceil(m / self.B)
            halo = [own]
            for dj in range(-rings, rings + 1):
                for di in range(-rings, rings + 1):
                    i, j = bi + di, bj + dj
                    if (di or dj) and 0 <= i < self.nbx and 0 <= j < self.nby:
                        p = self.block_points(i, j)[0]
                        halo.append(p[(p[:, 0] > x0 - m) & (p[:, 0] < x1 + m) & (p[:, 1] > y0 - m) & (p[:, 1] < y1 + m)])
            allp = np.vstack(halo)
            env = shapely.box(x0 - 2 * m, y0 - 2 * m, x1 + 2 * m, y1 + 2 * m)
            cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(allp), extend_to=env,
                                                               ordered=True))[:len(own)]
            rel = shapely.intersects(cells, self.pv.outline)
            coords, ci = shapely.get_coordinates(cells, return_index=True)
            r = np.hypot(coords[:, 0] - own[ci, 0], coords[:, 1] - own[ci, 1])
            known = np.minimum.reduce([coords[:, 0] - (x0 - m), (x1 + m) - coords[:, 0],
                                       coords[:, 1] - (y0 - m), (y1 + m) - coords[:, 1]])
            if not ((r > known + 1e-6) & rel[ci]).any():
                return cells, u
            m *= 1.6
        raise RuntimeError("voronoi halo did not converge")

    def county_blocks(self, c: int) -> list[tuple[int, int]]:
        """Blocks whose cells may reach county ``c``: those over its bounding box and one ring
        more (a cell can reach beyond its own block; one without a piece there gives nothing)."""
        minx, miny, maxx, maxy = self.pv.counties[c].bounds
        j0, j1 = int((miny - self.y0) // self.B) - 1, int((maxy - self.y0) // self.B) + 2
        i0, i1 = int((minx - self.x0) // self.B) - 1, int((maxx - self.x0) // self.B) + 2
        return [(bi, bj) for bj in range(max(0, j0), min(self.nby, j1)) for bi in range(max(0, i0), min(self.nbx, i1))]

    def pieces(self, c: int, bi: int, bj: int):
        """(polygons, village index, uniform draw, water code or '') of county c from block
        (bi, bj): the block's cells cut by the county's villages, water removed; the water of the
        county inside the block (cut by village) is a parcel of its own."""
        pv = self.pv
        empty = (np.array([], dtype=object), np.zeros(0, np.int64), np.zeros(0), np.array([], dtype=object))
        x0, y0 = self.x0 + bi * self.B, self.y0 + bj * self.B
        block = shapely.box(x0, y0, x0 + self.B, y0 + self.B)
        near = pv.v_tree.query(block.buffer(0.5 * self.B), predicate="intersects")
        if not any(pv.villages[k]["county"] == c for k in near):
            return empty  # no cell of this block reaches the county: skip the diagram
        cells, u = self.block_cells(bi, bj)
        reach = shapely.box(*shapely.total_bounds(cells)) if len(cells) else block
        vi = np.array([k for k in np.sort(pv.v_tree.query(shapely.union(reach, block), predicate="intersects"))
                       if pv.villages[k]["county"] == c], dtype=np.int64)
        if len(vi) == 0:
            return empty
        ci, vj = shapely.STRtree(pv.v_geoms[vi]).query(cells, predicate="intersects")
        o = np.lexsort((vj, ci))
        ci, vj = ci[o], vj[o]
        land = shapely.intersection(cells[ci], pv.v_geoms[vi[vj]])
        wet = shapely.intersects(pv.water_union, land)  # prepared: only these need the difference
        land[wet] = shapely.difference(land[wet], pv.water_union)
        wat = shapely.intersection(shapely.intersection(pv.v_geoms[vi], block), pv.water_union)
        lake = shapely.intersects(pv.lakes, shapely.point_on_surface(wat))
        geoms = np.concatenate([land, wat])
        vill = np.concatenate([vi[vj], vi])
        uu = np.concatenate([u[ci], np.zeros(len(vi))])
        water = np.concatenate([np.array([""] * len(land), dtype=object),
                                np.where(lake, "1102", "1101").astype(object)])
        parts, idx = explode_polygons(geoms)
        return parts, vill[idx], uu[idx], water[idx]


def classify(pv: Province, geoms_local, vill, u, water):
    """(DLBM, slope at the parcel, elevation): by terrain, nearness to the seat and villages,
    and the parcel's draw. Farmland on slopes above 25 degrees is kept for a few parcels
    (u < 0.08), which the steep-farmland analysis must find."""
    rp = shapely.get_coordinates(shapely.point_on_surface(geoms_local))
    x, y = rp[:, 0], rp[:, 1]
    e, s = pv.elev(x, y), pv.slope(x, y)
    seat = np.array([pv.seats[pv.villages[v]["county"]] for v in vill]).reshape(-1, 2)
    vxy = np.array([(pv.villages[v]["x"], pv.villages[v]["y"]) for v in vill]).reshape(-1, 2)
    dseat = np.hypot(x - seat[:, 0], y - seat[:, 1])
    dvil = np.hypot(x - vxy[:, 0], y - vxy[:, 1])
    urban = np.array(["0701", "0701", "0501", "0601", "0801", "1004", "0810", "0803"])
    flat = np.array(["0101"] * 6 + ["0102", "0102", "0103", "0103", "1104", "1202", "0201", "1006"])
    gentle = np.array(["0103", "0103", "0103", "0201", "0202", "0301", "0301", "0305", "0404", "0307"])
    hill = np.array(["0301", "0301", "0301", "0302", "0305", "0307"])

    def pick(arr):
        return arr[np.minimum((u * len(arr)).astype(int), len(arr) - 1)]

    dl = np.where(s > 25, np.where(u < 0.08, "0103", pick(hill)),
                  np.where(s < 8, pick(flat), np.where(s < 15, pick(gentle), pick(hill))))
    dl = np.where(dvil < 250, np.where(u < 0.7, "0702", pick(flat)), dl)
    dl = np.where(dseat < 1200, pick(urban), dl)
    dl = np.where(water != "", water, dl)
    return dl.astype(object), s, e


def dltb_columns(pv: Province, c: int, bsm0: int, geoms_gk, geoms_ll, vill, dl, slope, u):
    """The DLTB attribute columns (same schema as the one-county sample); BSM numbers from
    ``bsm0``. ZLDWDM/QSDWDM are village codes: their first 6 digits are the county code."""
    n = len(dl)
    code, name = pv.codes[c], pv.names[c]
    tbmj = np.round(geod_areas(geoms_ll), 2)
    isfarm = np.isin(dl, FARMLAND)
    grade = np.select([slope <= 2, slope <= 6, slope <= 15, slope <= 25], [1, 2, 3, 4], 5)
    kcxs = np.where(isfarm, np.round(np.array([0, 0.02, 0.03, 0.05, 0.08, 0.11])[grade] + 0.03 * u, 4), 0.0)
    kcmj = np.round(tbmj * kcxs, 2)
    state_water = np.isin(dl, ("1101", "1102"))
    state_use = np.isin(dl, CONSTRUCTION) & np.isin(dl, ("0501", "0601", "0801", "0803", "0810", "1004"))
    qsxz = np.where(state_water, "10", np.where(state_use, "20", "30"))
    vs = [pv.villages[v] for v in vill]
    cols: dict[str, list] = {k: [] for k, *_ in DLTB_FIELDS}
    cols["BSM"] = [f"{code}{bsm0 + i + 1:012d}" for i in range(n)]
    cols["TBBH"] = [str(bsm0 + i + 1) for i in range(n)]
    cols["QSDWDM"] = [v["code"] + "0000000" if q == "30" else code + "0" * 13 for v, q in zip(vs, qsxz)]
    cols["QSDWMC"] = [v["owner"] if q == "30" else name + "国有土地" for v, q in zip(vs, qsxz)]
    cols["ZLDWDM"] = [v["code"] + "0000000" for v in vs]
    cols["ZLDWMC"] = [v["name"] for v in vs]
    cols["YSDM"] = ["2001010100"] * n
    cols["DLBM"] = list(dl)
    cols["DLMC"] = [GB21010[d] for d in dl]
    cols["QSXZ"] = list(qsxz)
    cols["TBMJ"], cols["KCXS"], cols["KCMJ"], cols["TBDLMJ"] = tbmj, kcxs, kcmj, np.round(tbmj - kcmj, 2)
    cols["GDLX"] = list(np.where(isfarm & (grade >= 2), np.where(dl == "0101", "TT", "PD"), ""))
    cols["GDPDJB"] = list(np.where(isfarm, grade.astype(str), ""))
    cols["CZCSXM"] = list(np.where(np.isin(dl, CONSTRUCTION), "203", ""))
    cols["SJNF"] = [SJNF] * n
    cols["BZ"] = list(np.where(dl == "1202", "设施农业大棚", ""))
    return cols, tbmj


def is_forest(dl) -> np.ndarray:
    return np.isin(dl, FOREST)

"""Parcels (DLTB 地类图斑) of the synthetic county, produced block by block.

Parcels are the cells of one Voronoi diagram of density-weighted random points (dense in the
town and villages, sparse on the hills), split by village borders and with the water/road
cut-outs removed.  Each block computes its cells from its own points plus a halo of its
neighbours' (grown until every relevant cell is provably complete), so the blocks together give
the cells of one global diagram while memory stays flat; rows are streamed to the Shapefile
writer as they are made.  Everything is a pure function of (seed, parcels)."""
from __future__ import annotations

import math

import numpy as np
import shapely

from geobase.sample_data.codes import CONSTRUCTION, DLTB_FIELDS, FARMLAND, FOREST, GB21010, SJNF, XZQDM, XZQMC
from geobase.sample_data.geo import OX, OY, explode_polygons, geod_areas, gk_to_geo, make_rng
from geobase.sample_data.landuse import Classes, classify
from geobase.sample_data.world import World
from geobase.sample_data.writers import ShapefileWriter


class ParcelGenerator:
    """Makes about ``parcels`` parcels covering the county of ``world`` and streams them to a
    Shapefile writer; keeps what the manifest and the forest layer need (counts, areas, planted
    BSMs, forest parts per stand key)."""

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
        rng = make_rng(self.seed, 11, bi, bj)
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
        cg, cidx = explode_polygons(shapely.intersection(W.cut_geoms[ci], W.v_geoms[vi]))
        emit = (cg, vi[cidx], ci[cidx])
        for n, (bi, bj) in enumerate(blocks):
            self._do_block(bi, bj, writer, emit if n == 0 else None)
            # drop cached points of rows that can no longer be neighbours
            for k in [k for k in self._pts_cache if k[1] < bj - 3]:
                del self._pts_cache[k]
            if progress:
                progress(n + 1, len(blocks))


    def _do_block(self, bi, bj, writer, emit_cuts=None):
        """Make, classify and write the parcels of block (bi, bj); the first block also writes the
        cut-out parcels ``emit_cuts`` (geometries, village, cut-out index)."""
        _, cells = self.block_cells(bi, bj)
        if len(cells) == 0:
            cells = np.array([], dtype=object)
        rng = make_rng(self.seed, 12, bi, bj)
        geoms, vill, cut = self._block_parcels(cells, emit_cuts)
        n = len(geoms)
        if n == 0:
            return
        rx, ry, slope, slope_min, elev = self._terrain_of(geoms)
        u = rng.random(n)
        u2 = rng.random(n)
        cl = classify(self.w, geoms, cut, rx, ry, slope, slope_min, elev, u, u2)
        tbmj = self._write_rows(writer, geoms, vill, slope, u2, cl)
        self._record(geoms, vill, rx, ry, cl.dlbm, tbmj)

    def _block_parcels(self, cells, emit_cuts):
        """The block's cells split by village border, cut-outs removed, moved to EPSG:4527 and
        rounded to 1 mm: (polygons, village index, cut-out index or -1)."""
        env = shapely.box(*shapely.total_bounds(cells)) if len(cells) else shapely.Polygon()
        pieces, pv = self._split_by_village(cells, env)
        geoms, gi = self._remove_cut_outs(pieces, env)
        vill = pv[gi]
        cut = np.full(len(geoms), -1)
        if emit_cuts is not None:
            geoms = np.concatenate([emit_cuts[0], geoms])
            vill = np.concatenate([emit_cuts[1], vill])
            cut = np.concatenate([emit_cuts[2], cut])
        geoms = shapely.transform(geoms, lambda c: c + np.array([OX, OY]))
        geoms = shapely.set_precision(geoms, 0.001)
        geoms, gi = explode_polygons(geoms)
        return geoms, np.asarray(vill)[gi], np.asarray(cut)[gi]

    def _split_by_village(self, cells, env):
        """(pieces, village index): villages (and cut-outs) are clipped to the block envelope first,
        cheap overlays with prepared predicates; a cell inside one village is kept whole."""
        W = self.w
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
        pieces, pidx = explode_polygons(pieces[keep])
        return pieces, vc[vj[keep]][pidx]

    def _remove_cut_outs(self, pieces, env):
        """(polygons, index into pieces): water and roads removed from the pieces; they are
        emitted as parcels of their own."""
        W = self.w
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
        return explode_polygons(geoms)

    def _terrain_of(self, geoms):
        """Representative point (local frame), mean and min slope over a 4x4 sample grid inside the
        parcel plus the representative point, and elevation at that point."""
        W = self.w
        n = len(geoms)
        rp = shapely.get_coordinates(shapely.point_on_surface(geoms))
        rx, ry = rp[:, 0] - OX, rp[:, 1] - OY
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
        return rx, ry, slope, slope_min, elev

    def _write_rows(self, writer: ShapefileWriter, geoms, vill, slope, u2, cl: Classes) -> np.ndarray:
        """Attributes of the DLTB rows (areas, slope grade, deductions, ownership) written to the
        Shapefile; returns TBMJ."""
        dlbm = cl.dlbm
        n = len(geoms)
        tbmj = np.round(geod_areas(gk_to_geo(geoms)), 2)
        isfarm = np.isin(dlbm, FARMLAND)
        grade = np.select([slope <= 2, slope <= 6, slope <= 15, slope <= 25], [1, 2, 3, 4], 5)
        kc_lo = np.array([0, 0.02, 0.03, 0.05, 0.08, 0.11])[grade]
        kcxs = np.where(isfarm, np.round(kc_lo + 0.03 * u2, 4), 0.0)
        kcmj = np.round(tbmj * kcxs, 2)
        tbdlmj = np.round(tbmj - kcmj, 2)
        gdpdjb = np.where(isfarm, grade.astype(str), "")
        terraced = (dlbm == "0101") | ((grade >= 3) & (u2 < 0.4))
        gdlx = np.where(isfarm & (grade >= 2), np.where(terraced, "TT", "PD"), "")
        state_water = np.isin(dlbm, ("1101", "1102", "1103"))
        state_use = (cl.intown & np.isin(dlbm, CONSTRUCTION)) | (dlbm == "1003")
        qsxz = np.where(state_water, "10", np.where(state_use, "20", "30"))
        bz = np.where(dlbm == "1202", "设施农业大棚", "")
        cols = self._identity_columns(vill, qsxz, isfarm, slope, cl)
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
        cols["CZCSXM"] = list(cl.czcs)
        cols["SJNF"] = [SJNF] * n
        cols["BZ"] = list(bz)
        writer.write(geoms, cols)
        return tbmj

    def _identity_columns(self, vill, qsxz, isfarm, slope, cl: Classes) -> dict[str, list]:
        """BSM, TBBH (numbered per village), owner and location columns; records planted BSMs."""
        W = self.w
        cols: dict[str, list] = {k: [] for k, *_ in DLTB_FIELDS}
        for i in range(len(vill)):
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
            if cl.planted[i] and isfarm[i]:
                self.steep.append(bsm)
            if cl.plant_a[i]:
                self.planted["a"].append(bsm)
            if cl.plant_c[i] >= 0:
                self.planted[f"c{cl.plant_c[i]}"].append(bsm)
            if isfarm[i] and slope[i] > 25 and not cl.planted[i]:
                raise AssertionError("unplanted steep farmland")
        return cols

    def _record(self, geoms, vill, rx, ry, dlbm, tbmj) -> None:
        """Statistics for the manifest, and forest parcels grouped into stand keys (village,
        noise-warped grid cell, class) for the forest layer."""
        W = self.w
        for c, a in zip(dlbm, tbmj):
            self.stats_area[c] = self.stats_area.get(c, 0.0) + a
            self.stats_count[c] = self.stats_count.get(c, 0) + 1
        self.total_area_gk += float(shapely.area(geoms).sum())
        self.total_tbmj += float(tbmj.sum())
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

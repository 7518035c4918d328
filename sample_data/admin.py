"""Settlements and administrative divisions of the synthetic county: village sites in the valleys,
six township seats, villages as a warped Voronoi labelling (so that borders wiggle like real
ones), the county outline as the union of the villages, and the townships as unions of theirs.

The county outline is derived from the villages (not the other way round) so that villages,
townships and county are one exact coverage, which the DLTB coverage tests rely on."""
from __future__ import annotations

import math

import numpy as np
import shapely
import shapely.geometry

from geobase.sample_data.codes import NAME_SYLLABLES_1, NAME_SYLLABLES_2, TOWNSHIP_NAMES, XZQDM
from geobase.sample_data.geo import make_rng
from geobase.sample_data.world import World

LABEL_RES = 50.0  # metres: raster labelling of the villages before vectorising
LABEL_X0, LABEL_Y0 = -17000.0, -16000.0


def build_admin(w: World) -> None:
    """Sets w.clusters, w.villages (+ geometry array, tree), w.county, w.townships, w.cl_*.

    Draws from the world's stream 2 in a fixed order: site permutation, cluster radii, names."""
    rng = make_rng(w.seed, 2)
    sites = _settlement_sites(w, rng)
    seats, pool = _township_seats(w, sites)
    # town communities (社区)
    tx, ty = w.town
    comm = [(tx + 900 * math.cos(a), ty + 900 * math.sin(a)) for a in (0.6, 2.2, 3.8, 5.3)]
    seeds = [(p, 1 if p in seats else 0) for p in pool] + [(p, 1) for p in seats[1:]]
    # clusters: (x, y, radius, kind)  kind 0 village, 1 township seat
    w.clusters = [(p[0], p[1], (430.0 if k else float(rng.uniform(200, 380))), k) for p, k in seeds]
    labels, cover, vt, vx, vy = _village_cover(w, seats, comm)
    sx = np.array([p[0] for p in seats])
    sy = np.array([p[1] for p in seats])
    # township codes: 001 = town township, then by seat position (north to south, west to east)
    order = [0] + sorted(range(1, 6), key=lambda i: (-round(sy[i], -2), sx[i]))
    tcode = {ti: f"{XZQDM}{n + 1:03d}" for n, ti in enumerate(order)}
    tname = {ti: TOWNSHIP_NAMES[n] for n, ti in enumerate(order)}
    villages = []
    for li, k in enumerate(labels):
        villages.append(dict(seed=k, t=int(vt[k]), geom=cover[li], comm=k < len(comm),
                             x=float(vx[k]), y=float(vy[k])))
    villages.sort(key=lambda v: (tcode[v["t"]], not v["comm"], -round(v["y"], -2), v["x"]))
    _name_villages(villages, tcode, tname, rng)
    _set_divisions(w, villages, order, tcode, tname)


def _settlement_sites(w: World, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Up to 27 flat, low, dry sites in the valleys, at least 2.7 km apart."""
    gx, gy = np.meshgrid(np.arange(-15000, 15001, 400.0), np.arange(-14000, 14001, 400.0))
    gx, gy = gx.ravel(), gy.ravel()
    e = w.lookup(w.g_elev, gx, gy)
    s = w.lookup(w.g_slope, gx, gy)
    dmain = np.abs(gy - w.v(gx))
    dtrib = np.min([np.abs(gx - w.trib_x(t, gy)) for t in w.tribs], axis=0)
    ok = (e < 200) & (s < 8) & (w.outline_rho(gx, gy) < 0.88) & (dmain > 300) & (dtrib > 250)
    ok &= np.hypot(gx - w.town[0], gy - w.town[1]) > 3800
    for cx, cy, *_ in w.plant_hills:
        ok &= np.hypot(gx - cx, gy - cy) > 1500
    cand = np.flatnonzero(ok)[rng.permutation(int(ok.sum()))]
    sites: list[tuple[float, float]] = []
    for k in cand:
        p = (float(gx[k]), float(gy[k]))
        if all(math.hypot(p[0] - a, p[1] - b) > 2700 for a, b in sites):
            sites.append(p)
        if len(sites) >= 27:
            break
    return sites


def _township_seats(w: World, sites: list) -> tuple[list, list]:
    """The town + 5 spread-out sites (farthest point sampling); returns (seats, remaining sites)."""
    seats = [w.town]
    pool = list(sites)
    while len(seats) < 6:
        dmin = [min(math.hypot(p[0] - a, p[1] - b) for a, b in seats) for p in pool]
        k = int(np.argmax(dmin))
        seats.append(pool.pop(k))
    return seats, pool


def _village_cover(w: World, seats: list, comm: list):
    """Village polygons: nearest seed in a noise-warped space, labelled on a 50 m raster inside the
    outline, vectorised and simplified as one coverage.  Returns (labels, cover, township of each
    seed, seed x, seed y)."""
    wa, wb = w.noise_a, w.noise_b

    def warped(x, y):
        return x + 650 * wa(x, y), y + 650 * wb(x, y)

    sx = np.array([p[0] for p in seats])
    sy = np.array([p[1] for p in seats])
    # village seeds: communities + settlement clusters
    vseeds = [(c[0], c[1]) for c in comm] + [(c[0], c[1]) for c in w.clusters]
    vx = np.array([p[0] for p in vseeds])
    vy = np.array([p[1] for p in vseeds])
    wvx, wvy = warped(vx, vy)
    wsx, wsy = warped(sx, sy)
    vt = np.argmin(np.hypot(wvx[:, None] - wsx[None, :], wvy[:, None] - wsy[None, :]), axis=1)
    vt[:len(comm)] = 0
    res, x0, y0 = LABEL_RES, LABEL_X0, LABEL_Y0
    nx, ny = int(34000 / res), int(32000 / res)
    cxs = x0 + (np.arange(nx) + 0.5) * res
    cys = y0 + (np.arange(ny) + 0.5) * res
    CX, CY = np.meshgrid(cxs, cys)
    inside = w.outline_rho(CX, CY) < 1.0
    WX, WY = warped(CX, CY)
    best = np.full(CX.shape, np.inf)
    lab = np.zeros(CX.shape, dtype=np.int32)
    for i in range(len(vx)):
        d = np.hypot(WX - wvx[i], WY - wvy[i])
        m = d < best
        best[m] = d[m]
        lab[m] = i
    labels, cover = _vectorise_labels(lab, inside)
    return labels, cover, vt, vx, vy


def _vectorise_labels(lab: np.ndarray, inside: np.ndarray):
    """(sorted labels, one simplified valid polygon per label forming a coverage)"""
    from rasterio import features
    from rasterio.transform import Affine
    res = LABEL_RES
    aff = Affine(res, 0, LABEL_X0, 0, res, LABEL_Y0)
    polys: dict[int, list] = {}
    for geom, val in features.shapes(lab, mask=inside, transform=aff, connectivity=4):
        polys.setdefault(int(val), []).append(shapely.geometry.shape(geom))
    labels = sorted(polys)
    # union per label, then re-insert a vertex at every pixel corner so the coverage is fully noded
    cover = np.array([shapely.union_all(polys[k]) for k in labels], dtype=object)
    cover = shapely.segmentize(cover, res)
    cover = shapely.coverage_simplify(cover, 45.0)
    cover = shapely.make_valid(cover)
    return labels, cover


def _name_villages(villages: list[dict], tcode: dict, tname: dict, rng: np.random.Generator) -> None:
    """Codes (communities 001.., villages 201..) and names, in the villages' sorted order."""
    name_pairs = [a + b for a in NAME_SYLLABLES_1 for b in NAME_SYLLABLES_2]
    name_pairs = [name_pairs[i] for i in rng.permutation(len(name_pairs))]
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
            ncom = sum(1 for x in villages if x["t"] == t and x["comm"])
            v["code"] = f"{tcode[t]}{200 + n - ncom:03d}"
            v["name"] = name_pairs[ni] + "村"
            ni += 1
            v["owner"] = v["name"] + "民委员会"
        v["tcode"], v["tname"] = tcode[t], tname[t]


def _set_divisions(w: World, villages: list[dict], order: list, tcode: dict, tname: dict) -> None:
    """County = union of the villages, townships = unions of theirs; cluster arrays for the parcels."""
    w.villages = villages
    w.v_geoms = np.array([v["geom"] for v in villages], dtype=object)
    shapely.prepare(w.v_geoms)
    w.v_tree = shapely.STRtree(w.v_geoms)
    w.county = shapely.coverage_union_all(w.v_geoms)
    if w.county.geom_type != "Polygon":
        w.county = max(shapely.get_parts(w.county), key=lambda g: g.area)
    shapely.prepare(w.county)
    w.townships = []
    for ti in order:
        g = shapely.coverage_union_all(np.array([v["geom"] for v in villages if v["t"] == ti], dtype=object))
        w.townships.append(dict(code=tcode[ti], name=tname[ti], geom=g))
    w.cl_x = np.array([c[0] for c in w.clusters] + [w.town[0]])
    w.cl_y = np.array([c[1] for c in w.clusters] + [w.town[1]])
    w.cl_r = np.array([c[2] for c in w.clusters] + [1500.0])
    w.cl_kind = np.array([c[3] for c in w.clusters] + [2])

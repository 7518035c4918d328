"""Water and roads of the synthetic county: the main river and four tributaries, a reservoir, a
lake, a canal, ponds in the flat farmland, a national and a county road.

Every one of them becomes a "cut-out": a disjoint polygon (taken by priority, reservoir first,
roads last) that the parcels leave free and that is emitted as DLTB parcels of its own class, so
that water.geojson is exactly the union of the DLTB water parcels."""
from __future__ import annotations

import math

import numpy as np
import shapely

from geobase.sample_data.geo import blob, make_rng, union
from geobase.sample_data.world import World

RIVER_NAMES = ["清溪", "龙潭溪", "石门溪", "桃源溪", "白沙溪"]


def build_water_and_roads(w: World) -> None:
    """Sets w.river_lines, w.road_lines, w.cuts (+ geometry array, tree, codes), w.water_all, w.roads.

    Draws from the world's stream 3 in a fixed order: reservoir, lake, pond sites, ponds."""
    rng = make_rng(w.seed, 3)
    main = _line_main(w)
    tribs = [_line_trib(w, t) for t in w.tribs]
    w.river_lines = _river_lines(w, main, tribs)
    # reservoir on tributary 0 (60 % upstream), lake next to the main river east of the town
    pr = tribs[0].interpolate(0.6, normalized=True)
    reservoir = blob(pr.x, pr.y, 420, 900, rng, amp=0.2)
    xl = w.town[0] + 7000
    lake = blob(xl, float(w.v(xl)) - 750, 620, 420, rng, amp=0.25)
    # canal parallel to the main river in the farmland south of it
    cx = np.arange(w.town[0] + 2600, w.town[0] + 13000, 50.0)
    canal_line = shapely.LineString(np.column_stack([cx, w.v(cx) - 950 + 120 * np.sin(cx / 1700)]))
    hw_line, cr_line = _road_lines(w)
    w.road_lines = [("G330", "国道330线", hw_line), ("X101", "县道101线", cr_line)]
    avoid = shapely.union_all([main.buffer(250), *[t.buffer(200) for t in tribs], hw_line.buffer(120),
                               cr_line.buffer(100), canal_line.buffer(100), lake.buffer(300),
                               reservoir.buffer(300)])
    ponds = _ponds(w, rng, avoid)
    # disjoint cut-outs by priority; each: (DLBM, geometry, water feature dict or None)
    raw = [("1103", reservoir, dict(HYDC="AFD1A1R1", NAME="青龙水库", TYPE="reservoir", GRADE=None,
                                    BAS="AFD1")),
           ("1102", lake, dict(HYDC="L33990100001", NAME="月亮湖", TYPE="lake", GRADE=None, BAS="AFD1"))]
    for rl, ln in zip(w.river_lines, [main] + tribs):
        raw.append(("1101", ln.buffer(rl["width"] / 2, cap_style="flat"),
                    dict(HYDC=rl["HYDC"], NAME=rl["NAME"], TYPE="river", GRADE=rl["GRADE"], BAS=rl["BAS"])))
    raw.append(("1107", canal_line.buffer(4.0, cap_style="flat"),
                dict(HYDC=None, NAME="红旗渠", TYPE="canal", GRADE=None, BAS="AFD1")))
    for p in ponds:
        raw.append(("1104", p, dict(HYDC=None, NAME=None, TYPE="pond", GRADE=None, BAS="AFD1")))
    raw.append(("1003", hw_line.buffer(12.0, cap_style="flat"), None))
    raw.append(("1003", cr_line.buffer(5.0, cap_style="flat"), None))
    _set_cut_outs(w, raw)
    w.roads = union([hw_line.buffer(12.0), cr_line.buffer(5.0)])


def _line_main(w: World) -> shapely.LineString:
    xs = np.arange(-20000, 20001, 50.0)
    return shapely.LineString(np.column_stack([xs, w.v(xs)]))


def _line_trib(w: World, t: dict) -> shapely.LineString:
    y0 = w.v(t["xi"])
    ss = np.arange(-600, t["length"] + 1, 50.0)
    ys = y0 + t["side"] * ss
    xs = w.trib_x(t, ys)
    beyond = t["side"] * (ys - w.v(xs)) >= 0
    k = int(np.argmax(beyond))
    xs, ys = xs[k:], ys[k:]
    # start exactly on the main centre line
    xs = np.concatenate([[xs[0]], xs])
    ys = np.concatenate([[float(w.v(xs[0]))], ys])
    return shapely.LineString(np.column_stack([xs, ys])[::-1])  # flows downstream (to the main river)


def _river_lines(w: World, main, tribs) -> list[dict]:
    """River centre lines clipped to the county, with their codes, grades and bed widths."""
    county = w.county
    out = [dict(HYDC="AFD1A000", NAME=RIVER_NAMES[0], GRADE=3, BAS="AFD1",
                line=shapely.intersection(main, county), width=90.0)]
    for i, ln in enumerate(tribs):
        out.append(dict(HYDC=f"AFD1A{i + 1}00", NAME=RIVER_NAMES[i + 1], GRADE=4 if i < 2 else 5,
                        BAS="AFD1", line=shapely.intersection(ln, county),
                        width=34.0 if i < 2 else 24.0))
    return out


def _road_lines(w: World) -> tuple[shapely.LineString, shapely.LineString]:
    """(national road along the valley, county road from the town to the southern township seat)"""
    hx = np.arange(-20000, 20001, 50.0)
    hw_line = shapely.LineString(np.column_stack([hx, w.v(hx) + 450 + 150 * np.sin(hx / 3000)]))
    south = min(w.clusters, key=lambda c: c[1] if c[3] == 1 else 1e9)
    n = 200
    tt = np.linspace(0, 1, n)
    rx = w.town[0] + (south[0] - w.town[0]) * tt + 500 * np.sin(np.pi * tt * 3) * np.sin(np.pi * tt)
    ry = w.town[1] + (south[1] - w.town[1]) * tt
    return hw_line, shapely.LineString(np.column_stack([rx, ry]))


def _ponds(w: World, rng: np.random.Generator, avoid) -> list[shapely.Polygon]:
    """Up to 60 ponds in flat low farmland, away from settlements, rivers, roads and each other."""
    gx, gy = np.meshgrid(np.arange(-15000, 15001, 150.0), np.arange(-14000, 14001, 150.0))
    gx, gy = gx.ravel(), gy.ravel()
    e = w.lookup(w.g_elev, gx, gy)
    s = w.lookup(w.g_slope, gx, gy)
    ok = (e < 115) & (s < 4) & (w.outline_rho(gx, gy) < 0.95)
    ok &= np.hypot(gx - w.town[0], gy - w.town[1]) > 2300
    dcl = np.min(np.hypot(gx[:, None] - w.cl_x[None, :-1], gy[:, None] - w.cl_y[None, :-1])
                 - w.cl_r[None, :-1], axis=1)
    ok &= dcl > 120
    cand = np.flatnonzero(ok)[rng.permutation(int(ok.sum()))]
    shapely.prepare(avoid)
    ponds: list[shapely.Polygon] = []
    for k in cand:
        p = (float(gx[k]), float(gy[k]))
        if shapely.contains_xy(avoid, *p):
            continue
        if any(math.hypot(p[0] - q.centroid.x, p[1] - q.centroid.y) < 350 for q in ponds):
            continue
        r = float(rng.uniform(30, 75))
        ponds.append(blob(p[0], p[1], r, r * rng.uniform(0.6, 1.0), rng, n=14, amp=0.2,
                          rot=float(rng.uniform(0, np.pi))))
        if len(ponds) >= 60:
            break
    return ponds


def _set_cut_outs(w: World, raw: list) -> None:
    """Clip each raw cut-out to the county minus everything taken before it (1 mm grid)."""
    taken = shapely.Polygon()
    cuts = []
    for code, g, feat in raw:
        g = shapely.set_precision(g, 0.001)
        g = shapely.difference(shapely.intersection(g, w.county, grid_size=0.001), taken, grid_size=0.001)
        if g.is_empty or g.area < 1.0:
            continue
        taken = shapely.union(taken, g, grid_size=0.001)
        cuts.append((code, g, feat))
    w.cuts = cuts
    w.cut_geoms = np.array([c[1] for c in cuts], dtype=object)
    shapely.prepare(w.cut_geoms)
    w.cut_tree = shapely.STRtree(w.cut_geoms)
    w.cut_codes = [c[0] for c in cuts]
    w.water_all = taken

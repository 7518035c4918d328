"""Planning zones (GHFQ) and control lines (KZX, 三区三线) of the synthetic county, and the planted
facts the analysis tests look for: the conflict patches (b) urban boundary over basic farmland,
(d) red line over the urban boundary, (c) forest inside the urban core zone, (a) construction
parcels deep inside the red line, and the demo site of the site check.

The zones are an exact coverage of the county; the red line is kept clear of settlements, roads
and water so that the only conflicts are the planted ones the manifest lists."""
from __future__ import annotations

import math

import numpy as np
import shapely
import shapely.affinity

from geobase.sample_data.geo import OX, OY, blob, make_rng, union
from geobase.sample_data.world import World

G = 0.001  # metres: the precision grid of every overlay


def build_planning(w: World) -> None:
    """Sets w.quarry, w.zones, w.stbhhx, w.yjjbnt, w.czkfbj, w.patch_b/c/d, w.plant_a, w.demo_site
    and the EPSG:4527 copies w.zones_gk, w.stbhhx_gk the parcel rules test against.

    Draws from the world's stream 4 in a fixed order: urban, village, mining zones, unit seeds."""
    rng = make_rng(w.seed, 4)
    county = w.county
    u041, u042, u043 = _urban_zones(w, rng)
    urban = union([u041, u042, u043])
    # village construction zones
    vz = []
    for (cx, cy, r, kind) in w.clusters:
        vz.append(blob(cx, cy, r + 150, (r + 150) * 0.85, rng, n=32, amp=0.15, rot=float(rng.uniform(0, 3))))
    u051 = shapely.difference(shapely.intersection(union(vz), county, grid_size=G), urban, grid_size=G)
    u070 = _mining_zone(w, rng, urban, u051)
    special = union([urban, u051, u070])
    rest = shapely.difference(county, special, grid_size=G)
    zones = _terrain_zones(w, rng, rest)
    # keep the red line clear of settlements, roads and the valley floor
    excl = union([u051.buffer(300), urban.buffer(800), w.roads.buffer(150), w.water_all.buffer(60)])
    moved = shapely.intersection(zones["010"], excl, grid_size=G)
    zones["010"] = shapely.difference(zones["010"], excl, grid_size=G)
    zones["020"] = union([zones["020"], moved])
    zones.update({"041": u041, "042": u042, "043": u043, "051": u051, "070": u070})
    w.zones = {c: zones[c] for c in sorted(zones)}
    for g in w.zones.values():
        shapely.prepare(g)
    zone030 = w.zones["030"]
    czkfbj = union([u041, u042, u043])
    w.patch_b = _patch_b(czkfbj, zone030)
    forestz = union([w.zones["010"], w.zones["020"], w.zones["053"]])
    main = czkfbj if czkfbj.geom_type == "Polygon" else max(shapely.get_parts(czkfbj), key=lambda g: g.area)
    bnd = main.exterior
    w.patch_d = _patch_d(w, bnd, zone030, forestz)
    w.stbhhx = union([w.zones["010"], w.patch_d])
    w.yjjbnt = zone030
    w.czkfbj = union([czkfbj, w.patch_b])
    shapely.prepare(w.stbhhx)
    shapely.prepare(w.czkfbj)
    # (c) forest patches inside zone 041 (city hills)
    tx, ty = w.town
    w.patch_c = []
    for ang, dist, r in ((-math.pi / 2 + 0.3, 1250.0, 160.0), (-math.pi / 2 - 0.9, 1350.0, 110.0)):
        w.patch_c.append((tx + dist * math.cos(ang), ty + dist * math.sin(ang), r))
    w.plant_a = _plant_a(w)
    w.demo_site = _demo_site(w, bnd, zone030, forestz)
    # GK (EPSG:4527) copies of zones used in parcel rules
    w.zones_gk = {c: shapely.transform(g, lambda c_: c_ + np.array([OX, OY])) for c, g in w.zones.items()}
    w.stbhhx_gk = shapely.transform(w.stbhhx, lambda c_: c_ + np.array([OX, OY]))
    for g in list(w.zones_gk.values()) + [w.stbhhx_gk]:
        shapely.prepare(g)


def _urban_zones(w: World, rng: np.random.Generator):
    """(041 urban core, 042 elastic ring, 043 special-use blob north of the town)"""
    county = w.county
    tx, ty = w.town
    nz = w.noise_c
    t = np.linspace(0, 2 * np.pi, 180, endpoint=False)

    def ring(r0, amp):
        px, py = tx + r0 * np.cos(t), ty + r0 * np.sin(t)
        r = r0 * (1 + amp * nz(px, py))
        return shapely.Polygon(np.column_stack([tx + r * np.cos(t), ty + r * np.sin(t)]))

    u041 = shapely.intersection(ring(1950, 0.05), county, grid_size=G)
    u042 = shapely.difference(shapely.intersection(ring(2700, 0.08), county, grid_size=G), u041, grid_size=G)
    a43 = math.atan2(1, 0)  # north (away from the river)
    u043 = blob(tx + 2950 * math.cos(a43 + 0.5), ty + 2950 * math.sin(a43 + 0.5), 500, 380, rng)
    u043 = shapely.difference(shapely.intersection(u043, county, grid_size=G),
                              shapely.union(u041, u042, grid_size=G), grid_size=G)
    return u041, u042, u043


def _mining_zone(w: World, rng: np.random.Generator, urban, u051):
    """Zone 070 on a hill far from settlements, planting hills and water; sets w.quarry."""
    gx, gy = np.meshgrid(np.arange(-14000, 14001, 500.0), np.arange(-13000, 13001, 500.0))
    gx, gy = gx.ravel(), gy.ravel()
    e = w.lookup(w.g_elev, gx, gy)
    ok = (e > 250) & (e < 450) & (w.outline_rho(gx, gy) < 0.85)
    ok &= np.min(np.hypot(gx[:, None] - w.cl_x[None, :], gy[:, None] - w.cl_y[None, :]), axis=1) > 2500
    for cx, cy, *_ in w.plant_hills:
        ok &= np.hypot(gx - cx, gy - cy) > 2500
    ok &= shapely.distance(w.water_all, shapely.points(gx, gy)) > 800
    k = np.flatnonzero(ok)[int(rng.integers(int(ok.sum())))]
    w.quarry = (float(gx[k]), float(gy[k]))
    return shapely.difference(shapely.intersection(blob(*w.quarry, 420, 330, rng), w.county, grid_size=G),
                              union([urban, u051]), grid_size=G)


def _terrain_zones(w: World, rng: np.random.Generator, rest) -> dict[str, shapely.Geometry]:
    """The rest of the county as planning units (Voronoi of 240 seeds) classified by terrain into
    010 ecological protection, 020 ecological control, 030 farmland, 052 farming, 053 forestry."""
    county = w.county
    pts = []
    minx, miny, maxx, maxy = county.bounds
    while len(pts) < 240:
        p = (float(rng.uniform(minx, maxx)), float(rng.uniform(miny, maxy)))
        if shapely.contains_xy(county, *p):
            pts.append(p)
    vor = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts),
                                                     extend_to=county.envelope.buffer(5000), ordered=True))
    units = shapely.intersection(vor, rest, grid_size=G)
    zone_units: dict[str, list] = {c: [] for c in ("010", "020", "030", "052", "053")}
    plant_disks = union([shapely.Point(cx, cy).buffer(1500) for cx, cy, *_ in w.plant_hills])
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
        e = float(np.mean(w.lookup(w.g_elev, xs, ys)))
        s = float(np.mean(w.lookup(w.g_slope, xs, ys)))
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
    return {c: union(g) for c, g in zone_units.items()}


def _patch_b(czkfbj, zone030):
    """(b) urban boundary over permanent basic farmland: the largest half-disk on the shared boundary."""
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
    return best[1]


def _patch_d(w: World, bnd, zone030, forestz):
    """(d) red line over the urban boundary: a small disk on the boundary next to forest zones,
    far from 030/041/051, roads, water and patch (b)."""
    best = None
    for f in np.linspace(0, 1, 400, endpoint=False):
        p = bnd.interpolate(f, normalized=True)
        d = min(p.distance(zone030), p.distance(w.zones["041"]), p.distance(w.zones["051"]),
                p.distance(w.roads), p.distance(w.water_all), 400.0)
        if p.distance(forestz) <= 1.0:
            d += 1000.0  # prefer a spot next to forest zones
        if p.distance(w.patch_b) < 800:
            continue
        if best is None or d > best[0] + 1e-6:
            best = (d, p)
    return shapely.intersection(best[1].buffer(75), w.county, grid_size=G)


def _plant_a(w: World) -> list[tuple[float, float, str]]:
    """(a) sites of construction parcels deep inside the red line, at least 4 km apart."""
    gx, gy = np.meshgrid(np.arange(-15000, 15001, 250.0), np.arange(-14000, 14001, 250.0))
    gx, gy = gx.ravel(), gy.ravel()
    P = shapely.points(gx, gy)
    inside = shapely.contains_xy(w.stbhhx, gx, gy)
    depth = np.where(inside, shapely.distance(w.stbhhx.boundary, P), 0.0)
    e = w.lookup(w.g_elev, gx, gy)
    s = w.lookup(w.g_slope, gx, gy)
    depth = np.where((s < 20) & (e < 600), depth, 0.0)
    order = np.lexsort((gx, gy, -np.round(depth, 3)))
    plant_a: list[tuple[float, float, str]] = []
    for k in order:
        if depth[k] <= 0:
            break
        p = (float(gx[k]), float(gy[k]))
        if all(math.hypot(p[0] - a, p[1] - b) > 4000 for a, b, _ in plant_a):
            plant_a.append((p[0], p[1], ["0702", "0601", "0702"][len(plant_a)]))
        if len(plant_a) == 3:
            break
    return plant_a


def _demo_site(w: World, bnd, zone030, forestz):
    """A rotated 1.5 x 1.1 km rectangle on the urban boundary touching 030, forest zones and
    reaching outside CZKFBJ (the best balance of the four areas)."""
    best = None
    for f in np.linspace(0, 1, 200, endpoint=False):
        p = bnd.interpolate(f, normalized=True)
        if p.distance(w.patch_b) < 900 or p.distance(w.patch_d) < 900:
            continue
        rect = shapely.affinity.rotate(shapely.box(p.x - 750, p.y - 550, p.x + 750, p.y + 550), 20, origin=p)
        rect = shapely.intersection(rect, w.county, grid_size=G)
        a1 = rect.intersection(zone030).area
        a2 = rect.intersection(forestz).area
        a3 = rect.intersection(w.czkfbj).area
        a4 = rect.area - a3
        score = min(a1, a2, a3, a4)
        if best is None or score > best[0] + 1e-6:
            best = (score, rect)
    return best[1]

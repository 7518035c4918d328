"""The world of a synthetic province: N adjacent counties, their townships and villages, terrain,
water and planning zones, in one frame so that neighbouring counties share their borders exactly.

Why a frame of its own (and not N runs of the one-county generator): the county generator draws
its outline as a wobbly ellipse around one centre, so N of them would neither touch nor tile.
Here every division is a label on ONE raster of the whole province (county = nearest county seat
in a noise-warped space, village = nearest village seed of that county), vectorised once and
simplified as one coverage (``shapely.coverage_simplify``); counties and townships are the
coverage unions of their villages. So county A's border is, vertex for vertex, county B's.

Coordinates: metres in EPSG:4527 (CGCS2000 3-degree GK zone 39) minus an integer origin
``(PX, PY)``; the province is centred on 117.5E (inside the zone, 115.5-118.5E)."""
from __future__ import annotations

import math

import numpy as np
import shapely
import shapely.geometry
from geobase.sample_data.codes import EPSG_GEO, EPSG_GK, NAME_SYLLABLES_1, NAME_SYLLABLES_2
from geobase.sample_data.geo import Noise, make_rng
from pyproj import Transformer

CENTER = (117.50, 29.45)
COUNTY_M = 24_000.0   # grid spacing of the county seats
RES = 100.0           # metres: raster labelling of the divisions before vectorising
VILLAGES = 24         # per county
TOWNSHIPS = 5         # per county
_TO_GK = Transformer.from_crs(EPSG_GEO, EPSG_GK, always_xy=True)
_TO_GEO = Transformer.from_crs(EPSG_GK, EPSG_GEO, always_xy=True)
COUNTY_NAMES = [a + b + "县" for a in "青白金石云松桃龙清安" for b in "溪山川岭源湖江田阳水"]


class Province:
    """Divisions, terrain, water and zones of ``counties`` counties drawn from ``seed``.

    Each concern draws from its own random stream (``make_rng(seed, 100 + k)``)."""

    def __init__(self, seed: int, counties: int, first_code: int = 339901):
        if not 1 <= counties <= 99:
            raise ValueError("counties: between 1 and 99")
        self.seed, self.n = seed, counties
        self.cols = max(1, math.ceil(math.sqrt(2 * counties)))
        self.rows = math.ceil(counties / self.cols)
        self.width, self.height = self.cols * COUNTY_M, self.rows * COUNTY_M
        cx, cy = _TO_GK.transform(*CENTER)
        self.PX, self.PY = float(round(cx - self.width / 2)), float(round(cy - self.height / 2))
        self.codes = [str(first_code + i) for i in range(counties)]
        if any(len(c) != 6 for c in self.codes):
            raise ValueError("first_code: county codes must stay 6 digits")
        rng = make_rng(seed, 100)
        self.names = [COUNTY_NAMES[i] for i in rng.permutation(len(COUNTY_NAMES))[:counties]]
        self.warp_a, self.warp_b = Noise(rng, lmin=16000, lmax=40000), Noise(rng, lmin=16000, lmax=40000)
        self.vwarp_a, self.vwarp_b = Noise(rng, lmin=6000, lmax=15000), Noise(rng, lmin=6000, lmax=15000)
        self.seats = np.array([((i % self.cols + 0.5 + rng.uniform(-0.22, 0.22)) * COUNTY_M,
                                (i // self.cols + 0.5 + rng.uniform(-0.22, 0.22)) * COUNTY_M)
                               for i in range(counties)])
        self._terrain(make_rng(seed, 101))
        self._divisions(make_rng(seed, 102))
        self._water(make_rng(seed, 103))
        self._zones(make_rng(seed, 104))

    # ---- frame ----------------------------------------------------------------------------------
    def to_gk(self, geoms):
        """local-frame geometries -> EPSG:4527 metres (1 mm grid)"""
        return shapely.set_precision(shapely.transform(geoms, lambda c: c + np.array([self.PX, self.PY])), 0.001)

    @staticmethod
    def gk_to_geo(geoms):
        def f(c):
            lon, lat = _TO_GEO.transform(c[:, 0], c[:, 1])
            return np.column_stack([lon, lat])
        return shapely.transform(geoms, f)

    def local_from_lonlat(self, lon, lat):
        x, y = _TO_GK.transform(lon, lat)
        return np.asarray(x) - self.PX, np.asarray(y) - self.PY

    # ---- terrain --------------------------------------------------------------------------------
    def _terrain(self, rng: np.random.Generator) -> None:
        """Broad hills (30 per county) and steep cones (4 per county, slopes above 25 degrees)."""
        n = self.n
        hills = [(rng.uniform(0, self.width), rng.uniform(0, self.height), rng.uniform(150, 600),
                  rng.uniform(900, 2500), rng.uniform(900, 2500)) for _ in range(30 * n)]
        hills += [(rng.uniform(0.1, 0.9) * self.width, rng.uniform(0.1, 0.9) * self.height, 700.0,
                   rng.uniform(550, 700), rng.uniform(550, 700)) for _ in range(4 * n)]
        self.hills = np.array(hills)
        self.noise_e = Noise(rng, lmin=3000, lmax=15000)

    def elev(self, x, y):
        """elevation (m) at local-frame points: the function the DEM, slopes and classes read.
        Only hills within reach of the points are summed (a province has thousands)."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        e = 45.0 + 25.0 * self.noise_e(x, y)
        if x.size == 0:
            return e
        h = self.hills
        r = 5 * np.maximum(h[:, 3], h[:, 4])
        near = ((h[:, 0] + r > x.min()) & (h[:, 0] - r < x.max()) & (h[:, 1] + r > y.min()) & (h[:, 1] - r < y.max()))
        for cx, cy, hh, sx, sy in h[near]:
            e = e + hh * np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
        return e

    def slope(self, x, y, d: float = 5.0):
        """slope in degrees (central differences of :meth:`elev` over ``d`` metres)"""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        gx = (self.elev(x + d, y) - self.elev(x - d, y)) / (2 * d)
        gy = (self.elev(x, y + d) - self.elev(x, y - d)) / (2 * d)
        return np.degrees(np.arctan(np.hypot(gx, gy)))

    # ---- divisions ------------------------------------------------------------------------------
    def county_label(self, x, y):
        """county index at local-frame points (-1 outside the province): nearest seat in a warped
        space, inside the warped outline of the occupied grid cells"""
        a = 0.08 * COUNTY_M
        wx, wy = x + a * self.warp_a(x, y), y + a * self.warp_b(x, y)
        col, row = np.floor(wx / COUNTY_M), np.floor(wy / COUNTY_M)
        inside = (col >= 0) & (col < self.cols) & (row >= 0) & (row < self.rows) & (row * self.cols + col < self.n)
        sx, sy = self.seats[:, 0], self.seats[:, 1]
        best = np.full(np.shape(x), np.inf)
        lab = np.full(np.shape(x), -1, dtype=np.int32)
        for i in range(self.n):
            d = np.hypot(wx - (sx[i] + a * self.warp_a(sx[i], sy[i])), wy - (sy[i] + a * self.warp_b(sx[i], sy[i])))
            m = d < best
            best[m], lab[m] = d[m], i
        return np.where(inside, lab, -1)

    def _divisions(self, rng: np.random.Generator) -> None:
        m = 0.1 * COUNTY_M
        self.gx0, self.gy0 = -m, -m
        nx, ny = int((self.width + 2 * m) / RES), int((self.height + 2 * m) / RES)
        xs, ys = self.gx0 + (np.arange(nx) + 0.5) * RES, self.gy0 + (np.arange(ny) + 0.5) * RES
        X, Y = np.meshgrid(xs, ys)
        county = self.county_label(X, Y)
        vil = np.full(X.shape, -1, dtype=np.int32)
        self.villages: list[dict] = []
        for c in range(self.n):
            vil = self._villages_of(c, rng, X, Y, county, vil)
        vil = _sieve(vil)
        polys = _vectorise(vil, vil >= 0, self.gx0, self.gy0)
        for k, v in enumerate(self.villages):
            v["geom"] = polys.get(k)
        # a seed whose cells all went to its neighbours (warping) is no village
        self.villages = [v for v in self.villages if v["geom"] is not None and not v["geom"].is_empty]
        self.v_geoms = np.array([v["geom"] for v in self.villages], dtype=object)
        shapely.prepare(self.v_geoms)
        self.v_tree = shapely.STRtree(self.v_geoms)
        self.counties, self.townships = [], []
        for c in range(self.n):
            mine = [v for v in self.villages if v["county"] == c]
            self.counties.append(shapely.coverage_union_all(np.array([v["geom"] for v in mine], dtype=object)))
            for t in sorted({v["tcode"] for v in mine}):
                tv = [v for v in mine if v["tcode"] == t]
                self.townships.append(dict(county=c, code=t, name=tv[0]["tname"],
                                           geom=shapely.coverage_union_all(np.array([v["geom"] for v in tv], dtype=object))))
        try:  # GEOS 3.14's coverage union fails on some outlines (seed 20261206, 10 counties:
            # "found two shells in EdgeRing list"); the full union gives the same valid polygon
            self.outline = shapely.coverage_union_all(np.array(self.counties, dtype=object))
        except shapely.errors.GEOSException:
            self.outline = shapely.union_all(np.array(self.counties, dtype=object))
        for g in self.counties:
            shapely.prepare(g)

    def _villages_of(self, c: int, rng: np.random.Generator, X, Y, county, vil):
        """Village seeds of county ``c`` (the seat first), their townships, names and codes, and
        their labels on the raster ``vil``."""
        cells = np.flatnonzero(county.ravel() == c)
        spacing = math.sqrt(len(cells) * RES * RES / VILLAGES) * 0.55
        seeds = [tuple(self.seats[c])]
        for k in cells[rng.permutation(len(cells))]:
            p = (float(X.ravel()[k]), float(Y.ravel()[k]))
            if all(math.hypot(p[0] - a, p[1] - b) > spacing for a, b in seeds):
                seeds.append(p)
            if len(seeds) >= VILLAGES:
                break
        seats = [0]
        while len(seats) < min(TOWNSHIPS, len(seeds)):
            d = [min(math.hypot(s[0] - seeds[t][0], s[1] - seeds[t][1]) for t in seats) for s in seeds]
            seats.append(int(np.argmax(d)))
        sx, sy = np.array([s[0] for s in seeds]), np.array([s[1] for s in seeds])
        wa = 500.0
        wsx, wsy = sx + wa * self.vwarp_a(sx, sy), sy + wa * self.vwarp_b(sx, sy)
        town_of = [seats[int(np.argmin([math.hypot(wsx[i] - wsx[t], wsy[i] - wsy[t]) for t in seats]))]
                   for i in range(len(seeds))]
        in_c = county == c
        cx_, cy_ = X[in_c], Y[in_c]
        wx, wy = cx_ + wa * self.vwarp_a(cx_, cy_), cy_ + wa * self.vwarp_b(cx_, cy_)
        near = np.argmin(np.hypot(wx[:, None] - wsx[None, :], wy[:, None] - wsy[None, :]), axis=1)
        base = len(self.villages)
        vil[in_c] = base + near
        code = self.codes[c]
        tcode = {t: f"{code}{n + 1:03d}" for n, t in enumerate(seats)}
        names = [a + b for a in NAME_SYLLABLES_1 for b in NAME_SYLLABLES_2]
        tname = {t: names[int(rng.integers(len(names)))] + ("镇" if n == 0 else "乡") for n, t in enumerate(seats)}
        per_t: dict[int, int] = {}
        for i in range(len(seeds)):
            t = town_of[i]
            per_t[t] = per_t.get(t, 0) + 1
            name = names[int(rng.integers(len(names)))] + "村"
            self.villages.append(dict(county=c, x=sx[i], y=sy[i], seat=i == 0,
                                      code=f"{tcode[t]}{200 + per_t[t]:03d}", name=name, owner=name + "民委员会",
                                      tcode=tcode[t], tname=tname[t]))
        return vil

    # ---- water and zones ------------------------------------------------------------------------
    def _water(self, rng: np.random.Generator) -> None:
        """A main river along the province, a tributary from each county seat, a lake per county:
        ``self.water`` = list of (kind, name, local polygon), ``self.river_lines`` likewise."""
        xs = np.linspace(-0.1 * COUNTY_M, self.width + 0.1 * COUNTY_M, 400)
        amp, lam, ph = rng.uniform(1500, 3000), rng.uniform(6000, 12000), rng.uniform(0, 6.3)
        main = shapely.LineString(np.column_stack([xs, self.height * 0.5 + amp * np.sin(xs / lam + ph)]))
        lines = [("main", "大江", main, 140.0)]
        for c in range(self.n):
            sx, sy = self.seats[c]
            target = main.interpolate(main.project(shapely.Point(sx, sy)))
            t = np.linspace(0, 1, 60)
            off = rng.uniform(300, 900) * np.sin(t * math.pi * rng.uniform(1, 3))
            px, py = sx + (target.x - sx) * t + off, sy + (target.y - sy) * t
            start = shapely.Point(sx + rng.uniform(-6000, 6000), sy + rng.uniform(-6000, 6000))
            px = np.concatenate([[start.x], px])
            py = np.concatenate([[start.y], py])
            lines.append(("trib", self.names[c][:2] + "河", shapely.LineString(np.column_stack([px, py])), 50.0))
        self.river_lines, self.water = [], []
        for kind, name, ln, w in lines:
            ln = shapely.intersection(ln, self.outline)
            if ln.is_empty:
                continue
            self.river_lines.append((name, ln, 2 if kind == "main" else 4))
            self.water.append(("river", name, shapely.intersection(ln.buffer(w / 2, quad_segs=4), self.outline)))
        for c in range(self.n):
            pt = self.counties[c].point_on_surface()
            r = rng.uniform(500, 900)
            lake = shapely.intersection(shapely.Point(pt.x, pt.y).buffer(r, quad_segs=8), self.counties[c])
            self.water.append(("lake", self.names[c][:2] + "湖", lake))
        self.water_union = shapely.union_all([g for _, _, g in self.water], grid_size=0.001)
        shapely.prepare(self.water_union)
        self.lakes = shapely.union_all([g for k, _, g in self.water if k == "lake"], grid_size=0.001)
        shapely.prepare(self.lakes)

    def _zones(self, rng: np.random.Generator) -> None:
        """Planning zones: Voronoi cells of seeds ~3 km apart, each classified by its terrain and
        settlements, cut by the county borders and dissolved by code per county."""
        n = max(8, int(self.width * self.height / 3000.0 ** 2))
        pts = np.column_stack([rng.uniform(-2000, self.width + 2000, n), rng.uniform(-2000, self.height + 2000, n)])
        env = shapely.box(-0.2 * COUNTY_M, -0.2 * COUNTY_M, self.width + 0.2 * COUNTY_M, self.height + 0.2 * COUNTY_M)
        cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=env, ordered=True))
        e, s = self.elev(pts[:, 0], pts[:, 1]), self.slope(pts[:, 0], pts[:, 1])
        dseat = np.min(np.hypot(pts[:, 0, None] - self.seats[None, :, 0], pts[:, 1, None] - self.seats[None, :, 1]), axis=1)
        code = np.where(dseat < 2500, "041", np.where(s > 18, "010", np.where(e > 250, "053",
                        np.where(s < 6, np.where(rng.random(n) < 0.7, "030", "052"), "020"))))
        self.zones: list[dict[str, object]] = []
        for c in range(self.n):
            county = self.counties[c]
            by_code = {}
            for k in sorted(set(code.tolist())):
                g = shapely.intersection(shapely.union_all(cells[code == k]), county)
                if not g.is_empty and g.area > 1.0:
                    by_code[k] = g
            self.zones.append(by_code)


def _sieve(lab: np.ndarray, cells: int = 800) -> np.ndarray:
    """Pieces smaller than ``cells`` (exclaves of a village or of the province left by the
    warping, holes) merged into their largest neighbour, so that every village, county and the
    province are one piece each."""
    from rasterio.features import sieve

    return sieve(lab.astype(np.int32), cells, connectivity=4)


def _vectorise(lab: np.ndarray, mask: np.ndarray, x0: float, y0: float) -> dict[int, object]:
    """label -> one simplified valid polygon, together a coverage (pixel corners re-noded so
    that neighbours share every vertex before the coverage simplification)."""
    from rasterio import features
    from rasterio.transform import Affine

    polys: dict[int, list] = {}
    for geom, val in features.shapes(lab, mask=mask, transform=Affine(RES, 0, x0, 0, RES, y0), connectivity=4):
        polys.setdefault(int(val), []).append(shapely.geometry.shape(geom))
    labels = sorted(polys)
    cover = np.array([shapely.union_all(polys[k]) for k in labels], dtype=object)
    cover = shapely.segmentize(cover, RES)
    cover = shapely.coverage_simplify(cover, 0.9 * RES)
    return dict(zip(labels, shapely.make_valid(cover)))

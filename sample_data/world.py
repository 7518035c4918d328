"""The world of the synthetic county: everything that does not depend on the parcel count.

Terrain is an analytic function (a meandering main valley, tributary valleys, hills, steep red-line
ridges and three isolated steep "planting hills" where steep farmland is planted) sampled once on a
20 m grid; the DEM, the parcels' slope grades and the zones all read that one function, so the
steep-farmland facts in the manifest agree with dem.tif.  The outline and divisions
(``admin``), water and roads (``water``) and planning zones (``planning``) are built on top."""
from __future__ import annotations

import math

import numpy as np

from geobase.sample_data.codes import CENTER_LAT, CENTER_LON
from geobase.sample_data.geo import Noise, local_from_lonlat, make_rng


class World:
    """Terrain, outline, divisions, water, roads and planning zones of one seed (local frame).

    The constructor draws the terrain; ``generate.build_world`` then adds the divisions
    (``admin.build_admin``), water and roads (``water``) and zones (``planning``), in that order."""

    GRID_RES = 20.0

    def __init__(self, seed: int):
        self.seed = seed
        rng = make_rng(seed, 1)
        self._outline_and_terrain(rng)
        self._tributaries(rng)
        self.town = (-1500.0, self.v(-1500.0))
        self.hills = np.array(self._hills(rng) + self._steep_ridges(rng))
        self.plant_hills = self._planting_hills(rng)
        self.hills = np.vstack([self.hills, np.array(self.plant_hills)])
        self._build_grid()

    # ---- random parameters (stream 1, drawn in this order) ---------------------------------------
    def _outline_and_terrain(self, rng: np.random.Generator) -> None:
        """Outline radii and wobbles (polar function around the centre), valley line, noise fields."""
        xw, _ = local_from_lonlat(118.05, CENTER_LAT)
        xe, _ = local_from_lonlat(118.35, CENTER_LAT)
        _, ys = local_from_lonlat(CENTER_LON, 29.00)
        _, yn = local_from_lonlat(CENTER_LON, 29.25)
        self.rx, self.ry = (float(xe) - float(xw)) / 2 * 0.99, (float(yn) - float(ys)) / 2 * 0.99
        self.out_amp = [(k, rng.uniform(0.025, 0.07) / (1 + 0.3 * k), rng.uniform(0, 2 * np.pi))
                        for k in (2, 3, 4, 5, 7)]
        self.v_par = [rng.uniform(-1500, 500), rng.uniform(1200, 2200), rng.uniform(9000, 14000),
                      rng.uniform(0, 6.3), rng.uniform(400, 900), rng.uniform(3000, 5000),
                      rng.uniform(0, 6.3)]
        self.noise_a = Noise(rng)
        self.noise_b = Noise(rng)
        self.noise_c = Noise(rng, lmin=800, lmax=3000)
        self.noise_lu = Noise(rng, n=10, lmin=600, lmax=2500)
        self.noise_lu2 = Noise(rng, n=10, lmin=500, lmax=2000)
        self.ripple = (rng.uniform(0, 6.3), rng.uniform(0, 6.3))

    def _tributaries(self, rng: np.random.Generator) -> None:
        """tributaries: x = xi + amp*sin(y/L + p), from the main river to side*length"""
        self.tribs = []
        xs_t = [-9500.0, -4200.0, 3800.0, 9000.0]
        sides = [1, -1, 1, -1]
        for i in range(4):
            self.tribs.append(dict(xi=xs_t[i] + rng.uniform(-800, 800), amp=rng.uniform(300, 800),
                                   L=rng.uniform(2000, 3500), p=rng.uniform(0, 6.3), side=sides[i],
                                   length=rng.uniform(8000, 11000), w=rng.uniform(700, 1100)))

    def _hills(self, rng: np.random.Generator) -> list[tuple]:
        """27 broad hills away from the main valley and the town: (x, y, height, sx, sy)"""
        hills: list[tuple] = []
        tries = 0
        while len(hills) < 27 and tries < 2000:
            tries += 1
            cx, cy = rng.uniform(-15000, 15000), rng.uniform(-14000, 14000)
            if abs(cy - self.v(cx)) < 2300 or math.hypot(cx - self.town[0], cy - self.town[1]) < 4000:
                continue
            hills.append((cx, cy, rng.uniform(250, 650), rng.uniform(900, 2300), rng.uniform(900, 2300)))
        return hills

    def _steep_ridges(self, rng: np.random.Generator) -> list[tuple]:
        """5 steep ridges far from the valley and each other (where the red line ends up)"""
        steep: list[tuple] = []
        tries = 0
        while len(steep) < 5 and tries < 2000:
            tries += 1
            cx, cy = rng.uniform(-13000, 13000), rng.uniform(-12000, 12000)
            if abs(cy - self.v(cx)) < 6000 or any(math.hypot(cx - a, cy - b) < 5000 for a, b, *_ in steep):
                continue
            steep.append((cx, cy, rng.uniform(650, 800), rng.uniform(650, 850), rng.uniform(650, 850)))
        return steep

    def _planting_hills(self, rng: np.random.Generator) -> list[tuple]:
        """3 isolated steep cones near farmland (steep farmland is planted on them)"""
        plant_hills: list[tuple] = []
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
            if any(math.hypot(cx - a, cy - b) < 6000 for a, b, *_ in plant_hills):
                continue
            if self.outline_rho(cx, cy) > 0.75:
                continue
            plant_hills.append((cx, cy, 520.0, 430.0, 430.0))
            if len(plant_hills) == 3:
                break
        return plant_hills

    # ---- analytic pieces ------------------------------------------------------------------------
    def v(self, x):
        """y of the main valley's centre line at x"""
        a0, a1, l1, p1, a2, l2, p2 = self.v_par
        return a0 + a1 * np.sin(np.asarray(x) / l1 + p1) + a2 * np.sin(np.asarray(x) / l2 + p2)

    @staticmethod
    def trib_x(t, y):
        """x of tributary t's centre line at y"""
        return t["xi"] + t["amp"] * np.sin(np.asarray(y) / t["L"] + t["p"])

    def outline_rho(self, x, y):
        """< 1 inside the county outline, > 1 outside (normalised polar radius)"""
        th = np.arctan2(np.asarray(y) / self.ry, np.asarray(x) / self.rx)
        r = np.ones_like(th, dtype=float)
        for k, a, p in self.out_amp:
            r = r + a * np.sin(k * th + p)
        return np.hypot(np.asarray(x) / self.rx, np.asarray(y) / self.ry) / r

    def elev(self, x, y):
        """elevation in metres: the one terrain function the DEM and the slope grades sample"""
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
        """bilinear lookup of a 20 m grid (g_elev, g_slope) at local-frame points"""
        fx = (np.asarray(x) - self.gx0) / self.GRID_RES
        fy = (np.asarray(y) - self.gy0) / self.GRID_RES
        fx = np.clip(fx, 0, self.gnx - 1.001)
        fy = np.clip(fy, 0, self.gny - 1.001)
        i, j = fx.astype(np.int64), fy.astype(np.int64)
        tx, ty = fx - i, fy - j
        return ((grid[j, i] * (1 - tx) + grid[j, i + 1] * tx) * (1 - ty)
                + (grid[j + 1, i] * (1 - tx) + grid[j + 1, i + 1] * tx) * ty)

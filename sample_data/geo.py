"""The county's local frame and the geometry helpers every part of the generator shares.

All geometry is built in EPSG:4527 metres relative to an integer origin (OX, OY) near the county
centre, so that coordinates stay small and rounding is the same on every machine; pyproj
(``always_xy=True``) moves them to EPSG:4490 lon/lat where a delivery needs that.  Areas that
end up in attributes are ellipsoidal (pyproj Geod, GRS80), as a surveyor's TBMJ is."""
from __future__ import annotations

import math

import numpy as np
import shapely
from pyproj import Geod, Transformer

from geobase.sample_data.codes import CENTER_LAT, CENTER_LON, EPSG_GEO, EPSG_GK

GEOD = Geod(ellps="GRS80")
_TO_GEO = Transformer.from_crs(EPSG_GK, EPSG_GEO, always_xy=True)
_TO_GK = Transformer.from_crs(EPSG_GEO, EPSG_GK, always_xy=True)
_ox, _oy = _TO_GK.transform(CENTER_LON, CENTER_LAT)
OX, OY = float(round(_ox)), float(round(_oy))  # integer origin of the local frame (EPSG:4527 metres)


def make_rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent random stream per concern (and per block): adding draws to one part of the
    generator must not shift the numbers another part sees."""
    return np.random.default_rng([seed, *stream])


def local_from_lonlat(lon, lat):
    """EPSG:4490 lon/lat -> local frame metres"""
    x, y = _TO_GK.transform(lon, lat)
    return np.asarray(x) - OX, np.asarray(y) - OY


def geo_geoms(geoms):
    """local-frame geometries -> EPSG:4490 lon/lat geometries"""
    def f(c):
        lon, lat = _TO_GEO.transform(c[:, 0] + OX, c[:, 1] + OY)
        return np.column_stack([lon, lat])
    return shapely.transform(geoms, f)


def gk_to_geo(geoms):
    """EPSG:4527 geometries (with the zone-prefixed eastings) -> EPSG:4490 lon/lat geometries"""
    def f(c):
        lon, lat = _TO_GEO.transform(c[:, 0], c[:, 1])
        return np.column_stack([lon, lat])
    return shapely.transform(geoms, f)


def geod_area(geom_lonlat) -> float:
    """ellipsoidal area (pyproj Geod GRS80) of one lon/lat geometry"""
    return abs(GEOD.geometry_area_perimeter(geom_lonlat)[0])


def geod_areas(polys_lonlat) -> np.ndarray:
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


def explode_polygons(geoms, idx=None):
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


def union(geoms, grid=0.001):
    """union on a 1 mm grid (so that results are exact coverages), empty and None parts ignored"""
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return shapely.Polygon()
    return shapely.union_all(np.asarray(geoms, dtype=object), grid_size=grid)


def blob(cx, cy, rx, ry, rng, n=48, amp=0.18, rot=0.0):
    """a wobbly ellipse (lake, pond, zone patch): draws three phases from ``rng``"""
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


def phi(z):
    """approximate standard normal cdf, vectorised"""
    return 0.5 * (1 + np.tanh(0.7978845608 * (z + 0.044715 * z ** 3)))


"""Coordinate reference systems: the one home of parsing, resolving and checking a CRS.

Two users: the features API (OGC API - Features Part 2: :func:`parse_crs`, :func:`to_storage`)
and ingest, whose deliveries name their CRS in a ``.prj`` or not at all (:func:`file_crs`,
:func:`parse_user_crs`, :func:`suggest_from_bounds`; see the section at the end).

The storage CRS is CGCS2000 geographic (EPSG:4490). Clients may ask for output (``crs``),
give a ``bbox`` (``bbox-crs``) or write CQL2 geometry literals (``filter-crs``) in any of:

* OGC CRS84 (lon/lat, the default of the standard),
* EPSG:4490 (CGCS2000) and EPSG:4326 (WGS 84) — both *lat/lon* ordered per their EPSG
  definition, which is what the standard requires when they are named by URI,
* EPSG:3857 (Web Mercator),
* the CGCS2000 Gauss-Kruger zones that cover the data (3° and 6°, with and without the zone
  number prefix in the easting), computed from the layers' extents — the CRSs local surveys
  deliver in.

Axis order is taken from the EPSG definition through pyproj, so e.g. the GK zones (defined
northing, easting) are honoured exactly as GDAL and other OGC clients expect.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING

from geobase.errors import InvalidInput
from geobase.lazy_import import load

if TYPE_CHECKING:
    from pyproj import CRS as ProjCRS


def _pyproj() -> ModuleType:
    """pyproj, imported by the first CRS that needs PROJ (an EPSG code other than CRS84, a file's
    CRS, a reprojection), not at server start: ~0.1 s and ~25 MiB."""
    return load("pyproj", "pyproj.exceptions")[0]


CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
CRS84H = "http://www.opengis.net/def/crs/OGC/0/CRS84h"
EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/{}"
STORAGE_CRS = EPSG_URI.format(4490)
BASE_CRS = [CRS84, EPSG_URI.format(4490), EPSG_URI.format(4326), EPSG_URI.format(3857)]
#: longitude span of the CGCS2000 GK EPSG definitions (central meridians 75E..135E)
GK_MIN_CM, GK_MAX_CM = 75, 135


@dataclass(frozen=True)
class Crs:
    """A resolved CRS: its URI, the SRID PostGIS transforms to, and whether axes are flipped
    (first axis north/south, i.e. lat/lon or northing/easting) relative to PostGIS x/y."""

    uri: str
    srid: int
    flip: bool

    @property
    def geographic(self) -> bool:
        return self.srid in (4326, 4490)

    @property
    def default_precision(self) -> int:
        """Decimals that keep ~1 cm: 7 for degrees, 2 for metres."""
        return 7 if self.geographic else 2


def gk_zones(extent: Iterable[float] | None) -> list[int]:
    """EPSG codes of the CGCS2000 Gauss-Kruger zones overlapping a lon/lat extent.

    3° zones with zone prefix 4513 + (cm-75)/3 (zone 39, 117E = 4527), without prefix
    4534 + (cm-75)/3 (117E = 4548); 6° zones with prefix 4491 + (zone-13) (zone 20 = 4498),
    without prefix 4502 + (zone-13) (117E = 4509)."""
    if not extent:
        return []
    minx, _miny, maxx, _maxy = list(extent)
    codes: list[int] = []
    cm3 = range(int(round(minx / 3)) * 3, int(round(maxx / 3)) * 3 + 1, 3)
    for cm in cm3:
        if GK_MIN_CM <= cm <= GK_MAX_CM:
            i = (cm - GK_MIN_CM) // 3
            codes += [4513 + i, 4534 + i]
    for zone in range(int(math.floor(minx / 6)) + 1, int(math.floor(maxx / 6)) + 2):
        if 13 <= zone <= 23:
            codes += [4491 + zone - 13, 4502 + zone - 13]
    return sorted(set(codes))


def supported_uris(extent: Iterable[float] | None) -> list[str]:
    """The CRS list of a collection: the base CRSs plus the GK zones covering its extent."""
    return BASE_CRS + [EPSG_URI.format(c) for c in gk_zones(extent)]


_URI_RE = re.compile(r"^https?://www\.opengis\.net/def/crs/EPSG/0/(\d+)$")
_CURIE_RE = re.compile(r"^\[?EPSG:(\d+)\]?$", re.IGNORECASE)


@lru_cache(maxsize=256)
def _flip(srid: int) -> bool:
    axis = _pyproj().CRS.from_epsg(srid).axis_info
    return bool(axis) and axis[0].direction.lower() in ("north", "south")


def parse_crs(value: str | None, parameter: str, allowed: Iterable[str] | None = None) -> Crs:
    """Resolve a CRS URI (or ``EPSG:n`` CURIE) the API supports; None means CRS84.

    ``allowed`` restricts to a collection's CRS list; anything else is a 400 naming the
    parameter and the CRSs that would work."""
    if value is None or value.strip() == "" or value.strip() in (CRS84, CRS84H, "CRS84", "OGC:CRS84"):
        return Crs(CRS84, 4326, False)
    v = value.strip()
    m = _URI_RE.match(v) or _CURIE_RE.match(v)
    if not m:
        raise InvalidInput(f"{parameter}: {value!r} is not a CRS URI (e.g. {CRS84} or {EPSG_URI.format(4490)})",
                           parameter=parameter)
    srid = int(m.group(1))
    uri = EPSG_URI.format(srid)
    allowed = list(allowed) if allowed is not None else None
    if allowed is not None and uri not in allowed:
        raise InvalidInput(f"{parameter}: {value!r} is not supported here; supported: {', '.join(allowed)}",
                           parameter=parameter)
    if allowed is None and uri not in BASE_CRS and srid not in gk_zones([GK_MIN_CM - 1.5, 0, GK_MAX_CM + 1.5, 0]):
        raise InvalidInput(f"{parameter}: EPSG:{srid} is not supported", parameter=parameter)
    try:
        flip = _flip(srid)
    except Exception:  # pyproj without that code: refuse rather than guess the axis order
        raise InvalidInput(f"{parameter}: EPSG:{srid} is unknown to this server", parameter=parameter) from None
    return Crs(uri, srid, flip)


#: how far outside a projected CRS's EPSG area of use coordinates are still accepted (degrees):
#: surveys use a Gauss-Kruger zone a little past its edges, but not on the other side of China
AREA_MARGIN_DEG = 1.5


@lru_cache(maxsize=64)
def _to_storage_transformer(srid: int):
    pyproj = _pyproj()
    return pyproj.Transformer.from_crs(pyproj.CRS.from_epsg(srid), pyproj.CRS.from_epsg(4490), always_xy=True)


@lru_cache(maxsize=64)
def _area_of_use(srid: int) -> tuple[float, float, float, float] | None:
    area = _pyproj().CRS.from_epsg(srid).area_of_use
    return (area.west, area.south, area.east, area.north) if area else None


def to_storage(geom, crs: Crs, parameter: str, *, axis_order: bool = True):
    """A shapely geometry given in ``crs`` -> the same in EPSG:4490 x/y (lon/lat).

    The one check of coordinates a client gives in a CRS (``bbox``+``bbox-crs``, CQL2 literals
    +``filter-crs``): ``axis_order`` means the coordinates follow the CRS's own axis order (a
    northing-first GK zone, lat/lon EPSG:4326) and are swapped here. Non-finite numbers, degrees
    outside -180..180 / -90..90 and projected coordinates that do not fall in (or near) the CRS's
    area of use are a 400 naming ``parameter`` (the transformation would fail or answer nonsense).
    Projected inputs are densified first so their straight edges stay (nearly) straight."""
    import numpy as np
    import shapely

    coords = shapely.get_coordinates(geom)
    if coords.size == 0:
        raise InvalidInput(f"{parameter}: the geometry is empty", parameter=parameter)
    if not np.isfinite(coords).all():
        raise InvalidInput(f"{parameter}: coordinates must be finite numbers", parameter=parameter)
    if crs.flip and axis_order:
        geom = shapely.transform(geom, lambda xy: xy[:, ::-1])
    label = "CRS84" if crs.uri == CRS84 else f"EPSG:{crs.srid}"
    order = ("northing, easting" if not crs.geographic else "latitude, longitude") if crs.flip else \
        ("longitude, latitude" if crs.geographic or crs.uri == CRS84 else "easting, northing")
    if crs.srid in (4326, 4490):
        minx, miny, maxx, maxy = geom.bounds
        if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
            raise InvalidInput(f"{parameter}: coordinates are outside longitude -180..180 / latitude -90..90 "
                               f"(axis order of {label}: {order})", parameter=parameter)
        return geom
    tr = _to_storage_transformer(crs.srid)
    area = _area_of_use(crs.srid)
    m = AREA_MARGIN_DEG

    def fits(ll) -> bool:
        return bool(np.isfinite(ll).all()) and (area is None or bool(
            (ll[:, 0] >= area[0] - m).all() and (ll[:, 0] <= area[2] + m).all()
            and (ll[:, 1] >= area[1] - m).all() and (ll[:, 1] <= area[3] + m).all()))

    def project(g):
        return shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))

    # the given vertices first (cheap, and an absurd extent must not be densified), then the
    # densified geometry whose edges are what the query uses
    out = None
    if fits(shapely.get_coordinates(project(geom))):
        minx, miny, maxx, maxy = geom.bounds
        seg = max(maxx - minx, maxy - miny) / 32
        out = project(shapely.segmentize(geom, seg) if seg > 0 else geom)
    if out is None or not fits(shapely.get_coordinates(out)):
        where = f" (lon {area[0]:g}..{area[2]:g}, lat {area[1]:g}..{area[3]:g})" if area else ""
        raise InvalidInput(f"{parameter}: coordinates fall outside the area of {label}{where}; check the CRS and "
                           f"the axis order ({label}: {order})", parameter=parameter)
    return out


# --- CRSs of deliveries (ingest): identify, refuse, suggest ------------------------------------
# Chinese deliveries carry ArcGIS ``.prj`` files naming CGCS2000 Gauss-Kruger zones
# (``CGCS2000_3_Degree_GK_Zone_39``, ``..._CM_117E``, 6 degree ``CGCS2000_GK_Zone_20``); those
# names map to their EPSG codes (4513-4554 3 degree, 4491-4512 6 degree, domain.md section 4)
# instead of a fuzzy WKT match, because a hand-made GK prj matches both a 3- and a 6-degree zone.
# A file without a CRS is refused unless ``--crs`` is given; the message says which code the
# coordinates suggest (zone-prefixed GK eastings name their zone; degrees suggest 4490 or 4326).

STORAGE_EPSG = 4490

_GK_PATTERNS = [
    (re.compile(r"CGCS2000_3_Degree_GK_Zone_(\d+)", re.IGNORECASE), lambda n: 4513 + n - 25, range(25, 46)),
    (re.compile(r"CGCS2000_3_Degree_GK_CM_(\d+)E", re.IGNORECASE), lambda cm: 4534 + (cm - 75) // 3, range(75, 136, 3)),
    (re.compile(r"CGCS2000_GK_Zone_(\d+)", re.IGNORECASE), lambda n: 4491 + n - 13, range(13, 24)),
    (re.compile(r"CGCS2000_GK_CM_(\d+)E", re.IGNORECASE), lambda cm: 4502 + (cm - 75) // 6, range(75, 136, 6)),
]


def gk_epsg_from_name(text: str) -> int | None:
    """EPSG code of an ArcGIS CGCS2000 GK projection name found in a .prj/WKT, else None."""
    head = text[:200]
    m = re.search(r'PROJCS\["([^"]+)"', head) or re.search(r'PROJCRS\["([^"]+)"', head)
    name = m.group(1) if m else head
    for pattern, code, valid in _GK_PATTERNS:
        mm = pattern.search(name)
        if mm and int(mm.group(1)) in valid:
            return code(int(mm.group(1)))
    if not m and re.search(r'GEOGCS\["GCS_China_Geodetic_Coordinate_System_2000"', head):
        return STORAGE_EPSG
    return None


def parse_user_crs(text: str) -> ProjCRS:
    """The CRS an operator names for a delivery (``--crs``, the ingest form's ``crs``): anything
    PROJ understands (EPSG code, WKT, PROJ string); else a 400 naming ``crs``."""
    pyproj = _pyproj()
    try:
        return pyproj.CRS.from_user_input(text)
    except pyproj.exceptions.CRSError as exc:
        raise InvalidInput(f"--crs: {text!r} is not a CRS PROJ understands ({exc})", parameter="crs") from None


def file_crs(crs_text: str | None, prj: bytes | None = None) -> ProjCRS | None:
    """The CRS stated by the file (GDAL's view, refined by the ArcGIS GK names of the .prj)."""
    pyproj = _pyproj()
    raw_prj = prj.decode("latin-1", "ignore") if prj else None
    for text in (raw_prj, crs_text):
        if text:
            code = gk_epsg_from_name(text)
            if code:
                return pyproj.CRS.from_epsg(code)
    if not crs_text:
        return None
    try:
        crs = pyproj.CRS.from_user_input(crs_text)
    except pyproj.exceptions.CRSError:
        return None
    epsg = crs.to_epsg(min_confidence=70)
    return pyproj.CRS.from_epsg(epsg) if epsg else crs


def zone3(lon: float) -> int:
    """The CGCS2000 3-degree Gauss-Kruger zone number of a longitude."""
    return math.floor(lon / 3 + 0.5)


def suggest_from_bounds(bounds: tuple[float, float, float, float] | None) -> str:
    """A sentence saying which CRS the coordinates look like, for the refusal message."""
    if not bounds or any(b is None or not math.isfinite(b) for b in bounds):
        return "pass --crs with the CRS of the delivery (e.g. --crs EPSG:4527)"
    xmin, ymin, xmax, ymax = bounds
    if -180 <= xmin <= xmax <= 180 and -90 <= ymin <= ymax <= 90:
        return ("the coordinates look like longitude/latitude degrees: pass --crs EPSG:4490 (CGCS2000) "
                "or --crs EPSG:4326 (WGS 84) as the delivery states")
    zmin, zmax = int(xmin // 1_000_000), int(xmax // 1_000_000)
    if zmin == zmax and 0 <= ymin and ymax < 10_000_000:
        if 25 <= zmin <= 45:
            return (f"the eastings carry a zone prefix {zmin}: they suggest CGCS2000 3-degree Gauss-Kruger "
                    f"zone {zmin}, --crs EPSG:{4513 + zmin - 25}")
        if 13 <= zmin <= 23:
            return (f"the eastings carry a zone prefix {zmin}: they suggest CGCS2000 6-degree Gauss-Kruger "
                    f"zone {zmin}, --crs EPSG:{4491 + zmin - 13}")
    if 200_000 <= xmin <= xmax <= 800_000 and 0 <= ymin and ymax < 10_000_000:
        return ("the coordinates look like Gauss-Kruger metres without a zone prefix: pass --crs with the "
                "zone's central meridian, e.g. EPSG:4534-4554 (CGCS2000 3-degree CM 75E-135E)")
    return "pass --crs with the CRS of the delivery (e.g. --crs EPSG:4527)"


def area_of_use(crs: ProjCRS) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) of a CRS's EPSG area of use, in degrees; None if it has none."""
    aou = crs.area_of_use
    if aou is None:
        return None
    return (aou.west, aou.south, aou.east, aou.north)


def describe(crs: ProjCRS) -> str:
    """``EPSG:n (name)`` for the quality report, or the CRS's name when it has no EPSG code."""
    epsg = crs.to_epsg(min_confidence=70)
    return f"EPSG:{epsg} ({crs.name})" if epsg else crs.name
# --- the CRS an input geometry is declared in (analysis bodies and uploads) ---------------------

#: CGCS2000 Gauss-Kruger zone CRSs whose easting carries the zone number -> that number
#: (6° zones 13-23: EPSG:4491-4501; 3° zones 25-45: EPSG:4513-4533)
GK_ZONE_PREFIX = {**{4491 + i: 13 + i for i in range(11)}, **{4513 + i: 25 + i for i in range(21)}}
#: the same zones without the prefix (false easting 500000 only): EPSG:4502-4512, 4534-4554
GK_UNPREFIXED = frozenset(range(4502, 4513)) | frozenset(range(4534, 4555))
_INPUT_CRS84 = {n.upper() for n in (CRS84, "CRS84", "OGC:CRS84", "urn:ogc:def:crs:OGC:1.3:CRS84")}
_INPUT_SHORT = re.compile(r"(?i)(?:urn:ogc:def:crs:EPSG::|http://www\.opengis\.net/def/crs/EPSG/0/)?(\d{4,5})")
SUPPORTED_HINT = "use CRS84, EPSG:4490, 4326, 3857 or a CGCS2000 Gauss-Kruger zone (EPSG:4491-4554)"


def is_supported(srid: int | None) -> bool:
    """Whether geobase reads and writes coordinates in this CRS: the base CRSs and every
    CGCS2000 Gauss-Kruger zone (the same list :func:`parse_crs` accepts without ``allowed``)."""
    return srid is not None and (EPSG_URI.format(srid) in BASE_CRS or srid in GK_ZONE_PREFIX or srid in GK_UNPREFIXED)


def parse_input_crs(value: str | int | None, parameter: str = "crs") -> int | None:
    """The EPSG code of the CRS an input geometry is declared in (None: CRS84, lon/lat), read by
    :func:`parse_crs` after the short forms a request body or a CLI option carries (``4527``,
    ``EPSG:4527``, ``urn:ogc:def:crs:EPSG::4527``, any case) are brought to its form. An input
    geometry's coordinates are x/y (GeoJSON order) whatever the CRS's axis order."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    if text.upper() in _INPUT_CRS84:
        return None
    short = _INPUT_SHORT.fullmatch(text)
    try:
        crs = parse_crs(f"EPSG:{short.group(1)}" if short else text, parameter)
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.message}; {SUPPORTED_HINT}", parameter=parameter) from None
    return None if crs.uri == CRS84 else crs.srid

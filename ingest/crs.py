"""Coordinate reference systems of deliveries: identify, refuse, suggest.

Chinese deliveries carry ArcGIS ``.prj`` files naming CGCS2000 Gauss-Kruger zones
(``CGCS2000_3_Degree_GK_Zone_39``, ``..._CM_117E``, 6° ``CGCS2000_GK_Zone_20``); we map those
names to their EPSG codes (4513–4554 3°, 4491–4512 6°, domain.md §4) instead of trusting a
fuzzy WKT match, because a hand-made GK prj matches both a 3° and a 6° zone. A file without a
CRS is refused unless ``--crs`` is given; the message says which code the coordinates suggest
(zone-prefixed GK eastings name their zone; degrees suggest EPSG:4490 or 4326).
"""

from __future__ import annotations

import math
import re

from pyproj import CRS
from pyproj.exceptions import CRSError

from geobase.errors import InvalidInput

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


def parse_user_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except CRSError as exc:
        raise InvalidInput(f"--crs: {text!r} is not a CRS PROJ understands ({exc})", parameter="crs") from None


def file_crs(crs_text: str | None, prj: bytes | None = None) -> CRS | None:
    """The CRS stated by the file (GDAL's view, refined by the ArcGIS GK names of the .prj)."""
    raw_prj = prj.decode("latin-1", "ignore") if prj else None
    for text in (raw_prj, crs_text):
        if text:
            code = gk_epsg_from_name(text)
            if code:
                return CRS.from_epsg(code)
    if not crs_text:
        return None
    try:
        crs = CRS.from_user_input(crs_text)
    except CRSError:
        return None
    epsg = crs.to_epsg(min_confidence=70)
    return CRS.from_epsg(epsg) if epsg else crs


def zone3(lon: float) -> int:
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


def area_of_use(crs: CRS) -> tuple[float, float, float, float] | None:
    aou = crs.area_of_use
    if aou is None:
        return None
    return (aou.west, aou.south, aou.east, aou.north)


def describe(crs: CRS) -> str:
    epsg = crs.to_epsg(min_confidence=70)
    return f"EPSG:{epsg} ({crs.name})" if epsg else crs.name

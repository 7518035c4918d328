"""The raw parameters of /items, /changes and downloads, and their parsing: RFC 3339 instants
and intervals (``datetime`` -> the layer version current then), boxes, points and lists."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field

from geobase.catalog.state import LayerState
from geobase.crs import Crs
from geobase.errors import InvalidInput

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?)?$")


@dataclass
class ItemsParams:
    """The raw request parameters (strings as received) of /items, /changes and downloads."""

    limit: int | None = None
    bbox: str | None = None
    bbox_crs: str | None = None
    crs: str | None = None
    datetime: str | None = None
    filter: str | None = None
    filter_lang: str | None = None
    filter_crs: str | None = None
    properties: str | None = None
    sortby: str | None = None
    skip_geometry: bool = False
    precision: int | None = None
    distance: float | None = None
    point: str | None = None
    geometry: str | None = None
    cursor: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _parse_instant(text: str, parameter: str, end: bool = False) -> dt.datetime:
    t = text.strip()
    if not RFC3339.match(t):
        raise InvalidInput(f"{parameter}: {text!r} is not an RFC 3339 date or date-time", parameter=parameter)
    try:
        if len(t) == 10:
            d = dt.date.fromisoformat(t)
            value = dt.datetime.combine(d, dt.time.max if end else dt.time.min, tzinfo=dt.UTC)
        else:
            value = dt.datetime.fromisoformat(t.replace("z", "Z").replace("Z", "+00:00").replace(" ", "T"))
    except ValueError as exc:
        raise InvalidInput(f"{parameter}: {text!r}: {exc}", parameter=parameter) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def resolve_datetime(state: LayerState, value: str | None) -> int | None:
    """The layer version a ``datetime`` selects: the version current at the instant (or at
    the end of an interval): the highest version created at or before it. None = no version
    existed then (the layer was empty). Without ``datetime``: the current version."""
    if value is None or value.strip() == "":
        return state.current_version
    parts = value.split("/")
    if len(parts) > 2:
        raise InvalidInput(f"datetime: {value!r} is neither an instant nor an interval", parameter="datetime")
    if len(parts) == 2:
        start, end = (p.strip() for p in parts)
        if start in ("", "..") and end in ("", ".."):
            return state.current_version
        t0 = _parse_instant(start, "datetime") if start not in ("", "..") else None
        t1 = _parse_instant(end, "datetime", end=True) if end not in ("", "..") else None
        if t0 and t1 and t0 > t1:
            raise InvalidInput("datetime: the interval starts after it ends", parameter="datetime")
        if t1 is None:
            return state.current_version
        at = t1
    else:
        at = _parse_instant(parts[0], "datetime", end=True)
    chosen = None
    for v, info in state.versions.items():
        if info["created_at"] <= at and (chosen is None or v > chosen) and (
                state.current_version is None or v <= state.current_version):
            chosen = v
    return chosen


def parse_bbox(value: str | None, crs: Crs) -> tuple[float, float, float, float] | None:
    """``minx,miny,maxx,maxy`` (or 6 numbers with heights) in ``bbox-crs``'s axis order,
    returned as PostGIS x/y (lon/lat, easting/northing)."""
    if value is None or value.strip() == "":
        return None
    try:
        nums = [float(x) for x in value.split(",")]
    except ValueError:
        raise InvalidInput(f"bbox: {value!r} must be 4 (or 6) comma-separated numbers", parameter="bbox") from None
    if len(nums) == 6:
        nums = [nums[0], nums[1], nums[3], nums[4]]
    if len(nums) != 4 or not all(math.isfinite(n) for n in nums):
        raise InvalidInput(f"bbox: {value!r} must be 4 (or 6) finite comma-separated numbers", parameter="bbox")
    a, b, c, d = nums
    if crs.flip:
        a, b, c, d = b, a, d, c
    if a > c or b > d:
        raise InvalidInput(f"bbox: {value!r}: the lower corner must come first (min <= max on both axes; "
                           "boxes across the antimeridian are not supported)", parameter="bbox")
    if crs.srid in (4326, 4490) and (a < -180 or c > 180 or b < -90 or d > 90):
        raise InvalidInput(f"bbox: {value!r} is outside longitude -180..180 / latitude -90..90", parameter="bbox")
    return a, b, c, d


def parse_list(value: str | None) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()] if value else []


def parse_point(value: str, parameter: str = "point") -> tuple[float, float]:
    try:
        lon, lat = (float(x) for x in value.split(","))
    except ValueError:
        raise InvalidInput(f"{parameter}: {value!r} must be lon,lat (CRS84)", parameter=parameter) from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput(f"{parameter}: {value!r} is outside lon -180..180 / lat -90..90", parameter=parameter)
    return lon, lat

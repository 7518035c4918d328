"""The declarative layout of a thematic map sheet (专题制图): what ``POST /maps/print`` and
``geobase map print layout.json`` accept.

A layout is data, checked before anything is drawn: an unknown key anywhere is refused naming
that key (a misspelt ``"legnd": false`` must not silently print a legend), and the limits that
bound the work of one sheet (paper, DPI) are refused naming the parameter. Which layers and
fields the caller may print is decided later, against the catalog (:mod:`geobase.printing.sheet`).

Example::

    {"title": "示范县土地利用现状图", "layers": ["planning_zones", {"name": "land_use", "opacity": 0.8}],
     "extent": {"bbox": [118.10, 29.05, 118.15, 29.10]}, "paper": "A4", "orientation": "landscape",
     "dpi": 150, "source": "示范县自然资源局", "approval_number": "浙S(2026)001号"}
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from geobase.errors import InvalidInput

#: paper sizes in millimetres (ISO 216), portrait width x height
PAPER_MM: dict[str, tuple[float, float]] = {"A4": (210.0, 297.0), "A3": (297.0, 420.0)}


class _Strict(BaseModel):
    # defer_build: its schema is built by its first use, not by every server start (issue #15)
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class LayerChoice(_Strict):
    """One layer drawn on the sheet, styled from its spec (class colours of its code list)."""

    name: str = Field(min_length=1, max_length=63)
    opacity: float | None = Field(default=None, ge=0.0, le=1.0, description="overrides the spec's style opacity")
    label: str | None = Field(default=None, max_length=63, description="an attribute printed on each feature "
                              "(checked like every field a caller names: a masked one is refused)")


class Extent(_Strict):
    """Where the sheet looks: a CGCS2000 longitude/latitude box, or an area of interest (GeoJSON
    geometry in CGCS2000 longitude/latitude) whose outline is drawn and whose box is framed."""

    bbox: tuple[float, float, float, float] | None = None
    aoi: dict | None = None

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, b):
        if b is not None and not (-180 <= b[0] < b[2] <= 180 and -90 <= b[1] < b[3] <= 90):
            raise ValueError("bbox must be minlon,minlat,maxlon,maxlat within -180..180, -90..90")
        return b


class Layout(_Strict):
    """A map sheet: title, layers, extent, paper and the map furniture around the frame."""

    title: str = Field(min_length=1, max_length=120)
    subtitle: str | None = Field(default=None, max_length=200)
    layers: list[str | LayerChoice] = Field(min_length=1, max_length=20)
    extent: Extent
    scale: int | None = Field(default=None, ge=100, le=50_000_000,
                              description="the map's scale denominator; default: the round scale that fits the extent")
    paper: Literal["A4", "A3"] = "A4"
    orientation: Literal["portrait", "landscape"] = "landscape"
    dpi: int = Field(default=150, ge=72)
    format: Literal["pdf", "png", "svg"] = "pdf"
    legend: bool = True
    scale_bar: bool = True
    north_arrow: bool = True
    grid: bool = True
    source: str | None = Field(default=None, max_length=200)
    date: dt.date | None = None
    approval_number: str | None = Field(default=None, max_length=60, description="审图号; empty: a blank slot")

    def choices(self) -> list[LayerChoice]:
        return [LayerChoice(name=c) if isinstance(c, str) else c for c in self.layers]

    def paper_mm(self) -> tuple[float, float]:
        w, h = PAPER_MM[self.paper]
        return (h, w) if self.orientation == "landscape" else (w, h)


def _where(loc: tuple) -> str:
    """A pydantic error location as the key a user wrote (``extent.bbox``, ``layers[1].name``);
    union branches (``LayerChoice``, ``str``) are not keys and are left out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("LayerChoice", "str") or "[" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_layout(data: object, *, max_dpi: int) -> Layout:
    """The checked layout, or InvalidInput naming the offending key (unknown keys first, then
    bad values, then the limits: ``dpi`` above ``max_dpi``)."""
    if not isinstance(data, dict):
        raise InvalidInput("layout: a JSON object is expected", parameter="layout")
    try:
        layout = Layout.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        unknown = [e for e in errors if e["type"] == "extra_forbidden"]
        first = (unknown or errors)[0]
        where = _where(first["loc"]) or "layout"
        if first["type"] == "extra_forbidden":
            raise InvalidInput(f"{where}: unknown layout key", parameter=where) from None
        raise InvalidInput(f"{where}: {first['msg']}", parameter=where) from None
    ext = layout.extent
    if (ext.bbox is None) == (ext.aoi is None):
        raise InvalidInput("extent: give exactly one of bbox or aoi", parameter="extent")
    if layout.dpi > max_dpi:
        raise InvalidInput(f"dpi: {layout.dpi} is above this server's limit {max_dpi} (GEOBASE_PRINT_MAX_DPI)",
                           parameter="dpi")
    names = [c.name for c in layout.choices()]
    if len(set(names)) != len(names):
        raise InvalidInput("layers: a layer is named twice", parameter="layers")
    return layout

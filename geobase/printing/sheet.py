"""A thematic map sheet (专题制图) composed with matplotlib: title, the map frame at a round
scale, CGCS2000 graticule with labels, legend of the classes drawn, scale bar, north arrow,
source, date and the 审图号 slot; written as PDF (fonts embedded as TrueType) or PNG.

The map is a plate carrée of CGCS2000 longitude/latitude that is true to scale at the frame's
central latitude in both directions (the meridian and prime-vertical radii of curvature of the
GRS80 ellipsoid), so the printed scale ``1:N`` and the scale bar hold across a county-sized
frame to a fraction of a percent. The frame is sized in millimetres on the paper and the
extent is derived from it and the scale, never the other way round."""

from __future__ import annotations

import datetime as dt
import io
import math
from dataclasses import dataclass, field

from geobase.printing.data import LayerData
from geobase.printing.draw import (
    cjk_font,
    class_styles,
    draw_labels,
    draw_layer,
    draw_outline,
    matplotlib_modules,
)
from geobase.printing.layout import Layout
from geobase.specs import Registry

GRS80_A = 6378137.0
GRS80_E2 = 0.00669438002290
MARGIN = 10.0  # mm, neatline
LEGEND_W = 58.0  # mm
NICE = (1.0, 2.0, 2.5, 5.0)
GRID_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 18000, 36000)


def metres_per_degree(lat: float) -> tuple[float, float]:
    """(east-west, north-south) ground metres per degree at latitude ``lat`` on GRS80."""
    s = math.sin(math.radians(lat))
    w = math.sqrt(1 - GRS80_E2 * s * s)
    n = GRS80_A / w
    m = GRS80_A * (1 - GRS80_E2) / w**3
    return n * math.cos(math.radians(lat)) * math.pi / 180, m * math.pi / 180


def nice_up(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``x``."""
    k = math.floor(math.log10(x))
    for m in NICE + (10.0,):
        if m * 10**k >= x * (1 - 1e-12):
            return m * 10**k
    return 10.0 ** (k + 1)


def nice_down(x: float) -> float:
    k = math.floor(math.log10(x))
    best = 10.0**k
    for m in NICE:
        if m * 10**k <= x:
            best = m * 10**k
    return best


@dataclass
class Frame:
    """Where the map sits on the paper (mm from the lower left) and what it shows."""

    paper: tuple[float, float]
    box: tuple[float, float, float, float]  # x, y, w, h in mm
    scale: float
    extent: tuple[float, float, float, float] = (0, 0, 0, 0)  # lon/lat
    info: dict = field(default_factory=dict)


def frame_for(layout: Layout, bounds: tuple[float, float, float, float]) -> Frame:
    """The map frame on the paper and the extent at the layout's (or the fitting round) scale."""
    pw, ph = layout.paper_mm()
    right = pw - MARGIN - (LEGEND_W + 4 if layout.legend else 0) - 4
    x0, y0 = MARGIN + 16, MARGIN + 22
    w, h = right - x0, ph - MARGIN - 24 - y0
    lon0, lat0 = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    kx, ky = metres_per_degree(lat0)
    need = max((bounds[2] - bounds[0]) * kx / (w / 1000), (bounds[3] - bounds[1]) * ky / (h / 1000)) * 1.04
    scale = float(layout.scale) if layout.scale else nice_up(max(need, 100.0))
    hw, hh = w / 1000 * scale / 2 / kx, h / 1000 * scale / 2 / ky
    return Frame((pw, ph), (x0, y0, w, h), scale, (lon0 - hw, lat0 - hh, lon0 + hw, lat0 + hh))


def _dms(value: float, pos: str, neg: str, step_s: int) -> str:
    hemi = pos if value >= 0 else neg
    total = round(abs(value) * 3600)
    d, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if step_s % 3600 == 0:
        return f"{d}°{hemi}"
    if step_s % 60 == 0:
        return f"{d}°{m:02d}′{hemi}"
    return f"{d}°{m:02d}′{s:02d}″{hemi}"


def _grid(ax, frame: Frame, font) -> None:
    """The CGCS2000 graticule: lines every round number of degrees/minutes/seconds, 3-7 across
    the frame, labelled in degrees-minutes-seconds on the frame's edges."""
    xmin, ymin, xmax, ymax = frame.extent
    span_s = (xmax - xmin) * 3600
    step = next((s for s in GRID_STEPS_S if span_s / s <= 6), GRID_STEPS_S[-1])
    xs = [k * step / 3600 for k in range(math.ceil(xmin * 3600 / step), math.floor(xmax * 3600 / step) + 1)]
    ys = [k * step / 3600 for k in range(math.ceil(ymin * 3600 / step), math.floor(ymax * 3600 / step) + 1)]
    ax.set_xticks(xs)
    ax.set_yticks(ys)
    ax.set_xticklabels([_dms(x, "E", "W", step) for x in xs], fontproperties=font, fontsize=6)
    ax.set_yticklabels([_dms(y, "N", "S", step) for y in ys], fontproperties=font, fontsize=6, rotation=90,
                       va="center")
    ax.tick_params(direction="in", length=3, width=0.5, top=True, right=True)
    ax.grid(True, color="#8a8a8a", linewidth=0.3, linestyle=(0, (3, 2)))
    frame.info["grid_step_s"] = step


def _mm(fig_size: tuple[float, float], x: float, y: float, w: float = 0, h: float = 0):
    pw, ph = fig_size
    return (x / pw, y / ph, w / pw, h / ph) if (w or h) else (x / pw, y / ph)


def _scale_bar(fig, frame: Frame, font) -> None:
    """Four alternating segments under the frame, labelled in m or km, and the scale ``1:N``."""
    _, _, _, patches, _, _ = matplotlib_modules()
    x0, y0 = frame.box[0], MARGIN + 9.5
    ground_w = frame.box[2] / 1000 * frame.scale
    length = nice_down(ground_w / 4)
    mm = length * 1000 / frame.scale
    unit, div = ("km", 1000) if length >= 1000 else ("m", 1)
    for i in range(4):
        fig.add_artist(patches.Rectangle(_mm(frame.paper, x0 + i * mm / 4, y0), mm / 4 / frame.paper[0],
                                         2.0 / frame.paper[1], transform=fig.transFigure,
                                         facecolor="#000000" if i % 2 == 0 else "#ffffff", edgecolor="#000000",
                                         linewidth=0.4))
    for frac in (0, 0.5, 1):
        fig.text(*_mm(frame.paper, x0 + frac * mm, y0 + 3), f"{length * frac / div:g}", fontproperties=font,
                 fontsize=6, ha="center")
    fig.text(*_mm(frame.paper, x0 + mm + 3, y0 + 0.2), unit, fontproperties=font, fontsize=6)
    fig.text(*_mm(frame.paper, x0, MARGIN + 3.5), f"比例尺 1:{frame.scale:,.0f}".replace(",", " "),
             fontproperties=font, fontsize=8)
    frame.info["scale_bar"] = {"m": length, "mm": mm, "x_mm": x0, "y_mm": y0, "height_mm": 2.0}


def _north_arrow(fig, frame: Frame, font) -> None:
    _, _, _, patches, _, _ = matplotlib_modules()
    x, y, w, h = frame.box
    cx, top = x + w - 9, y + h - 5
    tri = [_mm(frame.paper, cx, top), _mm(frame.paper, cx - 3, top - 10), _mm(frame.paper, cx, top - 7.5)]
    fig.add_artist(patches.Polygon(tri, closed=True, transform=fig.transFigure, facecolor="#000000",
                                   edgecolor="#000000", linewidth=0.5, zorder=30))
    tri2 = [_mm(frame.paper, cx, top), _mm(frame.paper, cx + 3, top - 10), _mm(frame.paper, cx, top - 7.5)]
    fig.add_artist(patches.Polygon(tri2, closed=True, transform=fig.transFigure, facecolor="#ffffff",
                                   edgecolor="#000000", linewidth=0.5, zorder=30))
    fig.text(*_mm(frame.paper, cx, top + 1), "N", fontproperties=font, fontsize=8, ha="center", zorder=30)


def _legend_rows(layers: list[LayerData], registry: Registry, extra: list[tuple[str, str, str]]):
    """(kind, colour, text) rows: a heading per layer, then the classes it actually draws."""
    rows: list[tuple[str, str, str]] = []
    for data in layers:
        if not data.geoms:
            continue
        st = data.spec.style
        rows.append(("head", "", data.spec.title.zh))
        styles = class_styles(data.spec, registry) if data.classes is not None else {}
        present = sorted({c for c in (data.classes or []) if c in styles})
        kind = "line" if st.kind in ("outline", "line") else "fill"
        if present:
            rows += [(kind, styles[c].color, f"{c} {styles[c].zh}") for c in present]
        if not present or any(c not in styles for c in (data.classes or [None])):
            rows.append((kind, st.color, "其他" if present else data.spec.title.zh))
    return rows + [(k, c, t) for k, c, t in extra]


def _legend(fig, frame: Frame, font, rows) -> None:
    _, _, _, patches, _, _ = matplotlib_modules()
    x = frame.box[0] + frame.box[2] + 6
    top = frame.box[1] + frame.box[3]
    fig.text(*_mm(frame.paper, x, top - 5), "图  例", fontproperties=font, fontsize=10)
    y = top - 11
    room = int((y - frame.box[1]) // 4.2)
    shown = rows if len(rows) <= room else rows[: room - 1] + [("note", "", f"… 另 {len(rows) - room + 1} 项")]
    for kind, colour, text in shown:
        if kind in ("head", "note"):
            fig.text(*_mm(frame.paper, x, y), text, fontproperties=font, fontsize=7 if kind == "head" else 6,
                     weight="bold" if kind == "head" else "normal")
        else:
            if kind == "line":
                sw = patches.Rectangle(_mm(frame.paper, x, y + 1.2), 7 / frame.paper[0], 0.01 / frame.paper[1],
                                       transform=fig.transFigure, facecolor=colour, edgecolor=colour, linewidth=1.5)
            else:
                sw = patches.Rectangle(_mm(frame.paper, x, y), 7 / frame.paper[0], 3 / frame.paper[1],
                                       transform=fig.transFigure, facecolor=colour, edgecolor="#555555",
                                       linewidth=0.3)
            fig.add_artist(sw)
            fig.text(*_mm(frame.paper, x + 9, y + 0.3), text, fontproperties=font, fontsize=6)
        y -= 4.2
    frame.info["legend"] = {"x_mm": x, "rows": len(shown)}


def _furniture(fig, layout: Layout, frame: Frame, font, versions: dict[str, int | None]) -> None:
    _, _, _, patches, _, _ = matplotlib_modules()
    pw, ph = frame.paper
    fig.add_artist(patches.Rectangle((MARGIN / pw, MARGIN / ph), 1 - 2 * MARGIN / pw, 1 - 2 * MARGIN / ph,
                                     transform=fig.transFigure, fill=False, edgecolor="#000000", linewidth=1.2))
    fig.text(0.5, (ph - MARGIN - 11) / ph, layout.title, fontproperties=font, fontsize=18, ha="center")
    frame.info["title_box_mm"] = [MARGIN, ph - MARGIN - 14, pw - 2 * MARGIN, 12]
    if layout.subtitle:
        fig.text(0.5, (ph - MARGIN - 17) / ph, layout.subtitle, fontproperties=font, fontsize=9, ha="center")
    date = (layout.date or dt.date.today()).isoformat()
    vtext = "，".join(f"{n} v{v}" for n, v in sorted(versions.items()) if v is not None)
    step = frame.info.get("grid_step_s")
    interval = ("" if step is None else f"　经纬网间隔 {step // 3600}°" if step % 3600 == 0
                else f"　经纬网间隔 {step // 60}′" if step % 60 == 0 else f"　经纬网间隔 {step}″")
    left = f"坐标系：2000国家大地坐标系（CGCS2000，EPSG:4490）{interval}"
    fig.text(*_mm(frame.paper, pw / 2 - 20, MARGIN + 9), left, fontproperties=font, fontsize=6)
    src = f"数据来源：{layout.source or 'geobase 一张图'}{'（' + vtext + '）' if vtext else ''}　制图日期：{date}"
    fig.text(*_mm(frame.paper, pw / 2 - 20, MARGIN + 4), src, fontproperties=font, fontsize=6)
    fig.text(*_mm(frame.paper, pw - MARGIN - 3, MARGIN + 4),
             f"审图号：{layout.approval_number or '________________'}", fontproperties=font, fontsize=7, ha="right")


def render_sheet(layout: Layout, layers: list[LayerData], registry: Registry, frame: Frame, *,
                 outline=None, outline_label: str | None = None, versions: dict | None = None) -> tuple[bytes, dict]:
    """The sheet's bytes (``layout.format``) and facts about it (scale, extent, frame, scale bar
    in millimetres) for the response headers and tests."""
    fig, _ = compose_sheet(layout, layers, registry, frame, outline=outline, outline_label=outline_label,
                           versions=versions)
    buf = io.BytesIO()
    fig.savefig(buf, format=layout.format, dpi=layout.dpi,
                metadata={"Title": layout.title, "Creator": "geobase"} if layout.format == "pdf" else None)
    return buf.getvalue(), frame.info


def compose_sheet(layout: Layout, layers: list[LayerData], registry: Registry, frame: Frame, *,
                  outline=None, outline_label: str | None = None, versions: dict | None = None,
                  extra_text: str = ""):
    """The sheet as a matplotlib Figure (not yet written) and the CJK font it uses, cut for
    the sheet's strings and ``extra_text`` (the other pages of the same PDF: one font embedded
    for the whole document, not one per page)."""
    figure_mod = matplotlib_modules()[0]
    extra = [("line", "#000000", outline_label)] if outline is not None and outline_label else []
    rows = _legend_rows(layers, registry, extra)
    # every class name of the layers drawn, not only those present: the same characters sheet
    # after sheet, so the font cut for them is reused (geobase.printing.draw._sheet_font)
    texts = [layout.title, layout.subtitle or "", layout.source or "", layout.approval_number or "",
             *(t for _, _, t in rows), *(str(x) for d in layers for x in (d.labels or []) if x),
             *(f"{s.zh}{d.spec.title.zh}" for d in layers for s in class_styles(d.spec, registry).values()),
             extra_text]
    font = cjk_font("".join(texts))
    pw, ph = frame.paper
    fig = figure_mod.Figure(figsize=(pw / 25.4, ph / 25.4), dpi=layout.dpi, facecolor="#ffffff")
    ax = fig.add_axes(_mm(frame.paper, *frame.box))
    xmin, ymin, xmax, ymax = frame.extent
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_facecolor("#ffffff")
    for spine in ax.spines.values():
        spine.set_linewidth(0.8)
    for data in layers:
        draw_layer(ax, data, registry, edges=len(data.geoms) < 20000)
        draw_labels(ax, data, font)
    if outline is not None:
        draw_outline(ax, outline)
    if layout.grid:
        _grid(ax, frame, font)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if layout.north_arrow:
        _north_arrow(fig, frame, font)
    if layout.scale_bar:
        _scale_bar(fig, frame, font)
    if layout.legend:
        _legend(fig, frame, font, rows)
    _furniture(fig, layout, frame, font, versions or {})
    frame.info.update({"scale": frame.scale, "extent": list(frame.extent), "frame_mm": list(frame.box),
                       "paper_mm": [pw, ph], "dpi": layout.dpi,
                       "features": {d.spec.name: len(d.geoms) for d in layers}})
    return fig, font

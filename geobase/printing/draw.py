"""Drawing layers with matplotlib, styled from the layer specs: the one drawing code of map
sheets (:mod:`geobase.printing.sheet`) and WMTS picture tiles (:mod:`geobase.tiles.raster_render`).

Colours are the ones the web map uses (:mod:`geobase.tiles.style`): the class colour of the
code list (GB/T 21010 for land use, planning zones, control-line kinds), else the layer's
style colour; opacity and line width from the spec's style. Geometries become matplotlib
paths (polygons with their holes as one compound path), one collection per layer, so a sheet
of tens of thousands of parcels is one draw call per layer."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from geobase.errors import ServiceUnavailable
from geobase.lazy_import import load
from geobase.printing.data import LayerData
from geobase.specs import LayerSpec, Registry

#: CJK fonts from Debian packages, in order of preference (scripts/setup.sh installs fonts-wqy-zenhei)
CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)
EDGE = "#6b6b6b"
_LOCK = threading.Lock()
_FONT: list = []
_SUBSETS: dict[str, tuple[str, frozenset[str]] | None] = {}
_FIXED: list[frozenset[str]] = []


def matplotlib_modules():
    """matplotlib (Agg, PDF backends; imported on the first sheet or picture tile, not at server
    start), with TrueType (Type 42) font embedding in PDFs so Chinese text stays text."""
    mpl = load("matplotlib")[0]
    with _LOCK:
        if not _FONT:
            mpl.rcParams["pdf.fonttype"] = 42
            _FONT.append(None)
    return load("matplotlib.figure", "matplotlib.path", "matplotlib.collections", "matplotlib.patches",
                "matplotlib.font_manager", "numpy")


def _common_chars() -> set[str]:
    """ASCII, the CJK and full-width punctuation and the 7,445 characters of GB 2312 (every
    hanzi of everyday Chinese text and of nearly every place name)."""
    chars = {chr(c) for c in range(0x20, 0x7F)} | {chr(c) for c in range(0xFF01, 0xFF5F)}
    chars |= set("，。、；：？！“”‘’（）《》【】〔〕—…·°′″²³×±≤≥～")
    for b1 in list(range(0xA1, 0xAA)) + list(range(0xB0, 0xF8)):
        for b2 in range(0xA1, 0xFF):
            try:
                chars.add(bytes([b1, b2]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return chars


def _subset_font(full: str) -> tuple[str, frozenset[str]] | None:
    """A copy of the CJK font cut to :func:`_common_chars` without bitmaps and hinting, built once
    per data directory (``fonts/``): a PDF embeds a subset of the font it is given, and cutting
    that subset out of the 17 MB, 41,000-glyph WenQuanYi Zen Hei takes fontTools seconds per
    sheet; out of this ~2 MB copy a fraction of it. None when it cannot be built (the full font
    is then used: slower, same sheet)."""
    from geobase.settings import get_settings

    try:
        out = get_settings().data_path / "fonts" / f"{Path(full).stem}-gb2312-v1.ttf"
        chars = frozenset(_common_chars())
        if not out.is_file():
            _cut_font(full, chars, out)
        return str(out), chars
    except Exception:  # noqa: BLE001 - a cache: any failure leaves the full font in use
        return None


def _cut_font(source: str, chars, out: Path) -> None:
    """Write the glyphs of ``chars`` from ``source`` (a TrueType file or collection's first
    font) to ``out``, atomically (a temporary file renamed), for the PDF backend to embed."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    font = TTFont(source, fontNumber=0)
    opts = subset.Options()
    opts.name_IDs, opts.notdef_outline, opts.layout_features, opts.hinting = ["*"], True, [], False
    opts.drop_tables += ["EBDT", "EBLC", "EBSC", "BDF ", "FFTM"]
    cutter = subset.Subsetter(opts)
    cutter.populate(unicodes=[ord(c) for c in chars])
    cutter.subset(font)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    font.save(str(tmp))
    os.replace(tmp, out)


def _fixed_chars() -> frozenset[str]:
    """Every character the sheet and report modules draw themselves (their source text's
    non-ASCII characters: 图例, 比例尺, °′″ ...) and printable ASCII."""
    if not _FIXED:
        here = Path(__file__).parent
        text = "".join((here / n).read_text(encoding="utf-8") for n in ("sheet.py", "report.py", "service.py"))
        _FIXED.append(frozenset(c for c in text if ord(c) > 127 and c.isprintable())
                      | {chr(c) for c in range(0x20, 0x7F)})
    return _FIXED[0]


def _sheet_font(source: str, chars: frozenset[str]) -> str | None:
    """A font file holding just ``chars``, cut from ``source`` and kept by the character set in
    ``fonts/`` of the data directory (the newest 256): the PDF backend then embeds a font of a
    few hundred glyphs, in milliseconds, instead of cutting thousands again for every sheet."""
    import hashlib

    from geobase.settings import get_settings

    try:
        key = hashlib.sha1((source + "\0" + "".join(sorted(chars))).encode()).hexdigest()[:20]
        folder = get_settings().data_path / "fonts"
        out = folder / f"sheet-{key}.ttf"
        if out.is_file():
            return str(out)
        _cut_font(source, chars, out)
        kept = sorted(folder.glob("sheet-*.ttf"), key=lambda p: p.stat().st_mtime)
        for old in kept[:-256]:
            old.unlink(missing_ok=True)
        return str(out)
    except Exception:  # noqa: BLE001 - a cache: any failure leaves the larger font in use
        return None


def cjk_font(text: str = ""):
    """FontProperties of the packaged CJK font for a sheet whose strings are ``text``: its cut
    copy (:func:`_subset_font`) when every character is in it, else the whole font. A server
    without a CJK font refuses to print (boxes instead of Chinese would be a wrong sheet)."""
    fm = matplotlib_modules()[4]
    for path in CJK_FONTS:
        if Path(path).is_file():
            with _LOCK:
                if path not in _SUBSETS:
                    _SUBSETS[path] = _subset_font(path)
                cut = _SUBSETS[path]
            chars = frozenset(text) | _fixed_chars()
            source = cut[0] if cut is not None and chars <= cut[1] else path
            return fm.FontProperties(fname=_sheet_font(source, chars) or source)
    raise ServiceUnavailable("no CJK font installed for map sheets: install Debian's fonts-wqy-zenhei "
                             "(scripts/setup.sh does)")


@dataclass(frozen=True)
class ClassStyle:
    code: str
    color: str
    zh: str
    en: str


def class_styles(spec: LayerSpec, registry: Registry) -> dict[str, ClassStyle]:
    """Code -> colour and names of the layer's colour field (as :func:`geobase.tiles.style.legend`)."""
    cf = spec.style.class_field or spec.class_field
    codes = (registry.codes_for(spec, cf) or {}) if cf else {}
    return {c.code: ClassStyle(c.code, c.color, c.zh, c.en) for c in codes.values() if c.color}


def colours_of(data: LayerData, registry: Registry) -> list[str]:
    styles = class_styles(data.spec, registry) if data.classes is not None else {}
    fallback = data.spec.style.color
    if data.classes is None:
        return [fallback] * len(data.geoms)
    return [styles[c].color if c in styles else fallback for c in data.classes]


def _parts(geom):
    """Polygons, lines and points of any geometry (collections flattened)."""
    t = geom.geom_type
    if t.startswith("Multi") or t == "GeometryCollection":
        for g in geom.geoms:
            yield from _parts(g)
    elif not geom.is_empty:
        yield geom


def polygons_path(geoms: list, Path, np):
    """One compound path of every polygon of ``geoms`` (one per class colour: a sheet of
    thousands of parcels is then a handful of paths, which the PDF backend writes in one go
    instead of one graphics state per parcel). Rings are oriented (exteriors counter-clockwise,
    holes clockwise) so the non-zero fill rule leaves holes empty."""
    shapely = load("shapely")[0]
    parts = shapely.get_parts(np.asarray(geoms, dtype=object))
    polys = parts[shapely.get_type_id(parts) == 3]
    if polys.size == 0:
        return None
    rings = shapely.get_rings(shapely.orient_polygons(polys))
    coords, idx = shapely.get_coordinates(rings, return_index=True)
    if len(coords) == 0:
        return None
    codes = np.full(len(coords), Path.LINETO, dtype=Path.code_type)
    starts = np.r_[0, np.nonzero(np.diff(idx))[0] + 1]
    codes[starts] = Path.MOVETO
    codes[np.r_[starts[1:] - 1, len(coords) - 1]] = Path.CLOSEPOLY
    return Path(coords, codes)


def _lines(geom, np) -> list:
    out = []
    for p in _parts(geom):
        if p.geom_type == "LineString":
            out.append(np.asarray(p.coords)[:, :2])
        elif p.geom_type == "Polygon":
            out += [np.asarray(r.coords)[:, :2] for r in (p.exterior, *p.interiors)]
    return out


def draw_layer(ax, data: LayerData, registry: Registry, *, points_per_unit: float = 1.0,
               edges: bool = True) -> None:
    """Add one layer to ``ax`` in its spec's style. ``points_per_unit`` scales line widths
    (1 on a sheet; tiles use thinner lines); ``edges``: thin grey parcel edges on fills."""
    _, mpath, coll, _, _, np = matplotlib_modules()
    st = data.spec.style
    alpha = data.opacity if data.opacity is not None else st.opacity
    colours = colours_of(data, registry)
    if st.kind == "fill" and data.spec.geometry == "MultiPolygon":
        paths, fc = [], []
        for c in sorted(set(colours)):
            p = polygons_path([g for g, k in zip(data.geoms, colours) if k == c], mpath.Path, np)
            if p is not None:
                paths.append(p)
                fc.append(c)
        if paths:
            ax.add_collection(coll.PathCollection(
                paths, facecolors=fc, alpha=alpha, edgecolors=EDGE if edges else "none",
                linewidths=0.15 * points_per_unit if edges else 0, antialiaseds=True))
    elif st.kind == "circle":
        pts = [(p.x, p.y, c) for g, c in zip(data.geoms, colours) for p in _parts(g) if p.geom_type == "Point"]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=6 * points_per_unit, c=[p[2] for p in pts],
                       alpha=alpha, linewidths=0)
    else:  # outline of polygons, or lines
        segs, ec = [], []
        for g, c in zip(data.geoms, colours):
            for line in _lines(g, np):
                segs.append(line)
                ec.append(c)
        if segs:
            ax.add_collection(coll.LineCollection(segs, colors=ec, alpha=alpha,
                                                  linewidths=max(st.line_width, 0.5) * 0.6 * points_per_unit))


def draw_labels(ax, data: LayerData, font, size: float = 5.0, most: int = 400) -> None:
    """The label field at each feature's representative point (at most ``most`` labels)."""
    if not data.labels:
        return
    for g, text in list(zip(data.geoms, data.labels))[:most]:
        if text:
            p = g.representative_point()
            ax.text(p.x, p.y, text, fontproperties=font, fontsize=size, ha="center", va="center",
                    color="#222222", clip_on=True)


def draw_outline(ax, geom, *, color: str = "#000000", width: float = 1.6, dashes=(4, 2)) -> None:
    """A highlighted outline (the site of a site check, the area of interest)."""
    _, _, coll, _, _, np = matplotlib_modules()
    segs = _lines(geom, np)
    if segs:
        ax.add_collection(coll.LineCollection(segs, colors=color, linewidths=width,
                                              linestyles=[(0, dashes)] if dashes else "solid", zorder=20))

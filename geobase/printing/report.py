"""The site check filed as a PDF: page 1 its map sheet (:func:`geobase.printing.service.
site_check_sheet`'s layout), page 2 the verdict and the tables a planner reads — areas in ha (4
decimals) and 亩 (2 decimals), shares in percent, long feature lists collapsed. Only the
presentation rounds: the JSON answer of the same check keeps the exact values."""

from __future__ import annotations

import io

from geobase.printing.draw import cjk_font, class_styles, matplotlib_modules
from geobase.printing.service import site_check_parts
from geobase.printing.sheet import compose_sheet
from geobase.specs import Registry

A4_PORTRAIT = (210 / 25.4, 297 / 25.4)
ROWS_PER_PAGE = 60


def _area(a: dict | None) -> tuple[str, str]:
    if not a or a.get("m2") is None:
        return "", ""
    return f"{a['ha']:,.4f}", f"{a['mu']:,.2f}"


def _collapsed(keys, shown: int = 3) -> str:
    keys = list(keys or [])
    return " ".join(keys) if len(keys) <= shown else " ".join(keys[:shown]) + f" … 共 {len(keys)} 个"


def table_rows(result: dict) -> list[list[str]]:
    """The second page's rows: the rules, then each layer's classes (a heading row per part)."""
    rows = [["规则 rule", "结论 verdict", "公顷 ha", "亩", "占比 share", "图斑 features"]]
    for r in result["rules"]:
        ha, mu = _area(r.get("area"))
        share = "" if r.get("share") is None else f"{r['share'] * 100:.2f}%"
        rows.append([f"{r['id']} {r['title']['zh']}"[:28], r["verdict"], ha, mu, share, _collapsed(r.get("features"))])
    for name, info in result["layers"].items():
        classes = info.get("by_class") or []
        if not classes or "m2" not in classes[0]:
            continue
        rows.append([f"{name}：按地类 by class", "", "", "", "", ""])
        for c in classes:
            ha, mu = _area(c)
            rows.append([f"{c['code']} {c.get('name') or ''}"[:28], "", ha, mu, f"{(c.get('share') or 0) * 100:.2f}%", ""])
    return rows[:ROWS_PER_PAGE]


def _table_text(result: dict, registry: Registry, rows: list[list[str]]) -> str:
    """Every string the table page draws (and the class names of every layer, so the font cut
    for them is the same sheet after sheet)."""
    names = "".join(c.zh + s.title.zh for s in registry.layers.values() if s.kind == "vector"
                    for c in class_styles(s, registry).values())
    return "".join(c for r in rows for c in r) + result.get("summary", "") + result["project_type"] + names


def _table_page(result: dict, registry: Registry, figure_mod, font=None):
    rows = table_rows(result)
    font = font or cjk_font(_table_text(result, registry, rows))
    fig = figure_mod.Figure(figsize=A4_PORTRAIT, dpi=150, facecolor="#ffffff")
    a = result["site"]["area"]
    fig.text(0.08, 0.95, "建设项目用地合规性审查 — 结论与面积", fontproperties=font, fontsize=14)
    fig.text(0.08, 0.925, f"结论 verdict：{result['verdict']}　用地面积 {a['ha']:,.4f} 公顷（{a['mu']:,.2f} 亩）"
             f"　项目类型 {result['project_type']}", fontproperties=font, fontsize=8)
    if not result.get("complete", True):
        fig.text(0.08, 0.905, result["summary"][:120], fontproperties=font, fontsize=7, color="#b00000")
    # one text per column (a line per row): a PDF text object per cell made the page cost seconds
    x = 0.06
    for i, width in enumerate((0.28, 0.13, 0.11, 0.11, 0.10, 0.27)):
        fig.text(x, 0.88, "\n".join(r[i] for r in rows), fontproperties=font, fontsize=6.5, va="top",
                 linespacing=1.6)
        x += width
    fig.add_artist(matplotlib_modules()[3].Rectangle((0.06, 0.8665), 0.88, 0.0005, transform=fig.transFigure,
                                                     color="#000000"))
    fig.text(0.08, 0.03, "面积按 CGCS2000 椭球计算；1 亩 = 10000/15 m²；表中数值已取整（公顷 4 位、亩 2 位小数），"
             "精确值见 JSON 结果。", fontproperties=font, fontsize=6)
    return fig


def site_check_pdf(result: dict, registry: Registry, *, dpi: int = 150) -> bytes:
    """The two-page PDF of a site check: its map sheet, then its verdict and rounded tables."""
    figure_mod = matplotlib_modules()[0]
    from matplotlib.backends.backend_pdf import PdfPages

    layout, layers, frame, site, versions = site_check_parts(result, registry, fmt="pdf", dpi=dpi)
    # one font for both pages: the PDF embeds (and matplotlib subsets) it once, not twice
    sheet, font = compose_sheet(layout, layers, registry, frame, outline=site, outline_label="项目用地范围",
                                versions=versions, extra_text=_table_text(result, registry, table_rows(result)))
    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": layout.title, "Creator": "geobase"}) as pdf:
        pdf.savefig(sheet)
        pdf.savefig(_table_page(result, registry, figure_mod, font))
    return buf.getvalue()

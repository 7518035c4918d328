"""Renderings of analysis results: JSON, GeoJSON of the pieces, CSV tables and a printable HTML
report with an inline SVG map (no external assets), shared by the CLI, the HTTP endpoints and
the jobs. Files are written into a temporary directory and moved into place at the end, so a
failed run leaves nothing half-written."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

PALETTE = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999"]


def to_json(result: dict) -> str:
    import orjson  # several times faster than json for results with thousands of pieces

    from geobase.geojson_text import json_default

    return orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=json_default).decode()


def features_of(result: dict) -> list[dict]:
    """The result's geometries as GeoJSON features (pieces, conflict patches, changed patches)."""
    feats: list[dict] = []
    kind = result.get("analysis")
    if kind == "site-check":
        for layer, info in result.get("layers", {}).items():
            for p in info.get("pieces", []):
                if p.get("geometry"):
                    props = {"layer": layer, "key": p["key"], **{k: p.get(k) for k in ("class", "group", "category")}}
                    props.update({"area_m2": p.get("area", {}).get("m2"), "length_m": p.get("length_m")})
                    props.update({f"attr_{k}": v for k, v in (p.get("attributes") or {}).items()})
                    feats.append({"type": "Feature", "geometry": p["geometry"], "properties": props})
        for r in result.get("rules", []):
            if r.get("geometry"):
                feats.append({"type": "Feature", "geometry": r["geometry"],
                              "properties": {"layer": "rule", "key": r["id"], "verdict": r["verdict"],
                                             "area_m2": r["area"]["m2"]}})
    elif kind == "conflicts":
        for p in result.get("patches", []):
            feats.append({"type": "Feature", "id": p["id"], "geometry": p["geometry"],
                          "properties": {"rule": p["rule"], "a_layer": p["a"]["layer"], "a_key": p["a"]["key"],
                                         "a_class": p["a"]["class"], "b_layer": p["b"]["layer"],
                                         "b_key": p["b"]["key"], "b_class": p["b"]["class"],
                                         "area_m2": p["area"]["m2"], "area_mu": p["area"]["mu"]}})
    elif kind == "change":
        for p in result.get("changed_patches", []):
            feats.append({"type": "Feature", "geometry": p["geometry"],
                          "properties": {"from_key": p["from"]["key"], "from_class": p["from"]["class"],
                                         "to_key": p["to"]["key"], "to_class": p["to"]["class"],
                                         "area_m2": p["area"]["m2"]}})
    return feats


def to_geojson(result: dict) -> str:
    import orjson

    from geobase.geojson_text import json_default

    return orjson.dumps({"type": "FeatureCollection", "features": features_of(result)},
                        option=orjson.OPT_NON_STR_KEYS, default=json_default).decode()


def _csv(rows: Iterable[dict]) -> str:
    rows = list(rows)
    buf = io.StringIO()
    if not rows:
        return ""
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v) for k, v in r.items()})
    return buf.getvalue()


def _flat_area(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and set(v) >= {"m2", "ha", "mu"}:
            out.update({f"{k}_m2": v["m2"], f"{k}_ha": v["ha"], f"{k}_mu": v["mu"]})
        elif k != "geometry":
            out[k] = v
    return out


def csv_tables(result: dict) -> dict[str, str]:
    """Named CSV tables of a result (file stem -> CSV text)."""
    kind = result.get("analysis")
    t: dict[str, str] = {}
    if kind == "site-check":
        rows = []
        for layer, info in result["layers"].items():
            for level in ("by_class", "by_group", "by_category"):
                for r in info.get(level, []):
                    rows.append({"layer": layer, "level": level.removeprefix("by_"), **r})
        # the rules first, headed by the overall verdict (a partial one says "incomplete: ...")
        overall = {"id": "(overall)", "verdict": result["verdict"], "fires_as": "",
                   "complete": result.get("complete", True), "reason": result.get("summary", result["verdict"])}
        t["rules"] = _csv([overall, *({"id": r["id"], "verdict": r["verdict"], "fires_as": r["fires_as"],
                                       "complete": "", "area_m2": (r.get("area") or {}).get("m2"),
                                       "share": r.get("share"), "features": " ".join(r.get("features") or []),
                                       "reason": r.get("reason")} for r in result["rules"])])
        t["classes"] = _csv(rows)
        t["pieces"] = _csv({"layer": layer, "key": p["key"], "class": p.get("class"),
                            "area_m2": p.get("area", {}).get("m2"), "length_m": p.get("length_m"),
                            **(p.get("attributes") or {})}
                           for layer, info in result["layers"].items() for p in info.get("pieces", []))
    elif kind == "tabulate":
        t["cells"] = _csv(result["cells"])
    elif kind == "conflicts":
        t["patches"] = _csv({"id": p["id"], "rule": p["rule"], "a_layer": p["a"]["layer"], "a_key": p["a"]["key"],
                             "a_class": p["a"]["class"], "b_layer": p["b"]["layer"], "b_key": p["b"]["key"],
                             "b_class": p["b"]["class"], **{f"area_{k}": v for k, v in p["area"].items()}}
                            for p in result["patches"])
        t["rules"] = _csv(_flat_area({k: v for k, v in r.items() if k not in ("title", "slivers_dropped")})
                          for r in result["rules"])
    elif kind == "steep-farmland":
        t["parcels"] = _csv(_flat_area(p) for p in result["parcels"])
    elif kind == "change":
        t["transitions"] = _csv(result["transitions"])
        t["transitions_by_group"] = _csv(result["transitions_by_group"])
        # area that left a class without a successor / entered it from nowhere: with these the
        # class totals of the two versions reconcile
        t["balance"] = _csv({"class": c["class"], "removed_m2": r["m2"], "added_m2": a["m2"], "net_m2": c["m2"]}
                            for c, r, a in zip(result.get("net_by_class", []), result.get("removed", []),
                                               result.get("added", [])))
    elif kind == "buffer":
        t["features"] = _csv(_flat_area(f) for f in result["features"])
    return t


# ---------------------------------------------------------------------------------------------
# HTML report with an inline SVG map
# ---------------------------------------------------------------------------------------------

def _rings(geom: dict) -> list[list[list[float]]]:
    t = geom.get("type")
    c = geom.get("coordinates") or []
    if t == "Polygon":
        return c
    if t == "MultiPolygon":
        return [r for poly in c for r in poly]
    if t == "LineString":
        return [c]
    if t == "MultiLineString":
        return c
    if t == "GeometryCollection":
        return [r for g in geom.get("geometries", []) for r in _rings(g)]
    return []


def svg_map(site: dict | None, layers: list[tuple[str, list[dict]]], width: int = 640) -> str:
    """An SVG of the site outline and coloured pieces (equirectangular, cos(lat)-scaled)."""
    import math

    from geobase.geojson_text import plain

    site = plain(site)
    layers = [(name, [plain(g) for g in geoms]) for name, geoms in layers]
    all_pts = [pt for _, geoms in layers for g in geoms for r in _rings(g) for pt in r]
    if site:
        all_pts += [pt for r in _rings(site) for pt in r]
    if not all_pts:
        return ""
    xs, ys = [p[0] for p in all_pts], [p[1] for p in all_pts]
    minx, maxx, miny, maxy = min(xs), max(xs), min(ys), max(ys)
    k = math.cos(math.radians((miny + maxy) / 2))
    w = max((maxx - minx) * k, 1e-9)
    h = max(maxy - miny, 1e-9)
    height = int(width * h / w) if w else width
    height = max(120, min(height, 900))
    sx, sy = width / w, height / h
    s = min(sx, sy)

    def path(g: dict) -> str:
        parts = []
        for ring in _rings(g):
            pts = " ".join(f"{(x - minx) * k * s:.1f},{(maxy - y) * s:.1f}" for x, y, *_ in ring)
            parts.append(f"M{pts}Z" if g["type"] in ("Polygon", "MultiPolygon") else f"M{pts}")
        return " ".join(parts)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" style="background:#fafafa;border:1px solid #ccc">']
    for i, (name, geoms) in enumerate(layers):
        color = PALETTE[i % len(PALETTE)]
        for g in geoms:
            line = g["type"] in ("LineString", "MultiLineString")
            out.append(f'<path d="{path(g)}" fill="{"none" if line else color}" fill-opacity="0.35" '
                       f'stroke="{color}" stroke-width="{2 if line else 0.6}"><title>{html.escape(name)}</title></path>')
    if site:
        out.append(f'<path d="{path(site)}" fill="none" stroke="#000" stroke-width="2" stroke-dasharray="6 3"/>')
    out.append("</svg>")
    return "".join(out)


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')) if r.get(c) is not None else '')}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = ("body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
       "td,th{border:1px solid #bbb;padding:2px 6px;font-size:90%;text-align:left}"
       ".prohibited{color:#b00}.needs-approval{color:#c60}.warning{color:#a80}.ok{color:#070}"
       ".incomplete{color:#b00;border:2px solid #b00;padding:4px}.sheet svg{max-width:100%;height:auto;border:1px solid #ccc}"
       "@media print{body{margin:0}}")


def _ha_mu(area: dict | None) -> dict:
    """An exact area ({m2, ha, mu}) as a planner reads it: ha to 4 decimals, 亩 to 2, m² whole;
    only the report shows this, the JSON keeps the exact values."""
    if not area or area.get("m2") is None:
        return {"m²": "", "ha": "", "亩": ""}
    return {"m²": f"{area['m2']:,.0f}", "ha": f"{area['ha']:,.4f}", "亩": f"{area['mu']:,.2f}"}


def _share(v: float | None) -> str:
    return "" if v is None else f"{v * 100:.2f}%"


def _collapsed(keys: list[str] | None, shown: int = 5) -> str:
    """A feature list as a reader takes it in: the first few keys and how many there are."""
    keys = list(keys or [])
    if len(keys) <= shown:
        return " ".join(keys)
    return " ".join(keys[:shown]) + f" … 共 {len(keys)} 个"


def _site_map(result: dict) -> str:
    """The site check's map sheet (site outline, land use in its class colours, planning zones,
    control lines, legend; :func:`geobase.printing.service.site_check_sheet`) as inline SVG,
    its text drawn as glyph outlines of the packaged CJK font (the page needs no font)."""
    from geobase.printing.service import site_check_sheet
    from geobase.specs import get_registry

    svg = site_check_sheet(result, get_registry(), fmt="svg").decode("utf-8")
    return f"<div class='sheet'>{svg[svg.index('<svg'):]}</div>"


def _site_check_html(result: dict) -> list[str]:
    v = result["verdict"]
    a = _ha_mu(result["site"]["area"])
    parts = ["<h1>建设项目用地合规性审查 / Site compliance check</h1>"
             + (f"<p class='incomplete'><b>{html.escape(result['summary'])}</b></p>"
                if not result.get("complete", True) else "")
             + f"<p>Overall verdict: <b class='{v}'>{html.escape(v)}</b> — site area {a['m²']} m² "
             f"({a['ha']} ha, {a['亩']} 亩); project type {html.escape(result['project_type'])}</p>"]
    parts.append(_site_map(result))
    parts.append("<h2>Rules</h2>")
    parts.append(_table([{"rule": f"{r['id']} {r['title']['zh']}", "verdict": r["verdict"],
                          **{k: x for k, x in _ha_mu(r.get("area")).items() if k != "m²"},
                          "share": _share(r.get("share")), "features": _collapsed(r.get("features")),
                          "note": r.get("note") or r.get("reason")}
                         for r in result["rules"]], ["rule", "verdict", "ha", "亩", "share", "features", "note"]))
    for name, info in result["layers"].items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        for level in ("by_category", "by_group", "by_class"):
            rows = info.get(level)
            if not rows:
                continue
            if "m2" in rows[0]:
                shown = [{"code": r["code"], "name": r.get("name"), **_ha_mu(r), "share": _share(r.get("share"))}
                         for r in rows]
                parts.append(f"<h3>{level.replace('_', ' ')}</h3>"
                             + _table(shown, ["code", "name", "ha", "亩", "m²", "share"]))
            else:
                shown = [{"code": r["code"], "name": r.get("name"), "length_m": f"{r['length_m']:,.1f}"} for r in rows]
                parts.append(f"<h3>{level.replace('_', ' ')}</h3>" + _table(shown, ["code", "name", "length_m"]))
    parts.append("<h2>Layer versions</h2>" + _table(
        [{"layer": k, **v} for k, v in result["versions"].items()], ["layer", "version", "created_at", "source"]))
    sd = result["slivers_dropped"]
    parts.append(f"<p>Slivers below {sd['threshold_m2']} m² dropped: {sd['count']} ({sd['m2']:,.2f} m²). "
                 "Areas are ellipsoidal on CGCS2000; 1 亩 = 10000/15 m²; the tables round them "
                 "(ha to 4 decimals, 亩 to 2), the JSON and CSV keep the exact values.</p>")
    return parts


def to_html(result: dict) -> str:
    kind = result.get("analysis", "analysis")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>geobase {html.escape(kind)}</title>"
             f"<style>{CSS}</style></head><body>"]
    if kind == "site-check":
        parts += _site_check_html(result)
    else:
        parts.append(f"<h1>{html.escape(kind)}</h1>")
        feats = features_of(result)
        if feats:
            parts.append(svg_map(None, [(kind, [f["geometry"] for f in feats if f.get("geometry")])]))
        for name, text in csv_tables(result).items():
            rows = list(csv.DictReader(io.StringIO(text)))
            if rows:
                parts.append(f"<h2>{html.escape(name)}</h2>" + _table(rows[:2000], list(rows[0].keys())))
        if result.get("versions"):
            parts.append("<h2>Layer versions</h2>" + _table(
                [{"layer": k, **v} for k, v in result["versions"].items()], ["layer", "version", "created_at"]))
    parts.append("</body></html>")
    return "".join(parts)


def write_outputs(result: dict, out_dir: Path, stem: str | None = None) -> list[Path]:
    """Write result.json, <stem>.geojson, <stem>_<table>.csv and report.html atomically."""
    out_dir = Path(out_dir)
    stem = stem or result.get("analysis", "analysis")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        files = {f"{stem}.json": to_json(result), f"{stem}.geojson": to_geojson(result),
                 f"{stem}.html": to_html(result)}
        for name, text in csv_tables(result).items():
            files[f"{stem}_{name}.csv"] = text
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in files:
            os.replace(tmp / name, out_dir / name)
            written.append(out_dir / name)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

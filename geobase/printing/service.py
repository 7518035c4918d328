"""Printing a map sheet for a caller: the layout checked, the layers the caller may see (a
hidden or unknown layer is 404, as everywhere), their features read without masked fields,
the sheet drawn off the event loop. Shared by ``POST /maps/print`` and ``geobase map print``;
the site-check report's sheet is drawn from the check's own result (:func:`site_check_sheet`)."""

from __future__ import annotations

import asyncio

import psycopg

from geobase.catalog.state import layer_states
from geobase.errors import InvalidInput, NotFound
from geobase.lazy_import import load
from geobase.printing.data import LayerData, fetch_layer, layer_from_geojson
from geobase.printing.layout import Layout, parse_layout
from geobase.printing.sheet import frame_for, metres_per_degree, render_sheet
from geobase.security import Principal, can_see, geometry_exact, hidden_attributes, note_denied, note_read, require_field
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry

MEDIA = {"pdf": "application/pdf", "png": "image/png", "svg": "image/svg+xml"}


def _resolve(layout: Layout, states, principal: Principal, registry: Registry) -> list[tuple[LayerSpec, object]]:
    out = []
    for i, choice in enumerate(layout.choices()):
        st = states.get(choice.name)
        if st is None or choice.name not in registry.layers or not can_see(principal, st.access):
            if st is not None and choice.name in registry.layers:
                note_denied(choice.name)  # a real layer hidden from this caller: audited as read.denied
            raise NotFound(f"layers[{i}]: layer {choice.name!r} not found", parameter="layers")
        spec = registry.layers[choice.name]
        if spec.kind != "vector":
            raise InvalidInput(f"layers[{i}]: {choice.name!r} is a raster; a sheet draws vector layers",
                               parameter="layers")
        if choice.label is not None:
            require_field(spec, choice.label, f"layers[{i}].label", hidden=hidden_attributes(principal, spec))
        note_read(principal, st.access, spec)
        out.append((spec, choice))
    return sorted(out, key=lambda sc: (sc[0].style.order, sc[0].name))


def _bounds(layout: Layout, settings: Settings):
    """The lon/lat box to frame and the area of interest's geometry (None for a bbox)."""
    if layout.extent.bbox is not None:
        return tuple(layout.extent.bbox), None
    from geobase.analysis.input import parse_geojson

    shapely = load("shapely")[0]
    aoi = parse_geojson(layout.extent.aoi, settings, parameter="extent.aoi", repair=True)
    geom = shapely.from_wkb(bytes(aoi.wkb))
    return tuple(geom.bounds), geom


async def print_sheet(conn: psycopg.AsyncConnection, registry: Registry, principal: Principal,
                      settings: Settings, data: object) -> tuple[bytes, str, dict]:
    """(bytes, media type, facts) of the sheet described by the layout ``data`` (a dict)."""
    layout = parse_layout(data, max_dpi=settings.print_max_dpi)
    states = await layer_states(conn)
    chosen = _resolve(layout, states, principal, registry)
    bounds, aoi = _bounds(layout, settings)
    frame = frame_for(layout, bounds)
    xmin, ymin, xmax, ymax = frame.extent
    dx, dy = (xmax - xmin) * 0.02, (ymax - ymin) * 0.02
    box = (xmin - dx, ymin - dy, xmax + dx, ymax + dy)
    kx, _ = metres_per_degree((ymin + ymax) / 2)
    tolerance = frame.scale * (25.4 / layout.dpi / 2) / 1000 / kx  # half an output pixel, in degrees
    layers: list[LayerData] = []
    budget = settings.print_max_features
    for spec, choice in [(s, c) for s, c in chosen if geometry_exact(principal, s)]:  # desensitised: not drawn
        d = await fetch_layer(conn, spec, box, box, srid=4490, tolerance=tolerance,
                              hidden=hidden_attributes(principal, spec), limit=budget, label=choice.label)
        d.opacity = choice.opacity
        budget -= len(d.geoms)
        layers.append(d)
    versions = {spec.name: states[spec.name].current_version for spec, _ in chosen}
    body, info = await asyncio.to_thread(render_sheet, layout, layers, registry, frame, outline=aoi,
                                         outline_label="制图范围" if aoi is not None else None, versions=versions)
    return body, MEDIA[layout.format], info


def site_check_sheet(result: dict, registry: Registry, *, fmt: str = "svg", dpi: int = 110) -> bytes:
    """The site-check report's map sheet: the site outline over the land use in its class
    colours, the planning zones, the control lines and the other layers the check read (only
    the pieces inside the site, as the check returned them), with a legend; the layer pieces
    are those of the caller's own result, so nothing the caller may not see is drawn."""
    layout, layers, frame, site, versions = site_check_parts(result, registry, fmt=fmt, dpi=dpi)
    body, _ = render_sheet(layout, layers, registry, frame, outline=site, outline_label="项目用地范围",
                           versions=versions)
    return body


def site_check_parts(result: dict, registry: Registry, *, fmt: str, dpi: int):
    """(layout, layers, frame, site geometry, versions) of a site check's sheet. The pieces are
    simplified to half an output pixel (as :func:`print_sheet` asks PostGIS to): a site of
    2,000 parcels of 20-vertex rings is then a quarter of the path coordinates the PDF writes,
    and nothing a reader can see is lost."""
    shapely = load("shapely", "shapely.geometry")[0]
    from geobase.geojson_text import plain

    site = shapely.geometry.shape(plain(result["site"]["geometry"]))
    layout = Layout(title="建设项目用地合规性审查图", layers=["site"], extent={"bbox": _padded(site.bounds)},
                    paper="A4", orientation="landscape", dpi=dpi, format=fmt, source="geobase 一张图 site check")
    frame = frame_for(layout, _padded(site.bounds))
    kx, _ = metres_per_degree((frame.extent[1] + frame.extent[3]) / 2)
    tolerance = frame.scale * (25.4 / dpi / 2) / 1000 / kx  # half an output pixel, in degrees
    layers = []
    for name, info in result.get("layers", {}).items():
        spec = registry.layers.get(name)
        if spec is None or name == "admin_divisions":
            continue
        cf = spec.style.class_field or spec.class_field
        pieces = [(p.get("geometry"), (p.get("attributes") or {}).get(cf) if cf else None)
                  for p in info.get("pieces", [])]
        d = layer_from_geojson(spec, pieces, tolerance=tolerance)
        if cf is None or all(c is None for c in d.classes):
            d.classes = None  # masked or classless: one colour, no class legend
        layers.append(d)
    layers.sort(key=lambda d: (d.spec.style.order, d.spec.name))
    layout = layout.model_copy(update={"layers": [d.spec.name for d in layers] or ["site"]})
    return layout, layers, frame, site, {n: (v or {}).get("version") for n, v in result.get("versions", {}).items()}


def _padded(b) -> tuple[float, float, float, float]:
    dx, dy = max((b[2] - b[0]) * 0.1, 1e-5), max((b[3] - b[1]) * 0.1, 1e-5)
    return (b[0] - dx, b[1] - dy, b[2] + dx, b[3] + dy)

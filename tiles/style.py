"""The one map's MapLibre style and legend, generated from the layer specs.

Colours come from the code lists (GB/T 21010 colour per land-use code via a ``match`` on
``dlbm``, planning zones, control-line kinds, water kinds...), draw order from
``style.order``. Only layers the caller may see appear. The style references this server
only: no glyphs or sprites (the map page's labels.js adds the labels and names this server's
glyph set for them), no external URL, unless the settings name an external basemap
(``GEOBASE_MAP_BASEMAP_URL``): then that raster is the bottom layer."""

from __future__ import annotations

from geobase.specs import LayerSpec, Registry

HILLSHADE_ID = "dem-hillshade"
BASEMAP_ID = "basemap"


def _class_colours(spec: LayerSpec, registry: Registry) -> list[tuple[str, str, str, str]]:
    """(code, colour, zh, en) of the layer's class field, assignable codes with a colour."""
    cf = spec.style.class_field
    if not cf:
        return []
    codes = registry.codes_for(spec, cf) or {}
    return [(c.code, c.color, c.zh, c.en) for c in codes.values() if c.color and c.assignable]


def _colour_expr(spec: LayerSpec, registry: Registry):
    """``["match", input, [code], colour, ..., fallback]``: each label a one-element array.

    The subset of the style spec that MapLibre GL JS and QGIS's style converter (3.22, Debian
    12's, ``QgsMapBoxGlStyleConverter::parseMatchList``) both read: QGIS 3.22 takes every label
    as a list (a bare string label becomes an empty ``IN ()`` and the layer falls back to one
    flat colour); MapLibre takes an array label as "any of these values"."""
    pairs = _class_colours(spec, registry)
    if not pairs:
        return spec.style.color
    expr: list = ["match", ["to-string", ["get", spec.style.class_field]]]
    for code, colour, _, _ in pairs:
        expr += [[code], colour]
    expr.append(spec.style.color)
    return expr


def map_layers(spec: LayerSpec, registry: Registry, source: str) -> list[dict]:
    """MapLibre style layers drawing one vector layer from ``source``."""
    st = spec.style
    colour = _colour_expr(spec, registry)
    base = {"source": source, "source-layer": spec.name, "minzoom": spec.tiles.minzoom,
            "metadata": {"geobase:layer": spec.name, "geobase:department": spec.department}}
    if st.kind == "fill":
        return [
            {"id": f"{spec.name}-fill", "type": "fill", **base,
             "paint": {"fill-color": colour, "fill-opacity": st.opacity, "fill-antialias": False}},
            {"id": f"{spec.name}-edge", "type": "line", **base, "minzoom": max(spec.tiles.minzoom, 13),
             "paint": {"line-color": "#6b6b6b", "line-width": 0.3, "line-opacity": 0.6}},
        ]
    if st.kind == "outline":
        return [
            {"id": f"{spec.name}-outline", "type": "line", **base,
             "paint": {"line-color": colour, "line-width": st.line_width, "line-opacity": st.opacity}},
        ]
    if st.kind == "line":
        return [{"id": f"{spec.name}-line", "type": "line", **base,
                 "paint": {"line-color": colour, "line-width": st.line_width, "line-opacity": st.opacity}}]
    if st.kind == "circle":
        return [{"id": f"{spec.name}-circle", "type": "circle", **base,
                 "paint": {"circle-color": colour, "circle-radius": 3, "circle-opacity": st.opacity}}]
    return []


def onemap_style(root: str, specs: list[LayerSpec], registry: Registry, *, dem: LayerSpec | None = None,
                 center: tuple[float, float] = (105.0, 35.0), zoom: float = 4.0,
                 dem_bounds: list[float] | None = None, tags: dict[str, str] | None = None,
                 basemap: str | None = None) -> dict:
    """The style document; ``root`` is this server's absolute base URL (MapLibre needs absolute
    tile URLs). ``tags``: the version tag per source (``onemap``, ``dem``) written into its tile
    URLs as ``?v=``, so a browser may keep tiles for good and still sees an ingest at once (the
    style itself is revalidated on every load). ``basemap``: an XYZ raster URL template drawn
    under everything (the settings' map_basemap_url), else none."""
    tags = tags or {}

    def q(source: str) -> str:
        return f"?v={tags[source]}" if source in tags else ""
    vector = sorted((s for s in specs if s.kind == "vector"), key=lambda s: (s.style.order, s.name))
    sources: dict = {}
    layers: list[dict] = [{"id": "background", "type": "background", "paint": {"background-color": "#f4f3ef"}}]
    if basemap:
        sources[BASEMAP_ID] = {"type": "raster", "tiles": [basemap], "tileSize": 256}
        layers.append({"id": BASEMAP_ID, "type": "raster", "source": BASEMAP_ID})
    if dem is not None:
        sources["dem"] = {"type": "raster", "tiles": [f"{root}/tiles/dem/hillshade/{{z}}/{{x}}/{{y}}.png{q('dem')}"],
                          "tileSize": 256, "minzoom": dem.tiles.minzoom, "maxzoom": dem.tiles.maxzoom}
        if dem_bounds:
            sources["dem"]["bounds"] = list(dem_bounds)
        layers.append({"id": HILLSHADE_ID, "type": "raster", "source": "dem",
                       "metadata": {"geobase:layer": dem.name, "geobase:department": dem.department},
                       "paint": {"raster-opacity": dem.style.opacity}})
    if vector:
        sources["onemap"] = {
            "type": "vector", "tiles": [f"{root}/tiles/onemap/{{z}}/{{x}}/{{y}}.mvt{q('onemap')}"],
            "minzoom": min(s.tiles.minzoom for s in vector), "maxzoom": max(s.tiles.maxzoom for s in vector),
        }
        for s in vector:
            layers += map_layers(s, registry, "onemap")
    return {"version": 8, "name": "geobase one map", "center": list(center), "zoom": zoom,
            "sources": sources, "layers": layers}


def legend(specs: list[LayerSpec], registry: Registry) -> list[dict]:
    """Per layer: its title, department, style kind and classes with colours, in draw order."""
    out = []
    for s in sorted(specs, key=lambda s: (s.style.order, s.name)):
        entry = {"layer": s.name, "title": s.title.model_dump(), "department": s.department,
                 "kind": s.style.kind, "color": s.style.color, "classes": []}
        for code, colour, zh, en in _class_colours(s, registry):
            entry["classes"].append({"code": code, "color": colour, "zh": zh, "en": en})
        out.append(entry)
    return out

"""The web map at ``/map``: the page, its configuration (visible layers grouped by department,
versions, extents) and the vendored MapLibre GL JS served by this app — never from a CDN, so
the map works on a machine with no internet."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse
from geobase.api.routing import LazyAPIRoute
from geobase.api.deps import base_url, get_conn, get_registry_dep
from geobase.api.imagery_ogc import map_imagery
from geobase.catalog import current_layers, layer_versions

from geobase.errors import NotFound, SetupError
from geobase.api.gate import get_principal
from geobase.security import visible_layers
from geobase.settings import Settings
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["Map"])

TILES_DIR = Path(__file__).resolve().parent.parent / "tiles"
try:  # installed layout: geobase.tiles is a sibling package
    import geobase.tiles as _tiles_pkg

    TILES_DIR = Path(_tiles_pkg.__file__).resolve().parent
except ImportError:  # pragma: no cover
    pass
STATIC_DIR = TILES_DIR / "static"
TEMPLATE = TILES_DIR / "templates" / "map.html"
VENDOR_FILES = {"maplibre-gl.js", "maplibre-gl.css", "maplibre-gl.js.map", "LICENSE.txt"}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}


def _vendor_roots(settings: Settings) -> list[Path]:
    """Where setup's ``.vendor/`` may be: GEOBASE_VENDOR_DIR, else beside the source tree."""
    roots = [Path(settings.vendor_dir)] if settings.vendor_dir else []
    here = Path(__file__).resolve()
    return roots + [p / ".vendor" for p in here.parents][:4] + [Path.cwd() / ".vendor"]


def vendored(settings: Settings, package_path: str, marker: str) -> Path:
    """``<vendor>/node_modules/<package_path>`` holding ``marker``; a clear SetupError when missing.

    Front-end packages come from npm at setup time (scripts/setup.sh) and are served by this
    app: no page of the server loads anything from the internet."""
    for c in _vendor_roots(settings):
        d = c / "node_modules" / package_path
        if (d / marker).exists():
            return d
    package = package_path.split("/")[0]
    raise SetupError(f"{package} is not installed: run scripts/setup.sh (npm install into .vendor/) "
                     f"or set GEOBASE_VENDOR_DIR to the directory holding node_modules/{package}")


def maplibre_dir(settings: Settings) -> Path:
    """``<vendor>/node_modules/maplibre-gl/dist``."""
    return vendored(settings, "maplibre-gl/dist", "maplibre-gl.js")


@router.get("/vendor/maplibre-gl/{name}", include_in_schema=False)
async def vendor_file(request: Request, name: str):
    if name not in VENDOR_FILES:
        raise NotFound(f"no vendored file {name!r}")
    path = maplibre_dir(request.app.state.settings) / name
    if not path.exists():
        raise NotFound(f"no vendored file {name!r}")
    media = "text/javascript" if name.endswith(".js") else "text/css" if name.endswith(".css") else None
    return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=86400"})


GLYPH_RANGE = re.compile(r"(\d{1,5})-(\d{1,5})\.pbf")


@router.get("/map/glyphs/{fontstack}/{name}", include_in_schema=False)
async def glyphs(request: Request, fontstack: str, name: str):
    """The map's SDF glyph ranges (digits and Latin of parcel codes), built at setup by
    scripts/build_glyphs.py into ``.vendor/glyphs/<fontstack>/``; Chinese is drawn by the
    browser's CJK font. Only the built font stacks exist: anything else is a 404."""
    if not GLYPH_RANGE.fullmatch(name) or "/" in fontstack or fontstack.startswith("."):
        raise NotFound(f"no glyph range {fontstack}/{name}")
    for root in _vendor_roots(request.app.state.settings):
        path = root / "glyphs" / fontstack / name
        if path.is_file():
            return FileResponse(path, media_type="application/x-protobuf",
                                headers={"Cache-Control": "public, max-age=86400"})
    raise NotFound(f"no glyph range {fontstack}/{name} (scripts/setup.sh builds the glyphs into .vendor/glyphs/)")


@router.get("/map/static/{name}", include_in_schema=False)
async def static_file(name: str):
    path = STATIC_DIR / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, media_type=STATIC_TYPES.get(path.suffix), headers={"Cache-Control": "no-cache"})


@router.get("/map", response_class=HTMLResponse, summary="The one map (web page)")
async def map_page(request: Request):
    maplibre_dir(request.app.state.settings)  # fail clearly, not with a blank page
    return HTMLResponse(TEMPLATE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})


async def _versions(conn, name: str, current: int | None) -> list[dict]:
    """Every version the layer has had, oldest first (the map's time slider and swipe)."""
    if current is None:
        return []
    return [{"version": v, "created": i.created_at.isoformat()} for v, i in (await layer_versions(conn, name)).items()]


@router.get("/map/config", summary="Layers of the one map for this caller: departments, versions, extents")
async def map_config(request: Request, conn=Depends(get_conn), registry: Registry = Depends(get_registry_dep),
                     principal=Depends(get_principal)):
    specs = await visible_layers(conn, principal, registry)
    info = {n: (c.version, c.created_at, c.extent) for n, c in (await current_layers(conn)).items()}
    departments: dict[str, dict] = {}
    for s in sorted(specs, key=lambda s: (s.department, -s.style.order)):
        ver, created, ext = info.get(s.name, (None, None, None))
        dept = registry.departments.get(s.department)
        group = departments.setdefault(s.department, {
            "code": s.department, "name": dept.name.model_dump() if dept else {"zh": s.department, "en": s.department},
            "layers": []})
        group["layers"].append({
            "name": s.name, "title": s.title.model_dump(), "kind": s.kind, "style": s.style.kind,
            "version": ver, "updated": created.isoformat() if created else None,
            "extent": list(ext) if ext else None, "minzoom": s.tiles.minzoom,
            "versions": await _versions(conn, s.name, ver),
        })
    return {"departments": list(departments.values()), "style": f"{base_url(request)}/map/style.json",
            "site_check": f"{base_url(request)}/analysis/site-check",
            "imagery": await map_imagery(request, conn, registry, principal)}

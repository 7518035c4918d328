"""``/docs``: the interactive API documentation (Swagger UI) served entirely by this app.

FastAPI's default page loads Swagger UI from a CDN, which leaves it blank on an intranet without
internet. Here the page and its assets come from the npm package ``swagger-ui-dist`` that
scripts/setup.sh installs into ``.vendor/`` (like MapLibre GL JS for the map)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from geobase.api.routing import LazyAPIRoute
from geobase.api.deps import base_url
from geobase.api.map import vendored

from geobase.errors import NotFound

router = APIRouter(route_class=LazyAPIRoute, tags=["Capabilities"])

SWAGGER_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                 "favicon-32x32.png": "image/png", "swagger-ui-bundle.js.map": "application/json",
                 "swagger-ui.css.map": "application/json", "LICENSE": "text/plain"}


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
async def docs_page(request: Request) -> HTMLResponse:
    vendored(request.app.state.settings, "swagger-ui-dist", "swagger-ui-bundle.js")  # fail clearly, not blank
    root = base_url(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}/api", title="geobase API",
        swagger_js_url=f"{root}/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{root}/vendor/swagger-ui/favicon-32x32.png",
    )


@router.get("/vendor/swagger-ui/{name}", include_in_schema=False)
async def swagger_file(request: Request, name: str):
    if name not in SWAGGER_FILES:
        raise NotFound(f"no vendored file {name!r}")
    path = vendored(request.app.state.settings, "swagger-ui-dist", "swagger-ui-bundle.js") / name
    if not path.exists():
        raise NotFound(f"no vendored file {name!r}")
    return FileResponse(path, media_type=SWAGGER_FILES[name], headers={"Cache-Control": "public, max-age=86400"})

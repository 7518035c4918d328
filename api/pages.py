"""HTML pages and links of the features API: the Jinja templates and the absolute links that
keep a request's query parameters (self/alternate/next/prev)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from geobase.api.deps import base_url

TEMPLATES = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                        autoescape=select_autoescape(["html"]))


def render(name: str, **ctx) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**ctx))


def page_url(request: Request, path: str, **params) -> str:
    """An absolute link with the request's query parameters replaced by ``params`` (None drops)."""
    q = dict(request.query_params)
    for k, v in params.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = v
    return f"{base_url(request)}{path}" + (("?" + urlencode(q)) if q else "")


def script_json(text: str) -> str:
    """JSON text safe to embed in a <script> element (no ``</`` to close it early)."""
    return text.replace("</", "<\\/")

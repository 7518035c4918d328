"""HTML pages and links of the features API: the Jinja templates and the absolute links that
keep a request's query parameters (self/alternate/next/prev)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse

from geobase.api.deps import base_url


@cache
def templates():
    """The Jinja environment, built by the first HTML page: jinja2 is not imported at server
    start (~30 ms of it, issue #15; tests/test_lazy_imports.py)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                       autoescape=select_autoescape(["html"]))


def render(name: str, **ctx) -> HTMLResponse:
    return HTMLResponse(templates().get_template(name).render(**ctx))


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

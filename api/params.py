"""Query parameters an endpoint does not define are refused (400 naming the parameter).

OGC API - Features Part 1 (/req/core/query-param-unknown) asks for a 400 on a parameter the
API does not define; the house rule is the same for every endpoint: input is never silently
ignored (``items?dlbm=0101`` used to return every parcel, ``ingest?dry_run=true`` committed a
version because ``dry_run`` is a form field).

One mechanism for the whole app: :func:`check_query_parameters` is a dependency every router
is mounted with (``api/app.py``); it compares the request's query parameter names with those
the matched route declares (its own and its dependencies' ``Query`` parameters, the same list
the OpenAPI document shows). A route that also takes free-form names (the property filters
of ``/items``, OGC API - Features Part 1 "parameters for filtering on feature properties")
is marked with :func:`allows_property_filters` and gets them from
:func:`extra_query_parameters` to check them against the caller's queryables itself.
Starlette routes outside the routers (the OpenAPI document and its viewers) take no query
parameters: :func:`install` checks them with a small middleware.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from geobase.errors import InvalidInput

_MARK = "__geobase_property_filters__"
_cache: dict[int, tuple[frozenset[str], frozenset[str]]] = {}


def allows_property_filters(endpoint: Callable) -> Callable:
    """Mark an endpoint whose undeclared query parameters are property filters it checks itself."""
    setattr(endpoint, _MARK, True)
    return endpoint


def _walk(dependant: Any, attr: str, keep: Callable[[Any], bool] = lambda p: True) -> set[str]:
    """Names (aliases) of the dependant's ``attr`` parameters and its dependencies', those ``keep``
    accepts."""
    names = {getattr(p, "alias", None) or p.name for p in getattr(dependant, attr, []) if keep(p)}
    for sub in getattr(dependant, "dependencies", []):
        names |= _walk(sub, attr, keep)
    return names


def _takes_many(annotation: Any) -> bool:
    """Whether a parameter annotated so takes repeated values (``list[str]``, ``tuple | None``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_takes_many(a) for a in typing.get_args(annotation) if a is not type(None))
    return (origin or annotation) in (list, tuple, set, frozenset)


def _declared_as_list(param: Any) -> bool:
    return _takes_many(getattr(getattr(param, "field_info", None), "annotation", None))


_repeatable_cache: dict[tuple[int, str], frozenset[str]] = {}


def repeatable(route: Any, attr: str = "query_params") -> frozenset[str]:
    """Query parameters (or, ``attr="body_params"``, form fields) of a route that take several
    values (declared as a list): the only ones that may be given more than once."""
    key = (id(route), attr)
    if key not in _repeatable_cache:
        dependant = getattr(route, "dependant", None)
        _repeatable_cache[key] = frozenset(_walk(dependant, attr, _declared_as_list)) if dependant else frozenset()
    return _repeatable_cache[key]


def declared(route: Any) -> tuple[frozenset[str], frozenset[str]]:
    """(query parameter names, body/form field names) a route declares."""
    key = id(route)
    if key not in _cache:
        dependant = getattr(route, "dependant", None)
        _cache[key] = (frozenset(_walk(dependant, "query_params")) if dependant else frozenset(),
                       frozenset(_walk(dependant, "body_params")) if dependant else frozenset())
    return _cache[key]


def _unknown_error(name: str, allowed: frozenset[str], form: frozenset[str]) -> InvalidInput:
    if name in form:
        return InvalidInput(f"{name}: is a form field of this endpoint, not a query parameter; send it in the "
                            "request body (nothing was done)", parameter=name)
    known = ", ".join(sorted(allowed)) or "none"
    return InvalidInput(f"{name}: unknown query parameter for this endpoint (known: {known})", parameter=name)


def extra_query_parameters(request: Request) -> list[tuple[str, str]]:
    """The (name, value) pairs of the request's query that its route does not declare."""
    allowed, _ = declared(request.scope.get("route"))
    return [(k, v) for k, v in request.query_params.multi_items() if k not in allowed]


def _refuse_nul_bytes(request: Request) -> None:
    """400 naming the first query parameter whose name or value holds a NUL byte: no text this
    API stores or reads can (PostgreSQL's text cannot); refused here, for every route, rather
    than by the database driver's error deep inside whichever query the value reached, which
    named no parameter."""
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            shown = name.replace("\x00", "?")
            raise InvalidInput(f"{shown}: contains a NUL byte (0x00), which no text here may hold", parameter=shown)


async def check_query_parameters(request: Request) -> None:
    """Router-wide dependency: 400 naming the first query parameter the route does not define,
    whose value holds a NUL byte or that is given twice, and the same for a form body's fields."""
    route = request.scope.get("route")
    if route is None:
        return
    _refuse_nul_bytes(request)
    allowed, form = declared(route)
    await _check_form_fields(request, form, repeatable(route, "body_params"))
    await _check_json_body(request, form)
    if getattr(route.endpoint, _MARK, False):  # its other names are property filters, checked by it
        _refuse_repeated(request.query_params.multi_items(), repeatable(route), only=allowed)
        return
    for name in request.query_params.keys():
        if name not in allowed:
            raise _unknown_error(name, allowed, form)
    _refuse_repeated(request.query_params.multi_items(), repeatable(route))


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def _check_json_body(request: Request, fields: frozenset[str]) -> None:
    """A JSON body of a route that declares its members (a pydantic model FastAPI parses): read
    again by the one rule of JSON bodies (geobase.jsonbody.decode_json_body), so that a member
    named twice (FastAPI's parser keeps the last: ``{"sharing": "department", "sharing":
    "public"}``) or a NUL character is a 400 naming it, as in every other JSON body here. The
    bytes are the ones FastAPI read (Starlette keeps them on the request); a body without a
    Content-Type is one FastAPI reads as JSON, so it is read so here too."""
    if not fields or "json" not in (request.headers.get("content-type") or "json").lower():
        return
    body = await request.body()
    if body:
        from geobase.jsonbody import decode_json_body

        decode_json_body(body)


async def _check_form_fields(request: Request, fields: frozenset[str], many: frozenset[str]) -> None:
    """A form body of a route that declares form fields: 400 naming a field it does not declare
    (``dryrun=true`` for ``dry_run``: the ingest would commit) or one given twice that takes one
    value (``dry_run=true`` then ``dry_run=false``: the framework reads the last). The form is
    the one FastAPI has parsed already (Starlette keeps it on the request)."""
    if not fields or not request.headers.get("content-type", "").lower().startswith(_FORM_TYPES):
        return
    items = (await request.form()).multi_items()
    for name, _ in items:
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise InvalidInput(f"{name}: unknown form field for this endpoint (known: {known}; nothing was done)",
                               parameter=name)
    _refuse_repeated(items, many, what="form field")


def _refuse_repeated(items, many: frozenset[str], only: frozenset[str] | None = None,
                     what: str = "parameter") -> None:
    """400 naming a parameter (of ``items``: its name, value pairs) given twice that takes one
    value: the framework would read one of the two (the last) and ignore the other, silently
    (``?dry_run=true&dry_run=false``). ``only``: the names to check (the rest are the route's own
    to check)."""
    seen: set[str] = set()
    for name, _ in items:
        if name in seen and name not in many and (only is None or name in only):
            raise InvalidInput(f"{name}: {what} given more than once; it takes one value (nothing was done)",
                               parameter=name)
        seen.add(name)


class _NoParamsOnDocs:
    """Plain ASGI middleware (not ``BaseHTTPMiddleware``, which costs every request of the app a
    task and a re-wrapped response): a query string on a documentation route is a 400."""

    def __init__(self, app, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("query_string") and scope["path"] in self.paths:
            pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            if pairs:
                from geobase.api.errors import error_body

                name = pairs[0][0]
                response = JSONResponse(error_body("InvalidParameterValue",
                                                   f"{name}: unknown query parameter for this endpoint (known: none)",
                                                   name), status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Refuse query parameters on the app's own documentation routes (they take none)."""
    app.add_middleware(_NoParamsOnDocs, paths=frozenset(p for p in (app.openapi_url, app.docs_url, app.redoc_url) if p))

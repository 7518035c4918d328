"""The OpenAPI document at ``/api``: OpenAPI 3.0, as the landing page and /conformance declare.

FastAPI writes OpenAPI 3.1 (JSON Schema 2020-12: ``anyOf`` with ``null``, numeric
``exclusiveMinimum``, ``examples``, ``const``). Clients that read 3.0, GDAL 3.6 among them, then
miss e.g. ``limit``'s ``maximum`` and page 10 features at a time. :func:`to_oas30` rewrites the
generated document into 3.0.3; the tests validate it with openapi-spec-validator's 3.0 validator.

:func:`describe_responses` then says what each operation really returns, from what the app knows
of its routes rather than by hand per route:

* success: each media type the route serves (:mod:`geobase.api.negotiation`'s table);
* 400 everywhere (validation errors are 400 here, never FastAPI's 422: api/errors.py), 401 (a bad
  key, checked by the gate in front of every route), 429 (rate limit) and 503 (database or
  worker pool busy or down) everywhere; 403 where a role check depends on the caller; 404 where
  the path or the body names something; 406 where Accept is negotiated; 413 where a body is read; all with
  the exception schema the error handlers write."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from geobase.api import negotiation

from geobase.api.gate import get_principal

OAS_VERSION = "3.0.3"

EXCEPTION_SCHEMA = {
    "type": "object",
    "description": "OGC API exception: a code, a human-readable description and the offending parameter.",
    "required": ["code", "description"],
    "properties": {
        "code": {"type": "string", "example": "InvalidParameterValue"},
        "description": {"type": "string"},
        "parameter": {"type": "string", "description": "the query/path/body parameter at fault"},
        "details": {"type": "object", "additionalProperties": True},
    },
    "additionalProperties": True,
}

ERRORS: dict[int, str] = {
    400: "Invalid request: a parameter, header or body is malformed or not supported (names the parameter)",
    401: "The API key (Authorization: Bearer / X-API-Key) is unknown, expired or revoked",
    403: "The key's role or department may not do this",
    404: "Not found (or not visible to this caller)",
    406: "None of the types the Accept header admits is served here (choose one with f=)",
    409: "Conflicts with existing state",
    412: "If-Match names a state the feature no longer has: nothing was changed (reload and edit again)",
    415: "The request body's Content-Type is not one this operation reads",
    422: "An edit fails a check of the layer's data (details name the check and the field); not a request "
         "validation error (those are 400)",
    428: "If-Match is required for this write",
    413: "The request body is too large",
    429: "Rate limit exceeded (see Retry-After)",
    503: "Busy or the database is unavailable; retry (see Retry-After)",
}

ALSO: dict[int, str] = {
    204: "No content: the tile is empty",
    206: "Partial content: the byte ranges asked for with Range",
    304: "Not modified: the representation still has the ETag sent in If-None-Match",
}

#: rare statuses only the service knows it raises: (method, path) -> statuses
EXTRA_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/admin/departments"): (409,),
    ("POST", "/admin/keys"): (409,),
    ("PUT", "/admin/layers/{layer}/sharing"): (409,),
    # role checked in the handler (the steward's department against the layer's)
    ("POST", "/admin/layers/{layer}/ingest"): (403,),
    ("GET", "/admin/jobs/{job_id}"): (403,),
    # editing (OGC API - Features Part 4): who may edit is checked in the handler
    ("POST", "/collections/{collectionId}/items"): (403, 409, 415, 422),
    ("PUT", "/collections/{collectionId}/items/{featureId}"): (403, 409, 412, 415, 422, 428),
    ("PATCH", "/collections/{collectionId}/items/{featureId}"): (403, 409, 412, 415, 422, 428),
    ("DELETE", "/collections/{collectionId}/items/{featureId}"): (403, 409, 412, 422, 428),
    ("POST", "/collections/{collectionId}/items/{featureId}/split"): (403, 409, 412, 415, 422, 428),
    ("POST", "/collections/{collectionId}/items/{featureId}/merge"): (403, 409, 412, 415, 422, 428),
    ("POST", "/collections/{collectionId}/sessions"): (403,),
    ("GET", "/collections/{collectionId}/sessions/{sessionId}"): (403,),
    ("POST", "/collections/{collectionId}/sessions/{sessionId}/commit"): (403, 409, 412, 415, 422),
    ("DELETE", "/collections/{collectionId}/sessions/{sessionId}"): (403, 409),
    # indicator targets: CSV only, admins only (checked in the handler)
    ("POST", "/admin/indicators/targets"): (403, 415),
}

_TEXT = {"type": "string"}
_BINARY = {"type": "string", "format": "binary"}


# ------------------------------------------------------------------------------------------
# 3.1 -> 3.0
# ------------------------------------------------------------------------------------------
def _is_null(s: Any) -> bool:
    """``{"type": "null"}``, before or after :func:`_schema30` rewrote it."""
    return isinstance(s, dict) and (s == {"type": "null"} or s == {"enum": [None], "nullable": True})


def _schema30(s: Any) -> Any:
    """One JSON Schema 2020-12 object as an OpenAPI 3.0 Schema Object (recursively)."""
    if isinstance(s, list):
        return [_schema30(x) for x in s]
    if not isinstance(s, dict):
        return s
    s = {k: _schema30(v) if k not in ("enum", "default", "example", "examples", "required") else v
         for k, v in s.items()}
    nullable = False
    for key in ("anyOf", "oneOf"):
        alts = s.get(key)
        if isinstance(alts, list) and any(_is_null(a) for a in alts):
            rest = [a for a in alts if not _is_null(a)]
            nullable = True
            del s[key]
            if len(rest) == 1:
                only = rest[0]
                if "$ref" in only:
                    s["allOf"] = [only]
                else:
                    s = {**only, **s}
            elif rest:
                s[key] = rest
    t = s.get("type")
    if isinstance(t, list):
        types = [x for x in t if x != "null"]
        nullable = nullable or len(types) < len(t)
        if len(types) == 1:
            s["type"] = types[0]
        else:
            del s["type"]
            if types:
                s["anyOf"] = [{"type": x} for x in types]
    elif t == "null":
        del s["type"]
        s["enum"] = [None]
        nullable = True
    if nullable:
        s["nullable"] = True
        if "enum" in s and None not in s["enum"]:
            s["enum"] = list(s["enum"]) + [None]
    if "const" in s:
        s["enum"] = [s.pop("const")]
    if "examples" in s:
        ex = s.pop("examples")
        if isinstance(ex, list) and ex and "example" not in s:
            s["example"] = ex[0]
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        v = s.get(bound)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            s[inclusive] = v
            s[bound] = True
    if "prefixItems" in s:  # a tuple: 3.0 has no positional items
        pre = s.pop("prefixItems")
        s.setdefault("minItems", len(pre))
        s.setdefault("maxItems", len(pre))
        s["items"] = pre[0] if len({repr(p) for p in pre}) == 1 else {"anyOf": pre}
    if "contentMediaType" in s or "contentEncoding" in s:  # an uploaded file
        s.pop("contentMediaType", None)
        s.pop("contentEncoding", None)
        s.setdefault("type", "string")
        s.setdefault("format", "binary")
    for k in ("$schema", "$id", "$defs", "unevaluatedProperties", "dependentRequired", "dependentSchemas",
              "propertyNames", "if", "then", "else", "contains"):
        s.pop(k, None)
    if "$ref" in s and len(s) > 1:  # 3.0: siblings of $ref are ignored; keep them meaningful
        ref = s.pop("$ref")
        s["allOf"] = [{"$ref": ref}] + s.get("allOf", [])
    return s


def to_oas30(doc: dict) -> dict:
    """FastAPI's OpenAPI 3.1 document as OpenAPI 3.0.3."""
    doc = copy.deepcopy(doc)
    doc["openapi"] = OAS_VERSION
    doc.pop("jsonSchemaDialect", None)
    doc.pop("webhooks", None)
    info = doc.get("info", {})
    info.pop("summary", None)
    if isinstance(info.get("license"), dict):
        info["license"].pop("identifier", None)
    comps = doc.get("components", {})
    for name, schema in list(comps.get("schemas", {}).items()):
        comps["schemas"][name] = _schema30(schema)
    for path_item in doc.get("paths", {}).values():
        for op in path_item.values():
            if not isinstance(op, dict):
                continue
            for p in op.get("parameters", []):
                if "schema" in p:
                    p["schema"] = _schema30(p["schema"])
                if "examples" in p and isinstance(p["examples"], list):
                    p["example"] = p.pop("examples")[0]
            for holder in [op.get("requestBody", {})] + list(op.get("responses", {}).values()):
                for media in holder.get("content", {}).values():
                    if "schema" in media:
                        media["schema"] = _schema30(media["schema"])
    return doc


# ------------------------------------------------------------------------------------------
# responses from what the routes are
# ------------------------------------------------------------------------------------------
def _calls(dep: Dependant) -> list[Dependant]:
    out = []
    for sub in dep.dependencies:
        out.append(sub)
        out += _calls(sub)
    return out


def _role_checked(dependant: Dependant | None) -> bool:
    """A dependency built on the caller (other than resolving it) is a role or department check."""
    for sub in _calls(dependant) if dependant else []:
        if sub.call is get_principal:
            continue
        if any(s.call is get_principal for s in _calls(sub)):
            return True
    return False


def api_routes(app: FastAPI) -> list[tuple[str, set[str], Any]]:
    """``(full path template, methods, route)`` of every mounted route, included routers resolved."""
    try:  # FastAPI >= 0.16x keeps included routers nested; this walks them with their prefixes
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI: app.routes is already flat
        return [(r.path, set(getattr(r, "methods", None) or ()), r) for r in app.routes]
    return [(rc.path, set(rc.methods or ()), rc) for rc in iter_route_contexts(app.routes)]


def _content(media_types: list[str], json_schema: dict | None) -> dict:
    out = {}
    for m in media_types:
        if "json" in m:
            out[m.split(";")[0] if "version" not in m else m] = {"schema": json_schema or {}}
        elif m.startswith("text/"):
            out[m.split(";")[0]] = {"schema": _TEXT}
        else:
            out[m.split(";")[0] if m.startswith("application/") else m] = {"schema": _BINARY}
    return out


def _error(status: int) -> dict:
    return {"description": ERRORS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Exception"}}}}


def describe_responses(doc: dict, app: FastAPI) -> dict:
    """Every operation's real statuses and media types (see the module docstring)."""
    doc.setdefault("components", {}).setdefault("schemas", {})["Exception"] = EXCEPTION_SCHEMA
    schemas = doc["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, methods, route in api_routes(app):
        if not isinstance(getattr(route, "original_route", route), APIRoute) or not route.include_in_schema:
            continue
        item = doc.get("paths", {}).get(path)
        if not item:
            continue
        for method in methods:
            op = item.get(method.lower())
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            offer = negotiation.offer_for(method, path)
            ok = str(route.status_code or 200)
            if offer is not None and ok in responses:
                current = responses[ok].get("content", {})
                schema = next((c.get("schema") for c in current.values() if c.get("schema")), None)
                responses[ok]["content"] = _content(list(offer.media.values()), schema)
                for extra in offer.also:
                    responses.setdefault(str(extra), {"description": ALSO[extra]})
                    if extra == 206:  # a part of the same representation
                        responses["206"]["content"] = responses[ok]["content"]
            statuses = {400, 401, 429, 503}
            if _role_checked(getattr(route, "dependant", None)):
                statuses.add(403)
            if "{" in path or route.body_field is not None:  # a path or a body names the thing
                statuses.add(404)
            if method == "GET" and offer is not None and offer.negotiated:
                statuses.add(406)
            if route.body_field is not None or method in ("POST", "PUT", "PATCH"):
                statuses.add(413)
            statuses.update(EXTRA_ERRORS.get((method, path), ()))
            for status in sorted(statuses):
                responses.setdefault(str(status), _error(status))
            op["responses"] = dict(sorted(responses.items()))
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve the 3.0 document, described as above, built once on first request."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes, tags=app.openapi_tags, servers=app.servers)
            app.openapi_schema = to_oas30(describe_responses(doc, app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

"""Editing over HTTP (OGC API - Features Part 4): thin router over :mod:`geobase.editing`.

    POST   /collections/{id}/items                       create (201 + Location + ETag)
    PUT    /collections/{id}/items/{featureId}           replace         (If-Match required)
    PATCH  /collections/{id}/items/{featureId}           update (merge patch of properties, geometry)
    DELETE /collections/{id}/items/{featureId}           delete          (If-Match required)
    POST   /collections/{id}/sessions                    open an edit session (201)
    GET    /collections/{id}/sessions/{sessionId}        the session and its staged changes
    POST   /collections/{id}/sessions/{sessionId}/commit {"message": ...} -> one new version
    POST   /collections/{id}/sessions/{sessionId}/check  what the commit would check (422/412), nothing written
    DELETE /collections/{id}/sessions/{sessionId}        discard

A write names its session with the ``Edit-Session`` header; without it the write is committed at
once as a version of its own and needs ``?reason=``. Bodies are GeoJSON in CRS84 or in the CRS
of ``Content-Crs`` (``<http://www.opengis.net/def/crs/EPSG/0/4527>``). The collection is resolved
as for reading (a layer the caller may not see is a 404), then :func:`geobase.security.require_editor`
decides (401/403) before anything is read or written; every write is audited with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import psycopg
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from geobase.api.routing import LazyAPIRoute
from geobase import audit
from geobase.api.deps import (Collection, base_url, divisions_param, feature_collection, get_conn, get_registry_dep,
                              request_connection, streamed_feature_collection)
from geobase.api.streaming import event_stream
from geobase.api.streaming import last_event_id as last_event_id_checked
from geobase.api.gate import get_principal
from geobase.catalog import edits
from geobase.crs import Crs, parse_crs
from geobase.editing import service, topology
from geobase.features import ids
from geobase.editing.rows import Row, check_attributes, check_geometry, feature_parts
from geobase.errors import InvalidInput, NotFound, UnsupportedMediaType
from geobase.security import Principal, require_editor
from geobase.specs import Registry

router = APIRouter(route_class=LazyAPIRoute, tags=["Editing"])
T = TypeVar("T")

_PART4 = "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf"
#: OGC API - Features Part 4 classes this router passes (tests/test_conformance.py names their tests)
EDITING_CONFORMANCE = [f"{_PART4}/create-replace-delete", f"{_PART4}/update", f"{_PART4}/features"]

JSON_TYPES = ("application/geo+json", "application/json", "application/merge-patch+json")
REASON = Query(None, max_length=service.MAX_MESSAGE,
               description="Why (kept with the version and in the audit log); required without Edit-Session")
SESSION = Header(None, alias="Edit-Session", description="The edit session this change belongs to")
IF_MATCH = Header(None, alias="If-Match", description="The ETag of the feature as last read")
CONTENT_CRS = Header(None, alias="Content-Crs", description="CRS of the body's coordinates (default CRS84)")


def _actor(principal: Principal) -> service.Actor:
    return service.Actor(principal.name or principal.key_id or "api", principal.key_id, principal.department,
                         principal.is_admin)


def _editable(c: Collection, principal: Principal) -> service.Actor:
    require_editor(principal, c.state.access)
    return _actor(principal)


async def _body(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type: send {', '.join(JSON_TYPES)}, not {ctype[:60] or '(none)'!r}",
                                   parameter="Content-Type")
    from geobase.jsonbody import decode_json_body  # (the one rule of JSON bodies)

    return decode_json_body(await request.body())


def _crs(value: str | None) -> Crs:
    return parse_crs(value.strip().removeprefix("<").removesuffix(">") if value else None, "Content-Crs")


def _owner(request: Request):
    return request.app.state.owner_settings


def _answer(request: Request, c: Collection, action: str, result: service.WriteResult, reason: str | None,
            status: int = 200) -> JSONResponse:
    audit.note(action=action, layer=c.spec.name, count=1, feature=result.key, session=result.session,
               version=result.version, reason=reason)
    fid = ids.FeatureRef(result.key, result.division).id(c.qualified_ids and result.division is not None)
    url = f"{base_url(request)}/collections/{c.spec.name}/items/{fid}"
    headers = {"Location": url} if status == 201 else {}
    if result.etag:
        headers["ETag"] = result.etag
    body = {"featureId": fid, "etag": result.etag, "session": result.session, "version": result.version,
            "committed": result.version is not None,
            "links": [{"rel": "self", "type": "application/geo+json", "href": url}]}
    return JSONResponse(body, status_code=status, headers=headers)


async def _feature(request: Request, c: Collection, feature_id: str) -> ids.FeatureRef:
    """The current feature ``feature_id`` names, by the one rule of ids
    (:func:`geobase.features.ids.resolve`: a county-qualified id, or a bare key; a bare key of
    several counties is a 409 naming their qualified ids): its key and county, which the edit
    stages, checks and retires by. An id that names no current feature is passed on as a key of
    no known county: a feature staged in the session so far, else the service's 404."""
    async with request_connection(request) as conn:
        ref = await ids.resolve(conn, c.spec, feature_id)
    return ref if ref is not None else ids.FeatureRef(feature_id, None)


def _new_row(c: Collection, registry: Registry, body: Any, crs: Crs, key: str | None) -> Row:
    props, geometry = feature_parts(body)
    if key is not None and len(c.spec.source_key) == 1:
        props = {c.spec.source_key[0]: key, **props}
    row = Row(check_attributes(c.spec, registry, props), check_geometry(c.spec, geometry, crs))
    if key is not None and row.key(c.spec) != key:
        raise InvalidInput(f"body: the feature's key attributes ({', '.join(c.spec.source_key)}) make "
                           f"{row.key(c.spec)!r}, not the featureId {key!r}", parameter="body")
    return row


@router.post("/collections/{collectionId}/items", status_code=201, summary="Add a feature (OGC API - Features Part 4)")
async def create_item(request: Request, c: Collection = Depends(streamed_feature_collection),
                      reason: str | None = REASON, session: str | None = SESSION,
                      content_crs: str | None = CONTENT_CRS, principal: Principal = Depends(get_principal),
                      registry: Registry = Depends(get_registry_dep)):
    actor = _editable(c, principal)
    row = _new_row(c, registry, await _body(request), _crs(content_crs), None)
    result = await run_in_threadpool(service.write, _owner(request), c.spec, None, lambda _: row, actor=actor,
                                     if_match=None, session=session, reason=reason, create=True)
    return _answer(request, c, "feature.create", result, reason, 201)


@router.put("/collections/{collectionId}/items/{featureId}",
            summary="Replace a feature (If-Match required)")
async def replace_item(request: Request, featureId: str, c: Collection = Depends(streamed_feature_collection),
                       reason: str | None = REASON, session: str | None = SESSION, if_match: str | None = IF_MATCH,
                       content_crs: str | None = CONTENT_CRS, principal: Principal = Depends(get_principal),
                       registry: Registry = Depends(get_registry_dep)):
    actor = _editable(c, principal)
    ref = await _feature(request, c, featureId)
    row = _new_row(c, registry, await _body(request), _crs(content_crs), ref.key)
    result = await run_in_threadpool(service.write, _owner(request), c.spec, ref.key, lambda _: row, actor=actor,
                                     if_match=service.if_match_hashes(if_match), session=session, reason=reason,
                                     division=ref.division)
    return _answer(request, c, "feature.replace", result, reason)


def _patched(c: Collection, registry: Registry, patch: Any, crs: Crs):
    if not isinstance(patch, dict):
        raise InvalidInput("body: a JSON merge patch object is expected", parameter="body")
    props = patch.get("properties") or {}
    if not isinstance(props, dict):
        raise InvalidInput("body: properties must be an object", parameter="properties")
    keys = [k for k in props if k in c.spec.source_key]
    ewkb = check_geometry(c.spec, patch["geometry"], crs) if "geometry" in patch else None

    def build(current: Row | None) -> Row:
        if any(props[k] != current.attributes.get(k) for k in keys):
            raise InvalidInput(f"properties: {keys[0]} is part of the feature id; it cannot change", parameter=keys[0])
        merged = {**current.as_json(), **props}
        return Row(check_attributes(c.spec, registry, merged), ewkb if ewkb is not None else current.ewkb)
    return build


@router.patch("/collections/{collectionId}/items/{featureId}",
              summary="Update a feature's properties and/or geometry (JSON merge patch, If-Match required)")
async def update_item(request: Request, featureId: str, c: Collection = Depends(streamed_feature_collection),
                      reason: str | None = REASON, session: str | None = SESSION, if_match: str | None = IF_MATCH,
                      content_crs: str | None = CONTENT_CRS, principal: Principal = Depends(get_principal),
                      registry: Registry = Depends(get_registry_dep)):
    actor = _editable(c, principal)
    build = _patched(c, registry, await _body(request), _crs(content_crs))
    ref = await _feature(request, c, featureId)
    result = await run_in_threadpool(service.write, _owner(request), c.spec, ref.key, build, actor=actor,
                                     if_match=service.if_match_hashes(if_match), session=session, reason=reason,
                                     division=ref.division)
    return _answer(request, c, "feature.update", result, reason)


@router.delete("/collections/{collectionId}/items/{featureId}",
               summary="Delete a feature (If-Match required)")
async def delete_item(request: Request, featureId: str, c: Collection = Depends(streamed_feature_collection),
                      reason: str | None = REASON, session: str | None = SESSION, if_match: str | None = IF_MATCH,
                      principal: Principal = Depends(get_principal)):
    actor = _editable(c, principal)
    ref = await _feature(request, c, featureId)
    result = await run_in_threadpool(service.write, _owner(request), c.spec, ref.key, lambda _: None, actor=actor,
                                     if_match=service.if_match_hashes(if_match), session=session, reason=reason,
                                     division=ref.division)
    return _answer(request, c, "feature.delete", result, reason)


@router.post("/collections/{collectionId}/items/{featureId}/split",
             summary="Split a parcel by a line into pieces with new ids (If-Match of the parcel)")
async def split_item(request: Request, featureId: str, c: Collection = Depends(streamed_feature_collection),
                     reason: str | None = REASON, session: str | None = SESSION, if_match: str | None = IF_MATCH,
                     content_crs: str | None = CONTENT_CRS, principal: Principal = Depends(get_principal),
                     registry: Registry = Depends(get_registry_dep)):
    actor = _editable(c, principal)
    body, crs = await _body(request), _crs(content_crs)
    out = await run_in_threadpool(topology.split, _owner(request), c.spec, registry, featureId, body, crs,
                                  actor=actor, if_match=service.if_match_hashes(if_match), session=session,
                                  reason=reason)
    audit.note(action="feature.split", layer=c.spec.name, count=len(out["pieces"]), feature=featureId,
               pieces=[p["featureId"] for p in out["pieces"]], session=out["session"], version=out["version"],
               reason=reason)
    return out


@router.post("/collections/{collectionId}/items/{featureId}/merge",
             summary="Merge adjacent parcels into this one (If-Match lists the ETag of each)")
async def merge_items(request: Request, featureId: str, c: Collection = Depends(streamed_feature_collection),
                      reason: str | None = REASON, session: str | None = SESSION, if_match: str | None = IF_MATCH,
                      principal: Principal = Depends(get_principal), registry: Registry = Depends(get_registry_dep)):
    actor = _editable(c, principal)
    body = await _body(request)
    out = await run_in_threadpool(topology.merge, _owner(request), c.spec, registry, featureId, body, actor=actor,
                                  if_match=service.if_match_hashes(if_match), session=session, reason=reason)
    audit.note(action="feature.merge", layer=c.spec.name, count=1 + len(out["merged"]), feature=featureId,
               merged=out["merged"], session=out["session"], version=out["version"], reason=reason)
    return out


@router.get("/collections/{collectionId}/items/{featureId}/history",
            summary="Every state a feature has had: version, when, by whom, why (masked attributes left out)")
async def item_history(featureId: str, c: Collection = Depends(feature_collection),
                       conn: psycopg.AsyncConnection = Depends(get_conn)):
    visible = [a for a in c.spec.attribute_names if a not in c.hidden]
    ref = await ids.resolve(conn, c.spec, featureId, current=False)  # in any version; several: 409
    states = await edits.feature_history(conn, c.spec, ref, visible) if ref is not None else []
    if not states:
        raise NotFound(f"feature {featureId!r} never existed in {c.spec.name!r}", parameter="featureId")
    audit.note(count=len(states))
    return Response(orjson.dumps({"featureId": featureId, "collection": c.spec.name, "states": states}),
                    media_type="application/json", headers={"Cache-Control": "no-store",
                                                            "Vary": "Accept, Authorization, X-API-Key"})


def _event(layer: str, root: str, v: dict, divisions: list[str] | None = None) -> bytes:
    county = f"&division={','.join(divisions)}" if divisions else ""
    data = {**v, "layer": layer,
            "changes": f"{root}/collections/{layer}/changes?from={v['version'] - 1}&to={v['version']}{county}"}
    return f"id: {v['version']}\nevent: version\ndata: {orjson.dumps(data).decode()}\n\n".encode()


def _touches(v: dict, divisions: list[str] | None) -> bool:
    return not divisions or v.get("touched") is None or bool(set(v["touched"]) & set(divisions))


@router.get("/collections/{collectionId}/changes/stream",
            summary="Server-Sent Events: one event per new version of the layer (resume with Last-Event-ID)")
async def changes_stream(request: Request, c: Collection = Depends(streamed_feature_collection),
                         until: int | None = Query(None, ge=0, le=2**31 - 1, description="Close the stream once "
                                                   "this version was sent (default: stay open ~50 s; reconnect)"),
                         divisions: list[str] | None = Depends(divisions_param),
                         last_event_id: str | None = Header(None, alias="Last-Event-ID")):
    resumed = last_event_id_checked(last_event_id, "the version number of the last event received")
    start = resumed if resumed is not None else (c.state.current_version or 0)
    layer, root = c.spec.name, base_url(request)

    async def read_since(conn, last: int) -> list[tuple[int, bytes | None]]:
        # a version that touched none of the counties asked for advances the stream unsent (a
        # version from before partitioning names none and may have touched any: it is sent)
        return [(v["version"], _event(layer, root, v, divisions) if _touches(v, divisions) else None)
                for v in await edits.versions_since(conn, layer, last)]

    return event_stream(request, start, until, read_since, {"Vary": "Accept, Authorization, X-API-Key"})


@dataclass
class SessionCall:
    """What every session route shares: the caller may edit this layer (401/403 before anything is
    read or written), and the service runs off the event loop as the database owner, as that
    caller; each route then only names its service call and what it audits."""

    request: Request
    c: Collection
    actor: service.Actor

    async def run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await run_in_threadpool(fn, _owner(self.request), self.c.spec, *args, actor=self.actor, **kw)

    def audit(self, action: str, sid: str, **kw: Any) -> None:
        audit.note(action=action, layer=self.c.spec.name, session=sid, **kw)

    def url(self, sid: str) -> str:
        return f"{base_url(self.request)}/collections/{self.c.spec.name}/sessions/{sid}"


async def session_call(request: Request, c: Collection = Depends(streamed_feature_collection),
                       principal: Principal = Depends(get_principal)) -> SessionCall:
    return SessionCall(request, c, _editable(c, principal))


@router.post("/collections/{collectionId}/sessions", status_code=201, summary="Open an edit session (its changes commit as one version)")
async def open_session(s: SessionCall = Depends(session_call)):
    sid = await s.run(service.open_session)
    s.audit("edit.session.open", sid)
    return JSONResponse({"id": sid, "status": "open", "links": [{"rel": "self", "href": s.url(sid)}]},
                        status_code=201, headers={"Location": s.url(sid)})


@router.get("/collections/{collectionId}/sessions/{sessionId}",
            summary="An edit session and its staged changes")
async def get_session(sessionId: str, s: SessionCall = Depends(session_call)):
    info = await s.run(service.session_info, sessionId)
    s.audit("edit.session.read", sessionId, force=True)
    return Response(orjson.dumps(info), media_type="application/json")


@router.post("/collections/{collectionId}/sessions/{sessionId}/commit", summary="Commit an edit session as one new version of the layer")
async def commit_session(sessionId: str, s: SessionCall = Depends(session_call)):
    body = await _body(s.request)
    message = body.get("message") if isinstance(body, dict) else None
    res = await s.run(service.commit_session, sessionId, message=message)
    s.audit("edit.session.commit", sessionId, version=res.version, reason=message,
            count=res.added + res.removed + res.changed)
    return {"id": sessionId, "status": "committed", "version": res.version, "added": res.added,
            "removed": res.removed, "changed": res.changed, "rows_total": res.rows_total}


@router.post("/collections/{collectionId}/sessions/{sessionId}/check",
             summary="Check an edit session as its commit would (coverage, conflicts): 200, 422 or 412; nothing written")
async def check_session(sessionId: str, s: SessionCall = Depends(session_call)):
    out = await s.run(service.check_session, sessionId)
    s.audit("edit.session.check", sessionId, force=True)
    return out


@router.delete("/collections/{collectionId}/sessions/{sessionId}",
               summary="Discard an edit session (its changes are dropped)")
async def discard_session(sessionId: str, s: SessionCall = Depends(session_call)):
    n = await s.run(service.discard_session, sessionId)
    s.audit("edit.session.discard", sessionId, count=n)
    return {"id": sessionId, "status": "discarded", "changes": n}

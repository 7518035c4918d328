"""What each GET resource can be returned as, and how the client picks it: once for the whole API.

One table (:data:`OFFERS`) says, per route, which representations it serves (the key the handler
dispatches on, and the media type it sends). Three things read it:

* :func:`negotiate` (an app-wide dependency): ``f=`` wins; otherwise the ``Accept`` header with its
  q-values picks the best offered type (ties go to the route's own order, so its default first);
  a request whose ``Accept`` admits none of them gets 406 (only without ``f=``). The choice is
  left in ``request.state.format`` for the handler (:func:`chosen`).
* :class:`HeadMiddleware`: ``HEAD`` on any resource answers what ``GET`` answers, without a body.
* the OpenAPI document (:mod:`geobase.api.openapi`): each operation's real media types.

A GET route missing from the table is not negotiated (and ``tests/test_negotiation.py`` fails, so
that every new resource says what it serves)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geobase.errors import NotAcceptable

GEOJSON = "application/geo+json"
JSON = "application/json"
HTML = "text/html; charset=utf-8"
CSV = "text/csv; charset=utf-8"
GPKG = "application/geopackage+sqlite3"
FGB = "application/flatgeobuf"
PARQUET = "application/vnd.apache.parquet"
MVT = "application/vnd.mapbox-vector-tile"
PNG = "image/png"
TIFF = "image/tiff; application=geotiff; profile=cloud-optimized"
SCHEMA_JSON = "application/schema+json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"

#: other names clients use for a served type (matched as if they named it)
ALIASES: dict[str, tuple[str, ...]] = {
    MVT: ("application/x-protobuf", "application/vnd.mapbox-vector-tile"),
    GPKG: ("application/geopackage+vnd.sqlite3", "application/x-sqlite3"),
    FGB: ("application/x-flatgeobuf",),
    PARQUET: ("application/x-parquet", "application/parquet"),
}


@dataclass(frozen=True)
class Offer:
    """A route's representations: handler key -> media type, the first being the default.

    ``negotiated=False`` for resources whose type is decided by the resource itself (a static
    asset, a job's output file): they are documented with every type they can have, but Accept
    does not choose among them."""

    media: dict[str, str]
    negotiated: bool = True
    #: statuses besides the route's own: 204 (an empty tile), 206 (a Range request), 304 (If-None-Match)
    also: tuple[int, ...] = field(default=())


J = Offer({"json": JSON})
J_HTML = Offer({"json": JSON, "html": HTML})
FEATURES = Offer({"json": GEOJSON, "html": HTML, "csv": CSV, "gpkg": GPKG, "fgb": FGB, "parquet": PARQUET},
                 also=(304,))
TILE = Offer({"mvt": MVT}, also=(204, 304))

#: GET routes (path templates as mounted) -> what they serve
OFFERS: dict[str, Offer] = {
    "/": J_HTML,
    "/health": J,
    "/layers": J,
    "/conformance": J_HTML,
    "/collections": J_HTML,
    "/collections/{collectionId}": J_HTML,
    "/collections/{collectionId}/queryables": Offer({"json": SCHEMA_JSON, "html": HTML}),
    "/collections/{collectionId}/schema": Offer({"json": SCHEMA_JSON}, also=(304,)),
    "/collections/{collectionId}/schema/geojson": Offer({"json": SCHEMA_JSON}, also=(304,)),
    "/catalog": Offer({"json": JSON, "html": HTML}),
    "/collections/catalog": Offer({"json": JSON, "html": HTML}),
    "/catalog/items": Offer({"json": GEOJSON, "html": HTML, "csv": CSV}),
    "/collections/catalog/items": Offer({"json": GEOJSON, "html": HTML, "csv": CSV}),
    "/catalog/items/{recordId}": Offer({"json": GEOJSON, "html": HTML}),
    "/collections/catalog/items/{recordId}": Offer({"json": GEOJSON, "html": HTML}),
    "/catalog/dcat.jsonld": Offer({"jsonld": "application/ld+json"}),
    "/catalog/zones": J,
    "/catalog/items/{recordId}/download": Offer({"file": "application/octet-stream"}, negotiated=False, also=(206,)),
    "/catalog/requests": J,
    "/admin/requests": J_HTML,
    "/csw": Offer({"xml": "application/xml"}, negotiated=False),
    "/collections/{collectionId}/items": FEATURES,
    "/collections/{collectionId}/items/{featureId}": Offer({"json": GEOJSON, "html": HTML}, also=(304,)),
    "/collections/{collectionId}/changes": FEATURES,
    "/collections/{collectionId}/sessions/{sessionId}": J,
    "/collections/{collectionId}/items/{featureId}/history": J,
    "/collections/{collectionId}/changes/stream": Offer({"event-stream": "text/event-stream"}),
    "/collections/{collection_id}/coverage": Offer({"tiff": TIFF}, also=(206, 304)),
    "/tileMatrixSets": J,
    "/tileMatrixSets/{tileMatrixSetId}": J,
    "/collections/{collectionId}/tiles": J,
    "/collections/{collectionId}/tiles/{tileMatrixSetId}": J,
    "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}": TILE,
    "/map/tiles": J,
    "/map/tiles/{tileMatrixSetId}": J,
    "/map/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}": TILE,
    "/tiles/{layers}/{z}/{x}/{y}.mvt": TILE,
    "/tiles/{layers}.json": J,
    "/tiles/{layer}/{style}/{z}/{x}/{y}.png": Offer({"png": PNG}, also=(304,)),
    "/styles/onemap.json": J,
    "/wmts": Offer({"xml": "application/xml; charset=utf-8", "png": PNG, "json": JSON, "html": HTML}, negotiated=False,
                   also=(304,)),
    "/wmts/1.0.0/WMTSCapabilities.xml": Offer({"xml": "application/xml; charset=utf-8"}, negotiated=False),
    "/wmts/1.0.0/{layers}/{style}/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}.png":
        Offer({"png": PNG}, negotiated=False, also=(304,)),
    "/wmts/1.0.0/{layers}/{style}/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}/{j}/{i}.{ext}":
        Offer({"json": JSON, "html": HTML}, negotiated=False),
    "/map/style.json": J,
    "/legend": J_HTML,
    "/map": Offer({"html": HTML}),
    "/map/config": J,
    "/search": J,
    "/search/labels": J,
    "/stac": J,
    "/stac/collections": J,
    "/stac/queryables": Offer({"json": "application/schema+json"}),
    "/stac/collections/{collectionId}": J,
    "/stac/collections/{collectionId}/items": Offer({"geojson": GEOJSON}),
    "/stac/collections/{collectionId}/items/{itemId}": Offer({"geojson": GEOJSON}),
    "/stac/search": Offer({"geojson": GEOJSON}),
    "/imagery/{collectionId}/tiles/{tileMatrixSetId}/{z}/{x}/{y}.{format}": Offer(
        {"png": PNG, "webp": "image/webp", "tif": "image/tiff; application=geotiff"}, negotiated=False, also=(204, 304)),
    "/imagery/{collectionId}/point/{lon},{lat}": J,
    "/imagery/{collectionId}/tiles": J,
    "/imagery/{collectionId}/tiles/{tileMatrixSetId}": J,
    "/imagery/{collectionId}/wmts/{style}/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}.{format}": Offer(
        {"png": PNG, "webp": "image/webp"}, negotiated=False, also=(204, 304)),
    "/imagery/{collectionId}/items/{itemId}/data.tif": Offer({"tiff": TIFF}, negotiated=False),
    "/vendor/maplibre-gl/{name}": Offer({"js": "text/javascript", "css": "text/css"}, negotiated=False),
    "/vendor/swagger-ui/{name}": Offer({"js": "text/javascript", "css": "text/css", "png": "image/png"},
                                       negotiated=False),
    "/map/glyphs/{fontstack}/{name}": Offer({"pbf": "application/x-protobuf"}, negotiated=False),
    "/map/static/{name}": Offer({"js": "text/javascript", "css": "text/css", "html": HTML}, negotiated=False),
    "/analysis/rules": J,
    "/processes": J,
    "/processes/{process_id}": J,
    "/jobs/{job_id}": J,
    "/jobs/{job_id}/results": J,
    "/jobs/{job_id}/files/{name}": Offer({"json": JSON, "geojson": GEOJSON, "csv": CSV, "html": HTML,
                                         "gpkg": GPKG}, negotiated=False),
    "/admin/jobs/{job_id}": J,
    "/admin/departments": J,
    "/admin/keys": J,
    "/admin/audit": J,
    "/admin/audit/stats": J,
    "/admin/webhooks": J,
    "/admin/webhooks/deliveries": J,
    "/collections/{collectionId}/webhooks": J,
    "/indicators": J,
    "/indicators/{indicatorId}": Offer({"json": JSON, "csv": CSV}),
    "/warnings": J,
    "/warnings/stream": Offer({"event-stream": "text/event-stream"}),
    "/dashboard": Offer({"html": HTML}),
    # FastAPI's own: the API definition and its documentation page
    "/api": Offer({"json": JSON, "openapi": OPENAPI}, negotiated=False),
    "/docs": Offer({"html": HTML}, negotiated=False),
}

#: POST routes -> what they can answer (chosen by their ``f`` parameter, not by Accept)
ANALYSIS = Offer({"json": JSON, "geojson": GEOJSON, "html": HTML, "csv": CSV, "pdf": "application/pdf"},
                 negotiated=False)
POST_OFFERS: dict[str, Offer] = {
    "/analysis/site-check/upload": ANALYSIS,
    "/processes/{process_id}/execution": ANALYSIS,
    "/maps/print": Offer({"pdf": "application/pdf", "png": PNG, "svg": "image/svg+xml"}, negotiated=False),
    "/stac/search": Offer({"geojson": GEOJSON}, negotiated=False),
}


def offer_for(method: str, path: str) -> Offer | None:
    if method in ("GET", "HEAD"):
        return OFFERS.get(path)
    if method == "POST" and path.startswith("/analysis/"):
        return POST_OFFERS.get(path, ANALYSIS)
    return POST_OFFERS.get(path) if method == "POST" else None


# ------------------------------------------------------------------------------------------
# Accept parsing (RFC 9110 §12.5.1)
# ------------------------------------------------------------------------------------------
def _bare(media: str) -> tuple[str, str]:
    main = media.split(";", 1)[0].strip().lower()
    t, _, s = main.partition("/")
    return t, s


def parse_accept(header: str) -> list[tuple[str, str, float, int]]:
    """``(type, subtype, q, specificity)`` of each media range; malformed ranges are dropped."""
    out = []
    for part in header.split(","):
        part = part.strip()
        if not part:
            continue
        fields = [p.strip() for p in part.split(";")]
        t, _, s = fields[0].lower().partition("/")
        if not t or not s:
            continue
        q = 1.0
        for p in fields[1:]:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = max(0.0, min(1.0, float(v)))
                except ValueError:
                    q = 0.0
        spec = 0 if (t, s) == ("*", "*") else 1 if s == "*" else 2
        out.append((t, s, q, spec))
    return out


def _quality(ranges: list[tuple[str, str, float, int]], media: str) -> float:
    """q of ``media`` under the most specific range that matches it (or one of its aliases, or, for
    a ``+json`` type, ``application/json``, which it also is)."""
    names = [_bare(media)] + [_bare(a) for a in ALIASES.get(media, ())]
    t0, s0 = names[0]
    if s0.endswith("+json"):
        names.append((t0, "json"))
    best_spec, best_q = -1, 0.0
    for t, s, q, spec in ranges:
        for nt, ns in names:
            exact = spec == 2 and (t, s) == (nt, ns)
            if exact or (spec == 1 and t == nt) or spec == 0:
                # an exact match on the type itself outranks one through an alias or +json
                rank = spec * 2 + (1 if exact and (nt, ns) == (t0, s0) else 0)
                if rank > best_spec:
                    best_spec, best_q = rank, q
    return best_q


def best(accept: str | None, offer: Offer) -> str | None:
    """The handler key of the best offered representation, or None when none is acceptable."""
    keys = list(offer.media)
    if not accept or not accept.strip():
        return keys[0]
    ranges = parse_accept(accept)
    if not ranges:
        return keys[0]
    scored = [(_quality(ranges, offer.media[k]), -i, k) for i, k in enumerate(keys)]
    q, _, key = max(scored)
    return key if q > 0 else None


async def negotiate(request: Request) -> None:
    """App-wide dependency: pick the representation of a GET resource, or answer 406."""
    if request.method not in ("GET", "HEAD"):
        return
    route = request.scope.get("route")
    offer = OFFERS.get(getattr(route, "path", None) or "")
    if offer is None or not offer.negotiated:
        return
    if request.query_params.get("f"):
        return  # f= wins; the handler validates it (400 naming f)
    key = best(request.headers.get("accept"), offer)
    if key is None:
        raise NotAcceptable(
            "Accept: none of the acceptable types is served here; available: "
            + ", ".join(m.split(";")[0] for m in offer.media.values())
            + " (or choose with f=" + "|".join(offer.media) + ")", parameter="Accept")
    request.state.format = key


def chosen(request: Request, default: str) -> str:
    """The representation :func:`negotiate` picked for this request (``default`` if it did not run)."""
    return getattr(request.state, "format", None) or default


# ------------------------------------------------------------------------------------------
# HEAD
# ------------------------------------------------------------------------------------------
#: scope key HeadMiddleware sets on the GET it makes of a HEAD: the gate audits the request as
#: the HEAD it was and commits its row before the head (the whole answer for the client)
HEAD_REQUEST = "geobase.head"


class HeadMiddleware:
    """``HEAD`` = ``GET`` without the body (RFC 9110 §9.3.2): same status and headers, for every
    route, whatever router declared it. Plain ASGI so that nothing is buffered."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the server sends no body for HEAD; only the last (empty) part goes out
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", HEAD_REQUEST: True}, receive, send_headers_only)

"""HEAD on every GET resource and Accept negotiation (q-values, f= wins, 406), checked by
enumerating every GET route the app mounts against the real county server (issue 12 item 10)."""

from __future__ import annotations

import re

import httpx
import pytest
from conftest import tile_xy
from geobase.api import negotiation
from geobase.api.app import create_app
from geobase.api.negotiation import OFFERS, Offer, best
from geobase.api.openapi import api_routes

from geobase.settings import Settings


def _get_routes() -> list[str]:
    app = create_app(Settings(database_url="postgresql://unused@127.0.0.1:1/unused", data_dir="/tmp"))
    return sorted({path for path, methods, _ in api_routes(app) if "GET" in methods})


GET_ROUTES = _get_routes()


def test_every_get_route_says_what_it_serves():
    """A new GET resource must be added to api/negotiation.py's table (its types feed Accept
    negotiation, HEAD and the OpenAPI document)."""
    missing = [p for p in GET_ROUTES if p not in OFFERS]
    assert not missing, f"GET routes missing from geobase.api.negotiation.OFFERS: {missing}"
    stale = [p for p in OFFERS if p not in GET_ROUTES]
    assert not stale, f"OFFERS names routes that no longer exist: {stale}"


@pytest.mark.parametrize("accept, expected", [
    ("text/html;q=0.9, application/geo+json", "json"),
    ("text/html, application/geo+json;q=0.5", "html"),
    ("application/json", "json"),                    # a +json type is also application/json
    ("*/*", "json"),                                 # the route's default
    ("text/*", "html"),
    ("text/csv", "csv"),
    ("application/flatgeobuf;q=0.2, text/csv;q=0.1", "fgb"),
    ("image/png", None),
    ("text/html;q=0, application/geo+json;q=0", None),
    ("text/html;q=0, */*;q=0.1", "json"),
    ("", "json"),
    ("text/html;level=1;q=0.8, application/geo+json;q=0.7", "html"),
])
def test_best_weighs_q_values(accept, expected):
    assert best(accept, OFFERS["/collections/{collectionId}/items"]) == expected


def test_more_specific_range_decides():
    offer = Offer({"json": negotiation.JSON, "html": negotiation.HTML})
    # text/html excluded explicitly although */* admits everything
    assert best("*/*;q=0.5, text/html;q=0", offer) == "json"
    assert best("application/*;q=0.1, text/html;q=0.2", offer) == "html"


# ------------------------------------------------------------------------------------------
# against the real server
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def samples(county_server) -> dict[str, str]:
    """A real value for every path parameter, from the server itself."""
    with county_server.client() as c:
        fid = c.get("/collections/land_use/items", params={"limit": 1}).json()["features"][0]["id"]
        ext = c.get("/collections/land_use").json()["extent"]["spatial"]["bbox"][0]
        lon, lat = (ext[0] + ext[2]) / 2, (ext[1] + ext[3]) / 2
        col, row = tile_xy(lon, lat, 13)
    return {"collectionId": "land_use", "collection_id": "dem", "featureId": str(fid),
            "tileMatrixSetId": "WebMercatorQuad", "tileMatrix": "13", "tileRow": str(row), "tileCol": str(col),
            "z": "13", "x": str(col), "y": str(row), "layers": "land_use", "layer": "dem", "style": "hillshade",
            "process_id": "tabulate", "job_id": "00000000-0000-4000-8000-000000000000", "name": "map.js",
            "sessionId": "00000000-0000-4000-8000-000000000000", "fontstack": "DejaVu Sans Book",
            "indicatorId": "farmland_area", "recordId": "land_use", "i": "128", "j": "128", "ext": "json",
            "itemId": "l7_etms", "format": "png", "lon": "120.1", "lat": "30.2"}


def _url(path: str, samples: dict[str, str]) -> str:
    url = re.sub(r"\{(\w+)\}", lambda m: samples[m.group(1)], path)
    if path == "/vendor/maplibre-gl/{name}":
        url = "/vendor/maplibre-gl/maplibre-gl.js"
    if path.endswith(("/changes/stream", "/warnings/stream")):
        url += "?until=0"  # the stream ends at once (it otherwise stays open for its subscriber)
    if path.startswith("/wmts/1.0.0/{layers}/{style}/"):
        url = url.replace("/hillshade/", "/default/")  # a WMTS layer's one style
    if path == "/map/glyphs/{fontstack}/{name}":
        url = "/map/glyphs/DejaVu%20Sans%20Book/0-255.pbf"
    if path.endswith(("/items", "/changes")):
        url += "?limit=3" + ("&from=0" if path.endswith("/changes") else "")
    return url


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_answers_like_get_without_a_body(county_server, samples, path):
    url = _url(path, samples)
    with county_server.client() as c:
        got = c.get(url)
        head = c.head(url)
    assert head.status_code != 405, f"HEAD {url}: 405"
    assert head.status_code == got.status_code, (url, head.status_code, got.status_code, got.text[:300])
    assert head.content == b""
    assert head.headers.get("content-type") == got.headers.get("content-type"), url
    if got.status_code == 200 and "content-length" in got.headers and "content-encoding" not in got.headers:
        assert head.headers.get("content-length") == got.headers["content-length"], url


NEGOTIATED = [p for p in GET_ROUTES if OFFERS.get(p, Offer({}, negotiated=False)).negotiated]


@pytest.mark.parametrize("path", NEGOTIATED)
def test_accept_picks_each_offered_type_and_406_otherwise(county_server, samples, path):
    url = _url(path, samples)
    offer = OFFERS[path]
    with county_server.client() as c:
        for media in offer.media.values():
            r = c.get(url, headers={"Accept": media.split(";")[0]})
            assert r.status_code not in (406, 500), (url, media, r.status_code)
            if r.status_code in (200,):
                assert r.headers["content-type"].split(";")[0] == media.split(";")[0], (url, media)
        # a type this resource never serves: 406 naming Accept, with the exception body
        r = c.get(url, headers={"Accept": "application/x-never-served"})
        assert r.status_code == 406, (url, r.status_code)
        assert r.json()["code"] == "NotAcceptable" and r.json()["parameter"] == "Accept"
        # f= wins over Accept (no 406 when the client chose with f=)
        if "f" in {p["name"] for p in _parameters(c, path)}:
            r = c.get(url + ("&" if "?" in url else "?") + f"f={next(iter(offer.media))}",
                      headers={"Accept": "application/x-never-served"})
            assert r.status_code != 406, url


_DOC: dict = {}


def _parameters(c: httpx.Client, path: str) -> list[dict]:
    if not _DOC:
        _DOC.update(c.get("/api").json())
    return _DOC["paths"].get(path, {}).get("get", {}).get("parameters", [])


def test_q_values_choose_geojson_over_html_and_the_reverse(county_server):
    with county_server.client() as c:
        r = c.get("/collections/land_use/items?limit=1", headers={"Accept": "text/html;q=0.9, application/geo+json"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
        r = c.get("/collections/land_use/items?limit=1", headers={"Accept": "text/html, application/geo+json;q=0.8"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        # browsers: HTML on pages that have it, JSON where that is all there is
        browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        assert c.get("/collections", headers={"Accept": browser}).headers["content-type"].startswith("text/html")
        assert c.get("/", headers={"Accept": browser}).headers["content-type"].startswith("text/html")
        assert c.get("/health", headers={"Accept": browser}).headers["content-type"].startswith("application/json")
        # f= wins over Accept
        r = c.get("/collections?f=json", headers={"Accept": "text/html"})
        assert r.headers["content-type"].startswith("application/json")
        r = c.get("/collections", headers={"Accept": "image/png"})
        assert r.status_code == 406

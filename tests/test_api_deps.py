"""The API's parameter families (api/deps.py, api/item_params.py), pinned over a real uvicorn:
one collection resolver (the same 404 on every route that takes a collection id), one check that
a collection has features (a raster's items, item, changes, queryables and schemas: the same
404), one representation parameter (a bad ``f`` is the same 400 everywhere)."""

from __future__ import annotations

import re
import uuid

import pytest
from conftest import LiveServer, create_database, drop_database, settings_for
from geobase.api.app import create_app
from geobase.api.negotiation import OFFERS
from geobase.api.openapi import api_routes
from geobase.settings import Settings

# values for the other path parameters of the routes that take a collection id
PATH_VALUES = {"featureId": "x", "tileMatrixSetId": "WebMercatorQuad", "tileMatrix": "0", "tileRow": "0",
               "tileCol": "0", "sessionId": "00000000-0000-4000-8000-000000000000",
               "itemId": "x", "z": "0", "x": "0", "y": "0", "format": "png", "lon": "0", "lat": "0", "style": "default"}
# required query parameters of those routes
QUERY = {"/collections/{collectionId}/changes": {"from": "0"}}


@pytest.fixture(scope="module")
def server(pg_server, template_db, tmp_path_factory):
    name = f"gb_deps_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, name, template_db)
    settings = settings_for(url, tmp_path_factory.mktemp("deps"))
    srv = LiveServer(settings)
    yield srv, settings
    srv.stop()
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def http(server):
    with server[0].client() as c:
        yield c


def _collection_routes(settings) -> list[str]:
    """Every GET route whose path takes a collection id, as mounted by the app factory."""
    app = create_app(settings)
    paths = sorted({path for path, methods, _ in api_routes(app)
                    if "GET" in methods and re.search(r"\{collection_?[iI]d\}", path)})
    assert len(paths) >= 10, paths  # collection, queryables, schemas, items, item, changes, tiles, coverage
    return paths


def _url(path: str, collection: str) -> str:
    url = re.sub(r"\{collection_?[iI]d\}", collection, path)
    for name, value in PATH_VALUES.items():
        url = url.replace("{" + name + "}", value)
    assert "{" not in url, url
    return url


def test_unknown_collection_is_the_same_404_on_every_route(server, http):
    _, settings = server
    bodies = {}
    for path in _collection_routes(settings):
        r = http.get(_url(path, "no_such_layer"), params=QUERY.get(path, {}))
        assert r.status_code == 404, (path, r.status_code, r.text)
        bodies[path] = r.json()
    assert {b["description"] for b in bodies.values()} == {"collection 'no_such_layer' not found"}, bodies
    assert {b["code"] for b in bodies.values()} == {"NotFound"}, bodies


def _representations(dependant) -> set[str] | None:
    """The ``f`` keys of the route's representation dependency (api/deps.py), if it has one."""
    for sub in dependant.dependencies:
        allowed = getattr(sub.call, "allowed", None)
        if allowed is not None:
            return set(allowed)
        found = _representations(sub)
        if found is not None:
            return found
    return None


def test_f_offers_what_accept_offers():
    """Each route's ``f`` values name the representations api/negotiation.py's OFFERS gives
    Accept for that route (``geojson`` being the GeoJSON ``json`` under its own name), so the
    two ways of choosing cannot drift apart."""
    app = create_app(Settings(database_url="postgresql://unused@127.0.0.1:1/unused", data_dir="/tmp"))
    checked = {}
    for path, methods, rc in api_routes(app):
        dependant = getattr(rc.route, "dependant", None)  # starlette routes (docs, static) have none
        allowed = _representations(dependant) if dependant is not None and "GET" in methods else None
        if allowed is None:
            continue
        checked[path] = allowed
        assert allowed - {"geojson"} == set(OFFERS[path].media), (path, allowed, OFFERS[path].media)
    assert {"/conformance", "/collections", "/collections/{collectionId}/items",
            "/collections/{collectionId}/items/{featureId}", "/collections/{collectionId}/changes",
            "/collections/{collectionId}/schema"} <= set(checked), checked


FEATURE_ROUTES = ["/collections/{collectionId}/items", "/collections/{collectionId}/items/{featureId}",
                  "/collections/{collectionId}/changes", "/collections/{collectionId}/queryables",
                  "/collections/{collectionId}/schema", "/collections/{collectionId}/schema/geojson"]


@pytest.mark.parametrize("fmt", [None, "json", "html", "csv"])
def test_a_raster_has_no_features_one_check_one_status(http, fmt):
    """/collections/{raster}/items (and every other feature resource of a raster) is a 404, the
    same answer from the one check: the resource does not exist for a coverage (OGC API -
    Features defines items for feature collections only); the request itself is well formed,
    so not a 400 (the core's build_query once answered 400 for the same case)."""
    bodies = set()
    for path in FEATURE_ROUTES:
        params = dict(QUERY.get(path, {}))
        if fmt and path.endswith(("/items", "/changes")):
            params["f"] = fmt
        r = http.get(_url(path, "dem"), params=params)
        assert r.status_code == 404, (path, r.status_code, r.text)
        body = r.json()
        assert body["code"] == "NotFound" and body["parameter"] == "collectionId"
        assert "raster" in body["description"] and "/collections/dem/coverage" in body["description"]
        bodies.add(body["description"])
    assert len(bodies) == 1, bodies
    # the collection itself is there: only its feature resources are absent
    assert http.get("/collections/dem").status_code == 200


@pytest.mark.parametrize("path", ["/conformance", "/collections", "/collections/land_use",
                                  "/collections/land_use/queryables", "/collections/land_use/items",
                                  "/collections/land_use/items/x", "/collections/land_use/changes",
                                  "/collections/land_use/schema", "/collections/land_use/schema/geojson"])
def test_a_bad_f_is_the_same_400_everywhere(http, path):
    r = http.get(path, params={"f": "xml", "from": "0"} if path.endswith("/changes") else {"f": "xml"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["parameter"] == "f"
    assert body["description"].startswith("f: 'xml' is not one of ")


@pytest.mark.parametrize("path,accepted", [("/conformance", "text/html"), ("/collections/land_use", "text/html"),
                                           ("/collections/land_use/items", "text/csv"),
                                           ("/collections/land_use/schema", "application/schema+json")])
def test_f_by_media_type_name_and_accept_agree(http, path, accepted):
    """f= may name the media type; without f=, Accept chooses the same representation."""
    by_f = http.get(path, params={"f": accepted})
    by_accept = http.get(path, headers={"Accept": accepted})
    assert by_f.status_code == by_accept.status_code == 200, (by_f.text, by_accept.text)
    assert by_f.headers["content-type"].split(";")[0] == by_accept.headers["content-type"].split(";")[0]


def test_a_server_start_marks_the_jobs_of_a_dead_server_failed(db_settings, live_server):
    """The app's lifespan sweeps jobs left 'accepted' by a server process that is gone (the
    sweep was lost when the routers' import-time ``setup`` hooks were dropped from the factory)."""
    import socket
    import subprocess
    import sys
    import time

    from geobase.ingest import jobs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = jobs.new_job_id()
    jobs.create_job(db_settings, orphan, "land_use", {"host": socket.gethostname(), "pid": dead.pid}, "t")
    assert jobs.get_job(db_settings, orphan)["status"] == "accepted"
    live_server(db_settings)
    deadline = time.monotonic() + 60  # the sweep runs beside the start, not before it
    while jobs.get_job(db_settings, orphan)["status"] == "accepted" and time.monotonic() < deadline:
        time.sleep(0.2)
    job = jobs.get_job(db_settings, orphan)
    assert job["status"] == "failed" and "submit the file again" in job["message"]

"""Feature schemas (OGC API - Features Part 5) and numbers that read as real (issue 12 item 1).

The schemas are checked against the spec and, with the ``jsonschema`` validator, against every
feature the server writes; the JSON numbers are checked token by token (an integral double
must be written ``5.0``, never ``5``) and against the database."""

from __future__ import annotations

import json

import jsonschema
import pytest
from interop.clients import LOADED_VECTOR_LAYERS, REGISTRY, VECTOR_LAYERS, db_rows, output_types, spec_of

SCHEMA_TYPES = {"text": "string", "number": "number", "integer": "integer", "boolean": "boolean",
                "date": "string", "datetime": "string"}
#: the JSON Schema ``format`` of a spec type (a date or date-time is a string that says so)
SCHEMA_FORMATS = {"date": "date", "datetime": "date-time"}
PART5_RELS = {"http://www.opengis.net/def/rel/ogc/1.0/schema", "[ogc-rel:schema]"}


class _Int(int):
    """An integer token of the JSON text (``parse_int``), told apart from a real one."""


def _loads(text: str):
    return json.loads(text, parse_int=_Int)


def _all_features(http, layer: str, headers: dict, pages: bool = False) -> list[dict]:
    """Every feature in one page of 10,000 (a loaded layer of the sample county fits), or with
    ``pages`` following the ``next`` links (a derived layer holds a row per parcel and index)."""
    r = http.get(f"/collections/{layer}/items", params={"limit": 10000}, headers=headers)
    assert r.status_code == 200
    page = _loads(r.text)
    feats = page["features"]
    nxt = [lk for lk in page["links"] if lk["rel"] == "next"]
    assert pages or not nxt
    while nxt:
        r = http.get(nxt[0]["href"], headers=headers)
        assert r.status_code == 200
        page = _loads(r.text)
        feats += page["features"]
        nxt = [lk for lk in page["links"] if lk["rel"] == "next"]
    return feats


def test_collections_link_their_schemas(county_server, admin_key):
    with county_server.client(headers={"X-API-Key": admin_key}) as http:
        for layer in VECTOR_LAYERS:
            links = http.get(f"/collections/{layer}").json()["links"]
            by_rel = {lk["rel"]: lk for lk in links if lk["type"] == "application/schema+json"}
            assert PART5_RELS <= set(by_rel), layer
            assert by_rel["describedby"]["href"] == by_rel["describedBy"]["href"]  # GDAL 3.6 spelling
            for lk in by_rel.values():
                r = http.get(lk["href"])
                assert r.status_code == 200 and r.headers["content-type"] == "application/schema+json"
        assert http.get("/collections/dem/schema").status_code == 404
        assert http.get("/collections/land_use/schema", params={"f": "html"}).status_code == 400


@pytest.mark.parametrize("layer", LOADED_VECTOR_LAYERS)
def test_part5_schema_matches_spec_and_every_feature(layer, county_server, admin_key):
    check_part5(county_server, layer, {"X-API-Key": admin_key})


def check_part5(server, layer: str, headers: dict, pages: bool = False) -> None:
    """The layer's Part 5 and GeoJSON schemas (read by a caller who sees every attribute) match
    its spec, types and formats, and validate every feature the server writes, formats checked
    (a date-time must be an RFC 3339 date-time); each date/date-time the server writes is the
    database's value. tests/test_imagery_flags.py runs it on the derived layers, whose
    date-times no loaded layer has."""
    import datetime as dt

    spec = spec_of(layer)
    types = output_types(spec)
    with server.client() as http:
        doc = http.get(f"/collections/{layer}/schema", headers=headers).json()
        gj = http.get(f"/collections/{layer}/schema/geojson", headers=headers).json()
        feats = _all_features(http, layer, headers, pages)
    jsonschema.Draft202012Validator.check_schema(doc)
    jsonschema.Draft202012Validator.check_schema(gj)
    props = doc["properties"]
    assert set(props) == {"id", "geometry", *types}
    assert props["id"]["x-ogc-role"] == "id"
    assert props["geometry"]["x-ogc-role"] == "primary-geometry"
    assert props["geometry"]["format"] == f"geometry-{spec.geometry.lower()}"
    assert doc["x-title"] == {"zh": spec.title.zh, "en": spec.title.en}
    for a in spec.attributes:
        p = props[a.name]
        assert p["type"] == SCHEMA_TYPES[a.type], a.name
        assert p.get("format") == SCHEMA_FORMATS.get(a.type), a.name
        if a.title:
            assert p["x-title"] == {"zh": a.title.zh, "en": a.title.en} and a.title.zh in p["title"]
        if a.code_list:
            assert p["enum"] == [c.code for c in REGISTRY.code_lists[a.code_list].codes if c.assignable]
    # the GeoJSON document types the same properties the same way
    assert gj["properties"]["properties"]["properties"] == {
        n: {k: v for k, v in s.items() if k != "x-ogc-propertySeq"} for n, s in props.items()
        if n not in ("id", "geometry")}
    # every feature the server writes is valid against both (a null value stands for an absent
    # one), formats included
    formats = jsonschema.Draft202012Validator.FORMAT_CHECKER
    assert {"date", "date-time"} <= set(formats.checkers)  # rfc3339-validator present: date-times are checked
    part5 = jsonschema.Draft202012Validator(doc, format_checker=formats)
    geojson = jsonschema.Draft202012Validator(gj, format_checker=formats)
    want = db_rows(server.settings.database_url, spec)
    assert len(feats) == len(want)
    when = {n: t for n, t in types.items() if t in SCHEMA_FORMATS}
    for f in feats:
        values = {k: v for k, v in f["properties"].items() if v is not None}
        part5.validate({"id": f["id"], "geometry": f["geometry"], **values})
        geojson.validate({**f, "properties": values})
        for n, t in when.items():  # the same instant (with its time zone) / the same day
            got, row = values.get(n), want[f["id"]][n]
            if t == "datetime":
                g = dt.datetime.fromisoformat(got) if got is not None else None
                assert (g is None and row is None) or (g.tzinfo is not None and g == row), (layer, f["id"], n, got)
            else:
                assert (got is None and row is None) or dt.date.fromisoformat(got) == row, (layer, f["id"], n, got)


def test_schema_is_in_the_callers_view(county_server):
    with county_server.client() as http:
        props = http.get("/collections/land_use/schema").json()["properties"]
    masked = [a.name for a in spec_of("land_use").attributes if "public" in a.hidden_from]
    assert masked and not set(masked) & set(props)


def test_doubles_read_as_real_in_every_geojson_path(county_server, admin_key):
    """kcxs is 0 for most parcels and kcmj often integral: each must be a JSON real token."""
    spec = spec_of("land_use")
    numbers = [n for n, t in output_types(spec).items() if t == "number"]
    want = db_rows(county_server.settings.database_url, spec)
    integral = next(k for k, row in want.items() if row["kcxs"] == 0 and row["kcmj"] == 0)
    headers = {"X-API-Key": admin_key}

    def check(features: list[dict], where: str) -> None:
        assert features, where
        for f in features:
            for n in numbers:
                v = f["properties"][n]
                assert v is None or (type(v) is float and v == want[f["id"]][n]), (where, f["id"], n, v)

    with county_server.client(headers=headers) as http:
        check(_loads(http.get("/collections/land_use/items", params={"limit": 500}).text)["features"], "items")
        check([_loads(http.get(f"/collections/land_use/items/{integral}").text)], "item")
        r = http.get("/collections/land_use/items", params={"download": "true", "f": "json"})
        check(_loads(r.text)["features"], "download (streamed)")
        r = http.get("/collections/land_use/changes", params={"from": "0", "limit": 200})
        check(_loads(r.text)["features"], "changes")


def test_site_check_writes_layer_numbers_as_reals(county_server):
    """An analysis output that holds layer attributes (the site check's pieces) writes each
    double of the layer as a JSON real equal to the database's."""
    from interop.clients import REPO_SAMPLE

    spec = spec_of("land_use")
    numbers = [a.name for a in spec.attributes if a.type == "number"]
    want = db_rows(county_server.settings.database_url, spec)
    site = json.loads((REPO_SAMPLE / "demo_site.geojson").read_text(encoding="utf-8"))
    with county_server.client() as http:
        r = http.post("/analysis/site-check", json={"geometry": site})
    assert r.status_code == 200, r.text
    pieces = _loads(r.text)["layers"]["land_use"]["pieces"]
    assert pieces
    for p in pieces:
        for n in numbers:
            v = p["attributes"][n]
            assert v is None or (type(v) is float and v == want[p["key"]][n]), (p["key"], n, v)

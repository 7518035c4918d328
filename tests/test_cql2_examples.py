"""The CQL2 standard's own examples, through the HTTP API, against SQL written by hand.

``tests/data/cql2_examples.json`` holds the examples of the OGC CQL2 1.0 standard
(``cql2/standard/schema/examples/{text,json}/`` of opengeospatial/ogcapi-features, named by
their file name there) for every CQL2 conformance class /conformance declares
(basic-cql2, advanced-comparison-operators, property-property, basic-spatial-functions,
basic-spatial-functions-plus, spatial-functions), each adapted to the sample county:

* property names map to attributes of our layers with the same type and role: the examples'
  text properties (``owner``, ``name``, ``city``, ``material``, ``eo:instrument``, ids) to
  ``zldwmc``/``dlmc``/``dlbm``/``bsm``, numbers (``floors``, ``taxes``, ``value``, ``depth``,
  ``eo:cloud_cover``) to ``tbmj``/``kcmj``/``kcxs``, integer codes to ``sjnf``, nullable ones to
  ``bz``/``gdpdjb``; geometry properties (``footprint``, ``location``, ``road``) to ``geometry``
  of ``land_use`` or ``rivers``; literals to values that occur in the county;
* geometry literals keep their type (POINT, POLYGON, POLYGON Z, MULTIPOLYGON, MULTILINESTRING,
  MULTIPOINT, GEOMETRYCOLLECTION, BBOX with 4 and 6 numbers) and move into the county; the
  examples written in lat/lon order (EPSG:4326 axis order) are sent with ``filter-crs`` EPSG:4326;
  ``{PARCEL}``-style placeholders are filled here from the database (one parcel, its boundary,
  a small triangle inside it) so that S_EQUALS / S_TOUCHES / S_WITHIN have a real match;
* no layer has a boolean or date attribute: the ``swimming_pool = true`` predicates become a
  text equality (``dlbm = '0101'``), the date example is kept as a literal-literal comparison
  (property-property allows literals on both sides), arithmetic in clause7_19 is dropped.

Examples of classes we do not declare (functions, CASEI, temporal, arithmetic, arrays) are
listed with ``expect: 400``: refused, never ignored. Each example runs in cql2-text and in
cql2-json (the JSON is the example's JSON encoding, checked equal to the cql2 package's
conversion of the text) and both id sets must equal ``SELECT _key ... WHERE <sql>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import cql2
import psycopg
import pytest
import shapely
from shapely.geometry import mapping

EXAMPLES = json.loads((Path(__file__).parent / "data" / "cql2_examples.json").read_text())
PARCEL = "339901000000000101"
DECLARED = {"basic-cql2", "advanced-comparison-operators", "property-property", "basic-spatial-functions",
            "basic-spatial-functions-plus", "spatial-functions"}


def _wkt(g: dict) -> str:
    def ring(cs):
        return "(" + ", ".join(" ".join(repr(float(v)) for v in c) for c in cs) + ")"

    if g["type"] == "Polygon":
        return "POLYGON(" + ", ".join(ring(r) for r in g["coordinates"]) + ")"
    if g["type"] == "MultiPolygon":
        return "MULTIPOLYGON(" + ", ".join("(" + ", ".join(ring(r) for r in p) + ")" for p in g["coordinates"]) + ")"
    if g["type"] == "MultiLineString":
        return "MULTILINESTRING(" + ", ".join(ring(r) for r in g["coordinates"]) + ")"
    if g["type"] == "LineString":
        return "LINESTRING" + ring(g["coordinates"])
    raise AssertionError(g["type"])


@pytest.fixture(scope="module")
def places(county_shared) -> dict[str, str]:
    """WKT of the placeholders, from the database's WKB (every double written exactly)."""
    with psycopg.connect(county_shared.database_url) as conn:
        geom, boundary, x, y = conn.execute(
            "SELECT ST_AsBinary(geom), ST_AsBinary(ST_Boundary(geom)), "
            "ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) "
            "FROM data.land_use WHERE bsm = %s AND _vto IS NULL", (PARCEL,)).fetchone()
    d = 1e-6
    tri = [(x - d, y - d), (x + d, y - d), (x, y + d), (x - d, y - d)]
    inner = ", ".join(f"{a!r} {b!r}" for a, b in tri)
    inner_z = ", ".join(f"{a!r} {b!r} 12.5" for a, b in tri)
    exact = {k: mapping(shapely.from_wkb(bytes(v))) for k, v in (("p", geom), ("b", boundary))}
    inner_json = {"type": "Polygon", "coordinates": [[[a, b, 12.5] for a, b in tri]]}
    return {"{PARCEL}": (_wkt(exact["p"]), exact["p"]), "{PARCEL_BOUNDARY}": (_wkt(exact["b"]), exact["b"]),
            "{INNER_Z}": (f"POLYGON Z (({inner_z}))", inner_json),
            "{INNER_Z_ALT}": (f"POLYGON (({inner_z}))", inner_json),
            "{INNER_2D}": (f"POLYGON(({inner}))", None)}


def _fill(text: str, places: dict) -> str:
    for k, (wkt, _) in places.items():
        text = text.replace(k, wkt)
    return text


def _json_of(text: str, places: dict) -> object:
    """The cql2-json encoding of an adapted example: the cql2 package's conversion of the text,
    with each placeholder's geometry put in as exact GeoJSON (a dummy point stands in for it
    during the conversion, so no coordinate goes through a text parser)."""
    dummies = {}
    for i, (k, (_, geojson)) in enumerate(places.items()):
        if k in text and geojson is not None:
            text = text.replace(k, f"POINT({i + 1} {i + 1})")
            dummies[float(i + 1)] = geojson

    def put(node):
        if isinstance(node, dict):
            if node.get("type") == "Point" and node["coordinates"][0] in dummies:
                return json.loads(json.dumps(dummies[node["coordinates"][0]]))
            return {k: put(v) for k, v in node.items()}
        if isinstance(node, list):
            return [put(v) for v in node]
        return node

    return put(cql2.parse_text(text).to_json())


def _ids(http, layer: str, params: dict) -> list[str]:
    r = http.get(f"/collections/{layer}/items", params={"limit": 10000, "skipGeometry": "true", **params})
    assert r.status_code == 200, r.text[:500]
    fc = r.json()
    assert not any(link["rel"] == "next" for link in fc["links"])
    return sorted(f["id"] for f in fc["features"])


def test_examples_cover_every_declared_cql2_class(county_server):
    declared = {c.rsplit("/", 1)[-1] for c in county_server.client().get("/conformance").json()["conformsTo"]
                if "/cql2/" in c}
    assert declared - {"cql2-text", "cql2-json"} <= {e["conformance"] for e in EXAMPLES}


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e["example"] for e in EXAMPLES])
def test_official_cql2_example(ex, county_server, county_shared, places):
    text = _fill(ex["text"], places)
    tree = _json_of(ex["text"], places)
    if ex["json"] is not None:
        assert ex["json"] == tree, "the fixture's JSON encoding and its text disagree"
    crs = {"filter-crs": ex["filter_crs"]} if ex.get("filter_crs") else {}
    with county_server.client() as http:
        if ex.get("expect") == 400:
            for lang, f in (("cql2-text", text), ("cql2-json", json.dumps(tree))):
                r = http.get(f"/collections/{ex['layer']}/items", params={"filter": f, "filter-lang": lang})
                assert r.status_code == 400 and r.json()["parameter"] == "filter", r.text
            return
        assert ex["conformance"] in DECLARED
        got_text = _ids(http, ex["layer"], {"filter": text, "filter-lang": "cql2-text", **crs})
        got_json = _ids(http, ex["layer"], {"filter": json.dumps(tree, ensure_ascii=False), "filter-lang": "cql2-json",
                                            **crs})
    sql = _fill(ex["sql"], places)
    with psycopg.connect(county_shared.database_url) as conn:
        want = sorted(r[0] for r in conn.execute(
            f"SELECT _key FROM data.{ex['layer']} WHERE _vto IS NULL AND ({sql})").fetchall())  # noqa: S608 (fixture SQL)
    assert got_text == want, (ex["example"], len(got_text), len(want))
    assert got_json == want, (ex["example"], len(got_json), len(want))


def test_examples_are_not_trivial(county_shared, places):
    """Most examples select some but not all features: a filter ignored or always false fails."""
    partial = 0
    with psycopg.connect(county_shared.database_url) as conn:
        for ex in EXAMPLES:
            if ex.get("expect") == 400:
                continue
            n, total = conn.execute(f"SELECT count(*) FILTER (WHERE {_fill(ex['sql'], places)}), count(*) "
                                    f"FROM data.{ex['layer']} WHERE _vto IS NULL").fetchone()
            partial += 0 < n < total
    assert partial >= 0.8 * sum(1 for e in EXAMPLES if e.get("expect") != 400)

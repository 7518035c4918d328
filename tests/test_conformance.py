"""Every conformance class /conformance declares is exercised by a named test (issue 12 item 9).

:data:`EXERCISED_BY` maps each declared class URI to the tests that exercise it through a real
client (GDAL, OWSLib, a validator, Chromium) or the standard's own examples. The mapping test
fails when a class is declared without an entry (so adding a class means adding its test), when
an entry names a class that is not declared, and when a named test does not exist. A class that
does not fully pass is not declared.

To declare a new class: add the URI to its router's list and an entry here naming its tests
(``tests/<file>.py::<test function>``)."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
from geobase.api.features import _declared_conformance

TESTS = Path(__file__).parent
OGC = "http://www.opengis.net/spec"
F1, F2, F3 = f"{OGC}/ogcapi-features-1/1.0/conf", f"{OGC}/ogcapi-features-2/1.0/conf", f"{OGC}/ogcapi-features-3/1.0/conf"
CQL2, TILES, TMS = f"{OGC}/cql2/1.0/conf", f"{OGC}/ogcapi-tiles-1/1.0/conf", f"{OGC}/tms/2.0/conf"
PROC = f"{OGC}/ogcapi-processes-1/1.0/conf"
F4 = f"{OGC}/ogcapi-features-4/1.0/conf"

_CQL2 = ["test_cql2_examples.py::test_official_cql2_example",
         "test_cql2_examples.py::test_examples_cover_every_declared_cql2_class",
         "test_features.py::test_cql2_text_and_json", "test_features_county.py::test_gdal_and_owslib_read_the_county"]
_TILES = ["test_tiles.py::test_tile_matrix_sets_and_tilejson", "test_tiles.py::test_land_use_tile_matches_database",
          "test_tiles.py::test_composite_tile_carries_every_visible_layer", "test_map_browser.py::test_map_page_draws_the_one_map"]

EXERCISED_BY: dict[str, list[str]] = {
    # OGC API - Features Part 1: GDAL's OAPIF driver and OWSLib read it
    f"{F1}/core": ["test_features.py::test_owslib_reads_collections_queryables_items",
                   "test_features.py::test_gdal_oapif_driver_reads_layer",
                   "test_features_county.py::test_gdal_and_owslib_read_the_county",
                   "test_features_county.py::test_paging_land_use_returns_every_feature_once"],
    f"{F1}/geojson": ["test_features.py::test_gdal_oapif_driver_reads_layer",
                      "test_integration.py::test_items_geometry_is_plain_rfc7946"],
    f"{F1}/html": ["test_conformance.py::test_html_pages_are_well_formed_and_link_their_json",
                   "test_features.py::test_conformance_and_collections"],
    f"{F1}/oas30": ["test_openapi.py::test_api_is_a_valid_openapi_30_document",
                    "test_openapi.py::test_no_json_schema_2020_constructs_left"],
    # Part 2: CRS
    f"{F2}/crs": ["test_features.py::test_bbox_and_crs_round_trips",
                  "test_features_county.py::test_gk_bbox_matches_crs84_bbox"],
    # Part 3: queryables and filters (CQL2 classes: replaced by the standard's example set when it lands)
    f"{F3}/queryables": ["test_features.py::test_owslib_reads_collections_queryables_items",
                         "test_features.py::test_queryables_masks_hidden_attributes"],
    f"{F3}/queryables-query-parameters": ["test_query_params.py::test_property_filters_on_items"],
    f"{F3}/filter": _CQL2,
    f"{F3}/features-filter": _CQL2,
    f"{CQL2}/cql2-text": _CQL2,
    f"{CQL2}/cql2-json": _CQL2,
    f"{CQL2}/basic-cql2": _CQL2,
    f"{CQL2}/advanced-comparison-operators": _CQL2,
    f"{CQL2}/property-property": _CQL2,
    f"{CQL2}/basic-spatial-functions": _CQL2,
    f"{CQL2}/basic-spatial-functions-plus": _CQL2,
    f"{CQL2}/spatial-functions": _CQL2,
    # OGC API - Tiles and TMS 2.0: MapLibre GL JS in Chromium draws them; tiles decoded and compared to PostGIS
    f"{TILES}/core": _TILES,
    f"{TILES}/tileset": _TILES,
    f"{TILES}/tilesets-list": ["test_tiles.py::test_tile_matrix_sets_and_tilejson"],
    f"{TILES}/geodata-tilesets": ["test_tiles.py::test_tile_matrix_sets_and_tilejson",
                                  "test_tiles.py::test_land_use_tile_matches_database"],
    f"{TILES}/dataset-tilesets": ["test_tiles.py::test_composite_tile_carries_every_visible_layer",
                                  "test_map_browser.py::test_map_page_draws_the_one_map"],
    f"{TILES}/mvt": ["test_tiles.py::test_land_use_tile_matches_database"],
    f"{TILES}/png": ["test_tiles.py::test_dem_tiles"],
    f"{TMS}/json-tilematrixset": ["test_tiles.py::test_tile_matrix_sets_and_tilejson"],
    f"{TMS}/tilematrixset": ["test_tiles.py::test_tile_matrix_sets_and_tilejson",
                             "test_tiles.py::test_dem_tiles_in_the_cgcs2000_grid"],
    # OGC API - Processes: OWSLib lists, describes and executes
    f"{PROC}/core": ["test_conformance.py::test_owslib_lists_describes_and_executes_processes",
                     "test_analysis_county.py::test_site_check_http_and_async_job"],
    f"{PROC}/json": ["test_conformance.py::test_owslib_lists_describes_and_executes_processes"],
    # OGC API - Features Part 4: every operation and refusal over real HTTP
    f"{F4}/create-replace-delete": ["test_editing.py::test_create_replace_update_delete_each_a_version_with_its_reason",
                                    "test_editing.py::test_if_match_missing_is_428_and_stale_is_412_and_nothing_changes"],
    f"{F4}/update": ["test_editing.py::test_create_replace_update_delete_each_a_version_with_its_reason",
                     "test_editing.py::test_content_crs_gauss_kruger_body_lands_in_storage_crs"],
    f"{F4}/features": ["test_editing.py::test_create_replace_update_delete_each_a_version_with_its_reason",
                       "test_editing.py::test_unknown_parameters_media_types_and_bad_bodies_are_refused"],
}


@cache
def _test_names(filename: str) -> frozenset[str]:
    path = TESTS / filename
    if not path.exists():
        return frozenset()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name.startswith("test_"))


def test_every_declared_class_has_tests_that_exist():
    declared = _declared_conformance()
    assert len(declared) == len(set(declared)), "a class is declared twice"
    missing = [c for c in declared if not EXERCISED_BY.get(c)]
    assert not missing, f"declared without a test exercising it (add to EXERCISED_BY): {missing}"
    undeclared = [c for c in EXERCISED_BY if c not in declared]
    assert not undeclared, f"EXERCISED_BY names classes /conformance does not declare: {undeclared}"
    dangling = [t for tests in EXERCISED_BY.values() for t in tests
                if t.split("::")[1] not in _test_names(t.split("::")[0])]
    assert not dangling, f"tests named in EXERCISED_BY that do not exist: {sorted(set(dangling))}"


def test_the_server_declares_exactly_these_classes(county_server):
    with county_server.client() as c:
        served = c.get("/conformance").json()["conformsTo"]
    assert sorted(served) == sorted(_declared_conformance())


def test_owslib_lists_describes_and_executes_processes(county_server):
    """OGC API - Processes core and JSON, through OWSLib's client."""
    from owslib.ogcapi.processes import Processes

    w = Processes(county_server.url)
    ids = {p["id"] for p in w.processes()}
    assert {"site-check", "tabulate", "conflicts", "change", "buffer"} <= ids
    desc = w.process("tabulate")
    assert desc["id"] == "tabulate" and "inputs" in desc and "sync-execute" in desc["jobControlOptions"]
    result = w.execute("tabulate", {"layer_a": "land_use", "layer_b": "planning_zones", "aoi": "339901001"})
    assert result["analysis"] == "tabulate" and result["aoi"]["code"] == "339901001"
    assert set(w.conformance()["conformsTo"]) >= {f"{PROC}/core", f"{PROC}/json"}


HTML_PAGES = ["/", "/conformance", "/collections", "/collections/land_use", "/collections/land_use/queryables",
              "/collections/land_use/items?limit=5"]


@pytest.mark.parametrize("path", HTML_PAGES)
def test_html_pages_are_well_formed_and_link_their_json(county_server, path):
    """Part 1 HTML class: every resource has an HTML representation (f=html and Accept: text/html)."""
    from html.parser import HTMLParser

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.hrefs: list[str] = []
            self.tags: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.hrefs += [v for k, v in attrs if k == "href" and v]

    with county_server.client() as c:
        by_f = c.get(path + ("&" if "?" in path else "?") + "f=html")
        by_accept = c.get(path, headers={"Accept": "text/html"})
    for r in (by_f, by_accept):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
    page = Links()
    page.feed(by_f.text)
    assert "html" in page.tags and "body" in page.tags and page.hrefs, path
    assert re.search(r"<title>[^<]+</title>", by_f.text), path

"""GDAL against the real server: Debian 12's ogr2ogr (GDAL 3.6) and the GDAL inside the pyogrio
wheel from PyPI copy every vector layer to GeoPackage with the spec's field types and the
database's values (issue 12 items 1 and 8)."""

from __future__ import annotations

import pyogrio
import pytest
from interop.clients import (
    GPKG_TYPES,
    LOADED_VECTOR_LAYERS,
    PUBLIC_VECTOR_LAYERS,
    VECTOR_LAYERS,
    assert_same_values,
    db_rows,
    gpkg_columns,
    gpkg_rows,
    output_types,
    run_ogr2ogr,
    spec_of,
)

#: OGR field types a spec type may become in GDAL's layer definition
OGR_TYPES = {"text": {"OFTString"}, "number": {"OFTReal"}, "integer": {"OFTInteger", "OFTInteger64"}}


def _check_gpkg(path, layer: str, database_url: str, what: str) -> None:
    spec = spec_of(layer)
    types = output_types(spec)
    cols = gpkg_columns(path, layer)
    wrong = {n: (t, cols.get(n)) for n, t in types.items() if cols.get(n) not in GPKG_TYPES[t]}
    assert not wrong, f"{what}: {layer}: field types differ from the spec (spec, gpkg): {wrong}"
    assert_same_values(gpkg_rows(path, layer, list(types)), db_rows(database_url, spec), f"{what}: {layer}")


@pytest.mark.parametrize("layer", LOADED_VECTOR_LAYERS)
def test_gdal36_ogr2ogr_copies_layer_with_spec_types_and_db_values(layer, county_server, admin_key, ogr2ogr_36,
                                                                   tmp_path):
    out = tmp_path / f"{layer}.gpkg"
    proc = run_ogr2ogr(ogr2ogr_36, ["-f", "GPKG", str(out), f"OAPIF:{county_server.url}", layer], key=admin_key)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stderr, proc.stderr
    _check_gpkg(out, layer, county_server.settings.database_url, "GDAL 3.6 ogr2ogr")


@pytest.fixture
def pypi_gdal_key(admin_key, tmp_path):
    """The admin key as an HTTP header of the pyogrio wheel's GDAL (a process-wide GDAL option,
    reset afterwards). A header file: current GDAL drops GDAL_HTTP_HEADERS when the driver
    sets headers of its own (OAPIF sets Accept)."""
    headers = tmp_path / "headers.txt"
    headers.write_text(f"X-API-Key: {admin_key}\n")
    pyogrio.set_gdal_config_options({"GDAL_HTTP_HEADER_FILE": str(headers)})
    yield admin_key
    pyogrio.set_gdal_config_options({"GDAL_HTTP_HEADER_FILE": None})


def test_pypi_gdal_is_current_with_oapif():
    """The PyPI GDAL of these tests: the one inside the pyogrio wheel, with the OAPIF driver."""
    major, minor, _ = pyogrio.__gdal_version__
    assert (major, minor) >= (3, 9), pyogrio.__gdal_version_string__
    assert "OAPIF" in pyogrio.list_drivers()


@pytest.mark.parametrize("layer", LOADED_VECTOR_LAYERS)
def test_pypi_gdal_copies_layer_with_spec_types_and_db_values(layer, county_server, pypi_gdal_key, tmp_path):
    src = f"OAPIF:{county_server.url}"
    spec = spec_of(layer)
    info = pyogrio.read_info(src, layer=layer)
    ogr_types = dict(zip(info["fields"], info["ogr_types"]))
    wrong = {n: (t, ogr_types.get(n)) for n, t in output_types(spec).items() if ogr_types.get(n) not in OGR_TYPES[t]}
    assert not wrong, f"PyPI GDAL {pyogrio.__gdal_version_string__}: {layer}: field types (spec, OGR): {wrong}"
    meta, table = pyogrio.read_arrow(src, layer=layer)
    out = tmp_path / f"{layer}.gpkg"
    pyogrio.write_arrow(table, out, layer=layer, driver="GPKG", geometry_name=meta["geometry_name"] or "wkb_geometry",
                        geometry_type=info["geometry_type"], crs=meta["crs"])
    _check_gpkg(out, layer, county_server.settings.database_url, f"PyPI GDAL {pyogrio.__gdal_version_string__}")


def test_gdal36_copies_the_whole_service_skipping_the_coverage(county_server, ogr2ogr_36, tmp_path):
    """``ogr2ogr -f GPKG all.gpkg OAPIF:HOST`` (no layer named) copies every item collection the
    caller sees and leaves the dem coverage out instead of aborting on it."""
    out = tmp_path / "all.gpkg"
    proc = run_ogr2ogr(ogr2ogr_36, ["-f", "GPKG", str(out), f"OAPIF:{county_server.url}"])
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stderr, proc.stderr
    assert sorted(n for n, _ in pyogrio.list_layers(out)) == sorted(PUBLIC_VECTOR_LAYERS)
    for layer in PUBLIC_VECTOR_LAYERS:
        assert len(gpkg_rows(out, layer, [])) == len(db_rows(county_server.settings.database_url, spec_of(layer)))


def test_pypi_gdal_lists_and_reads_every_item_collection(county_server, pypi_gdal_key):
    src = f"OAPIF:{county_server.url}"
    names = sorted(n for n, _ in pyogrio.list_layers(src))
    assert names == sorted(VECTOR_LAYERS)  # the admin key sees all; dem is not an item collection
    for layer in names:
        _meta, table = pyogrio.read_arrow(src, layer=layer, columns=[])
        assert table.num_rows == len(db_rows(county_server.settings.database_url, spec_of(layer)))


def test_coverage_collection_is_marked_as_not_an_item_collection(county_server):
    with county_server.client() as http:
        dem = http.get("/collections/dem").json()
        assert "itemType" not in dem and dem["layerDataType"] == "Coverage"
        assert not [link for link in dem["links"] if link["rel"] == "items"]
        assert any(link["rel"].endswith("/coverage") for link in dem["links"])
        r = http.get("/collections/dem/items")
        assert r.status_code == 404
        assert "coverage" in r.json()["description"] and "/collections/dem/coverage" in r.json()["description"]
        for c in http.get("/collections").json()["collections"]:
            if spec_of(c["id"]).kind == "vector":
                assert c["itemType"] == "feature" and any(link["rel"] == "items" for link in c["links"])


def test_current_gdal_pages_at_the_limit_maximum_the_openapi_document_declares(county_server, tmp_path):
    """Issue 12 item 7: `/api` is the OpenAPI 3.0 document the landing page declares, and a GDAL
    that reads `limit`'s bounds from it (3.8 and later: the pyogrio wheel's) asks for pages of
    the server's maximum (GDAL caps it at 1000) instead of 10 features, with no `-oo PAGE_SIZE`. (GDAL 3.6 reads the
    document only for its parameter lists and always asks for 10; the README says to give it
    `-oo PAGE_SIZE`.) The requests are read from GDAL's own debug log of a separate process."""
    import os
    import re
    import subprocess
    import sys

    with county_server.client() as c:
        api = c.get("/api").json()
    assert api["openapi"].startswith("3.0")
    items = api["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]
    limit = next(p for p in items if p["name"] == "limit")["schema"]
    maximum = county_server.settings.max_limit
    assert limit["maximum"] == maximum and limit["minimum"] == 1
    code = ("import pyogrio, sys; m, t = pyogrio.read_arrow(sys.argv[1], layer='land_use'); "
            "print(t.num_rows)")
    env = {**os.environ, "CPL_DEBUG": "ON"}
    proc = subprocess.run([sys.executable, "-c", code, f"OAPIF:{county_server.url}"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    limits = {int(v) for v in re.findall(r"/collections/land_use/items\?[^\s)]*?\blimit=(\d+)", proc.stderr)}
    # GDAL >= 3.8 pages at the API's maximum, capped at 1000 by GDAL itself (OSGeo/gdal#8522);
    # its first request of 20 features only establishes the layer's fields
    assert max(limits) == min(maximum, 1000) and limits <= {20, min(maximum, 1000)}, limits
    assert int(proc.stdout.strip()) == len(db_rows(county_server.settings.database_url, spec_of("land_use")))

"""The server starts without the heavy libraries that only some requests need (issue #15: start
to first answer under a second, idle memory under 150 MiB).

numpy, shapely, pyproj (analyses, CRSs other than CRS84), rasterio/rio-tiler (DEM tiles,
slope) and pyogrio with geopandas, pandas and pyarrow (uploads, ingest, downloads) cost ~0.7 s
and ~170 MiB when imported at app creation; they are imported on first use through ``geobase.lazy_import``. These tests fail as soon as a
module-level import brings one of them back into the start path. That each feature still works
after its lazy import is what the tile, analysis, ingest and features tests show.

The same holds for work done at start that a request can do on its first use: FastAPI's analysis
of each route (:class:`geobase.api.routing.LazyAPIRoute`, ~0.18 CPU-s for ~130 routes) and the
schemas of request-body and rule-file models (``defer_build``). The tests below fail when app
creation does that work again, and show that what is built later is what was built before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("numpy", "shapely", "pyproj", "rasterio", "rio_tiler", "pyogrio", "geopandas", "pandas", "pyarrow", "osgeo",
         # lighter, but only some requests need them: Jinja (HTML pages, ~30 ms), the vector tile
         # decoder (tests and benchmarks only), GDAL's Python bindings, the migration tools
         "jinja2", "mapbox_vector_tile", "alembic", "sqlalchemy",
         # the WMTS capabilities' XML escaping: xml.sax.saxutils imports urllib.request (~10 ms)
         "xml.sax", "urllib.request")

# pydantic models of request bodies and rule files that no start needs: built on first use
# (``defer_build=True``), ~30 models whose schemas took ~30 ms of each start
DEFERRED_MODELS = ("geobase.analysis.processes", "geobase.analysis.rules", "geobase.api.admin", "geobase.api.requests",
                   "geobase.api.webhooks", "geobase.catalog.records", "geobase.opendata.classes",
                   "geobase.opendata.desensitise", "geobase.printing.layout")

# shared objects each heavy library maps into a process when imported
HEAVY_LIBRARY_FILES = ("/numpy/", "/shapely/", "/pyproj/", "/rasterio/", "/rasterio.libs/", "/rio_tiler/", "/pyogrio/",
                       "/pyogrio.libs/", "/pandas/", "/pyarrow/", "libgdal", "libarrow")


def test_app_creation_and_the_serve_command_import_no_heavy_library(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import geobase.cli, geobase.cli.serve\n"
        "from geobase.api.app import create_app\n"
        "create_app()\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    env = dict(os.environ, GEOBASE_DATA_DIR=str(tmp_path), GEOBASE_LOG_LEVEL="warning")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"app creation imported {loaded}: import them on first use (geobase.lazy_import)"


def test_app_creation_analyses_no_route_and_a_lazy_route_is_the_route_fastapi_builds(tmp_path: Path) -> None:
    """Every router's routes are :class:`geobase.api.routing.LazyAPIRoute`: creating the app
    runs none of FastAPI's per-route analysis (~0.18 CPU-s of each start), and a route analysed
    later holds exactly what FastAPI's own ``APIRoute`` builds from the same arguments (every
    attribute but ``app``, a fresh closure each time: the same dependencies, parameters,
    response model and body field)."""
    code = (
        "import json\n"
        "from fastapi.routing import APIRoute\n"
        "from geobase.api.app import ROUTER_MODULES, create_app\n"
        "from geobase.api.routing import LazyAPIRoute\n"
        "create_app()\n"
        "routes = [r for m in ROUTER_MODULES for r in m.router.routes]\n"
        "out = {'routes': len(routes), 'not_lazy': [m.__name__ for m in ROUTER_MODULES\n"
        "       if m.router.route_class is not LazyAPIRoute or not all(isinstance(r, LazyAPIRoute) for r in m.router.routes)],\n"
        "       'analysed': sum(r.analysed for r in routes if isinstance(r, LazyAPIRoute)), 'differ': []}\n"
        "def same(a, b):\n"
        "    if hasattr(a, 'query_params'):  # a Dependant: what it takes and from where\n"
        "        kinds = ('path_params', 'query_params', 'header_params', 'cookie_params', 'body_params')\n"
        "        return all([(p.name, p.alias, repr(p.field_info)) for p in getattr(a, k)]\n"
        "                   == [(p.name, p.alias, repr(p.field_info)) for p in getattr(b, k)] for k in kinds) \\\n"
        "            and a.call is b.call and len(a.dependencies) == len(b.dependencies) \\\n"
        "            and all(same(x, y) for x, y in zip(a.dependencies, b.dependencies))\n"
        "    if hasattr(a, 'field_info'):  # a ModelField\n"
        "        return (a.name, a.mode, repr(a.field_info)) == (b.name, b.mode, repr(b.field_info))\n"
        "    if isinstance(a, dict) and isinstance(b, dict):\n"
        "        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)\n"
        "    if hasattr(a, 'pattern'):\n"
        "        return a.pattern == b.pattern\n"
        "    return a == b\n"
        "for r in routes:\n"
        "    path, endpoint, kwargs = r.__dict__['_lazy_args']\n"
        "    eager = APIRoute(path, endpoint, **kwargs)\n"
        "    r.dependant  # the first attribute it has not set analyses it\n"
        "    lazy = {k: v for k, v in r.__dict__.items() if k != 'app'}\n"
        "    full = {k: v for k, v in eager.__dict__.items() if k != 'app'}\n"
        "    if lazy.keys() != full.keys() or not all(same(lazy[k], full[k]) for k in full):\n"
        "        out['differ'].append(path)\n"
        "out['analysed_after'] = sum(r.analysed for r in routes)\n"
        "print(json.dumps(out))\n"
    )
    env = dict(os.environ, GEOBASE_DATA_DIR=str(tmp_path), GEOBASE_LOG_LEVEL="warning")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["not_lazy"] == [], f"routers without route_class=LazyAPIRoute: {found['not_lazy']}"
    assert found["routes"] > 100 and found["analysed"] == 0, found
    assert found["differ"] == [] and found["analysed_after"] == found["routes"], found


def test_app_creation_builds_no_request_body_model_and_the_first_use_does(tmp_path: Path) -> None:
    """The request-body and rule-file models of DEFERRED_MODELS are not built by app creation;
    validating with one builds it and still refuses what it refused before (an unknown field)."""
    code = (
        "import importlib, json\n"
        "from pydantic import BaseModel, ValidationError\n"
        "from geobase.api.app import create_app\n"
        "create_app()\n"
        f"mods = [importlib.import_module(m) for m in {DEFERRED_MODELS!r}]\n"
        "models = [v for m in mods for v in vars(m).values() if isinstance(v, type) and issubclass(v, BaseModel)\n"
        "          and v.__module__ == m.__name__]\n"
        "built = sorted(f'{v.__module__}.{v.__name__}' for v in models if v.__pydantic_complete__)\n"
        "from geobase.api.admin import SharingIn\n"
        "try:\n"
        "    SharingIn.model_validate({'sharing': 'public', 'bogus': 1})\n"
        "    refused = False\n"
        "except ValidationError:\n"
        "    refused = True\n"
        "print(json.dumps({'models': len(models), 'built': built, 'refused': refused,\n"
        "                  'complete_after': SharingIn.__pydantic_complete__}))\n"
    )
    env = dict(os.environ, GEOBASE_DATA_DIR=str(tmp_path), GEOBASE_LOG_LEVEL="warning")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["models"] >= 25 and found["built"] == [], found
    assert found["refused"] and found["complete_after"], found


def test_importing_the_command_runs_no_collection_and_leaves_the_collector_on(tmp_path: Path) -> None:
    """geobase.cli imports and registers every sub-command with the collector off and freezes
    what it built: at most one collection during the import (there were ~80, ~15 ms; the one
    left is the first allocation after re-enabling, over an empty young generation), and the
    collector is on again for the command itself."""
    code = (
        "import gc, json\n"
        "runs = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'stop' and runs.append(info['generation']))\n"
        "import geobase.cli\n"
        "print(json.dumps({'collections': len(runs), 'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count()}))\n"
    )
    env = dict(os.environ, GEOBASE_DATA_DIR=str(tmp_path), GEOBASE_LOG_LEVEL="warning")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["collections"] <= 1 and found["enabled"] and found["frozen"] > 10_000, found


def test_a_served_server_answers_without_mapping_heavy_libraries(db_settings, live_server) -> None:
    """A real ``geobase serve`` after its first /health and /collections: none of the heavy
    libraries' shared objects is mapped into the process."""
    srv = live_server(db_settings)
    with srv.client() as c:
        assert c.get("/health").status_code == 200
        r = c.get("/collections", headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        assert "collections" in r.json()
    maps = Path(f"/proc/{srv.proc.pid}/maps").read_text()
    mapped = sorted({line.split()[-1] for line in maps.splitlines()
                     if any(part in line for part in HEAVY_LIBRARY_FILES)})
    assert mapped == [], f"the idle server mapped heavy libraries: {mapped[:10]}"


def test_the_first_html_page_imports_jinja(tmp_path: Path) -> None:
    """Jinja is imported by the first HTML page, not at start, and the page still renders."""
    code = (
        "import sys\n"
        "from geobase.api.pages import render\n"
        "assert 'jinja2' not in sys.modules\n"
        "page = render('conformance.html', classes=['http://x/conf'], root='http://x')\n"
        "assert 'jinja2' in sys.modules and page.status_code == 200 and b'http://x/conf' in page.body\n"
    )
    env = dict(os.environ, GEOBASE_DATA_DIR=str(tmp_path), GEOBASE_LOG_LEVEL="warning")
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)


def test_the_first_dem_tile_and_upload_paths_import_what_they_need_in_a_fresh_process(tmp_path: Path) -> None:
    """The lazy loaders bring in exactly what their feature needs (a fresh interpreter: the
    first use really imports)."""
    code = (
        "import json, sys\n"
        "from geobase.tiles import raster\n"
        "png = raster.transparent_png()\n"
        "assert png[:8] == b'\\x89PNG\\r\\n\\x1a\\n'\n"
        "from geobase.ingest.sources import _list_layers\n"
        "try:\n"
        "    _list_layers(sys.argv[1], 'x')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, file=sys.stderr)\n"
        "print(json.dumps(sorted(m for m in ('numpy', 'rio_tiler', 'rasterio', 'pyogrio') if m in sys.modules)))\n"
    )
    bogus = tmp_path / "not-a-dataset.gpkg"
    bogus.write_bytes(b"not a geopackage")
    out = subprocess.run([sys.executable, "-c", code, str(bogus)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["numpy", "pyogrio", "rasterio", "rio_tiler"]
    assert "InvalidInput" in out.stderr  # GDAL's refusal still becomes the typed error

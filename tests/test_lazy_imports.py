"""The server starts without the heavy libraries that only some requests need (issue #15: start
to first answer under a second, idle memory under 150 MiB).

numpy, shapely, pyproj (analyses, CRSs other than CRS84), rasterio/rio-tiler (DEM tiles,
slope) and pyogrio with geopandas, pandas and pyarrow (uploads, ingest, downloads) cost ~0.7 s
and ~170 MiB when imported at app creation; they are imported on first use through ``geobase.lazy_import``. These tests fail as soon as a
module-level import brings one of them back into the start path. That each feature still works
after its lazy import is what the tile, analysis, ingest and features tests show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("numpy", "shapely", "pyproj", "rasterio", "rio_tiler", "pyogrio", "geopandas", "pandas", "pyarrow", "osgeo",
         # lighter, but only some requests need them: Jinja (HTML pages, ~30 ms), the vector tile
         # decoder (tests and benchmarks only), GDAL's Python bindings, the migration tools
         "jinja2", "mapbox_vector_tile", "alembic", "sqlalchemy")

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

"""``geobase ingest`` in a process of its own imports only what an ingest uses: not pandas or
geopandas (pyarrow and pyogrio would import them when installed, ~0.2 CPU-s of a big load), nor
numpy.ma or rich's progress bar with --json, nor the server's FastAPI/Starlette or rasterio; the
rows it loads are the in-process ingest's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO
from geobase.ingest.pipeline import ingest
from test_ingest import land_use_gdf, query, write_shp, zip_folder

ROWS = "SELECT _key, _hash, _area_m2, ST_AsEWKB(geom), ST_AsEWKB(geom_3857) FROM data.land_use ORDER BY _key"
PROBE = ("import runpy, sys, json\n"
         "sys.argv = ['geobase', 'ingest', 'land_use', sys.argv[1], '--json']\n"
         "try:\n    runpy.run_module('geobase.cli', run_name='__main__', alter_sys=True)\n"
         "except SystemExit as exc:\n    code = exc.code\n"
         "print(json.dumps({'code': code, 'modules': sorted(m for m in sys.modules if sys.modules[m] is not None)}))\n")


def test_the_ingest_command_imports_no_pandas_and_loads_what_the_library_loads(new_db, tmp_path):
    gdf = land_use_gdf(12)
    shp = write_shp(gdf, tmp_path / "plain", cpg=True)
    packed = zip_folder(shp.parent, tmp_path / "plain.zip")
    cli, lib = new_db(), new_db()
    env = {**os.environ, "GEOBASE_DATABASE_URL": cli.database_url, "GEOBASE_DATA_DIR": str(cli.data_dir)}
    for src in (shp, packed):  # a Shapefile on disk (the .dbf read with numpy) and a zip (GDAL reads it all)
        out = subprocess.run([sys.executable, "-c", PROBE, str(src)], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=300, check=False)
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        assert probe["code"] in (0, None), out.stderr[-2000:]
        top = {m.split(".")[0] for m in probe["modules"]}
        assert not top & {"pandas", "geopandas", "fastapi", "starlette", "rasterio"}, sorted(top & {"pandas", "geopandas", "fastapi", "starlette", "rasterio"})
        assert "pyogrio" in top and "pyarrow" in top
        # nor numpy.ma (pa.array of a numpy array imports it: copybin.from_numpy instead) nor rich's
        # progress bar (--json prints none): ~0.15 CPU-s of the command's single-threaded start
        assert not set(probe["modules"]) & {"numpy.ma", "rich.progress"}, out.stderr[-2000:]
    ingest(lib, "land_use", shp)
    ingest(lib, "land_use", packed)
    assert query(cli, ROWS) == query(lib, ROWS)
    assert query(cli, "SELECT max(version) FROM catalog.layer_versions WHERE layer = 'land_use'") == [(2,)]

"""A real ``geobase imagery add`` process SIGKILLed in the middle of the COG conversion: nothing
is registered, no scene file is in place, and the next add of the same scene succeeds and leaves
no orphan ``.partial`` behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from imagery_common import BANDS4

from geobase.imagery.ingest import add_image

GEOBASE = Path(sys.executable).with_name("geobase")


def _big_scene(path: Path) -> Path:
    """A 4-band scene large and noisy enough that its COG conversion takes seconds."""
    import rasterio
    from rasterio.transform import from_bounds

    rng = np.random.default_rng(7)
    size = 4096
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint8", "crs": "EPSG:4326",
               "transform": from_bounds(118.0, 29.0, 118.3, 29.3, size, size), "photometric": "minisblack",
               "tiled": True, "blockxsize": 512, "blockysize": 512}
    with rasterio.open(path, "w", **profile) as dst:
        for b in range(1, 5):
            dst.write(rng.integers(0, 255, (size, size), dtype="uint8"), b)
    return path


def test_sigkill_mid_conversion_registers_nothing_and_the_next_add_works(db_settings, tmp_path):
    scene = _big_scene(tmp_path / "big.tif")
    folder = db_settings.data_path / "imagery" / "killed"
    env = {**os.environ, "GEOBASE_DATABASE_URL": db_settings.database_url,
           "GEOBASE_DATA_DIR": str(db_settings.data_path)}
    proc = subprocess.Popen([str(GEOBASE), "imagery", "add", str(scene), "--collection", "killed",
                             "--datetime", "2024-05-01", "--bands", BANDS4, "--id", "big"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    partial = []
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in folder.glob(".big.*.partial") if p.stat().st_size > 0] if folder.exists() else []
        if partial:
            break
        time.sleep(0.02)
    assert partial and proc.poll() is None, ("the conversion was not caught in progress", proc.poll())
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    with psycopg.connect(db_settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM catalog.imagery_items").fetchone()[0] == 0
    assert not (folder / "big.tif").exists()  # nothing in place under the scene's name
    item = add_image(db_settings, scene, "killed", when="2024-05-01", bands=BANDS4, item_id="big")
    assert item["id"] == "big" and (folder / "big.tif").is_file()
    assert not list(folder.glob("*.partial")) and not list(folder.glob(".*.partial"))  # the orphan is gone
    with psycopg.connect(db_settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM catalog.imagery_items").fetchone()[0] == 1

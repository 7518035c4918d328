"""Imagery ingest (``geobase imagery add``): the real Landsat 7 scene becomes a COG and a STAC
Item that validates (pystac: the STAC core schema it ships, the eo/projection/raster extensions
read back through its typed classes); hostile files are refused naming
the problem, and an ingest that fails half-way registers nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
import rasterio

from geobase.errors import Conflict, InvalidInput, PayloadTooLarge
from geobase.imagery.ingest import add_image

SCENE = Path("/work/shared/realdata/br_olinda_landsat7/L7_ETMs.tif")
DEM = Path("/work/shared/realdata/br_olinda_landsat7/olinda_dem_utm25s.tif")
LANDSAT_BANDS = "b1=blue,b2=green,b3=red,b4=nir,b5=swir16,b6=swir22"


def validate_item(d: dict) -> object:
    """The Item against the STAC core JSON schema pystac ships (no network needed), then each
    declared extension read back through pystac's typed extension classes.

    The extensions' own JSON schemas live only at stac-extensions.github.io (no PyPI or npm
    package carries them) and the test machine is offline; the repo holds only what we write, so
    they are not copied here. The typed reads below fail on a missing or mistyped field instead."""
    import pystac
    from pystac.extensions.eo import EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension
    from pystac.validation import validate_dict

    assert validate_dict(d, extensions=[])  # core schema only: the extension schemas are remote
    item = pystac.Item.from_dict(d)
    for ext in (EOExtension, ProjectionExtension, RasterExtension):
        assert ext.has_extension(item), ext.get_schema_uri()
    asset = item.assets["data"]
    bands = EOExtension.ext(asset).bands
    assert bands and all(isinstance(b.name, str) and b.name for b in bands)
    assert all(b.common_name is None or isinstance(b.common_name, str) for b in bands)
    proj = ProjectionExtension.ext(item)
    assert (proj.epsg is None or isinstance(proj.epsg, int)) and len(proj.shape or [0, 0]) == 2
    assert len(proj.transform or []) in (6, 9)
    rbands = RasterExtension.ext(asset).bands
    assert rbands is not None and len(rbands) == len(bands)
    assert all(b.data_type is not None for b in rbands)
    return item


def ingest_landsat(settings, collection: str = "landsat", when: str = "2000-02-27", **kw) -> dict:
    return add_image(settings, SCENE, collection, when=when, sensor="etm+", cloud_cover=kw.pop("cloud_cover", 3.0),
                     bands=LANDSAT_BANDS, **kw)


def test_landsat_scene_becomes_a_cog_and_a_valid_stac_item(db_settings):
    from pystac.extensions.eo import EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from rio_cogeo.cogeo import cog_validate

    d = ingest_landsat(db_settings)
    item = validate_item(d)
    assert item.collection_id == "landsat" and item.datetime.isoformat().startswith("2000-02-27")
    eo = EOExtension.ext(item.assets["data"])
    assert [b.name for b in eo.bands] == ["b1", "b2", "b3", "b4", "b5", "b6"]
    assert [b.common_name for b in eo.bands][2:4] == ["red", "nir"] and eo.bands[3].center_wavelength == 0.835
    assert EOExtension.ext(item).cloud_cover == 3.0 and item.common_metadata.instruments == ["etm+"]
    assert ProjectionExtension.ext(item).epsg == 31985
    w, s, e, n = item.bbox  # Olinda, Pernambuco: about 34.9 W, 8.0 S
    assert -35.2 < w < e < -34.7 and -8.2 < s < n < -7.8
    cog = db_settings.data_path / d["assets"]["data"]["href"]
    assert cog.is_file() and cog_validate(str(cog))[0]
    with rasterio.open(SCENE) as a, rasterio.open(cog) as b:
        assert b.crs == a.crs and b.transform == a.transform and b.count == 6
        assert np.array_equal(a.read(), b.read())  # lossless
    with psycopg.connect(db_settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM catalog.imagery_items").fetchone()[0] == 1
    with pytest.raises(Conflict):
        ingest_landsat(db_settings)


@pytest.mark.parametrize("kw, needle", [
    ({"bands": "b1=blue,b7=nir"}, "no b7"),
    ({"bands": "b1=ultraviolet"}, "common name"),
    ({"bands": "band1=blue"}, "not like b1=blue"),
    ({"collection": "../etc"}, "--collection"),
    ({"item_id": "../../x"}, "--id"),
    ({"when": "yesterday"}, "ISO 8601"),
    ({"when": None}, "required"),
    ({"cloud_cover": 140.0}, "0..100"),
])
def test_bad_arguments_are_refused_naming_the_problem(db_settings, kw, needle):
    args = {"collection": "landsat", "when": "2000-02-27", "bands": LANDSAT_BANDS, **kw}
    with pytest.raises(InvalidInput, match=needle.replace(".", r"\.")):
        add_image(db_settings, SCENE, args.pop("collection"), when=args.pop("when"), **args)
    assert not (db_settings.data_path / "imagery" / "landsat").exists() or not any(
        (db_settings.data_path / "imagery" / "landsat").iterdir())


def test_hostile_files_are_refused(db_settings, tmp_path):
    fake = tmp_path / "fake.tif"
    fake.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(InvalidInput, match="not a readable GeoTIFF"):
        add_image(db_settings, fake, "c", when="2000-01-01")
    png = tmp_path / "img.tif"
    with rasterio.open(png, "w", driver="PNG", width=4, height=4, count=1, dtype="uint8") as d:
        d.write(np.zeros((1, 4, 4), "uint8"))
    with pytest.raises(InvalidInput, match="not a GeoTIFF|not georeferenced"):
        add_image(db_settings, png, "c", when="2000-01-01")
    with pytest.raises(InvalidInput, match="not a .tif"):
        add_image(db_settings, tmp_path / "x.jp2", "c", when="2000-01-01")
    with pytest.raises(InvalidInput, match="no such regular file"):
        add_image(db_settings, tmp_path / "missing.tif", "c", when="2000-01-01")
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(InvalidInput, match="no such regular file"):
        add_image(db_settings, tmp_path / "dir.tif", "c", when="2000-01-01")  # a directory
    small = db_settings.model_copy(update={"max_upload_bytes": 1000})
    with pytest.raises(PayloadTooLarge, match="GEOBASE_MAX_UPLOAD_BYTES"):
        add_image(small, SCENE, "c", when="2000-01-01")


def test_a_failed_commit_registers_nothing_and_leaves_no_file(db_settings, monkeypatch):
    """The scene's row and its file go together: a failure after the COG is written (here the
    catalogue insert) leaves no row, no COG and no partial file."""
    from geobase.imagery import ingest

    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(ingest.cat, "insert_item", boom)
    with pytest.raises(RuntimeError):
        ingest_landsat(db_settings)
    folder = db_settings.data_path / "imagery" / "landsat"
    assert list(folder.iterdir()) == []
    with psycopg.connect(db_settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM catalog.imagery_items").fetchone()[0] == 0


def test_the_cli_adds_a_scene_and_refuses_with_a_message(db_settings):
    """``geobase imagery add`` as an operator runs it: a real process, exit codes, one-line errors."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, GEOBASE_DATABASE_URL=db_settings.database_url, GEOBASE_DATA_DIR=str(db_settings.data_dir))
    cmd = [sys.executable, "-m", "geobase.cli", "imagery", "add", str(SCENE), "--collection", "landsat",
           "--datetime", "2000-02-27", "--sensor", "etm+", "--cloud-cover", "0", "--bands", LANDSAT_BANDS]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["id"] == "l7_etms"
    bad = subprocess.run(cmd[:-1] + ["b1=blue,b2=infrared"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "'infrared' is not an EO common name" in bad.stderr
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "already has an item 'l7_etms'" in again.stderr

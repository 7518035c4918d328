"""The demo and the local cluster as a user meets them: `geobase demo` (the README's `make demo`)
never replaces data it did not create, heals a catalog whose COGs were deleted, and `geobase db`
finds the same cluster from any directory (issues 12.4, 12.5, 13.5, 13.13)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
from conftest import REPO, SAMPLE, tile_xy

from geobase.settings import Settings


def run_demo_ingest(settings: Settings, directory: Path | None = None, cwd: Path = REPO) -> str:
    """`geobase demo --no-serve`: exactly the demo's preparation and ingest steps, as a process."""
    env = {**os.environ, "GEOBASE_DATABASE_URL": settings.database_url, "GEOBASE_DATA_DIR": str(settings.data_dir)}
    if directory is not None:
        # the demo's code path with a smaller sample directory (same rules, fewer files)
        code = ("import sys; from geobase.cli.serve import demo; import geobase.ingest.sample as s; "
                f"s.sample_dir = lambda: __import__('pathlib').Path({str(directory)!r}); demo(serve_after=False)")
        args = [sys.executable, "-c", code]
    else:
        args = [sys.executable, "-m", "geobase.cli", "demo", "--no-serve"]
    res = subprocess.run(args, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def current(settings: Settings, layer: str) -> tuple:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT v.version, v.created_by, v.source_name, v.metadata FROM catalog.layers l "
            "JOIN catalog.layer_versions v ON v.layer = l.name AND v.version = l.current_version "
            "WHERE l.name = %s", (layer,)).fetchone()


def layer_checksum(settings: Settings, layer: str) -> str:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(f"SELECT md5(string_agg(_key || _hash::text || _vfrom || coalesce(_vto, 0), ',' "
                            f"ORDER BY _key, _vfrom)) FROM data.{layer}").fetchone()[0]


def test_demo_never_replaces_a_stewards_version(county_db, tmp_path):
    """12.4 / 13.5: a steward's newer water_areas and land_use stay current through `geobase demo`."""
    from geobase.ingest.pipeline import ingest

    # the steward's deliveries: the sample with one water body less, and land use as a GeoPackage
    water = json.loads((SAMPLE / "water.geojson").read_text())
    water["features"] = water["features"][1:]
    (tmp_path / "hyda.geojson").write_text(json.dumps(water, ensure_ascii=False))
    import pyogrio

    lu = pyogrio.read_dataframe(SAMPLE / "DLTB.zip")
    lu = lu.iloc[: len(lu) // 2]
    pyogrio.write_dataframe(lu, tmp_path / "DLTB_steward.gpkg", layer="DLTB", driver="GPKG")
    steward = {
        "water_areas": ingest(county_db, "water_areas", tmp_path / "hyda.geojson", user="zhang.san"),
        "land_use": ingest(county_db, "land_use", tmp_path / "DLTB_steward.gpkg", user="zhang.san"),
    }
    before = {layer: (current(county_db, layer), layer_checksum(county_db, layer)) for layer in steward}

    out = run_demo_ingest(county_db)
    for layer, res in steward.items():
        version, created_by, source_name, _ = current(county_db, layer)
        assert (version, created_by) == (res.version, "zhang.san"), out
        assert (current(county_db, layer), layer_checksum(county_db, layer)) == before[layer]
        assert f"v{res.version} ({source_name}, by zhang.san) is not from the sample: kept" in out
    # and a restart after a crash (a second run) still keeps them
    run_demo_ingest(county_db)
    assert {layer: (current(county_db, layer), layer_checksum(county_db, layer)) for layer in steward} == before


def test_demo_loads_the_change_delivery_once_then_nothing(county_db):
    """The demo's second land-use version (time travel, diff, change feed) and its idempotence."""
    v1 = current(county_db, "land_use")
    out = run_demo_ingest(county_db)
    v2 = current(county_db, "land_use")
    assert v2[0] == v1[0] + 1 and v2[3]["sample"]["file"] == "DLTB_2026_change.gpkg", out
    from geobase.catalog.history import diff

    d = diff(county_db, "land_use", v1[0], v2[0])
    assert d["added"] == 1 and d["changed"] == 13 and d["removed"] == 0, d
    out2 = run_demo_ingest(county_db)
    assert current(county_db, "land_use") == v2
    assert "up to date" in out2 and " v" + str(v2[0] + 1) not in out2


def test_demo_reloads_a_cog_deleted_behind_the_catalog(db_settings, tmp_path, live_server):
    """12.5: `make clean` removed .geobase/ (the COGs) while the cluster survived: the next demo
    sees the catalog's COG missing (or altered) and loads the DEM again; DEM tiles answer."""
    sample = tmp_path / "sample"
    sample.mkdir()
    shutil.copy(SAMPLE / "dem.tif", sample / "dem.tif")
    run_demo_ingest(db_settings, sample)
    v1, _, _, meta = current(db_settings, "dem")
    shutil.rmtree(Path(meta["path"]).parent)  # what `rm -rf .geobase` does to the rasters
    out = run_demo_ingest(db_settings, sample)
    v2, _, _, meta2 = current(db_settings, "dem")
    assert v2 == v1 + 1 and Path(meta2["path"]).exists(), out
    assert "is missing" in out
    # a COG changed on disk is caught too
    Path(meta2["path"]).write_bytes(b"not a tiff")
    out = run_demo_ingest(db_settings, sample)
    v3, _, _, meta3 = current(db_settings, "dem")
    assert v3 == v2 + 1 and "was changed on disk" in out, out

    w, s_, e, n = meta3["bounds_lonlat"]
    lon, lat = (w + e) / 2, (s_ + n) / 2
    z = 11
    x, y = tile_xy(lon, lat, z)
    srv = live_server(db_settings)
    with srv.client() as c:
        r = c.get(f"/tiles/dem/hillshade/{z}/{x}/{y}.png")
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG", r.text  # not 404: the COG is there
        assert c.get("/collections/dem/coverage").status_code == 200
    # nothing to do on the next run
    out = run_demo_ingest(db_settings, sample)
    assert current(db_settings, "dem")[0] == v3 and "up to date" in out


def test_db_commands_find_the_same_cluster_from_any_directory(tmp_path):
    """13.13: a relative data directory is the checkout's, not the current directory's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOBASE_")}
    # a relative data dir of its own (never the demo's .geobase: `db stop` must not stop a demo)
    env.update(GEOBASE_PG_PORT="1", GEOBASE_DATA_DIR=".geobase-cli-test")
    outs = []
    for cwd in (REPO, tmp_path):
        res = subprocess.run([sys.executable, "-m", "geobase.cli", "db", "status", "--json"], env=env,
                             cwd=str(cwd), capture_output=True, text=True, timeout=60)
        outs.append(json.loads(res.stdout))
    assert outs[0]["data_dir"] == outs[1]["data_dir"] == str(REPO / ".geobase-cli-test")
    assert outs[0]["pgdata"] == outs[1]["pgdata"]
    res = subprocess.run([sys.executable, "-m", "geobase.cli", "db", "stop"], env=env, cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert outs[0]["pgdata"] in res.stdout  # it says which cluster it looked at
    assert not (tmp_path / ".geobase-cli-test").exists()
    shutil.rmtree(REPO / ".geobase-cli-test", ignore_errors=True)


def test_settings_resolve_relative_data_dir_against_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings(data_dir=Path(".geobase")).data_path == REPO / ".geobase"
    assert Settings(data_dir=tmp_path / "x").data_path == tmp_path / "x"


def test_make_clean_removes_cluster_and_data_together(tmp_path):
    """12.5: `make clean` removes the cluster wherever it lives (here: outside the data
    directory, named by its pointer file, as under /root), not only .geobase/."""
    text = (REPO / "Makefile").read_text()
    body = text.split("\nclean:", 1)[1].split("\n\n", 1)[0]
    assert body.index("geobase db remove --yes") < body.index("rm -rf .geobase")
    data, elsewhere = tmp_path / "data", tmp_path / "var-lib" / "pg"
    elsewhere.mkdir(parents=True)
    (elsewhere / "PG_VERSION").write_text("15\n")
    data.mkdir()
    (data / "pg.location").write_text(str(elsewhere))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOBASE_")}
    env.update(GEOBASE_DATA_DIR=str(data), GEOBASE_PG_PORT="1")
    res = subprocess.run([sys.executable, "-m", "geobase.cli", "db", "remove", "--yes"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and f"removed cluster {elsewhere}" in res.stdout, res.stdout + res.stderr
    assert not elsewhere.exists() and not (data / "pg.location").exists()

"""The ingest report tells the truth (issue 12 item 6d, issue 13 item 15): a dry run shows
the diff the real ingest makes, the same file gets the same quality report whether dry or
real, and a refused file's report says it was refused, not "dry run", with no "key None"."""

from __future__ import annotations

import os
import subprocess
import sys

import geopandas as gpd
import pandas as pd
from conftest import REPO
from geobase.ingest.pipeline import ingest
from test_ingest import db_state, land_use_gdf, write_shp, zip_folder
from test_ingest_jobs import _key, _wait


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GEOBASE_DATABASE_URL": settings.database_url, "GEOBASE_DATA_DIR": str(settings.data_dir),
           "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "geobase.cli", "ingest", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)


def _v1_and_v2(tmp_path):
    """v1: 12 parcels, two of them with a stated area 30 % off; v2: one parcel deleted, one
    added, one reclassified, the two deviating parcels unchanged."""
    v1 = land_use_gdf(12)
    v1.loc[[3, 4], "TBMJ"] = v1.loc[[3, 4], "TBMJ"] * 1.3
    v2 = v1.drop(index=0).copy()
    v2.loc[1, "DLBM"] = "0301" if v2.loc[1, "DLBM"] != "0301" else "0101"
    extra = land_use_gdf(16).iloc[[15]].copy()  # the grid cell beyond the 12 (4 x 4 grid)
    extra["BSM"] = "NEW00001"
    v2 = gpd.GeoDataFrame(pd.concat([v2, extra], ignore_index=True), crs=v1.crs)
    z1 = zip_folder(write_shp(v1, tmp_path / "v1").parent, tmp_path / "v1.zip")
    z2 = zip_folder(write_shp(v2, tmp_path / "v2").parent, tmp_path / "v2.zip")
    return z1, z2


def test_dry_run_reports_the_diff_and_the_same_quality_as_the_real_ingest(db_settings, tmp_path):
    z1, z2 = _v1_and_v2(tmp_path)
    first = ingest(db_settings, "land_use", z1)
    assert first.report["warnings"].get("area_deviation") == 2
    dry = ingest(db_settings, "land_use", z2, dry_run=True)
    real = ingest(db_settings, "land_use", z2)
    assert real.version == 2
    got = {k: (dry.as_dict()[k], real.as_dict()[k]) for k in ("rows_total", "added", "removed", "changed")}
    assert got == {"rows_total": (12, 12), "added": (1, 1), "removed": (1, 1), "changed": (1, 1)}, got
    # the two deviating parcels are in both reports, though unchanged by v2
    assert dry.report["warnings"].get("area_deviation") == real.report["warnings"].get("area_deviation") == 2
    assert dry.report["checks"]["area"] == real.report["checks"]["area"]
    assert {k: v for k, v in dry.report.items() if k != "notes"} == {k: v for k, v in real.report.items() if k != "notes"}


def test_cli_dry_run_prints_the_diff_and_a_refusal_says_refused(db_settings, tmp_path):
    z1, z2 = _v1_and_v2(tmp_path)
    assert _cli(db_settings, "land_use", str(z1)).returncode == 0
    before = db_state(db_settings, "land_use")
    r = _cli(db_settings, "land_use", str(z2), "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dry run: nothing written" in r.stdout
    assert "12 current; +1 added, -1 removed, ~1 changed" in r.stdout, r.stdout
    assert "+0 -0 ~0" not in r.stdout and "+0 added, -0 removed, ~0 changed" not in r.stdout
    assert db_state(db_settings, "land_use") == before
    bad = land_use_gdf(12)
    bad.loc[0, "DLBM"] = "9999"
    zb = zip_folder(write_shp(bad, tmp_path / "bad").parent, tmp_path / "bad.zip")
    r = _cli(db_settings, "land_use", str(zb))
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "refused: nothing written" in out, out
    assert "dry run" not in out and "key None" not in out, out
    assert db_state(db_settings, "land_use") == before


def test_http_dry_run_job_reports_the_diff_and_a_refused_job_says_refused(db_settings, live_server, tmp_path):
    z1, z2 = _v1_and_v2(tmp_path)
    ingest(db_settings, "land_use", z1)
    steward = {"X-API-Key": _key(db_settings, "steward", "natural_resources")}
    srv = live_server(db_settings)
    before = db_state(db_settings, "land_use")
    with srv.client() as c:
        with open(z2, "rb") as fh:
            r = c.post("/admin/layers/land_use/ingest", headers=steward, files={"file": ("v2.zip", fh)},
                       data={"dry_run": "true"})
        assert r.status_code == 202, r.text
        job = _wait(c, r.headers["Location"], steward)
        assert job["status"] == "successful", job
        res = job["result"]
        assert res["dry_run"] is True and res["version"] is None
        assert (res["rows_total"], res["added"], res["removed"], res["changed"]) == (12, 1, 1, 1), res
        assert "+1 -1 ~1" in job["message"]
        assert res["report"]["warnings"].get("area_deviation") == 2
        bad = land_use_gdf(12)
        bad.loc[0, "DLBM"] = "9999"
        zb = zip_folder(write_shp(bad, tmp_path / "bad").parent, tmp_path / "bad.zip")
        with open(zb, "rb") as fh:
            r = c.post("/admin/layers/land_use/ingest", headers=steward, files={"file": ("bad.zip", fh)})
        job = _wait(c, r.headers["Location"], steward)
        assert job["status"] == "failed"
        assert job["result"]["outcome"].startswith("refused: nothing written")
        assert "dry run" not in job["message"]
    assert db_state(db_settings, "land_use") == before

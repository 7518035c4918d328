"""One progress unit (percent, 0-100) for ingest and analysis jobs, stored and served
(issue 14: ingest jobs stored 0-1, analysis jobs 0-100, in the same catalog.jobs column)."""

from __future__ import annotations

import psycopg
import pytest
from test_ingest import land_use_gdf, query, write_shp, zip_folder
from test_ingest_jobs import _key, _wait

from geobase import jobs as job_progress


def test_percent_is_capped_below_done_until_the_outcome_is_recorded():
    assert job_progress.percent(0, None) == 0.0
    assert job_progress.percent(5, 0) == 0.0
    assert job_progress.percent(1, 3) == 33.3
    assert job_progress.percent(3, 3) == job_progress.RUNNING_MAX < job_progress.DONE == 100
    assert job_progress.reported(None) == 0 and job_progress.reported(66.7) == 66


def test_ingest_and_analysis_jobs_report_progress_in_the_same_unit(db_settings, live_server, tmp_path):
    z = zip_folder(write_shp(land_use_gdf(12), tmp_path / "shp").parent, tmp_path / "DLTB.zip")
    steward = {"X-API-Key": _key(db_settings, "steward", "natural_resources")}
    srv = live_server(db_settings)
    with srv.client() as c:
        with open(z, "rb") as fh:
            r = c.post("/admin/layers/land_use/ingest", headers=steward, files={"file": ("DLTB.zip", fh)})
        assert r.status_code == 202, r.text
        ingest_url = r.headers["Location"]
        ingest_job = _wait(c, ingest_url, steward)
        assert ingest_job["status"] == "successful", ingest_job

        r = c.post("/processes/tabulate/execution", headers={"Prefer": "respond-async"},
                   json={"inputs": {"layer_a": "land_use", "layer_b": "land_use"}})
        assert r.status_code == 201, r.text
        analysis_url = r.headers["Location"]
        analysis_job = _wait(c, analysis_url, {})
        assert analysis_job["status"] == "successful", analysis_job

        # finished: 100 in both documents and in the stored column (ingest stored 1.0 before)
        assert ingest_job["progress"] == analysis_job["progress"] == 100
        stored = dict(query(db_settings, "SELECT kind, progress FROM catalog.jobs"))
        assert stored == {"ingest": 100, "analysis:tabulate": 100}, stored

        # the same stored value reads the same through both job documents
        with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
            conn.execute("UPDATE catalog.jobs SET progress = 42.5")
        assert c.get(ingest_url, headers=steward).json()["progress"] == 42
        assert c.get(analysis_url).json()["progress"] == 42


def test_the_column_refuses_values_outside_percent(db_settings):
    with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO catalog.jobs (id, kind, status, params, created_by) "
                     "VALUES (gen_random_uuid(), 'ingest', 'accepted', '{}', 'test')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE catalog.jobs SET progress = 150")

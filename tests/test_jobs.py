"""One job manager for ingest and analysis jobs (issue 14): one home for the SQL of
``catalog.jobs`` (geobase/jobs.py), one progress unit (percent), one reader, and transitions it
refuses instead of writing them."""

from __future__ import annotations

import psycopg
import pytest
from test_ingest import land_use_gdf, write_shp, zip_folder

from geobase import analysis, jobs
from geobase.ingest import jobs as ingest_jobs
from geobase.specs import get_registry
from tests.analysis_data import load_small_county, run


def test_the_job_manager_refuses_an_unknown_status(db_settings):
    with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
        job_id = jobs.new_job_id()
        jobs.create_sync(conn, job_id, "ingest", params={}, created_by="t", layer="land_use")
        for status in ("done", "cancelled", "accepted", "SUCCESSFUL", ""):
            with pytest.raises(ValueError, match="not one a job moves to"):
                jobs.mark_sync(conn, job_id, status)
        job = jobs.get_sync(conn, job_id)
    assert job is not None and job.status == "accepted" and job.finished_at is None


def test_a_dismissed_job_stays_dismissed_when_its_run_ends_late(db_settings):
    """The run of a dismissed job may still finish or fail: neither overwrites the dismissal."""
    with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
        job_id = jobs.new_job_id()
        jobs.create_sync(conn, job_id, "analysis:tabulate", params={}, created_by="t", message="queued")
        assert not jobs.mark_sync(conn, job_id, "successful")  # only a running job succeeds
        assert jobs.mark_sync(conn, job_id, "running", message="running")
        assert jobs.mark_sync(conn, job_id, "dismissed", message="dismissed")
        assert not jobs.mark_sync(conn, job_id, "successful", message="done")
        assert not jobs.mark_sync(conn, job_id, "failed", message="stopped")
        jobs.progress_sync(conn, job_id, 1, 2, "late progress")  # ignored: the job does not run
        job = jobs.get_sync(conn, job_id)
    assert (job.status, job.message, job.progress) == ("dismissed", "dismissed", 0.0)
    assert job.finished_at is not None


def test_ingest_and_analysis_progress_is_one_unit_through_one_reader(db_settings, tmp_path):
    """An analysis reports (done, total) as an ingest does; the manager stores percent, capped
    below 100 while the job runs; both kinds are read back by the same reader."""
    load_small_county(db_settings.database_url)
    reg = get_registry(db_settings)
    vis = list(reg.layers.values())
    analysis_id = jobs.new_job_id()
    with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
        jobs.create_sync(conn, analysis_id, "analysis:conflicts", params={}, created_by="t")
        jobs.mark_sync(conn, analysis_id, "running")
    heard: list[tuple[float, float | None]] = []

    async def go(conn: psycopg.AsyncConnection) -> dict:
        async def progress(done: float, total: float | None, message: str) -> None:
            heard.append((done, total))
            async with await psycopg.AsyncConnection.connect(db_settings.database_url, autocommit=True) as c2:
                await jobs.progress(c2, analysis_id, done, total, message)
        return await analysis.conflicts(conn, reg, vis, progress=progress)

    result = run(db_settings, go)
    n = len(result["rules"])
    assert n >= 2 and heard == [(i, n) for i in range(1, n + 1)]

    # the ingest path: its job row is written and read by the same manager
    (tmp_path / "upload").mkdir()  # the job removes its upload's folder when it ends
    z = zip_folder(write_shp(land_use_gdf(6), tmp_path / "shp").parent, tmp_path / "upload" / "DLTB.zip")
    ingest_id = ingest_jobs.new_job_id()
    ingest_jobs.create_job(db_settings, ingest_id, "land_use", {"file": "DLTB.zip"}, "t")
    ingest_jobs.run_job(db_settings, ingest_id, "land_use", z, {}, "t")

    with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
        a, i = jobs.get_sync(conn, analysis_id), jobs.get_sync(conn, ingest_id)
        # every rule done, outcome not recorded yet: 99, never 100 (and never 1.0, a fraction)
        assert (a.status, a.progress, a.reported_progress) == ("running", jobs.RUNNING_MAX, 99)
        assert (i.status, i.progress, i.reported_progress) == ("successful", jobs.DONE, 100)
        # the ingest adapter's reader is the manager's reader
        assert ingest_jobs.get_job(db_settings, ingest_id)["progress"] == i.progress
        for done, total in ((1, 4), (3, 12)):
            jobs.mark_sync(conn, analysis_id, "running")  # no-op: already running
            jobs.progress_sync(conn, analysis_id, done, total)
            assert jobs.get_sync(conn, analysis_id).progress == 25.0
        assert jobs.get_sync(conn, analysis_id, "ingest") is None  # the kind filter of a reader

"""Ingest jobs run in a child process of the server (geobase/jobs_process.py, issue 16: the
server's memory during an HTTP ingest): the child dies with its parent, so a killed server
leaves no job that commits later; a killed child fails its job instead of leaving it running.

Real PostGIS, a real uvicorn subprocess, real SIGKILLs; nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from conftest import REPO
from geobase.ingest.pipeline import ingest
from test_ingest import db_state, make_test_specs, query
from test_ingest_jobs import _big_geojsonseq, _key, _wait

COPIED = 10_000  # rows the job has copied into staging when it is killed (mid-load)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (d / "cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if ppid == pid and b"geobase.jobs_process" in cmd:
                out.append(int(d.name))
    return out


def test_a_job_child_lives_past_the_thread_that_asked_and_dies_with_its_parent(tmp_path):
    """PR_SET_PDEATHSIG follows the thread that forked: the child must survive the (short-lived)
    thread that requested it, and die when its parent process is killed."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import threading, time
        from geobase import jobs_process
        out = {}
        t = threading.Thread(target=lambda: out.update(p=jobs_process.spawn("time:sleep", 300)))
        t.start(); t.join()
        print(out["p"].pid, flush=True)
        time.sleep(300)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], cwd=str(REPO), stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        time.sleep(1.0)  # the requesting thread has long ended
        assert _alive(child), "the job child died with the thread that requested it"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert _gone_within(child, 10), "the job child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def _start_big_job(settings, srv, tmp_path, headers) -> tuple[str, int]:
    """POST an 80,000-point delivery; once the job has copied COPIED rows: (job url, child pid)."""
    big = tmp_path / "big.geojsonl"
    _big_geojsonseq(big, 80_000)
    with srv.client() as c, open(big, "rb") as fh:
        r = c.post("/admin/layers/test_points/ingest", headers=headers, files={"file": ("big.geojsonl", fh)})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    copied, children = 0, []
    while time.monotonic() < deadline:
        children = _children(srv.proc.pid)
        copied = query(settings, "SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy p "
                                 "JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE n.nspname = 'staging'")[0][0]
        if copied >= COPIED and children:
            break
        time.sleep(0.05)
    assert copied >= COPIED and len(children) == 1, (copied, children)
    return r.headers["Location"], children[0]


def _unchanged(settings, before: dict) -> None:
    after = db_state(settings, "test_points")
    assert {k: after[k] for k in ("current", "versions", "rows", "hashes")} == \
        {k: before[k] for k in ("current", "versions", "rows", "hashes")}
    assert query(settings, "SELECT count(*) FROM data.test_points WHERE _vto IS NULL")[0][0] == 50


def _points_with_a_first_version(new_db, tmp_path) -> tuple:
    """(settings, its state, a steward's headers) of a database whose test_points layer holds a
    first version of 50 points: what a killed ingest must leave as it was."""
    settings = new_db(layers_dir=make_test_specs(tmp_path))
    small = tmp_path / "v1.geojsonl"
    _big_geojsonseq(small, 50)
    ingest(settings, "test_points", small)
    steward = {"X-API-Key": _key(settings, "steward", "natural_resources")}
    return settings, db_state(settings, "test_points"), steward


def test_a_killed_server_takes_its_ingest_child_with_it(new_db, tmp_path, live_server):
    settings, before, steward = _points_with_a_first_version(new_db, tmp_path)
    srv = live_server(settings)
    job_url, child = _start_big_job(settings, srv, tmp_path, steward)
    job_path = httpx.URL(job_url).path
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    assert _gone_within(child, 10), "the ingest child outlived its killed server"
    # its database session ends with it: nothing it started can commit any more
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and query(
            settings, "SELECT count(*) FROM pg_stat_progress_copy p JOIN pg_class c ON c.oid = p.relid "
                      "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'staging'")[0][0]:
        time.sleep(0.1)
    _unchanged(settings, before)
    # the next server fails the orphaned job at start; the data is still the previous version
    srv2 = live_server(settings)
    with srv2.client() as c:
        job = _wait(c, job_path, steward)
    assert job["status"] == "failed" and "submit the file again" in job["message"], job
    _unchanged(settings, before)


def test_a_killed_job_process_fails_its_job_and_the_server_goes_on(new_db, tmp_path, live_server):
    settings, before, steward = _points_with_a_first_version(new_db, tmp_path)
    srv = live_server(settings)
    job_url, child = _start_big_job(settings, srv, tmp_path, steward)
    os.kill(child, signal.SIGKILL)
    with srv.client() as c:
        job = _wait(c, job_url, steward)
        assert job["status"] == "failed" and "SIGKILL" in job["message"], job
        assert c.get("/health").status_code == 200
    assert srv.proc.poll() is None
    uploads = settings.data_path / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    _unchanged(settings, before)
    # a retry through the same server succeeds (and drops the killed job's staging table)
    again = tmp_path / "again.geojsonl"
    _big_geojsonseq(again, 500)
    with srv.client() as c, open(again, "rb") as fh:
        r = c.post("/admin/layers/test_points/ingest", headers=steward, files={"file": ("again.geojsonl", fh)})
        job = _wait(c, r.headers["Location"], steward)
    assert job["status"] == "successful" and job["version"] == 2, job

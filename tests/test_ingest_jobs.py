"""Ingest over real HTTP (jobs, access, upload safety) and the kill test (SIGKILL mid-load)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import psycopg
from conftest import REPO
from geobase.ingest.pipeline import ingest
from test_ingest import db_state, land_use_gdf, make_test_specs, query, write_shp, zip_folder


def _key(settings, role: str, department: str | None) -> str:
    from geobase.keys import create_key

    with psycopg.connect(settings.database_url) as conn:
        k = create_key(conn, name=f"test {role} {department}", role=role, department=department)
        conn.commit()
    return k.token


def _wait(client, url: str, headers: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(url, headers=headers).json()
        if job["status"] in ("successful", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job did not finish: {job}")


def test_http_ingest_job_access_and_upload_safety(db_settings, live_server, tmp_path):
    z = zip_folder(write_shp(land_use_gdf(12), tmp_path / "shp").parent, tmp_path / "DLTB.zip")
    steward = {"X-API-Key": _key(db_settings, "steward", "natural_resources")}
    forester = {"X-API-Key": _key(db_settings, "steward", "forestry")}
    analyst = {"X-API-Key": _key(db_settings, "analyst", "natural_resources")}
    srv = live_server(db_settings)
    with srv.client() as c:
        def post(headers, path=z, name="DLTB.zip", **data):
            with open(path, "rb") as fh:
                return c.post("/admin/layers/land_use/ingest", headers=headers, files={"file": (name, fh)}, data=data)

        assert post({}).status_code == 401
        assert post(analyst).status_code == 403
        r = post(forester)
        assert r.status_code == 403 and "forestry" in r.json()["detail"] if "detail" in r.json() else r.status_code == 403
        assert c.post("/admin/layers/nope/ingest", headers=steward, files={"file": ("a.zip", b"x")}).status_code == 404

        r = post(steward)
        assert r.status_code == 202, r.text
        job_url = r.headers["Location"]
        job = _wait(c, job_url, steward)
        assert job["status"] == "successful", job
        assert job["version"] == 1 and job["progress"] == 100
        assert job["result"]["report"]["encoding"] == "gb18030"
        assert c.get(job_url, headers=forester).status_code == 404  # other departments' jobs are not shown
        assert query(db_settings, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL")[0][0] == 12
        assert query(db_settings, "SELECT created_by FROM catalog.layer_versions")[0][0] != "cli"

        # refused content: the job fails with the message and the report; nothing changes
        bad = land_use_gdf(12)
        bad.loc[0, "DLBM"] = "9999"
        zb = zip_folder(write_shp(bad, tmp_path / "bad").parent, tmp_path / "bad.zip")
        before = db_state(db_settings, "land_use")
        job = _wait(c, post(steward, zb, "bad.zip").headers["Location"], steward)
        assert job["status"] == "failed" and "code not in the layer's code list" in job["message"]
        assert job["result"]["report"]["errors"] == {"unknown_code": 1}
        assert db_state(db_settings, "land_use") == before

        # zip-slip and zip bomb are refused before any job starts
        slip = tmp_path / "slip.zip"
        with zipfile.ZipFile(slip, "w") as zf:
            zf.writestr("../../etc/x.shp", b"x")
        r = post(steward, slip, "slip.zip")
        assert r.status_code == 400 and "../" in r.text
        bomb = tmp_path / "bomb.zip"
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("DLTB.dbf", b"\0" * (64 * 1024 * 1024))
        r = post(steward, bomb, "bomb.zip")
        assert r.status_code == 400 and "zip bomb" in r.text
        r = post(steward, z, "evil.exe")
        assert r.status_code == 400 and "unsupported file type" in r.text
    # every upload folder was removed
    uploads = db_settings.data_path / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_upload_size_limit(db_settings, live_server, tmp_path):
    small = db_settings.model_copy(update={"max_upload_bytes": 2_000})
    steward = {"X-API-Key": _key(db_settings, "steward", "natural_resources")}
    z = zip_folder(write_shp(land_use_gdf(200), tmp_path / "shp").parent, tmp_path / "DLTB.zip")
    assert z.stat().st_size > 2_000
    srv = live_server(small)
    with srv.client() as c, open(z, "rb") as fh:
        r = c.post("/admin/layers/land_use/ingest", headers=steward, files={"file": ("DLTB.zip", fh)})
    assert r.status_code == 413
    uploads = small.data_path / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def _big_geojsonseq(path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            x, y = 118 + (i % 1000) * 1e-4, 29 + (i // 1000) * 1e-4
            fh.write(json.dumps({"type": "Feature", "properties": {"FID_SRC": str(i), "NAME": f"点{i}"},
                                 "geometry": {"type": "Point", "coordinates": [x, y]}}) + "\n")


#: COPY commands running into a staging table (the ingest's load)
COPYING = ("SELECT count(*) FROM pg_stat_progress_copy p JOIN pg_class c ON c.oid = p.relid "
           "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'staging'")


def test_sigkill_mid_load_leaves_previous_version_and_retry_succeeds(new_db, tmp_path):
    settings = new_db(layers_dir=make_test_specs(tmp_path))
    small = tmp_path / "v1.geojsonl"
    _big_geojsonseq(small, 50)
    ingest(settings, "test_points", small)
    before = db_state(settings, "test_points")
    big = tmp_path / "big.geojsonl"
    _big_geojsonseq(big, 80_000)
    env = dict(os.environ, GEOBASE_DATABASE_URL=settings.database_url, GEOBASE_DATA_DIR=str(settings.data_dir),
               GEOBASE_LAYERS_DIR=str(settings.layers_dir))
    proc = subprocess.Popen([sys.executable, "-m", "geobase.cli", "ingest", "test_points", str(big), "--json"],
                            env=env, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        copied = 0
        while time.monotonic() < deadline and proc.poll() is None:
            rows = query(settings, "SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy p "
                                   "JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
                                   "WHERE n.nspname = 'staging'")
            copied = rows[0][0]
            if copied >= 10_000:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"ingest ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert copied >= 10_000
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the server notices the dead client (its COPY into staging ends: waited for, 30 s at most, not
    # a guessed second); until then the half-loaded staging table is invisible to readers
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and query(settings, COPYING)[0][0]:
        time.sleep(0.05)
    assert not query(settings, COPYING)[0][0], "the killed ingest's COPY still runs"
    after = db_state(settings, "test_points")
    assert {k: after[k] for k in ("current", "versions", "rows", "hashes")} == \
        {k: before[k] for k in ("current", "versions", "rows", "hashes")}
    assert query(settings, "SELECT count(*) FROM data.test_points WHERE _vto IS NULL")[0][0] == 50
    res = ingest(settings, "test_points", big)  # the retry also drops the leftover staging table
    assert res.version == 2 and res.rows_total == 80_000
    assert db_state(settings, "test_points")["staging"] == 0
    assert "leftover staging" in " ".join(res.report["notes"])


def test_database_connection_lost_mid_load_is_a_failure_and_retry_succeeds(new_db, tmp_path):
    """The backend of the ingest dies mid-COPY (as in a database restart): exit code 1, not 2."""
    import threading

    from geobase.errors import GeobaseError, InvalidInput

    settings = new_db(layers_dir=make_test_specs(tmp_path))
    small = tmp_path / "v1.geojsonl"
    _big_geojsonseq(small, 20)
    ingest(settings, "test_points", small)
    before = db_state(settings, "test_points")
    big = tmp_path / "big.geojsonl"
    _big_geojsonseq(big, 80_000)
    outcome: dict = {}

    def work():
        try:
            outcome["result"] = ingest(settings, "test_points", big)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and t.is_alive() and not killed:
        rows = query(settings, "SELECT p.pid FROM pg_stat_progress_copy p JOIN pg_stat_activity a USING (pid) "
                               "WHERE a.application_name = 'geobase-ingest' AND p.tuples_processed > 5000")
        if rows:
            query(settings, "SELECT pg_terminate_backend(%s)", (rows[0][0],))
            killed = True
        time.sleep(0.05)
    t.join(120)
    assert killed, outcome
    err = outcome.get("error")
    assert isinstance(err, GeobaseError) and not isinstance(err, InvalidInput), outcome
    assert err.exit_code == 1 and "connection was lost" in err.message
    after = db_state(settings, "test_points")
    assert {k: after[k] for k in ("current", "versions", "rows", "hashes")} == \
        {k: before[k] for k in ("current", "versions", "rows", "hashes")}
    res = ingest(settings, "test_points", big)
    assert res.version == 2 and res.rows_total == 80_000


def test_jobs_of_a_dead_server_are_marked_failed(db_settings):
    import socket

    from geobase.ingest import jobs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan, live = jobs.new_job_id(), jobs.new_job_id()
    jobs.create_job(db_settings, orphan, "land_use", {"host": socket.gethostname(), "pid": dead.pid}, "t")
    jobs.create_job(db_settings, live, "land_use", {"host": socket.gethostname(), "pid": os.getpid()}, "t")
    (jobs.uploads_dir(db_settings) / orphan).mkdir()
    assert jobs.fail_orphaned_jobs(db_settings) == 1
    assert jobs.get_job(db_settings, orphan)["status"] == "failed"
    assert "submit the file again" in jobs.get_job(db_settings, orphan)["message"]
    assert jobs.get_job(db_settings, live)["status"] == "accepted"
    assert not (jobs.uploads_dir(db_settings) / orphan).exists()

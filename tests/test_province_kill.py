"""A killed ingest of one county, seen by the clients of a running server (issue 16,
acceptance): while and after a county's ingest process is killed (SIGKILL in the middle of its
COPY, or inside the version's transaction with the new rows written), the server answers the
killed county's previous version (the same features, the same current version, no new entry in
the change feed) and the other county unchanged, with no error. tests/test_divisions.py checks
the same kills on the rows; this checks what is served.

Real PostGIS, a real uvicorn subprocess, the ingest in its own process killed with SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from conftest import REPO
from test_divisions import KILLER, A, B, county_gdf, load
from test_ingest import write_shp


def _served(http) -> dict:
    """What a client sees: each county's features (id -> class), the current version, the feed."""
    out = {}
    for d in (A, B):
        r = http.get("/collections/land_use/items", params={"division": d, "limit": 1000})
        assert r.status_code == 200, r.text
        out[d] = sorted((f["id"], f["properties"]["dlbm"]) for f in r.json()["features"])
    out["version"] = http.get("/collections/land_use").json()["currentVersion"]
    stream = http.get("/collections/land_use/changes/stream", params={"until": 2},
                      headers={"Last-Event-ID": "0"})
    out["events"] = stream.text.count("event: version")
    return out


@pytest.mark.parametrize("case", ["mid_copy", "inside_write"])
def test_a_killed_county_ingest_leaves_the_served_province_as_it_was(db_settings, tmp_path, live_server, case):
    s = db_settings
    load(s, tmp_path, A)
    load(s, tmp_path, B)
    srv = live_server(s)
    with srv.client() as http:
        before = _served(http)
        assert len(before[A]) == len(before[B]) == 16 and before["events"] == 2 and before["version"] == 2
        gdf = county_gdf(A, 16)
        gdf["DLBM"] = "0702"  # the delivery that dies: every parcel of A reclassified
        shp = write_shp(gdf, tmp_path / "killed")
        script = tmp_path / "killer.py"
        script.write_text(KILLER)
        args = [sys.executable, str(script), s.database_url, str(s.data_dir)]
        args += [str(shp)] if case == "mid_copy" else ["inside_write", A]
        proc = subprocess.Popen(args, cwd=str(REPO), stderr=subprocess.PIPE)
        during = _served(http)  # while the ingest runs (or right after it died): the old version
        assert proc.wait(120) == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        proc.stderr.close()
        assert during[A] == before[A] and during[B] == before[B]
        assert _served(http) == before
        assert {p for _, p in before[A]} != {"0702"}  # the killed delivery would have shown
        # the changes feed has nothing after version 2 for either county
        r = http.get("/collections/land_use/changes", params={"from": 3, "division": A})
        assert r.status_code == 400 and r.json()["parameter"] == "from"

"""Federation (issue 16, item 6): two geobase instances on loopback (two databases, two real
servers); the follower mirrors the source's layer as its county 339901 from the source's
change feed, over HTTP. After N updates on the source and passes killed mid-pull and between
their parts (SIGKILL of `geobase follow run`), the next pass resumes and the mirror has 0
divergent rows: every feature's attribute values and geometry (WKB) hash-by-hash equal."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from geobase.cli.follow import run_pass
from tests.conftest import REPO

DIVISION = "339901"
LAYER = "rivers"
N_UPDATES = 4


def _feature(i: int, rng: random.Random) -> dict:
    x, y = rng.uniform(118.0, 118.5), rng.uniform(29.0, 29.5)
    line = [[x + k * rng.uniform(0.001, 0.01), y + k * rng.uniform(-0.01, 0.01)] for k in range(rng.randint(2, 6))]
    return {"type": "Feature", "geometry": {"type": "MultiLineString", "coordinates": [line]},
            "properties": {"FID_SRC": f"R{i:05d}", "HYDC": f"AFD{i % 97:04d}", "NAME": f"河流{i}",
                           "GRADE": rng.randint(1, 6), "BAS": f"AF{i % 13}", "LENGTH_M": rng.uniform(10, 1e5)}}


def _write(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False),
                    encoding="utf-8")
    return path


def _rows(settings, division: str | None = None) -> dict[str, tuple[str, str]]:
    """key -> (md5 of the attribute values, md5 of the geometry's WKB) of the current rows."""
    where = "AND division = %s" if division else ""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT _key, md5(concat_ws('|', fid_src, water_code, name, grade::text, basin_code, length_m::text)), "
            f"md5(ST_AsBinary(geom)) FROM data.rivers WHERE _vto IS NULL {where}",
            (division,) if division else ()).fetchall()
    return {k: (a, g) for k, a, g in rows}


def _divergent(source, follower) -> int:
    src, dst = _rows(source), _rows(follower, DIVISION)
    assert src, "the source has no rows"
    return sum(1 for k in set(src) | set(dst) if src.get(k) != dst.get(k))


def _follow_cli(follower, *args: str) -> subprocess.Popen:
    env = dict(os.environ, GEOBASE_DATABASE_URL=follower.database_url, GEOBASE_DATA_DIR=str(follower.data_dir),
               PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "geobase.cli", "follow", *args], env=env, cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_at(follower, line_start: str) -> list[str]:
    """Run a pass with small pages and SIGKILL it once it prints a line starting ``line_start``."""
    proc = _follow_cli(follower, "run", "--page-size", "15")
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line.rstrip())
            if line.split(": ", 1)[-1].startswith(line_start):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, ("the pass ended before the kill", seen)
    return seen


def test_follower_mirrors_and_resumes_after_killed_passes(new_db, live_server, tmp_path):
    from geobase.ingest.pipeline import ingest

    from geobase import federation, keys
    from geobase.db import connect

    source, follower = new_db(), new_db()
    rng = random.Random(16)
    features = [_feature(i, rng) for i in range(120)]
    ingest(source, LAYER, _write(tmp_path / "v1.geojson", features))
    with connect(source) as conn:
        key = keys.create_key(conn, name="follower", role="admin", department=None).token
        conn.commit()
    srv = live_server(source)

    follow = federation.add_follow(follower, srv.url, LAYER, DIVISION, key=key)
    assert run_pass(follower, follow)["at"] == 1
    assert _divergent(source, follower) == 0

    # N updates on the source: attributes changed, geometries moved, features removed and added
    nxt = len(features)
    for u in range(N_UPDATES):
        for f in rng.sample(features, 10):
            f["properties"]["NAME"] = f"{f['properties']['NAME']}-u{u}"
            f["properties"]["LENGTH_M"] = rng.uniform(10, 1e5)
        for f in rng.sample(features, 5):
            f["geometry"]["coordinates"][0][0][0] += rng.uniform(-1e-3, 1e-3)
        for f in rng.sample(features, 4):
            features.remove(f)
        features += [_feature(nxt + k, rng) for k in range(6)]
        nxt += 6
        ingest(source, LAYER, _write(tmp_path / f"u{u}.geojson", features))
    assert _divergent(source, follower) > 0

    # killed while pulling the feed: nothing applied, the mirror still at version 1
    _kill_at(follower, "pulled page 2")
    assert federation.applied_version(follower, follow) == 1
    # killed between the parts of a pass (the upsert committed, the delete not)
    _kill_at(follower, "applied part 1/2")
    assert federation.applied_version(follower, follow) == 1

    # resumed: one pass brings the mirror to the source's version, with 0 divergent rows
    proc = _follow_cli(follower, "run")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert federation.applied_version(follower, follow) == 1 + N_UPDATES
    assert _divergent(source, follower) == 0
    # the source moves on; one more pass follows it
    for f in rng.sample(features, 3):
        features.remove(f)
    ingest(source, LAYER, _write(tmp_path / "u-last.geojson", features))
    assert run_pass(follower, follow)["at"] == 2 + N_UPDATES
    assert _divergent(source, follower) == 0
    assert run_pass(follower, follow)["applied"] == []  # up to date: nothing to do


def test_follow_refuses_a_key_that_hides_attributes(new_db, live_server, tmp_path):
    """A source that hides attributes from the follow's caller would make a mirror that lost
    them without an error: refused, and nothing is applied."""
    from geobase.ingest.pipeline import ingest

    from geobase import federation
    from geobase.errors import InvalidInput

    source, follower = new_db(), new_db()
    parcels = [{"type": "Feature", "properties": {"BSM": f"P{i}", "DLBM": "0101", "ZLDWDM": "339901001001",
                                                  "QSDWDM": "339901001001", "QSDWMC": "某村"},
                "geometry": {"type": "MultiPolygon", "coordinates": [[[[118 + i * 0.01, 29], [118.01 + i * 0.01, 29],
                                                                      [118.01 + i * 0.01, 29.01],
                                                                      [118 + i * 0.01, 29.01], [118 + i * 0.01, 29]]]]}}
               for i in range(3)]
    ingest(source, "land_use", _write(tmp_path / "dltb.geojson", parcels), coverage=False)
    srv = live_server(source)
    follow = federation.add_follow(follower, srv.url, "land_use", "339901")  # no key: the public's view
    with pytest.raises(InvalidInput, match="hides"):
        run_pass(follower, follow)
    assert federation.applied_version(follower, follow) == 0

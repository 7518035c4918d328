"""``geobase edit apply``: a GeoJSON file of changes becomes one version with its message, or, if
any change fails a check, nothing at all (exit code 2 naming the change)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from editing_common import layer_state, q


def _run(settings, *args):
    env = {**os.environ, "GEOBASE_DATABASE_URL": settings.database_url, "GEOBASE_DATA_DIR": str(settings.data_dir)}
    return subprocess.run([sys.executable, "-m", "geobase.cli", "edit", "apply", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_file_of_changes_is_one_version_or_nothing(county_db, tmp_path):
    settings = county_db
    a, b = [r[0] for r in q(settings, "SELECT _key FROM data.forest WHERE _vto IS NULL ORDER BY _key LIMIT 2")]
    geom = json.loads(q(settings, "SELECT ST_AsGeoJSON(geom, 9) FROM data.forest WHERE _vto IS NULL AND _key = %s",
                        (a,))[0][0])
    props = {k: v for k, v in q(settings, "SELECT to_jsonb(f) FROM data.forest f WHERE _vto IS NULL AND _key = %s",
                                (a,))[0][0].items() if not k.startswith("_") and k not in ("geom", "geom_3857", "division")}
    changes = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "op": "update", "id": a, "properties": {"lin_zhong": "cli"}, "geometry": None},
        {"type": "Feature", "op": "delete", "id": b, "properties": {}, "geometry": None},
        {"type": "Feature", "op": "create", "properties": {**props, "xbh": "CLI-NEW"}, "geometry": geom}]}
    changes["features"][0].pop("geometry")
    bad = json.loads(json.dumps(changes))
    bad["features"][2]["properties"]["di_lei"] = "9999"
    (tmp_path / "bad.geojson").write_text(json.dumps(bad), encoding="utf-8")
    before = layer_state(settings, "forest")
    r = _run(settings, "forest", str(tmp_path / "bad.geojson"), "-m", "x")
    assert r.returncode == 2 and "features[2]" in r.stderr and "di_lei" in r.stderr, r.stderr
    assert layer_state(settings, "forest") == before
    (tmp_path / "ok.geojson").write_text(json.dumps(changes), encoding="utf-8")
    r = _run(settings, "forest", str(tmp_path / "ok.geojson"), "-m", "年度更正", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["version"] == before[0] + 1 and out["changes"] == 3
    assert q(settings, "SELECT mode, rows_added, rows_removed, rows_changed, metadata->>'message' FROM "
             "catalog.layer_versions WHERE layer = 'forest' AND version = %s", (out["version"],)) == [
        ("edit", 1, 1, 1, "年度更正")]
    assert q(settings, "SELECT action, params->>'reason' FROM catalog.audit_log WHERE action = 'edit.apply'") == [
        ("edit.apply", "年度更正")]

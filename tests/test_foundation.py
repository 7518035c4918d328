"""Foundation: the private cluster's lifecycle, the external-URL path, specs, CLI help, app."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import TEST_PORT

from geobase.db.cluster import LocalCluster
from geobase.errors import SetupError, SpecError
from geobase.settings import Settings
from geobase.specs import default_layers_dir, load_registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lifecycle_cluster(tmp_path_factory):
    """A throwaway cluster (own port and data dir) so lifecycle tests don't disturb the session's."""
    s = Settings(data_dir=tmp_path_factory.mktemp("lifecycle"), pg_port=TEST_PORT + 6, database_url=None)
    c = LocalCluster(s)
    yield c
    c.stop(mode="immediate")


def _query(url: str, q: str):
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(q).fetchone()[0]


def test_cluster_start_stop_restart_and_idempotence(lifecycle_cluster):
    c = lifecycle_cluster
    assert c.start() is True or c.running()
    assert c.start() is False, "a second start must be a no-op"
    assert _query(c.url, "SELECT 1") == 1
    assert c.stop() is True
    assert not c.running()
    assert c.stop() is False
    with pytest.raises(psycopg.OperationalError):
        _query(c.url, "SELECT 1")
    assert c.start() is True
    assert _query(c.url, "SELECT current_database()") == "geobase"


def test_stale_pid_file_after_crash_is_recovered(lifecycle_cluster):
    c = lifecycle_cluster
    c.start()
    pid = c.status()["pid"]
    os.kill(pid, 9)  # postmaster killed: its pid file stays behind
    import time

    for _ in range(100):
        if not c.running():
            break
        time.sleep(0.1)
    pidfile = c.pgdata / "postmaster.pid"
    # make the stale file point at a pid that is certainly not postgres
    lines = pidfile.read_text().splitlines() if pidfile.exists() else ["1"]
    lines[0] = "999999"
    pidfile.write_text("\n".join(lines) + "\n")
    assert not c.running()
    for _ in range(50):  # orphaned backends of the killed postmaster exit on their own
        try:
            c.start()
            break
        except SetupError:
            time.sleep(0.2)
    assert c.running()
    assert _query(c.url, "SELECT 1") == 1


def test_cli_db_lifecycle_commands(tmp_path):
    env = dict(os.environ, GEOBASE_DATA_DIR=str(tmp_path / "gb"), GEOBASE_PG_PORT=str(TEST_PORT + 5))
    env.pop("GEOBASE_DATABASE_URL", None)
    run = lambda *a: subprocess.run([sys.executable, "-m", "geobase.cli", *a], env=env, capture_output=True, text=True)
    try:
        r = run("db", "start")
        assert r.returncode == 0, r.stderr
        assert "started" in r.stdout and "PostGIS 3" in r.stdout
        r = run("db", "start")
        assert "already running" in r.stdout
        assert run("db", "url").stdout.strip() == f"postgresql://geobase@127.0.0.1:{TEST_PORT + 5}/geobase"
        assert "running: True" in run("db", "status").stdout
        r = run("layers", "list", "--json")
        assert r.returncode == 0 and '"land_use"' in r.stdout
        assert run("db", "stop").stdout.strip().startswith("stopped: cluster ")  # names the cluster it stopped
        r = run("db", "status")
        assert r.returncode == 3 and "running: False" in r.stdout
    finally:
        run("db", "stop")


def test_external_database_url_path(db_settings):
    """With GEOBASE_DATABASE_URL the same code migrates and uses that server, no local cluster."""
    from geobase.db import connect, prepare_database

    info = prepare_database(db_settings)
    assert info["local"] is False and "started" not in info
    assert info["postgis"].startswith("3")
    with connect(db_settings) as conn:
        n = conn.execute("SELECT count(*) FROM catalog.layers").fetchone()[0]
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='data'")}
    assert n == len(load_registry().layers)
    assert {"land_use", "forest", "water_areas", "rivers", "planning_zones", "control_lines",
            "admin_divisions"} <= tables


def test_external_database_without_postgis_privilege_gives_clear_error(pg_server, tmp_path):
    from tests.conftest import create_database, drop_database

    url = create_database(pg_server, "gb_noext")
    try:
        with psycopg.connect(f"{pg_server}/gb_noext", autocommit=True) as conn:
            conn.execute("DROP ROLE IF EXISTS gb_weak")
            conn.execute("CREATE ROLE gb_weak LOGIN")
        weak = url.replace("geobase@", "gb_weak@")
        from geobase.db import connect, ensure_postgis

        with pytest.raises(SetupError, match="CREATE EXTENSION postgis"):
            with connect(Settings(database_url=weak, data_dir=tmp_path)) as conn:
                ensure_postgis(conn)
    finally:
        drop_database(pg_server, "gb_noext")


def test_every_layer_spec_loads():
    reg = load_registry()
    assert set(reg.layers) >= {"land_use", "water_areas", "rivers", "forest", "planning_zones", "control_lines",
                               "admin_divisions", "dem"}
    gb = reg.code_lists["gbt21010_2017"]
    second = [c for c in gb.codes if c.assignable]
    assert len(second) == 73 and all(len(c.code) == 4 and c.color and c.zh and c.en for c in second)
    lu = reg.layers["land_use"]
    assert lu.source_field_map()["DLBM"] == "dlbm" and lu.source_field_map()["TBMJ"] == "tbmj"
    for spec in reg.layers.values():
        assert spec.department in reg.departments and spec.licence and spec.contact and spec.update_frequency
    assert reg.layers["dem"].kind == "raster"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda t: t.replace("type: number, unit: m2, source: [TBMJ", "type: numbr, unit: m2, source: [TBMJ"),
         r"land_use\.yaml: attributes\.10\.type"),
        (lambda t: t.replace("department: natural_resources", "department: nobody"),
         r"land_use\.yaml: department: unknown department 'nobody'"),
        (lambda t: t.replace("code_list: gbt21010_2017", "code_list: gbt_missing"),
         r"land_use\.yaml: attributes\.3\.code_list: unknown code list 'gbt_missing'"),
        (lambda t: t.replace("source_key: [bsm]", "source_key: [nope]"),
         r"land_use\.yaml: .*source_key: unknown attributes \['nope'\]"),
        (lambda t: t + "\nbogus_key: 1\n", r"land_use\.yaml: bogus_key: Extra inputs are not permitted"),
        (lambda t: t.replace("title: {zh: 地类图斑", "title: [zh: 地类图斑", 1), r"land_use\.yaml: not valid YAML"),
    ],
)
def test_broken_spec_names_file_and_key(tmp_path, mutate, expected):
    root = tmp_path / "layers"
    shutil.copytree(default_layers_dir(), root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    f = root / "land_use.yaml"
    f.write_text(mutate(f.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(SpecError, match=expected):
        load_registry(root)


def test_cli_check_specs_reports_broken_file(tmp_path):
    root = tmp_path / "layers"
    shutil.copytree(default_layers_dir(), root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    (root / "rivers.yaml").write_text((root / "rivers.yaml").read_text().replace("geometry: MultiLineString", "geometry: Blob"))
    r = subprocess.run([sys.executable, "-m", "geobase.cli", "layers", "check-specs", str(root)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "rivers.yaml: geometry" in r.stderr


def _commands(app) -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    out: list[list[str]] = [[]]

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            out.append(prefix + [name])
            walk(sub, prefix + [name])

    walk(group, [])
    return out


def test_every_command_has_help():
    from typer.testing import CliRunner

    from geobase.cli import app

    cmds = _commands(app)
    assert ["db", "start"] in cmds and ["layers", "list"] in cmds and ["serve"] in cmds
    assert ["ingest"] in cmds and ["layers", "rollback"] in cmds
    runner = CliRunner()
    for cmd in cmds:
        r = runner.invoke(app, [*cmd, "--help"], prog_name="geobase")
        assert r.exit_code == 0, (cmd, r.output)
        assert "Usage" in r.output
        body = r.output.split("Usage", 1)[1]
        assert len(body.strip().splitlines()) >= 3, f"{cmd} has no description"
    # and the real console script answers too
    r = subprocess.run([sys.executable, "-m", "geobase.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "ingest" in r.stdout


def test_server_health_landing_and_catalog(db_settings, live_server):
    srv = live_server(db_settings)
    with srv.client() as c:
        h = c.get("/health").json()
        assert h["status"] == "ok"
        assert h["database"]["postgresql"].startswith("15") or h["database"]["postgresql"][:2].isdigit()
        assert h["database"]["postgis"].startswith("3")
        landing = c.get("/", params={"f": "json"}).json()
        rels = {l["rel"] for l in landing["links"]}
        assert {"self", "service-desc", "conformance", "data"} <= rels
        page = c.get("/", headers={"Accept": "text/html"})
        assert page.headers["content-type"].startswith("text/html") and "geobase" in page.text
        layers = c.get("/layers").json()["layers"]
        assert {l["name"] for l in layers} >= {"land_use", "dem"}
        r = c.get("/no-such-thing")
        assert r.status_code == 404 and r.json()["code"] == "NotFound"


def test_readme_configuration_table_lists_every_setting():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- settings-table:start -->", 1)[1].split("<!-- settings-table:end -->", 1)[0]
    for name in Settings.model_fields:
        assert f"`GEOBASE_{name.upper()}`" in table, f"README configuration table lacks GEOBASE_{name.upper()}"

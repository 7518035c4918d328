"""The HTTP server runs as the least-privileged application role (issue 13.14): it reads layer
data and appends to the audit log, but cannot alter or drop a table or switch the audit
trigger off; only migrations and ingest use the owner."""

from __future__ import annotations

import psycopg
import pytest
from conftest import app_login_url

from geobase.db import APP_LOGIN, app_database_url, server_settings
from geobase.settings import Settings


def test_the_server_connects_as_the_app_role(county_db, live_server):
    srv = live_server(county_db)
    with srv.client() as c:
        assert c.get("/collections/land_use/items?limit=1").status_code == 200
    with psycopg.connect(county_db.database_url) as conn:
        users = {r[0] for r in conn.execute(
            "SELECT usename FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'geobase-api'").fetchall()}
    assert users == {APP_LOGIN}


STATEMENTS = [
    "ALTER TABLE catalog.audit_log DISABLE TRIGGER audit_log_no_update_delete",
    "ALTER TABLE catalog.audit_log DISABLE TRIGGER USER",
    "DROP TRIGGER audit_log_no_update_delete ON catalog.audit_log",
    "DROP TABLE catalog.audit_log",
    "DROP TABLE data.land_use",
    "ALTER TABLE data.land_use ADD COLUMN x int",
    "TRUNCATE data.land_use",
    "DELETE FROM data.land_use",
    "UPDATE data.land_use SET dlbm = '0101'",
    "UPDATE catalog.audit_log SET principal = 'forged'",
    "DELETE FROM catalog.audit_log",
    "CREATE TABLE data.evil (x int)",
    "SET session_replication_role = replica",  # would skip every trigger
    ("CREATE OR REPLACE FUNCTION catalog.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
     "$$ BEGIN RETURN NEW; END $$"),
]


@pytest.mark.parametrize("stmt", STATEMENTS)
def test_the_app_role_cannot_rewrite_or_disable(county_db, stmt):
    with psycopg.connect(app_login_url(county_db.database_url), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == APP_LOGIN
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(stmt)


def test_the_app_role_does_its_job(county_db):
    with psycopg.connect(app_login_url(county_db.database_url), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM data.land_use WHERE _vto IS NULL").fetchone()[0] > 0
        conn.execute("INSERT INTO catalog.audit_log (principal, action) VALUES ('app', 'probe')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # cannot make itself more
            conn.execute("ALTER ROLE geobase_web SUPERUSER")


def test_an_api_ingest_runs_as_the_owner_and_is_readable_by_the_app(county_db, live_server, tmp_path):
    """A new layer table made by an ingest through the API is readable by the server's role."""
    import json

    from conftest import SAMPLE

    from geobase.keys import create_key

    with psycopg.connect(county_db.database_url) as conn:
        secret = create_key(conn, name="admin.t", role="admin", department=None).token
        conn.commit()
    srv = live_server(county_db)
    water = json.loads((SAMPLE / "water.geojson").read_text())
    water["features"] = water["features"][:3]
    body = json.dumps(water).encode()
    with srv.client(headers={"Authorization": f"Bearer {secret}"}) as c:
        r = c.post("/admin/layers/water_areas/ingest", files={"file": ("w.geojson", body)})
        assert r.status_code == 202, r.text
        import time

        for _ in range(300):
            job = c.get(f"/admin/jobs/{r.json()['jobID']}").json()
            if job["status"] in ("successful", "failed", "dismissed"):
                break
            time.sleep(0.2)
        assert job["status"] == "successful", job
        assert c.get("/collections/water_areas/items").json()["numberMatched"] == 3


def test_app_url_defaults():
    local = Settings(database_url=None, pg_port=5999, pg_database="gb")
    assert app_database_url(local) == f"postgresql://{APP_LOGIN}@127.0.0.1:5999/gb"
    ext = Settings(database_url="postgresql://owner:pw@db/gb", app_database_url="postgresql://web:pw@db/gb")
    assert server_settings(ext).database_url == "postgresql://web:pw@db/gb"


def test_a_role_made_after_the_migrations_gets_the_analysis_caches(county_db):
    """The analyses keep zone pieces and halos in schema ``analysis``, written by the server (as
    the app role). Their migrations grant them only when ``geobase_app`` exists already; a role
    a DBA makes later gets them from ``ensure_app_role`` (else the server would silently cut the
    zones again in every tabulation)."""
    from geobase.db import ensure_app_role

    with psycopg.connect(county_db.database_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname = 'analysis'").fetchall()]
        assert {"analysis.halos", "analysis.halo_grids"} <= set(tables)
        conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA analysis FROM geobase_app")
        conn.execute("REVOKE USAGE ON SCHEMA analysis FROM geobase_app")
        assert ensure_app_role(conn)
    with psycopg.connect(app_login_url(county_db.database_url), autocommit=True) as conn:
        for table in tables:
            assert conn.execute("SELECT has_table_privilege(%s, 'SELECT, INSERT, UPDATE, DELETE')",
                                (table,)).fetchone()[0], table

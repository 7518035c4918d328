"""The catalog's kept records never outlive an access decision (issue 19): the records and each
caller's view of them are kept per catalog state (:class:`geobase.catalog.records.RecordCache`),
so a dataset's record must disappear on the very next search after its grade, openness or
sharing changes — for the public and for a department's key, through the admin's routes and
through a metadata write whose ``updated_at`` does not move (the stamp once read
``max(updated_at)`` and ``count(*)`` of the metadata: such a write kept a graded-away record
listed). Two servers on one database: the government zone and the internet zone."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for

LIMITS = {"GEOBASE_RATE_LIMIT_PER_S": "10000", "GEOBASE_RATE_LIMIT_BURST": "10000", "GEOBASE_KEY_CACHE_S": "0",
          "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000"}


@pytest.fixture(scope="module")
def two(pg_server, county_template):
    """A county copy, an admin and a forestry viewer key, a government-zone and an internet-zone
    server, and a metadata-only open record ``ext_open``."""
    from geobase import keys

    name, data_dir = county_template
    db = f"gb_fresh_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, db, name)
    with psycopg.connect(url, autocommit=True) as conn:
        admin = keys.create_key(conn, name="fresh-admin", role="admin", department=None).token
        viewer = keys.create_key(conn, name="fresh-viewer", role="viewer", department="forestry").token
    gov = LiveServer(settings_for(url, data_dir), env=LIMITS)
    net = LiveServer(settings_for(url, data_dir), env={**LIMITS, "GEOBASE_NETWORK_ZONE": "internet"})
    with gov.client(headers={"X-API-Key": admin}) as c:
        r = c.put("/admin/catalog/ext_open", json={
            "title_zh": "外部开放数据", "department": "natural_resources", "grade": "general", "openness": "open",
            "bbox": [112.0, 28.0, 112.5, 28.5]})
        assert r.status_code == 200, r.text
    yield gov, net, {"X-API-Key": admin}, {"X-API-Key": viewer}, url
    gov.stop()
    net.stop()
    drop_database(pg_server, db)


def _ids(c, headers: dict) -> set[str]:
    r = c.get("/catalog/items", headers=headers, params={"limit": 1000})
    assert r.status_code == 200, r.text
    return {f["id"] for f in r.json()["features"]}


def _listed(srv, callers: list[dict], dataset: str) -> list[bool]:
    """Whether each caller finds ``dataset``: by a search (twice: the second is served from the
    kept view) and by its record's address."""
    out = []
    with srv.client() as c:
        for h in callers:
            first, again = dataset in _ids(c, h), dataset in _ids(c, h)
            one = c.get(f"/catalog/items/{dataset}", headers=h).status_code
            assert first == again == (one == 200), (dataset, h, first, again, one)
            out.append(first)
    return out


def test_grade_and_sharing_changes_hide_a_layer_at_once(two):
    gov, _, admin, viewer, _ = two
    callers = [{}, viewer]
    assert _listed(gov, callers, "land_use") == [True, True]
    with gov.client(headers=admin) as c:
        assert c.put("/admin/catalog/land_use/grade", json={"grade": "core"}).status_code == 200
    assert _listed(gov, callers, "land_use") == [False, False]   # core data: not in the government zone
    with gov.client(headers=admin) as c:
        assert c.put("/admin/catalog/land_use/grade", json={"grade": None, "openness": None}).status_code == 200
    assert _listed(gov, callers, "land_use") == [True, True]
    with gov.client(headers=admin) as c:
        assert c.put("/admin/layers/land_use/sharing", json={"sharing": "private"}).status_code == 200
    assert _listed(gov, callers, "land_use") == [False, False]   # natural resources' own now
    with gov.client(headers=admin) as c:
        assert c.put("/admin/layers/land_use/sharing", json={"sharing": "public"}).status_code == 200
    assert _listed(gov, callers, "land_use") == [True, True]


def test_openness_change_hides_a_layer_on_the_internet_at_once(two):
    gov, net, admin, viewer, _ = two
    callers = [{}, viewer]
    assert _listed(net, callers, "land_use") == [True, True]
    with gov.client(headers=admin) as c:   # changed through the other server: one database
        assert c.put("/admin/catalog/land_use/grade", json={"openness": "closed"}).status_code == 200
    assert _listed(net, callers, "land_use") == [False, False]   # closed data never reach the internet
    with gov.client(headers=admin) as c:
        assert c.put("/admin/catalog/land_use/grade", json={"grade": None, "openness": None}).status_code == 200
    assert _listed(net, callers, "land_use") == [True, True]


def test_metadata_write_that_keeps_its_time_still_hides_the_record(two):
    """A metadata-only record takes its grade from its document: a write committed with an
    ``updated_at`` that is not the newest (a transaction that began earlier) must still count."""
    gov, net, _, viewer, url = two
    callers = [{}, viewer]
    assert _listed(gov, callers, "ext_open") == [True, True]
    assert _listed(net, callers, "ext_open") == [True, True]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE catalog.record_meta SET meta = meta || '{\"grade\": \"core\"}', "
                     "updated_at = '2001-01-01T00:00:00Z' WHERE dataset = 'ext_open'")
    assert _listed(gov, callers, "ext_open") == [False, False]
    assert _listed(net, callers, "ext_open") == [False, False]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE catalog.record_meta SET meta = meta || '{\"grade\": \"general\"}', "
                     "updated_at = '2001-01-01T00:00:00Z' WHERE dataset = 'ext_open'")
    assert _listed(gov, callers, "ext_open") == [True, True]

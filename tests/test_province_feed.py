"""The change feed of a province, county by county (issue 16): ``division=`` on
``/collections/{id}/changes`` (and its Server-Sent Events stream) gives one county's changes,
reading that county's partition only; a malformed code and a county the layer does not have are
400s naming ``division``; ``division`` is a queryable, listed with the layer's counties, so a
CQL2 client discovers it.

Real PostGIS, real ingests of shapefiles, real HTTP to a uvicorn subprocess.
"""

from __future__ import annotations

import json

import psycopg
from psycopg import sql
from test_divisions import A, B, county_gdf, load

from geobase.features import changes_source
from geobase.specs import get_registry
from geobase.storage import UNASSIGNED


def _province(s, tmp_path) -> None:
    """v1: county A; v2: county B; v3: two of A's parcels change class; v4: B loses 6 parcels."""
    load(s, tmp_path, A)
    load(s, tmp_path, B)
    ga = county_gdf(A)
    ga.loc[[0, 1], "DLBM"] = "0702"
    load(s, tmp_path, A, ga, "v3")
    load(s, tmp_path, B, county_gdf(B, dx=2000).iloc[:10], "v4")


def _sse(text: str) -> list[dict]:
    """The events of a Server-Sent Events body: [{id, data}]."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "id" in fields:
            out.append({"id": int(fields["id"]), "data": json.loads(fields["data"])})
    return out


def test_the_change_feed_of_one_county_reads_its_partition_only(db_settings, tmp_path, live_server):
    s = db_settings
    _province(s, tmp_path)
    spec = get_registry(s).layer("land_use")
    src, _ = changes_source(spec, 1, 4, [A])
    with psycopg.connect(s.database_url) as conn:
        plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN SELECT * FROM {}").format(src)).fetchall())
    assert f"land_use__{A}" in plan and f"land_use__{B}" not in plan, plan
    srv = live_server(s)
    with srv.client() as http:
        def feed(**params) -> list[tuple[str, str]]:
            r = http.get("/collections/land_use/changes", params={"limit": 1000, **params})
            assert r.status_code == 200, r.text
            return sorted((f["properties"]["change"], f["properties"]["zldwdm"][:6]) for f in r.json()["features"])

        assert feed(**{"from": 1, "to": 4, "division": A}) == [("changed", A)] * 2
        assert feed(**{"from": 2, "to": 4, "division": B}) == [("removed", B)] * 6
        assert feed(**{"from": 1, "to": 4, "division": B}) == [("added", B)] * 10  # B had no rows in v1
        province = feed(**{"from": 2, "to": 4})
        assert province == feed(**{"from": 2, "to": 4, "division": f"{A},{B}"}) == \
            [("changed", A)] * 2 + [("removed", B)] * 6
        assert feed(**{"from": 3, "to": 4, "division": A}) == []  # v4 touched B only
        # a page's next link keeps the county
        page = http.get("/collections/land_use/changes", params={"from": 1, "to": 4, "division": B, "limit": 4}).json()
        nxt = next(link["href"] for link in page["links"] if link["rel"] == "next")
        assert f"division={B}" in nxt
        rest = http.get(nxt).json()["features"]
        assert len(rest) == 4 and all(f["properties"]["zldwdm"].startswith(B) for f in rest)
        for bad, says in (("33", "6-digit county code"), ("339909", "not a county of 'land_use'"),
                          ("", "empty"), (f"{A},x", "6-digit county code")):
            r = http.get("/collections/land_use/changes", params={"from": 1, "division": bad})
            assert r.status_code == 400 and r.json()["parameter"] == "division" and says in r.text, (bad, r.text)


def test_the_change_stream_sends_the_versions_of_the_counties_asked_for(db_settings, tmp_path, live_server):
    s = db_settings
    _province(s, tmp_path)
    srv = live_server(s)
    with srv.client() as http:
        def stream(**params) -> list[dict]:
            with http.stream("GET", "/collections/land_use/changes/stream", params={"until": 4, **params},
                             headers={"Last-Event-ID": "0", "Accept": "text/event-stream"}) as r:
                assert r.status_code == 200
                return _sse(r.read().decode())

        b = stream(division=B)
        assert [e["id"] for e in b] == [2, 4] and all(e["data"]["touched"] == [B] for e in b)
        assert b[1]["data"]["changes"].endswith(f"/collections/land_use/changes?from=3&to=4&division={B}")
        removed = http.get(b[1]["data"]["changes"]).json()["features"]
        assert len(removed) == 6 and {f["properties"]["change"] for f in removed} == {"removed"}
        assert [e["id"] for e in stream(division=A)] == [1, 3]
        assert [e["id"] for e in stream()] == [1, 2, 3, 4]
        r = http.get("/collections/land_use/changes/stream", params={"until": 4, "division": "339909"})
        assert r.status_code == 400 and r.json()["parameter"] == "division"


def test_division_is_a_queryable_with_the_layers_counties(db_settings, tmp_path, live_server):
    s = db_settings
    load(s, tmp_path, A)
    load(s, tmp_path, B)
    srv = live_server(s)
    with srv.client() as http:
        q = http.get("/collections/land_use/queryables").json()
        div = q["properties"]["division"]
        assert div["type"] == "string" and div["pattern"] == "^[0-9]{6}$" and div["enum"] == [UNASSIGNED, A, B]
        # what the queryables advertise is what CQL2 and division= accept
        fc = http.get("/collections/land_use/items", params={"filter": f"division = '{div['enum'][2]}'",
                                                             "limit": 100}).json()
        assert len(fc["features"]) == 16 and all(f["properties"]["zldwdm"].startswith(B) for f in fc["features"])

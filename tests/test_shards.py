"""Shards on PostgreSQL's own mechanism (issue 16, item 4): counties' partitions placed on two
other PostGIS clusters as postgres_fdw foreign partitions. The planner routes: a county-scoped
query makes one Foreign Scan on the county's shard (none for a local county), a province query
an Async Foreign Scan per shard; the features API, tiles and a tabulation give what they gave
before the move; an ingest of a sharded county writes its version on the shard; a killed shard
gives a 503 naming it to the queries that need it while other counties answer 200; moving back
restores local partitions.

Real PostGIS clusters on loopback (shard a made by ``geobase db shard add --local``, shard b a
database of another cluster registered with ``--url``), real uvicorn, a real SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import httpx
import mapbox_vector_tile
import psycopg
import pytest
from conftest import REPO, TEST_PORT, LiveServer, create_database, drop_database, settings_for
from psycopg import sql
from pyproj import Transformer
from shapely.geometry import box
from test_divisions import KILLER, A, B, C, _items_sql, county_gdf, load
from test_ingest import X0, Y0, query, write_shp
from test_tiles_county import tile_at

from geobase.catalog.history import rollback
from geobase.db.cluster import LocalCluster
from geobase.errors import SetupError, ShardUnavailable
from geobase.partitions import foreign_partitions
from geobase.settings import Settings

TEST_DATA = REPO / ".geobase-test"
# the test's extra clusters, beside the session's (55631, 55632 by default) so that concurrent runs
# with their own GEOBASE_TEST_PG_PORT do not collide
PORT_A, PORT_B = TEST_PORT + 198, TEST_PORT + 199  # the test's extra clusters (shard a: made by the CLI; b: a database there)
QUERIES = [("land_use", {"division": A}), ("land_use", {"division": B}), ("land_use", {"division": C}),
           ("land_use", {}), ("land_use", {"filter": f"division = '{C}' AND dlbm = '0101'"}),
           ("land_use", {"bbox": "117.01,29.7,117.2,29.9"}), ("admin_divisions", {})]


def _cluster(name: str, port: int) -> LocalCluster:
    from geobase.cli.db_shard import _local_settings

    return LocalCluster(_local_settings(Settings(data_dir=TEST_DATA, database_url=None), name, port))


def _start(cluster: LocalCluster) -> None:
    """Start a shard's cluster; a port briefly held by another client's socket in TIME-WAIT (the
    test ports lie in the ephemeral range) is waited for."""
    for attempt in range(10):
        try:
            cluster.start()
            return
        except SetupError:
            if attempt == 9:
                raise
            time.sleep(2)


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GEOBASE_DATABASE_URL": settings.database_url, "GEOBASE_DATA_DIR": str(TEST_DATA)}
    return subprocess.run([sys.executable, "-m", "geobase.cli", "db", "shard", *args], env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def _ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def _xy(division: str) -> tuple[float, float]:
    """County ``division``'s grid origin in EPSG:4527 (test_divisions.load puts it 2 km apart)."""
    return X0 + (int(division) - int(A)) * 2000, Y0


def load_admin(settings, tmp: Path) -> None:
    """One county polygon per county, around its parcels (XZQDM: the county code)."""
    rows = [{"XZQDM": d, "XZQMC": f"县{d[-1]}", "JB": "county",
             "geometry": box(_xy(d)[0] - 50, Y0 - 50, _xy(d)[0] + 450, Y0 + 450)} for d in (A, B, C)]
    from geobase.ingest.pipeline import ingest

    ingest(settings, "admin_divisions", write_shp(gpd.GeoDataFrame(rows, crs="EPSG:4527"), tmp / "xzq", "XZQ"),
           coverage=False)


def _features(http, layer: str, params: dict) -> list:
    r = http.get(f"/collections/{layer}/items", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return sorted(json.dumps(f, sort_keys=True, ensure_ascii=False) for f in r.json()["features"])


def _tile(division: str) -> tuple[int, int]:
    x, y = _xy(division)
    lon, lat = Transformer.from_crs("EPSG:4527", "EPSG:4490", always_xy=True).transform(x + 200, y + 200)
    return tile_at(15, lon, lat)


def _tile_classes(http, division: str) -> list[str]:
    x, y = _tile(division)
    r = http.get(f"/tiles/land_use/15/{x}/{y}.mvt", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200, r.text
    return sorted(f["properties"]["dlbm"] for f in mapbox_vector_tile.decode(r.content)["land_use"]["features"])


def _tabulation(settings, division: str) -> list:
    from geobase.analysis.tabulate import tabulate
    from geobase.specs import get_registry

    async def run():
        reg = get_registry(settings)
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            return await tabulate(conn, reg, list(reg.layers.values()), "land_use", "admin_divisions",
                                  aoi_code=division, reuse=False)
    out = asyncio.run(run())
    return out["rows"] if "rows" in out else out["cells"]


@pytest.fixture(scope="module")
def province(pg_server, template_db, tmp_path_factory):
    """Counties A, B, C of land use and admin divisions; what the API, a tile and a tabulation
    gave before the move; then B (every layer) on shard a, C's land use on shard b."""
    name = f"gb_shards_{os.getpid()}"
    s = settings_for(create_database(pg_server, name, template_db), tmp_path_factory.mktemp("shards"),
                     tile_cache_max_bytes=0)  # every tile is rendered from the rows, before and after the move
    for d in (A, B, C):
        load(s, s.data_dir, d)
    load_admin(s, s.data_dir)
    srv = LiveServer(s)
    with srv.client() as http:
        before = {json.dumps(q): _features(http, *q) for q in QUERIES}
        tiles_before = {d: _tile_classes(http, d) for d in (B, C)}
    tab_before = {d: _tabulation(s, d) for d in (B, C)}
    from geobase.cli.db_shard import start_local_shard

    for n, port in (("a", PORT_A), ("tb", PORT_B)):
        _start(_cluster(n, port))
    b_base, _ = start_local_shard(Settings(data_dir=TEST_DATA, database_url=None), "tb", PORT_B)
    b_db = f"gb_shardb_{os.getpid()}"
    b_url = create_database(b_base.rsplit("/", 1)[0], b_db)
    _ok(_cli(s, "add", "a", "--local", str(PORT_A)))
    _ok(_cli(s, "add", "b", "--url", b_url))
    out = _ok(_cli(s, "place", "a", "--division", B))
    assert f"land_use {B}: on shard a (16 rows moved)" in out and f"admin_divisions {B}: on shard a (1 rows" in out
    _ok(_cli(s, "place", "b", "--division", C, "--layer", "land_use"))
    yield {"settings": s, "server": srv, "before": before, "tabulation": tab_before, "tiles": tiles_before,
           "b_url": b_url}
    srv.stop()
    drop_database(pg_server, name)
    drop_database(b_base.rsplit("/", 1)[0], b_db)
    for n, port in (("a", PORT_A), ("tb", PORT_B)):
        _cluster(n, port).stop()


def _items_query(settings, **params):
    """The items query object the endpoint builds for ``params`` (page and matched count)."""
    from geobase.catalog.state import layer_state
    from geobase.features.build import build_query
    from geobase.features.params import ItemsParams
    from geobase.specs import get_registry

    async def build():
        async with await psycopg.AsyncConnection.connect(settings.database_url) as aconn:
            state = await layer_state(aconn, get_registry(settings).layer("land_use"))
        return build_query(state, set(), ItemsParams(**params), default_limit=10, max_limit=100)
    return asyncio.run(build())


def _explain(settings, q: sql.Composable) -> list[str]:
    with psycopg.connect(settings.database_url) as conn:
        return [r[0] for r in conn.execute(sql.SQL("EXPLAIN VERBOSE {}").format(q)).fetchall()]


def test_the_planner_routes_a_county_to_its_shard_and_a_province_to_both_concurrently(province):
    s = province["settings"]
    with psycopg.connect(s.database_url) as conn:
        where = foreign_partitions(conn, "land_use")
    assert where == {B: "geobase_shard_a", C: "geobase_shard_b"}
    for division, server in ((B, "geobase_shard_a"), (C, "geobase_shard_b")):
        plan = _explain(s, _items_sql(s, extra={"division": division}))
        scans = [line for line in plan if "Foreign Scan" in line]
        assert len(scans) == 1 and f"land_use__{division}" in scans[0], "\n".join(plan)
        assert where[division] == server
        assert any("Remote SQL" in line for line in plan)
    plan = _explain(s, _items_sql(s, extra={"division": A}))
    assert not [line for line in plan if "Foreign Scan" in line], "\n".join(plan)
    # the province: the matched count (and a tile, a tabulation) append the counties, and the two
    # shards' scans run concurrently; a keyset page is a Merge Append by key (PostgreSQL runs no
    # Merge Append asynchronously), reading both shards, a page's worth from each
    plan = _explain(s, _items_query(s).count_sql())
    asyncs = [line for line in plan if "Async Foreign Scan" in line]
    assert len(asyncs) == 2 and any(f"land_use__{B}" in x for x in asyncs) and any(
        f"land_use__{C}" in x for x in asyncs), "\n".join(plan)
    plan = _explain(s, _items_sql(s))
    assert len([line for line in plan if "Foreign Scan" in line]) == 2, "\n".join(plan)
    # a bbox query pushes ST_Intersects down to the shard (extensions 'postgis'): it runs there on its index
    plan = "\n".join(_explain(s, _items_sql(s, extra={"division": B}, bbox="117,29,118,30")))
    remote = [line for line in plan.splitlines() if "Remote SQL" in line]
    assert remote and "st_intersects(geom" in remote[0], plan


def test_api_tiles_and_tabulation_give_what_they_gave_before_the_move(province):
    s = province["settings"]
    with province["server"].client() as http:
        for q in QUERIES:
            assert _features(http, *q) == province["before"][json.dumps(q)], q
        for d in (B, C):
            assert _tile_classes(http, d) == province["tiles"][d] and province["tiles"][d]
    for d in (B, C):
        assert _tabulation(s, d) == province["tabulation"][d]
    # the shard holds the rows, with the layer's indexes (the spatial one included) built there
    with psycopg.connect(province["b_url"]) as remote:
        assert remote.execute(f"SELECT count(*) FROM data.land_use__{C}").fetchone()[0] == 16
        idx = {r[0] for r in remote.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s",
                                            (f"land_use__{C}",)).fetchall()}
    assert {f"land_use_cur_geom__{C}", f"land_use_cur_key__{C}"} <= idx
    # the coordinator keeps no copy
    assert query(s, "SELECT relkind FROM pg_class WHERE oid = %s::regclass", (f"data.land_use__{C}",)) == [("f",)]


def test_an_ingest_of_a_sharded_county_writes_its_version_on_the_shard(province):
    s = province["settings"]
    a_rows = query(s, "SELECT _rid, xmin::text, _vfrom, _vto FROM data.land_use WHERE division = %s ORDER BY 1", (A,))
    gdf = county_gdf(C, dx=(int(C) - int(A)) * 2000)
    gdf.loc[0, "DLBM"] = "0702"
    gdf = gdf.iloc[:-1]
    before = query(s, "SELECT max(version) FROM catalog.layer_versions WHERE layer = 'land_use'")[0][0]
    r = load(s, s.data_dir, C, gdf, "v2")
    assert (r.version, r.changed, r.removed, r.divisions) == (before + 1, 1, 1, [C])
    with psycopg.connect(province["b_url"]) as remote:  # written on the shard, in its own partition table
        assert remote.execute(f"SELECT count(*) FROM data.land_use__{C} WHERE _vto IS NULL").fetchone()[0] == 15
        assert remote.execute(f"SELECT count(*) FROM data.land_use__{C} WHERE _vfrom = %s", (r.version,)).fetchone()[0] == 1
    assert query(s, "SELECT _rid, xmin::text, _vfrom, _vto FROM data.land_use WHERE division = %s ORDER BY 1", (A,)) == a_rows
    with province["server"].client() as http:
        fc = http.get("/collections/land_use/items", params={"division": C, "limit": 100}).json()
        assert len(fc["features"]) == 15 and "0702" in {f["properties"]["dlbm"] for f in fc["features"]}
    back = rollback(s, "land_use", before, division=C)  # the county's previous version, again on the shard
    assert back["version"] == r.version + 1
    with province["server"].client() as http:
        assert _features(http, "land_use", {"division": C}) == province["before"][json.dumps(["land_use", {"division": C}])]


def test_a_killed_ingest_of_a_sharded_county_leaves_its_previous_version_on_the_shard(province, tmp_path):
    """The writer process SIGKILLed inside the version's transaction, after its rows went through
    the foreign partition: the shard's remote transaction dies with the coordinator's."""
    s = province["settings"]

    def shard_rows() -> list:
        with psycopg.connect(_cluster("a", PORT_A).url) as remote:
            return remote.execute(f"SELECT _rid, xmin::text, _key, _hash, _vfrom, _vto FROM data.land_use__{B} "
                                  "ORDER BY _rid").fetchall()
    before = shard_rows()
    versions = query(s, "SELECT count(*) FROM catalog.layer_versions")[0][0]
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run([sys.executable, str(script), s.database_url, str(s.data_dir), "inside_write", B],
                          cwd=str(REPO), capture_output=True, check=False, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert shard_rows() == before and len(before) == 16
    assert query(s, "SELECT count(*) FROM catalog.layer_versions")[0][0] == versions
    with province["server"].client() as http:
        assert _features(http, "land_use", {"division": B}) == province["before"][json.dumps(["land_use", {"division": B}])]


def test_a_killed_shard_gives_503_naming_it_and_other_counties_keep_answering(province):
    s = province["settings"]
    cluster = _cluster("tb", PORT_B)
    os.kill(cluster._pid(), signal.SIGKILL)
    try:
        with httpx.Client(base_url=province["server"].url, timeout=30) as http:  # a bound: a hung shard fails here
            for params in ({"division": C}, {}):
                r = http.get("/collections/land_use/items", params={"limit": 10, **params})
                assert r.status_code == 503, r.text
                body = r.json()
                assert body["code"] == "ShardUnavailable" and body["details"]["shard"] == "b", body
                assert "shard b" in body["description"] and r.headers.get("Retry-After")
            for params in ({"division": A}, {"division": B}):
                assert http.get("/collections/land_use/items", params=params).status_code == 200
            assert http.get("/collections/admin_divisions/items", params={"division": C}).status_code == 200
            x, y = _tile(C)
            r = http.get(f"/tiles/land_use/15/{x}/{y}.mvt")  # it needs the shard
            assert r.status_code == 503 and "shard b" in r.text, r.text
        # an ingest of the county is refused naming the shard; one of a local county does not need it
        with pytest.raises(ShardUnavailable, match="shard b is unavailable"):
            load(s, s.data_dir, C, tag="down")
        assert load(s, s.data_dir, "339904").divisions == ["339904"]
    finally:
        _start(cluster)
    with province["server"].client() as http:  # back: postgres_fdw connects again on the next query
        assert http.get("/collections/land_use/items", params={"division": C}).status_code == 200


def test_shard_list_unplace_and_remove_move_the_rows_back(province):
    s = province["settings"]
    shards = {x["name"]: x for x in json.loads(_ok(_cli(s, "list", "--json")))}
    assert shards["a"]["local_pgdata"] and shards["a"]["options"]["async_capable"] == "true"
    assert shards["a"]["options"]["extensions"] == "postgis" and "connect_timeout" in shards["a"]["options"]
    assert {(p["layer"], p["division"]) for p in shards["a"]["partitions"]} == {("land_use", B), ("admin_divisions", B)}
    assert shards["b"]["partitions"] == [{"layer": "land_use", "division": C}]
    # a version the shard committed and the coordinator did not (it died between the two commits)
    last = query(s, "SELECT max(version) FROM catalog.layer_versions WHERE layer = 'land_use'")[0][0]
    with psycopg.connect(_cluster("a", PORT_A).url) as remote:
        remote.execute(f"UPDATE data.land_use__{B} SET _vto = %s WHERE _vto IS NULL AND _key = '00000001'",
                       (last + 1,))
        remote.execute(f"INSERT INTO data.land_use__{B} (_rid, _key, _hash, _vfrom, division, geom, geom_3857) "
                       f"SELECT _rid + 100000, _key, 'x', _vto, division, geom, geom_3857 FROM data.land_use__{B} "
                       "WHERE _vto = %s", (last + 1,))
    p = _cli(s, "check")
    assert p.returncode == 1 and f"a land_use {B}: in doubt: rows of version {last + 1}" in p.stdout, p.stdout + p.stderr
    assert f"b land_use {C}: ok" in p.stdout
    assert f"a land_use {B}: repaired" in _ok(_cli(s, "check", "--repair"))
    _ok(_cli(s, "check"))
    with province["server"].client() as http:
        assert _features(http, "land_use", {"division": B}) == province["before"][json.dumps(["land_use", {"division": B}])]
    out = _ok(_cli(s, "unplace", "--division", C))  # its 16 rows, a changed one and the rollback's 2 (history)
    assert f"land_use {C}: local (19 rows moved back)" in out and f"admin_divisions {C}: not on a shard" in out
    # a new attribute cannot reach the shard's table by itself: refused, naming the shard, nothing changed
    from geobase.partitions import ensure_layer_table
    from geobase.specs import Attribute, get_registry

    spec = get_registry(s).layer("land_use")
    extra = spec.model_copy(update={"attributes": [*spec.attributes, Attribute(name="extra_note")]})
    with psycopg.connect(s.database_url) as conn, pytest.raises(SetupError, match=f"{B} on geobase_shard_a"):
        ensure_layer_table(conn, extra)
    out = _ok(_cli(s, "remove", "a", "--yes"))
    assert f"land_use {B}: local" in out and "removed shard a" in out
    with psycopg.connect(s.database_url) as conn:
        assert foreign_partitions(conn, "land_use") == {} and foreign_partitions(conn, "admin_divisions") == {}
    assert [x["name"] for x in json.loads(_ok(_cli(s, "list", "--json")))] == ["b"]
    with province["server"].client() as http:
        for q in QUERIES[:3]:
            if q[1].get("division") != C:  # C had a new version and a rollback since (history grew)
                assert _features(http, *q) == province["before"][json.dumps(q)], q
        assert _features(http, "land_use", {"division": C}) == province["before"][json.dumps(["land_use", {"division": C}])]
    # a key stays unique per county on the moved-back partitions (each holds its own unique index)
    with pytest.raises(psycopg.errors.UniqueViolation), psycopg.connect(s.database_url) as conn:
        conn.execute(f"INSERT INTO data.land_use (_key, _hash, _vfrom, division, geom, geom_3857) SELECT _key, "
                     f"_hash, _vfrom, division, geom, geom_3857 FROM data.land_use WHERE division = '{B}' "
                     "AND _vto IS NULL LIMIT 1")

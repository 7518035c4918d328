"""Counties as the partition key (issue 16, item 1): every vector layer's table is LIST-partitioned
by the 6-digit county code; a county's delivery changes its partition only, readers of another
county never wait for it, a killed ingest leaves the county's previous version; versions, diff,
rollback and time travel per county and for the province; ``division=`` (items, CQL2, an
analysis' ``aoi``) prunes partitions; a table made before partitions is migrated.

Real PostGIS, real files through GDAL, real HTTP, real processes killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap

import geopandas as gpd
import psycopg
import pytest
from conftest import REPO
from geobase.ingest.pipeline import ingest
from psycopg import sql
from test_ingest import land_use_gdf, query, write_shp

from geobase.catalog import sync_catalog
from geobase.catalog.history import diff, list_versions, rollback
from geobase.catalog.versions import write_version
from geobase.errors import InvalidInput
from geobase.specs import get_registry

A, B, C = "339901", "339902", "339903"


def county_gdf(division: str, n: int = 16, dx: float = 0.0) -> gpd.GeoDataFrame:
    """``n`` parcels of county ``division`` (ZLDWDM: the 12-digit village code + 7 digits), the
    grid shifted ``dx`` metres east so counties do not overlap."""
    gdf = land_use_gdf(n)
    gdf["geometry"] = gdf.geometry.translate(xoff=dx)
    gdf["ZLDWDM"] = f"{division}1010010000000"
    return gdf


def load(settings, tmp_path, county: str, gdf: gpd.GeoDataFrame | None = None, tag: str = "", **kw):
    """Ingest county ``county``'s delivery (default: its 16 parcels) into land use."""
    gdf = county_gdf(county, dx=(int(county) - int(A)) * 2000) if gdf is None else gdf
    return ingest(settings, "land_use", write_shp(gdf, tmp_path / f"{county}{tag}"), coverage=False, **kw)


def partitions(settings) -> list[str]:
    return [r[0] for r in query(settings, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                          "WHERE i.inhparent = 'data.land_use'::regclass ORDER BY 1")]


def county_rows(settings, division: str) -> list[tuple]:
    """Every row of the county (history included) with its physical identity (ctid, xmin): a
    rewrite, an UPDATE or a delete-and-insert changes them."""
    return query(settings, "SELECT _rid, ctid::text, xmin::text, _key, _vfrom, _vto FROM data.land_use "
                           "WHERE division = %s ORDER BY _rid", (division,))


def test_counties_get_partitions_and_a_county_delivery_changes_its_own_only(db_settings, tmp_path):
    s = db_settings
    ra = load(s, tmp_path, A)
    rb = load(s, tmp_path, B)
    assert (ra.version, rb.version, ra.divisions, rb.divisions) == (1, 2, [A], [B])
    assert partitions(s) == ["land_use__000000", f"land_use__{A}", f"land_use__{B}"]
    assert rb.rows_total == 32  # the province: both counties
    b_before = county_rows(s, B)
    gdf = county_gdf(A)
    gdf.loc[0, "DLBM"] = "0702"
    gdf = gdf.iloc[:-1]  # one parcel of A gone: B's parcels are not in A's delivery, and stay
    r3 = load(s, tmp_path, A, gdf, "v3")
    assert (r3.version, r3.changed, r3.removed, r3.added, r3.rows_total) == (3, 1, 1, 0, 31)
    assert county_rows(s, B) == b_before  # not rewritten, not even touched
    (touched, divs), = query(s, "SELECT touched, divisions FROM catalog.layer_versions WHERE version = 3")
    assert touched == [A] and {d: v["rows"] for d, v in divs.items()} == {A: 15, B: 16}
    # a key is a feature of its county: the same BSM in two counties is two features
    assert query(s, "SELECT count(*) FROM data.land_use WHERE _vto IS NULL AND _key = '00000002'")[0][0] == 2


def test_a_delivery_without_county_is_unassigned_and_bad_codes_are_refused_naming_the_field(db_settings, tmp_path):
    s = db_settings
    plain = land_use_gdf(4)  # no ZLDWDM at all: the unassigned partition, with a note
    r = ingest(s, "land_use", write_shp(plain, tmp_path / "plain"))
    assert r.divisions == ["000000"] and any("unassigned (000000)" in n for n in r.report["notes"])
    bad = county_gdf(B, 4)
    bad.loc[1, "ZLDWDM"] = "33A9021010010000000"
    with pytest.raises(InvalidInput, match=r"zldwdm does not begin with a 6-digit county code") as e:
        load(s, tmp_path, B, bad, "bad")
    assert e.value.details["report"]["errors"] == {"division": 1}
    mixed = county_gdf(B, 4)
    mixed.loc[2, "ZLDWDM"] = None
    with pytest.raises(InvalidInput, match="zldwdm is empty while other rows name their county"):
        load(s, tmp_path, B, mixed, "mixed")
    with pytest.raises(InvalidInput, match=f"zldwdm names county {B}, not --division {C}"):
        load(s, tmp_path, B, county_gdf(B, 4), "other", division=C)
    r = load(s, tmp_path, B, mixed, "named", division=B)  # --division places the rows with an empty field
    assert r.divisions == [B] and r.rows_total == 8
    with pytest.raises(InvalidInput, match="division: '3399' is not a 6-digit county code"):
        load(s, tmp_path, B, mixed, "short", division="3399")
    r = load(s, tmp_path, C, county_gdf(C, 4), "skip", on_error="skip", division=B, mode="upsert")
    assert r.report["errors"] == {"division": 4} and r.rows_total == 8  # skip: dropped, placed nowhere


def test_versions_diff_rollback_and_time_travel_per_county_and_for_the_province(db_settings, tmp_path):
    s = db_settings
    load(s, tmp_path, A)                                   # v1: A
    load(s, tmp_path, B)                                   # v2: B
    ga = county_gdf(A)
    ga.loc[[0, 1], "DLBM"] = "0702"
    load(s, tmp_path, A, ga, "v3")                         # v3: A changed
    gb = county_gdf(B, dx=2000).iloc[:10]
    load(s, tmp_path, B, gb, "v4")                         # v4: B shrinks
    assert [v["version"] for v in list_versions(s, "land_use", A)] == [1, 3]
    assert [(v["version"], v["current"]) for v in list_versions(s, "land_use", B)] == [(2, False), (4, True)]
    assert [v["touched"] for v in list_versions(s, "land_use")] == [[A], [B], [A], [B]]
    da = diff(s, "land_use", 1, 4, A)
    assert (da["changed"], da["removed"], da["added"], da["division"]) == (2, 0, 0, A)
    assert diff(s, "land_use", 1, 4, B)["added"] == 10  # B had no rows in v1
    province = diff(s, "land_use", 2, 4)
    assert (province["changed"], province["removed"]) == (2, 6)
    b_before = county_rows(s, B)
    rb = rollback(s, "land_use", 1, user="t", division=A)  # A as in v1; B stays as in v4
    assert (rb["version"], rb["changed"], rb["rows_total"]) == (5, 2, 26)
    assert county_rows(s, B) == b_before
    assert diff(s, "land_use", 1, 5, A)["changed"] == 0 and diff(s, "land_use", 4, 5, B)["changed"] == 0
    # time travel: the province as of v2, county B as of v2 (the layer version current then)
    asof = "_vfrom <= %s AND (_vto IS NULL OR _vto > %s)"
    assert query(s, f"SELECT count(*) FROM data.land_use WHERE {asof}", (2, 2))[0][0] == 32
    assert query(s, f"SELECT count(*) FROM data.land_use WHERE {asof} AND division = %s", (4, 4, B))[0][0] == 10
    rp = rollback(s, "land_use", 2, user="t")  # the province as in v2: both counties
    assert rp["rows_total"] == 32 and diff(s, "land_use", 2, rp["version"])["changed"] == 0


def _with_writer_inside_version(settings, division: str, rows_of, check) -> None:
    """Write a version of county ``division`` with the core's writer and call ``check`` while
    its transaction is open (after the rows are written, before the commit)."""
    spec = get_registry(settings).layer("land_use")
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(sql.SQL("CREATE TEMP TABLE new_rows AS {}").format(rows_of))
        conn.commit()
        seen = {}

        def after_insert(c, v):
            seen["pid"] = c.info.backend_pid
            check(c.info.backend_pid)
            return {}

        write_version(conn, spec, sql.Identifier("new_rows"), mode="replace", version_row={
            "source_name": "t", "source_checksum": None, "source_format": None, "created_by": "t", "report": {}},
            after_insert=after_insert, divisions=[division])
    assert seen


def _reader_never_waits(settings, division: str, writer_pid: int) -> None:
    """A reader of county ``division`` in another connection, with a lock timeout: it would fail
    if it had to wait; and the writer holds no lock on that county's partition."""
    with psycopg.connect(settings.database_url, autocommit=True) as r:
        r.execute("SET lock_timeout = '200ms'")
        for _ in range(6):  # past psycopg's prepare threshold: a prepared (generic) plan too
            n = r.execute("SELECT count(*) FROM data.land_use WHERE division = %s AND _vto IS NULL",
                          (division,)).fetchone()[0]
            assert n > 0
        assert r.execute("SELECT count(*) FROM data.land_use WHERE division = '339902' AND _vto IS NULL")
        held = r.execute("SELECT relation::regclass::text, mode FROM pg_locks WHERE pid = %s AND relation IS NOT NULL",
                         (writer_pid,)).fetchall()
    assert not [h for h in held if h[0] == f"data.land_use__{division}"], held


def test_a_reader_of_another_county_never_waits_for_an_ingest(db_settings, tmp_path):
    s = db_settings
    load(s, tmp_path, A)
    load(s, tmp_path, B)
    # a new version of A (rows retired and inserted in A's partition, transaction still open)
    changed = sql.SQL("SELECT * FROM data.land_use WHERE division = {} AND _vto IS NULL AND _key <> '00000003'").format(
        sql.Literal(A))
    _with_writer_inside_version(s, A, changed, lambda pid: _reader_never_waits(s, B, pid))
    # a new county C: its partition built beside and attached, transaction still open
    new = sql.SQL("SELECT _key, _hash, {} AS division, dlbm, bsm, dlmc, geom, geom_3857, _area_m2 FROM data.land_use "
                  "WHERE division = {} AND _vto IS NULL").format(sql.Literal(C), sql.Literal(A))

    def during_attach(pid: int) -> None:
        _reader_never_waits(s, B, pid)
        with psycopg.connect(s.database_url, autocommit=True) as r:  # the province too: ATTACH blocks no reader
            r.execute("SET lock_timeout = '200ms'")
            assert r.execute("SELECT count(*) FROM data.land_use WHERE _vto IS NULL").fetchone()[0] == 31
    _with_writer_inside_version(s, C, _all_columns(s, new), during_attach)
    assert partitions(s)[-1] == f"land_use__{C}"


def _all_columns(settings, select: sql.Composable) -> sql.Composable:
    """``select`` padded with the layer's other attribute columns (NULL), as a staging table has them."""
    spec = get_registry(settings).layer("land_use")
    named = {"dlbm", "bsm", "dlmc"}
    extra = sql.SQL("").join(sql.SQL(", NULL::{} AS {}").format(sql.SQL(a.pg_type), sql.Identifier(a.name))
                             for a in spec.attributes if a.name not in named)
    return sql.SQL("SELECT * {} FROM ({}) x").format(extra, select)


KILLER = textwrap.dedent("""
    import os, signal, sys
    import psycopg
    from psycopg import sql
    from geobase.catalog.versions import write_version
    from geobase.ingest import pipeline
    from geobase.settings import Settings
    from geobase.specs import get_registry
    pipeline.DIRECT_MIN_ROWS = 0
    settings = Settings(database_url=sys.argv[1], data_dir=sys.argv[2])

    def die(*_args):
        os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[3] == "inside_write":  # killed inside the version's transaction, the rows written
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("CREATE TEMP TABLE r AS SELECT * FROM data.land_use WHERE division = %s AND _vto IS NULL "
                         "AND _key <> '00000001'", (sys.argv[4],))
            conn.execute("UPDATE r SET _hash = 'x' || _hash")
            conn.commit()
            write_version(conn, get_registry(settings).layer("land_use"), sql.Identifier("r"), mode="replace",
                          version_row={}, after_insert=die, divisions=[sys.argv[4]])
    else:  # killed in the middle of the COPY (a new county: inside the direct load's transaction)
        pipeline.ingest(settings, "land_use", sys.argv[3], coverage=False, progress=die,
                        division=sys.argv[4] if len(sys.argv) > 4 else None)
""")


@pytest.mark.parametrize("case", ["replace", "new_county", "inside_write"])
def test_a_killed_ingest_of_a_county_leaves_its_previous_version_and_the_others_untouched(db_settings, tmp_path, case):
    s = db_settings
    load(s, tmp_path, A)
    load(s, tmp_path, B)
    before = {d: county_rows(s, d) for d in (A, B)}
    versions = query(s, "SELECT count(*) FROM catalog.layer_versions")[0][0]
    division = A if case == "replace" else C
    gdf = county_gdf(division, 16, dx=5000)
    gdf["DLBM"] = "0702"
    shp = write_shp(gdf, tmp_path / "killed")
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    args = [sys.executable, str(script), s.database_url, str(s.data_dir)]
    args += {"replace": [str(shp)], "new_county": [str(shp), C], "inside_write": ["inside_write", A]}[case]
    proc = subprocess.run(args, cwd=str(REPO), capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert {d: county_rows(s, d) for d in (A, B)} == before
    assert query(s, "SELECT count(*) FROM catalog.layer_versions")[0][0] == versions
    assert partitions(s) == ["land_use__000000", f"land_use__{A}", f"land_use__{B}"]
    assert query(s, "SELECT count(*) FROM pg_tables WHERE schemaname = 'data' AND position('__load_' in tablename) > 0"
                 )[0][0] == 0
    r = load(s, tmp_path, division, gdf, "again")  # the same delivery goes in afterwards
    assert r.divisions == [division] and r.version == versions + 1


def _explain(settings, q: sql.Composable) -> str:
    with psycopg.connect(settings.database_url) as conn:
        return "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN {}").format(q)).fetchall())


def _items_sql(settings, **params) -> sql.Composable:
    """The page SQL the items endpoint runs for ``params`` (the same build_query)."""
    from geobase.catalog.state import layer_state
    from geobase.features.build import build_query
    from geobase.features.params import ItemsParams

    async def build():
        async with await psycopg.AsyncConnection.connect(settings.database_url) as aconn:
            state = await layer_state(aconn, get_registry(settings).layer("land_use"))
        return build_query(state, set(), ItemsParams(**params), default_limit=10, max_limit=100).page_sql()
    return asyncio.run(build())


def test_a_division_filter_scans_that_countys_partition_only(db_settings, tmp_path, live_server):
    s = db_settings
    for d in (A, B, C):
        load(s, tmp_path, d)
    for q in (_items_sql(s, extra={"division": B}), _items_sql(s, filter=f"division = '{B}'"),
              _items_sql(s, filter=f"division='{B}' AND dlbm = '0101'", datetime="2020-01-01/..")):
        plan = _explain(s, q)
        assert f"land_use__{B}" in plan and f"land_use__{A}" not in plan and f"land_use__{C}" not in plan, plan
        assert "land_use__000000" not in plan
    both = _explain(s, _items_sql(s, extra={"division": f"{A},{C}"}))
    assert f"land_use__{A}" in both and f"land_use__{C}" in both and f"land_use__{B}" not in both
    from geobase.analysis.tabulate import aoi_divisions, tabulate_sql

    spec = get_registry(s).layer("land_use")
    tab = sql.SQL(tabulate_sql(spec, "dlbm", spec, "dlbm", with_aoi=True, divisions=aoi_divisions(f"{B}001"))
                  .as_string(None).replace("%(aoi)s", "ST_AsBinary(ST_MakeEnvelope(117, 29, 118, 30, 4490))"))
    plan = _explain(s, tab)
    assert f"land_use__{B}" in plan and f"land_use__{A}" not in plan and f"land_use__{C}" not in plan, plan
    srv = live_server(s)
    with srv.client() as http:
        fc = http.get("/collections/land_use/items", params={"division": B, "limit": 100}).json()
        assert len(fc["features"]) == 16
        fc = http.get("/collections/land_use/items", params={"filter": f"division = '{C}' AND dlbm = '0101'"}).json()
        assert len(fc["features"]) == 4
        r = http.get("/collections/land_use/items", params={"division": "33"})
        assert r.status_code == 400 and "6-digit county code" in r.text
        allp = http.get("/collections/land_use/items", params={"limit": 100}).json()
        assert len(allp["features"]) == 48  # the province: every county


def test_a_table_made_before_partitions_is_migrated_with_every_row(db_settings, tmp_path):
    s = db_settings
    load(s, tmp_path, A)
    ga = county_gdf(A)
    ga.loc[0, "DLBM"] = "0702"
    load(s, tmp_path, A, ga, "v2")
    plain = land_use_gdf(3)
    plain["geometry"] = plain.geometry.translate(xoff=9000)
    plain["BSM"] = ["X1", "X2", "X3"]
    before = query(s, "SELECT _rid, _key, _hash, _vfrom, _vto, division, dlbm FROM data.land_use ORDER BY _rid")
    with psycopg.connect(s.database_url) as conn:  # the layout of an earlier geobase: one plain table
        conn.execute("CREATE TABLE data.old_copy AS SELECT * FROM data.land_use")
        conn.execute("DROP TABLE data.land_use")
        conn.execute("ALTER TABLE data.old_copy DROP COLUMN division")
        conn.execute("ALTER TABLE data.old_copy ADD COLUMN legacy_note text DEFAULT 'kept'")
        conn.execute("ALTER TABLE data.old_copy RENAME TO land_use")
        conn.execute("ALTER TABLE data.land_use ALTER COLUMN _rid SET NOT NULL")
        conn.execute("ALTER TABLE data.land_use ALTER COLUMN _rid ADD GENERATED ALWAYS AS IDENTITY")
        conn.execute("ALTER TABLE data.land_use ADD PRIMARY KEY (_rid)")
        conn.execute("CREATE UNIQUE INDEX land_use_cur_key ON data.land_use (_key) WHERE _vto IS NULL")
        conn.execute("UPDATE data.land_use SET zldwdm = NULL WHERE _key = '00000016'")  # no county: unassigned
        conn.commit()
        sync_catalog(conn, s)
        conn.commit()
    after = query(s, "SELECT _rid, _key, _hash, _vfrom, _vto, division, dlbm FROM data.land_use ORDER BY _rid")
    assert [r[:5] + r[6:] for r in after] == [r[:5] + r[6:] for r in before]
    assert {r[5] for r in after if r[1] == "00000016"} == {"000000"} and {r[5] for r in after} == {A, "000000"}
    assert query(s, "SELECT DISTINCT legacy_note FROM data.land_use") == [("kept",)]
    assert partitions(s) == ["land_use__000000", f"land_use__{A}"]
    assert query(s, "SELECT relkind FROM pg_class WHERE oid = 'data.land_use'::regclass")[0][0] == "p"
    r = ingest(s, "land_use", write_shp(plain, tmp_path / "plain"), mode="append")  # and it keeps working
    assert r.added == 3 and query(s, "SELECT max(_rid) > %s FROM data.land_use", (before[-1][0],))[0][0]


def test_cli_ingest_and_versions_take_a_division(db_settings, tmp_path):
    s = db_settings
    gdf = land_use_gdf(4)  # no ZLDWDM: --division places it
    shp = write_shp(gdf, tmp_path / "d")
    env = dict(os.environ, GEOBASE_DATABASE_URL=s.database_url, GEOBASE_DATA_DIR=str(s.data_dir))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "geobase.cli", *args], env=env, capture_output=True, text=True,
                              check=False,
                              cwd=str(REPO))
    out = cli("ingest", "land_use", str(shp), "--division", C, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["divisions"] == [C]
    out = cli("layers", "versions", "land_use", "--division", C, "--json")
    assert [v["touched"] for v in json.loads(out.stdout)] == [[C]]
    out = cli("ingest", "land_use", str(shp), "--division", "12")
    assert out.returncode == 2 and "6-digit county code" in out.stderr + out.stdout


def test_county_states_name_each_countys_last_version_and_extent(db_settings, tmp_path):
    from geobase.catalog.divisions import county_states

    s = db_settings
    load(s, tmp_path, A)
    load(s, tmp_path, B)
    ga = county_gdf(A)
    ga.loc[0, "DLBM"] = "0702"
    load(s, tmp_path, A, ga, "v3")

    async def read():
        async with await psycopg.AsyncConnection.connect(s.database_url) as aconn:
            return await county_states(aconn, "land_use")
    states = asyncio.run(read())
    assert {d: v for d, (v, _e) in states.items()} == {A: 3, B: 2}
    assert states[A][1][2] < states[B][1][0]  # A lies west of B
    with pytest.raises(InvalidInput, match="already county 339902's current version"):
        rollback(s, "land_use", 2, division=B)


def test_http_ingest_takes_a_division(db_settings, live_server, tmp_path):
    import zipfile

    from test_ingest_jobs import _key, _wait

    s = db_settings
    shp = write_shp(land_use_gdf(4), tmp_path / "d")  # no ZLDWDM: the form's division places it
    z = tmp_path / "DLTB.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for ext in ("shp", "shx", "dbf", "prj"):
            zf.write(shp.with_suffix(f".{ext}"), f"DLTB.{ext}")
    steward = {"X-API-Key": _key(s, "steward", "natural_resources")}
    srv = live_server(s)
    with srv.client() as c:
        def post(division: str):
            with open(z, "rb") as fh:
                return c.post("/admin/layers/land_use/ingest", headers=steward, files={"file": ("DLTB.zip", fh)},
                              data={"division": division})
        r = post("12345x")  # refused before the upload is kept
        assert r.status_code == 400 and "6-digit county code" in r.text
        assert partitions(s) == ["land_use__000000"]
        r = post(C)
        assert r.status_code == 202, r.text
        job = _wait(c, r.headers["Location"], steward)
    assert job["status"] == "successful", job
    assert partitions(s) == ["land_use__000000", f"land_use__{C}"]

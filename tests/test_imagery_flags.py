"""Imagery flags and derived layers on the generator's series: the sample county's three-date,
six-band imagery (``sample_data/county/imagery_*.tif``, ingested the way ``geobase demo`` does)
over its land use, with the farmland parcels the generator planted idle or converted (their BSM
only in the manifest, which the rules never read).

* the rule set ``layers/rules/imagery_flags.yaml`` flags exactly the planted parcels, each with
  its flag, and nothing else; every flag's season means equal numpy on the same pixels of the
  stored COGs (cell-centre rule, nodata out);
* stored, the flags and the zonal statistics are versions of the derived layers
  ``parcel_flags`` / ``parcel_imagery``: in the catalog, ``/collections`` and tiles, their
  version naming the parcel layer's version and the scenes; re-running on the same inputs writes
  nothing, a new index makes a new version carrying the others;
* the flag layer is internal (a public caller gets 404) and only its department's editors may
  write it;
* a SIGKILL of the server while the flag job writes leaves the previous version served and no
  half version (tests/test_editing_kill.py's way of holding a commit mid-way)."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import numpy as np
import psycopg
import pytest
from conftest import LiveServer, SAMPLE, create_database, drop_database, settings_for, tile_xy
from editing_common import FAST, layer_state, make_editing_keys, q


def NDVI(d):
    return (d[3] - d[2]) / (d[3] + d[2])


def NDBI(d):
    return (d[4] - d[3]) / (d[4] + d[3])


@pytest.fixture(scope="module")
def img(pg_server, county_template, tmp_path_factory):
    """(settings, tokens, manifest imagery section) over a private copy of the county + series."""
    from geobase.imagery.sample import ingest_sample_imagery

    template, _ = county_template
    name = f"gb_imgflags_{int(time.time() * 1000) % 10**9}"
    settings = settings_for(create_database(pg_server, name, template), tmp_path_factory.mktemp("imgflags"))
    assert ingest_sample_imagery(settings, SAMPLE, echo=lambda *a: None) == [
        "imagery_20260418", "imagery_20260716", "imagery_20260918"]
    assert ingest_sample_imagery(settings, SAMPLE, echo=lambda *a: None) == []  # kept: nothing again
    section = json.loads((SAMPLE / "manifest.json").read_text(encoding="utf-8"))["imagery"]
    yield settings, make_editing_keys(settings), section
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def srv(img):
    """One server for the tests that do not kill it."""
    server = LiveServer(img[0], env=FAST)
    yield server
    server.stop()


def _tile(settings, layer: str, z: int) -> str:
    """``z/x/y`` of the Web Mercator tile holding the first current row of ``layer``."""

    lon, lat = q(settings, f"SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_PointOnSurface(geom) c FROM data.{layer} "
                           "WHERE _vto IS NULL ORDER BY _key LIMIT 1) p")[0]
    x, y = tile_xy(lon, lat, z)
    return f"{z}/{x}/{y}"


def _h(tokens, label):
    return {"Authorization": f"Bearer {tokens[label]}"}


def _numpy_season(settings, key: str, fn) -> tuple[float, dict]:
    """The index's season mean of one parcel from the stored COGs by numpy, and per scene its
    statistics: the pixels whose centre is in the parcel and whose every band is valid."""
    import rasterio
    import shapely
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom

    wkt = q(settings, "SELECT ST_AsText(geom) FROM data.land_use WHERE _key = %s AND _vto IS NULL", (key,))[0][0]
    geom = shapely.geometry.mapping(shapely.from_wkt(wkt))
    per_scene = {}
    for sid, f in q(settings, "SELECT id, file FROM catalog.imagery_items WHERE collection = 'county_imagery'"):
        with rasterio.open(settings.data_path / f) as src:
            inside = ~geometry_mask([transform_geom("EPSG:4490", src.crs, geom)], out_shape=(src.height, src.width),
                                    transform=src.transform)
            data = src.read().astype("float64")
            valid = inside & (src.read_masks() > 0).all(axis=0)
            if valid.sum() >= 4 and valid.sum() / inside.sum() >= 0.5:
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = fn(data)[valid]
                per_scene[sid] = {"mean": v.mean(), "median": np.median(v), "std": v.std(),
                                  "valid_share": valid.sum() / inside.sum(), "count": int(valid.sum())}
    return sum(s["mean"] for s in per_scene.values()) / len(per_scene), per_scene


def test_the_rules_flag_exactly_the_planted_parcels_and_store_them(img, srv):
    settings, tokens, section = img
    with srv.client() as c:
        r = c.post("/analysis/imagery-flags", json={"collection": "county_imagery", "store": True},
                   headers=_h(tokens, "nr:editor"))
        assert r.status_code == 200, r.text + srv.logs()[-3000:]
        rep = r.json()
        again = c.post("/analysis/imagery-flags", json={"collection": "county_imagery", "store": True},
                       headers=_h(tokens, "nr:editor")).json()
        public = c.post("/analysis/imagery-flags", json={"collection": "county_imagery", "store": True})
        other = c.post("/analysis/imagery-flags", json={"collection": "county_imagery", "store": True},
                       headers=_h(tokens, "forestry:editor"))
        items = c.get("/collections/parcel_flags/items", headers=_h(tokens, "nr:viewer")).json()
        hidden = c.get("/collections/parcel_flags/items")
        listed = [col["id"] for col in c.get("/collections", headers=_h(tokens, "nr:viewer")).json()["collections"]]
        tile = c.get(f"/tiles/parcel_flags/{_tile(settings, 'parcel_flags', 14)}.mvt",
                     headers=_h(tokens, "nr:viewer"))
    flagged = {f["key"]: f["flag"] for f in rep["flags"]}
    assert flagged == {**{k: "idle" for k in section["planted_idle"]},
                       **{k: "converted" for k in section["planted_converted"]}}
    assert rep["summary"] == {"converted": 3, "idle": 3} and len(rep["scenes"]) == 3
    assert rep["derived"]["written"] and rep["derived"]["rows_total"] == 6
    for f in rep["flags"]:  # the statistics behind each flag equal numpy on the same pixels
        for name, fn in (("ndvi", NDVI), ("ndbi", NDBI)):
            season, per_scene = _numpy_season(settings, f["key"], fn)
            got = f["values"][name]
            assert got["mean"] == pytest.approx(season, abs=1e-12)
            assert sorted(got["scenes"]) == sorted(per_scene)
            for sid, want in per_scene.items():
                assert got["scenes"][sid]["count"] == want["count"]
                for k in ("mean", "median", "std", "valid_share"):
                    assert got["scenes"][sid][k] == pytest.approx(float(want[k]), abs=1e-12), (f["key"], sid, k)
    assert again["derived"] == {"layer": "parcel_flags", "version": rep["derived"]["version"], "written": False,
                                "reason": "the current version was made from the same inputs"}
    assert public.status_code == 401 and other.status_code == 403
    assert hidden.status_code == 404 and "parcel_flags" in listed
    assert tile.status_code == 200 and tile.content
    got = {f["properties"]["parcel"]: f["properties"] for f in items["features"]}
    assert {k: p["flag"] for k, p in got.items()} == flagged
    (meta,) = q(settings, "SELECT metadata FROM catalog.layer_versions WHERE layer = 'parcel_flags'")[0]
    inputs = meta["derived"]["inputs"]
    assert inputs["layer"] == "land_use" and inputs["layer_version"] == rep["versions"]["land_use"]["version"]
    assert [s["datetime"][:10] for s in inputs["scenes"]] == ["2026-09-18", "2026-07-16", "2026-04-18"]


def test_nothing_else_is_near_the_thresholds(img, srv):
    """Every other farmland parcel's July NDVI is well above the idle threshold (the rules'
    margin is real, not luck of the noise)."""
    settings, _, section = img
    with srv.client() as c:
        r = c.post("/analysis/imagery-zonal", json={"collection": "county_imagery",
                                                    "datetime": "2026-07-01/2026-07-31"})
    assert r.status_code == 200, r.text
    planted = set(section["planted_idle"]) | set(section["planted_converted"])
    farm = {k for (k,) in q(settings, "SELECT _key FROM data.land_use WHERE _vto IS NULL AND dlbm LIKE '01%%'")}
    low = {p["key"] for p in r.json()["parcels"] if p["key"] in farm and p["count"] >= 4 and p["mean"] < 0.5}
    assert low == planted


def test_zonal_statistics_stored_as_a_derived_layer(img, srv):
    settings, tokens, _ = img
    h = _h(tokens, "nr:editor")
    with srv.client() as c:
        a = c.post("/analysis/imagery-zonal", json={"collection": "county_imagery", "store": True}, headers=h)
        assert a.status_code == 200, a.text
        b = c.post("/analysis/imagery-zonal", json={"collection": "county_imagery", "store": True,
                                                    "expression": "(b5-b4)/(b5+b4)", "name": "ndbi"}, headers=h)
        assert b.status_code == 200, b.text
        noname = c.post("/analysis/imagery-zonal", json={"collection": "county_imagery", "store": True,
                                                         "expression": "b4"}, headers=h)
        col = c.get("/collections/parcel_imagery").json()
        page = c.get("/collections/parcel_imagery/items", params={"idx": "ndvi", "limit": 5}).json()
        tile = c.get(f"/tiles/parcel_imagery/{_tile(settings, 'parcel_imagery', 14)}.mvt")
    va, vb = a.json()["derived"], b.json()["derived"]
    assert va["written"] and vb["written"] and vb["version"] == va["version"] + 1
    n = a.json()["parcels_checked"]
    assert va["rows_total"] == n and vb["rows_total"] == 2 * n and vb["added"] == n and vb["removed"] == 0
    assert noname.status_code == 400 and noname.json()["parameter"] == "name"
    assert col["id"] == "parcel_imagery" and page["features"] and tile.status_code == 200 and tile.content
    meta = q(settings, "SELECT metadata FROM catalog.layer_versions WHERE layer = 'parcel_imagery' "
                       "AND version = %s", (vb["version"],))[0][0]["derived"]["inputs"]["indices"]
    assert sorted(meta) == ["ndbi", "ndvi"] and meta["ndbi"]["expression"] == "(b5-b4)/(b5+b4)"
    assert meta["ndvi"]["scenes"] and meta["ndvi"]["layer_version"] >= 1
    by_key = {f["properties"]["parcel"]: f["properties"] for f in page["features"]}
    rep = {p["key"]: p for p in a.json()["parcels"]}
    for key, p in by_key.items():
        assert p["mean"] == pytest.approx(rep[key]["mean"]) and p["valid_pixels"] == rep[key]["count"]


def test_gdal_reads_the_derived_layers_with_the_databases_values(img, srv, tmp_path):
    """The derived layers through real clients, as the interop tests read every loaded layer:
    Debian 12's ogr2ogr (GDAL 3.6) copies each to a GeoPackage whose field types follow the spec
    (means are reals, counts integers) and whose values equal the database's, a date-time as the
    same instant with its time zone; the PyPI GDAL types the fields the same way. Runs after the
    tests above stored both layers."""
    import datetime as dt

    import pyogrio
    from interop.clients import (DERIVED_LAYERS, OGR2OGR_36, GPKG_TYPES, assert_same_values, db_rows, gpkg_columns,
                                 gpkg_rows, output_types, run_ogr2ogr, spec_of)
    from interop.test_interop_gdal import OGR_TYPES

    settings, tokens, _ = img
    types_ok = {**OGR_TYPES, "datetime": {"OFTDateTime"}, "date": {"OFTDate"}}
    assert sorted(DERIVED_LAYERS) == ["parcel_flags", "parcel_imagery"]
    headers = tmp_path / "headers.txt"
    headers.write_text(f"X-API-Key: {tokens['admin']}\n")
    for layer in DERIVED_LAYERS:
        spec = spec_of(layer)
        types = output_types(spec)
        want = db_rows(settings.database_url, spec)
        assert want, layer  # stored by the tests above
        out = tmp_path / f"{layer}.gpkg"
        proc = run_ogr2ogr(OGR2OGR_36, ["-f", "GPKG", str(out), f"OAPIF:{srv.url}", layer], key=tokens["admin"])
        assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr
        cols = gpkg_columns(out, layer)
        wrong = {n: (t, cols.get(n)) for n, t in types.items() if cols.get(n) not in GPKG_TYPES[t]}
        assert not wrong, (layer, wrong)
        got = gpkg_rows(out, layer, list(types))
        when = [n for n, t in types.items() if t == "datetime"]
        for key, row in want.items():  # a date-time: the same instant, with a time zone
            for n in when:
                g = dt.datetime.fromisoformat(got[key][n]) if got[key][n] is not None else None
                assert (g is None and row[n] is None) or (g.tzinfo is not None and g == row[n]), (layer, key, n, g)
        assert_same_values({k: {n: v for n, v in r.items() if n not in when} for k, r in got.items()},
                           {k: {n: v for n, v in r.items() if n not in when} for k, r in want.items()},
                           f"GDAL 3.6 ogr2ogr: {layer}")
        pyogrio.set_gdal_config_options({"GDAL_HTTP_HEADER_FILE": str(headers)})
        try:
            info = pyogrio.read_info(f"OAPIF:{srv.url}", layer=layer)
        finally:
            pyogrio.set_gdal_config_options({"GDAL_HTTP_HEADER_FILE": None})
        ogr_types = dict(zip(info["fields"], info["ogr_types"]))
        wrong = {n: (t, ogr_types.get(n)) for n, t in types.items() if ogr_types.get(n) not in types_ok[t]}
        assert not wrong, (layer, wrong)



def test_part5_schemas_of_the_derived_layers_type_their_date_times(img, srv):
    """The interop Part 5 check (tests/interop/test_interop_schema.py) on the derived layers,
    the only ones with date-times: ``{"type": "string", "format": "date-time"}`` in both
    schemas, every feature valid with formats checked, each date-time the database's instant.
    Runs after the tests above stored both layers."""
    from interop.clients import DERIVED_LAYERS
    from interop.test_interop_schema import check_part5

    _, tokens, _ = img
    for layer in DERIVED_LAYERS:
        check_part5(srv, layer, {"X-API-Key": tokens["admin"]}, pages=True)
    with srv.client() as c:
        doc = c.get("/collections/parcel_flags/schema", headers={"X-API-Key": tokens["admin"]}).json()
    assert doc["properties"]["first_date"]["type"] == "string"
    assert doc["properties"]["first_date"]["format"] == "date-time"

def _blocked_by(settings, pid: int) -> list[str]:
    """The statements waiting for a lock the backend ``pid`` holds."""
    return [r[0] for r in q(settings, "SELECT query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                            (pid,))]


def test_sigkill_while_the_flag_job_writes_leaves_the_previous_version(img):
    settings, tokens, _ = img
    srv = LiveServer(settings, env=FAST)
    h = _h(tokens, "nr:editor")
    with srv.client() as c:  # a previous flag version to keep serving (or the same one again)
        first = c.post("/analysis/imagery-flags", json={"collection": "county_imagery", "store": True}, headers=h)
        assert first.status_code == 200, first.text
    before = layer_state(settings, "parcel_flags")
    blocker = psycopg.connect(settings.database_url)
    blocker.execute("SELECT 1 FROM catalog.layers WHERE name = 'parcel_flags' FOR UPDATE")
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["r"] = httpx.post(f"{srv.url}/analysis/imagery-flags", headers=h, timeout=120, json={
                "collection": "county_imagery", "store": True, "datetime": "2026-06-01/2026-12-31"})
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 120
    while not (blocked := _blocked_by(settings, blocker.info.backend_pid)):  # rows written, the version row waiting
        assert time.monotonic() < deadline and t.is_alive(), (outcome, srv.logs()[-2000:])
        time.sleep(0.1)
    # the version's row (its key on catalog.layers waits for the blocker): the rows are written
    assert blocked[0].lstrip().startswith(("INSERT INTO catalog.layer_versions", "UPDATE catalog.layers")), blocked
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(30)
    t.join(30)
    blocker.rollback()
    blocker.close()
    srv.stop()
    assert "error" in outcome
    after = layer_state(settings, "parcel_flags")
    assert after == before  # same current version, same versions, same rows: no half version
    srv2 = LiveServer(settings, env=FAST)
    try:
        with srv2.client() as c:
            items = c.get("/collections/parcel_flags/items", headers=h).json()
            redo = c.post("/analysis/imagery-flags", headers=h, json={
                "collection": "county_imagery", "store": True, "datetime": "2026-06-01/2026-12-31"})
    finally:
        srv2.stop()
    assert len(items["features"]) == 6
    assert redo.status_code == 200 and redo.json()["derived"]["version"] == before[0] + 1

"""Attribute- and geometry-level desensitisation (issue 19 item 3): the rules of a layer's
openness class (mask a field, round coordinates to N metres, generalise to the township, drop)
apply to every output an outside caller (no key) gets — items in GeoJSON read by GDAL, CSV,
FlatGeobuf, GeoParquet, single features, the change feed, vector tiles, full downloads and
analyses — and no filter, sort or property selection can be used as an oracle of a clear value.
Each check compares with an admin's key (inside: the data as stored), so each fails without the
rule. Real server, real clients (ogrinfo, pyogrio, pyarrow, mapbox-vector-tile, csv)."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import mapbox_vector_tile
import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for, tile_xy

REPO = Path(__file__).resolve().parents[1]
MASK_RULES = """
desensitise:
  open:
    - {attribute: zldwmc, action: mask}
    - {attribute: tbbh, action: mask, fixed: "***"}
"""
ROUND_RULES = """
desensitise:
  open:
    - {action: round, metres: 200}
"""
TOWNSHIP_RULES = """
desensitise:
  open:
    - {action: township, attribute: zldwdm, digits: 9}
"""
LIMITS = {"GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "10000", "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "10000"}


def _layers_dir(root: Path, rules: dict[str, str]) -> Path:
    """A copy of the shipped specs with ``rules`` appended to the named layers' specs."""
    out = root / f"layers-{uuid.uuid4().hex[:6]}"
    shutil.copytree(REPO / "layers", out)
    for layer, text in rules.items():
        path = out / f"{layer}.yaml"
        path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def desens(pg_server, county_template, tmp_path_factory):
    """The county, an admin key, and a server per rule set (started on first use)."""
    from geobase import keys

    name, data_dir = county_template
    db = f"gb_desens_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, db, name)
    with psycopg.connect(url, autocommit=True) as conn:
        admin = keys.create_key(conn, name="desens-admin", role="admin", department=None).token
    tmp = tmp_path_factory.mktemp("desens")
    servers: dict[str, LiveServer] = {}

    def server(which: str) -> LiveServer:
        if which not in servers:
            rules = {"mask": {"land_use": MASK_RULES}, "round": {"water_areas": ROUND_RULES},
                     "township": {"land_use": TOWNSHIP_RULES}}[which]
            env = {**LIMITS, "GEOBASE_LAYERS_DIR": str(_layers_dir(tmp, rules))}
            servers[which] = LiveServer(settings_for(url, data_dir), env=env)
        return servers[which]

    yield url, {"X-API-Key": admin}, server
    for srv in servers.values():
        srv.stop()
    drop_database(pg_server, db)


def _masked(value: str) -> str:
    return value[:1] + "**" if len(value) > 1 else "**"


def _clear_names(admin) -> dict[str, dict]:
    feats = admin.get("/collections/land_use/items", params={"limit": 200, "sortby": "bsm"}).json()["features"]
    return {f["id"]: f["properties"] for f in feats}


def test_mask_items_csv_fgb_parquet_and_gdal(desens, tmp_path):
    _, admin_h, server = desens
    srv = server("mask")
    with srv.client() as anon, srv.client(headers=admin_h) as admin:
        clear = _clear_names(admin)
        assert any(len(p["zldwmc"] or "") > 1 for p in clear.values())
        page = anon.get("/collections/land_use/items", params={"limit": 200, "sortby": "bsm"})
        assert page.status_code == 200, page.text
        for f in page.json()["features"]:
            c = clear[f["id"]]
            assert f["properties"]["zldwmc"] == (_masked(c["zldwmc"]) if c["zldwmc"] else None)
            assert f["properties"]["tbbh"] == ("***" if c["tbbh"] is not None else None)
            assert f["properties"]["dlbm"] == c["dlbm"]   # what no rule names stays as it is
        values = {c["zldwmc"] for c in clear.values() if c["zldwmc"]}
        # one feature, the change feed
        fid = next(iter(clear))
        one = anon.get(f"/collections/land_use/items/{fid}").json()
        assert one["properties"]["zldwmc"] == _masked(clear[fid]["zldwmc"])
        changes = anon.get("/collections/land_use/changes", params={"from": 0, "limit": 100}).json()["features"]
        assert changes and all(f["properties"]["zldwmc"] not in values for f in changes)
        # CSV (Excel), FlatGeobuf, GeoParquet
        text = anon.get("/collections/land_use/items", params={"f": "csv", "limit": 200}).text.lstrip("\ufeff")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows and all(r["zldwmc"] not in values for r in rows) and {r["tbbh"] for r in rows} <= {"***", ""}
        import pyarrow.parquet as pq
        import pyogrio

        fgb = tmp_path / "lu.fgb"
        fgb.write_bytes(anon.get("/collections/land_use/items", params={"f": "fgb", "limit": 200}).content)
        df = pyogrio.read_dataframe(fgb)
        assert len(df) == 200 and not set(df["zldwmc"].dropna()) & values
        pqf = tmp_path / "lu.parquet"
        pqf.write_bytes(anon.get("/collections/land_use/items", params={"f": "parquet", "limit": 200}).content)
        col = pq.read_table(pqf).column("zldwmc").to_pylist()
        assert col and not set(col) & values and all(v is None or v.endswith("**") for v in col)
        # GDAL reads the items endpoint itself
        out = subprocess.run(["ogrinfo", "-ro", "-al", "-q", "-fields=YES", "-geom=NO",
                              f"{srv.url}/collections/land_use/items?f=json&limit=50&sortby=bsm"],
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        shown = set(re.findall(r"zldwmc \(String\) = (.*)", out.stdout))
        assert shown and all(v.endswith("**") for v in shown) and not shown & values
        admin_out = subprocess.run(["ogrinfo", "-ro", "-al", "-q", "-geom=NO", "--config", "GDAL_HTTP_HEADERS",
                                    f"X-API-Key: {admin_h['X-API-Key']}",
                                    f"{srv.url}/collections/land_use/items?f=json&limit=50&sortby=bsm"],
                                   capture_output=True, text=True, timeout=120, check=False)
        assert set(re.findall(r"zldwmc \(String\) = (.*)", admin_out.stdout)) & values   # the clear names exist


def test_mask_no_oracle(desens):
    """A masked field cannot be filtered, sorted, selected or listed: 400 naming it (an equality
    filter answering "1 match" would give the clear name back)."""
    _, admin_h, server = desens
    srv = server("mask")
    with srv.client() as anon, srv.client(headers=admin_h) as admin:
        name = next(p["zldwmc"] for p in _clear_names(admin).values() if p["zldwmc"])
        for params in ({"zldwmc": name}, {"filter": f"zldwmc = '{name}'"}, {"filter": f"zldwmc LIKE '{name[:1]}%'"},
                       {"sortby": "zldwmc"}, {"properties": "zldwmc"}, {"sortby": "-tbbh"}):
            r = anon.get("/collections/land_use/items", params=params)
            assert r.status_code == 400, (params, r.text)
            assert "zldwmc" in r.text or "tbbh" in r.text, (params, r.text)
            assert admin.get("/collections/land_use/items", params=params).status_code == 200, params
        assert "zldwmc" not in anon.get("/collections/land_use/queryables").json()["properties"]
        r = anon.post("/processes/tabulate/execution",
                      json={"inputs": {"layer_a": "land_use", "layer_b": "planning_zones", "class_a": "zldwmc"}})
        assert r.status_code == 400 and "zldwmc" in r.text, r.text


def test_mask_tiles_downloads_analyses(desens, tmp_path):
    _, admin_h, server = desens
    srv = server("mask")
    with srv.client() as anon, srv.client(headers=admin_h) as admin:
        feats = admin.get("/collections/land_use/items", params={"limit": 20, "sortby": "bsm"}).json()["features"]
        f = next(x for x in feats if x["properties"]["zldwmc"])
        ring = f["geometry"]["coordinates"][0][0]
        lon, lat = sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)
        x, y = tile_xy(lon, lat, 15)
        tiles = {}
        for who, c in (("anon", anon), ("admin", admin)):
            r = c.get(f"/tiles/land_use/15/{x}/{y}.mvt")
            assert r.status_code == 200, r.text
            tiles[who] = {ft["properties"].get("zldwmc") for ft in mapbox_vector_tile.decode(r.content)["land_use"]["features"]}
        assert f["properties"]["zldwmc"] in tiles["admin"]
        assert not tiles["anon"] & tiles["admin"] - {None} and all(v.endswith("**") for v in tiles["anon"] - {None})
        # the one map too
        om = mapbox_vector_tile.decode(anon.get(f"/tiles/onemap/15/{x}/{y}.mvt").content)
        assert {ft["properties"].get("zldwmc") for ft in om["land_use"]["features"]} <= tiles["anon"]
        # the full download (prepared per view)
        import pyogrio

        values = {p["zldwmc"] for p in _clear_names(admin).values() if p["zldwmc"]}
        gpkg = tmp_path / "full.gpkg"
        r = anon.get("/catalog/items/land_use/download", params={"f": "gpkg"})
        assert r.status_code == 200, r.text
        gpkg.write_bytes(r.content)
        df = pyogrio.read_dataframe(gpkg)
        assert len(df) > 1000 and not set(df["zldwmc"].dropna()) & values
        assert df["zldwmc"].dropna().str.endswith("**").all()
        # a site check over the feature: the admin's report names the clear value, the public's never
        d = 0.0005
        site = {"type": "Polygon", "coordinates": [[[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d],
                                                    [lon - d, lat + d], [lon - d, lat - d]]]}
        reports = {who: c.post("/processes/site-check/execution", json={"inputs": {"geometry": site}})
                   for who, c in (("anon", anon), ("admin", admin))}
        assert all(r.status_code == 200 for r in reports.values()), reports["anon"].text
        assert f["properties"]["zldwmc"] in reports["admin"].text
        assert not any(v in reports["anon"].text for v in values)


def _vertices(geom: dict) -> list[list[float]]:
    out: list = []

    def walk(c):
        if c and isinstance(c[0], (int, float)):
            out.append(c)
        else:
            for x in c:
                walk(x)
    walk(geom["coordinates"])
    return out


def test_round_items_filters_tiles(desens):
    """water_areas on a 200 m grid: every vertex of the public's geometry lies on it; a bbox
    that touches a water body's true outline but not its rounded one does not return it (the
    filter sees the rounded geometry only); tiles draw the rounded outline; analyses do not use
    the layer for the public."""
    import shapely
    from shapely.geometry import box, shape

    _, admin_h, server = desens
    srv = server("round")
    dy = 200 / 110_574.0
    with srv.client() as anon, srv.client(headers=admin_h) as admin:
        clear = {f["id"]: f for f in admin.get("/collections/water_areas/items", params={"limit": 500}).json()["features"]}
        pub = {f["id"]: f for f in anon.get("/collections/water_areas/items", params={"limit": 500}).json()["features"]}
        assert pub.keys() <= clear.keys()
        drawn = [f for f in pub.values() if f["geometry"]]
        assert drawn
        for f in drawn:
            for _, lat in _vertices(f["geometry"]):
                assert abs(lat / dy - round(lat / dy)) * 200 < 0.02, lat   # on the grid (7 decimals: 1 cm)
        # a point inside a true outline but outside the rounded one
        probe = None
        for fid, f in pub.items():
            if not f["geometry"]:
                continue
            diff = shape(clear[fid]["geometry"]).difference(shape(f["geometry"]).buffer(1e-5))
            if not diff.is_empty and diff.area > 1e-9:
                probe = (fid, shapely.get_coordinates(diff.representative_point())[0])
                break
        assert probe is not None
        fid, (px, py) = probe
        e = 1e-6
        bbox = f"{px - e},{py - e},{px + e},{py + e}"
        assert fid in {f["id"] for f in admin.get("/collections/water_areas/items", params={"bbox": bbox}).json()["features"]}
        got = anon.get("/collections/water_areas/items", params={"bbox": bbox}).json()["features"]
        assert fid not in {f["id"] for f in got}
        assert all(shape(f["geometry"]).intersects(box(px - e, py - e, px + e, py + e)) for f in got)
        # tiles: the public's tile is drawn from the rounded outline (differs from the admin's)
        x, y = tile_xy(px, py, 15)
        geo = {who: mapbox_vector_tile.decode(c.get(f"/tiles/water_areas/15/{x}/{y}.mvt").content)
               for who, c in (("anon", anon), ("admin", admin))}
        assert geo["admin"] and geo["anon"]
        assert ({str(f["geometry"]) for f in geo["anon"]["water_areas"]["features"]}
                != {str(f["geometry"]) for f in geo["admin"]["water_areas"]["features"]})
        # analyses: not an input for the public (the intersection would give the outline back)
        d = 0.01
        site = {"type": "Polygon", "coordinates": [[[px - d, py - d], [px + d, py - d], [px + d, py + d],
                                                    [px - d, py + d], [px - d, py - d]]]}
        a = anon.post("/processes/site-check/execution", json={"inputs": {"geometry": site}}).json()
        b = admin.post("/processes/site-check/execution", json={"inputs": {"geometry": site}}).json()
        assert "water_areas" in b["layers"] and "water_areas" not in a["layers"]


def test_township_no_geometry_code_cut(desens, tmp_path):
    _, admin_h, server = desens
    srv = server("township")
    with srv.client() as anon, srv.client(headers=admin_h) as admin:
        clear = {f["id"]: f for f in admin.get("/collections/land_use/items", params={"limit": 50}).json()["features"]}
        pub = anon.get("/collections/land_use/items", params={"limit": 50}).json()["features"]
        assert pub
        for f in pub:
            assert f["geometry"] is None
            full = clear[f["id"]]["properties"]["zldwdm"]
            assert len(full) > 9 and f["properties"]["zldwdm"] == full[:9]
        assert anon.get("/collections/land_use/items", params={"zldwdm": full}).status_code == 400
        ring = next(iter(clear.values()))["geometry"]["coordinates"][0][0][0]
        x, y = tile_xy(ring[0], ring[1], 15)
        r = anon.get(f"/tiles/land_use/15/{x}/{y}.mvt")
        assert r.status_code in (200, 204) and not r.content
        assert admin.get(f"/tiles/land_use/15/{x}/{y}.mvt").content
        import pyogrio

        r = anon.get("/catalog/items/land_use/download", params={"f": "gpkg"})
        assert r.status_code == 200, r.text
        (tmp_path / "t.gpkg").write_bytes(r.content)
        df = pyogrio.read_dataframe(tmp_path / "t.gpkg", read_geometry=True)
        assert df.geometry.isna().all() and (df["zldwdm"].str.len() == 9).all()


def test_rules_checked_when_specs_load(tmp_path):
    from geobase.errors import SpecError
    from geobase.specs import load_registry

    bad = {"mask on a number": "desensitise:\n  open: [{attribute: tbmj, action: mask}]\n",
           "round without metres": "desensitise:\n  open: [{action: round}]\n",
           "unknown attribute": "desensitise:\n  open: [{attribute: nope, action: mask}]\n",
           "two geometry rules": "desensitise:\n  open: [{action: round, metres: 5}, "
                                 "{action: township, attribute: zldwdm}]\n",
           "metres on a mask": "desensitise:\n  open: [{attribute: zldwmc, action: mask, metres: 5}]\n",
           "unknown action": "desensitise:\n  open: [{attribute: zldwmc, action: blur}]\n"}
    for text in bad.values():
        d = _layers_dir(tmp_path, {"land_use": text})
        with pytest.raises(SpecError):
            load_registry(d)
        shutil.rmtree(d)
    load_registry(_layers_dir(tmp_path, {"land_use": MASK_RULES}))

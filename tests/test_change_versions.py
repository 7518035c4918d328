"""The change analysis between two real versions of land use balances the books per class:
area(v1) + transitions in - transitions out - removed + added = area(v2), checked against
class totals computed independently in SQL (issue 12 item 6a)."""

from __future__ import annotations

import math

import geopandas as gpd
import psycopg
from conftest import SAMPLE
from shapely import affinity

from geobase import analysis
from geobase.db import database_url
from geobase.specs import get_registry
from tests.analysis_data import run


def _second_version(tmp_path):
    """A realistic update delivery of the sample DLTB: deleted, added (on the deleted parcels'
    ground and outside the county), reclassified and reshaped parcels."""
    gdf = gpd.read_file(f"zip://{SAMPLE / 'DLTB.zip'}")
    gdf = gdf.sort_values("BSM").reset_index(drop=True)
    deleted = gdf.iloc[0:6]
    keep = gdf.iloc[6:].copy()
    # reclassified: same shape, new code
    for i in keep.index[0:8]:
        keep.loc[i, "DLBM"] = "0601" if keep.loc[i, "DLBM"] != "0601" else "0101"
    # reshaped: shrunk around their centroid (the rim is area leaving their class, unclaimed)
    for i in keep.index[8:14]:
        keep.loc[i, "geometry"] = affinity.scale(keep.loc[i, "geometry"], 0.8, 0.8)
    # reshaped and reclassified at once
    i = keep.index[14]
    keep.loc[i, "geometry"] = affinity.scale(keep.loc[i, "geometry"], 0.9, 0.9)
    keep.loc[i, "DLBM"] = "0702"
    # added: two new parcels on half of the deleted ground, one beyond the old coverage
    new = deleted.iloc[0:2].copy()
    new["BSM"] = [f"NEW{k}" for k in range(len(new))]
    new["DLBM"] = "0701"
    new["geometry"] = [affinity.scale(g, 0.5, 0.5) for g in new.geometry]
    far = deleted.iloc[2:3].copy()
    far["BSM"] = "NEWFAR"
    far["DLBM"] = "0301"
    far["geometry"] = [affinity.translate(g, 0.0, -0.5) for g in far.geometry]
    out = gpd.GeoDataFrame(pd_concat([keep, new, far]), crs=gdf.crs)
    path = tmp_path / "DLTB_v2.gpkg"
    out.to_file(path, layer="DLTB", driver="GPKG")
    return path


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def _class_areas(conn, v: int) -> dict[str, float]:
    rows = conn.execute("SELECT dlbm, ST_Area(geom::geography) FROM data.land_use "
                        "WHERE _vfrom <= %s AND (_vto IS NULL OR _vto > %s)", (v, v)).fetchall()
    per: dict[str, list[float]] = {}
    for c, a in rows:
        per.setdefault(c, []).append(a)
    return {c: math.fsum(v) for c, v in per.items()}


def test_change_between_real_versions_balances_every_class(county_db, tmp_path):
    from geobase.ingest.pipeline import ingest

    path = _second_version(tmp_path)
    res = ingest(county_db, "land_use", path, coverage=False, on_error="skip")
    assert res.version == 2 and res.removed == 6 and res.added == 3 and res.changed == 15, res.as_dict()
    reg = get_registry(county_db)
    r = run(county_db, lambda c: analysis.change(c, reg, list(reg.layers.values()), "land_use", 1, 2))
    with psycopg.connect(database_url(county_db)) as conn:
        before, after = _class_areas(conn, 1), _class_areas(conn, 2)
        deleted_area = conn.execute(
            "SELECT dlbm, ST_Area(geom::geography) FROM data.land_use WHERE _vto = 2 AND _key NOT IN "
            "(SELECT _key FROM data.land_use WHERE _vfrom = 2)").fetchall()
    moved_in: dict[str, list[float]] = {}
    moved_out: dict[str, list[float]] = {}
    for t in r["transitions"]:
        moved_in.setdefault(t["to"], []).append(t["m2"])
        moved_out.setdefault(t["from"], []).append(t["m2"])
    removed = {x["class"]: x["m2"] for x in r["removed"]}
    added = {x["class"]: x["m2"] for x in r["added"]}
    net = {x["class"]: x["m2"] for x in r["net_by_class"]}
    classes = set(before) | set(after)
    assert set(removed) <= classes and set(added) <= classes
    for c in classes:
        got = (before.get(c, 0.0) + math.fsum(moved_in.get(c, [])) - math.fsum(moved_out.get(c, []))
               - removed.get(c, 0.0) + added.get(c, 0.0))
        assert abs(got - after.get(c, 0.0)) <= 1e-6 + 1e-12 * after.get(c, 0.0), (c, got, after.get(c))
        assert abs(before.get(c, 0.0) + net.get(c, 0.0) - after.get(c, 0.0)) <= 2e-6, c
    # the deleted parcels' area is in `removed` (less the half the new 0701 parcels took over)
    deleted_total = math.fsum(a for _, a in deleted_area)
    assert math.fsum(removed.values()) > 0.5 * deleted_total
    # the parcel beyond the old coverage is added area of its class, claimed by no transition
    assert added["0301"] > 0
    # reclassification moved area between classes
    assert any(t["from"] != t["to"] and t["m2"] > 100 for t in r["transitions"])

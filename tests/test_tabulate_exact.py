"""The tabulation equals the whole-geometry computation cell for cell, whichever path computes
it (geobase/analysis/tabulate.py): the county-wide path that finds pairs through the zones'
subdivided pieces, the whole-geometry path, and an area of interest.

Why this test: the pieces path once measured a parcel crossing a piece's cut line in two halves.
The cut adds vertices on the parcel's and the zone's edges, and ``ST_Area(geography)`` joins two
vertices by a geodesic, so the halves did not add up to the whole (cells off by up to 4e-7 of
their area, some m², on the sample county; the Sedona engine, which measures whole geometries,
disagreed). The reference here is SQL written independently of the product, on the whole
geometries of the sample county:

* exact: the stored ellipsoidal ``_area_m2`` of a feature the other covers (the value every
  report of a layer's area uses), else ``ST_Area(ST_Intersection(a, b)::geography)``: equal to
  1e-9 of each cell (and 5e-7 m², the report's rounding of m² to 6 decimals);
* plain: ``ST_Area(ST_Intersection(a, b)::geography)`` for every pair: equal to 1e-7, the
  difference between the stored area (ingest/area.py, authalic sphere) and PostGIS's own
  ``ST_Area`` of the same polygons, up to 3e-8 of a cell here. The old pieces path was off by 4e-7."""

from __future__ import annotations

import asyncio
import importlib

import psycopg
import pytest

from geobase.security import Principal, visible_layers
from geobase.specs import get_registry

OPERATOR = Principal(name="test", role="admin", key_id="test")
TOWNSHIP = "339901002"
tab = importlib.import_module("geobase.analysis.tabulate")
pieces = importlib.import_module("geobase.analysis.pieces")

REFERENCE = """
    SELECT a.dlbm::text, b.ghfqdm::text,
           sum(CASE WHEN ST_Covers(b.geom, a.geom) THEN a._area_m2
                    WHEN ST_Covers(a.geom, b.geom) THEN b._area_m2
                    ELSE ST_Area(ST_Intersection(a.geom, b.geom)::geography) END),
           sum(ST_Area(ST_Intersection(a.geom, b.geom)::geography)), count(*)
    FROM data.land_use a JOIN data.planning_zones b ON ST_Intersects(a.geom, b.geom)
    WHERE a._vto IS NULL AND b._vto IS NULL
    GROUP BY 1, 2"""

REFERENCE_AOI = """
    WITH aoi AS (SELECT ST_Union(geom) AS g FROM data.admin_divisions WHERE _vto IS NULL AND xzqdm = %(code)s)
    SELECT a.dlbm::text, b.ghfqdm::text,
           sum(CASE WHEN ST_Covers(aoi.g, a.geom) AND ST_Covers(b.geom, a.geom) THEN a._area_m2
                    ELSE ST_Area(ST_Intersection(ST_Intersection(a.geom, aoi.g), b.geom)::geography) END),
           sum(ST_Area(ST_Intersection(ST_Intersection(a.geom, aoi.g), b.geom)::geography)), count(*)
    FROM aoi, data.land_use a JOIN data.planning_zones b ON ST_Intersects(a.geom, b.geom)
    WHERE a._vto IS NULL AND b._vto IS NULL AND ST_Intersects(a.geom, aoi.g) AND ST_Intersects(b.geom, aoi.g)
    GROUP BY 1, 2"""


def _run(settings, fn):
    async def go():
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            registry = get_registry(settings)
            return await fn(conn, registry, await visible_layers(conn, OPERATOR, registry))
    return asyncio.run(go())


def _reference(settings, aoi: str | None) -> dict:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(REFERENCE_AOI if aoi else REFERENCE, {"code": aoi} if aoi else None).fetchall()
    return {(ca, cb): (exact, plain, n) for ca, cb, exact, plain, n in rows}


def _tabulate(settings, aoi: str | None, swap: bool) -> dict:
    """{(land-use class, zone class): (m², pairs)}, computed from the rows (nothing kept)."""
    la, lb = ("planning_zones", "land_use") if swap else ("land_use", "planning_zones")
    t = _run(settings, lambda c, r, v: tab.tabulate(c, r, v, la, lb, aoi_code=aoi, principal=OPERATOR, reuse=False))
    return {((c["b"], c["a"]) if swap else (c["a"], c["b"])): (c["m2"], c["pieces"]) for c in t["cells"]}


def _assert_equal(got: dict, ref: dict) -> None:
    assert len(ref) > 10 and set(got) == set(ref)
    assert {k: v[1] for k, v in got.items()} == {k: v[2] for k, v in ref.items()}, "pairs counted per cell"
    off = [(k, m2, ref[k][0]) for k, (m2, _) in got.items() if abs(m2 - ref[k][0]) > 1e-9 * ref[k][0] + 5e-7]
    assert off == [], f"cells off the whole-geometry areas: {off[:5]}"
    off = [(k, m2, ref[k][1]) for k, (m2, _) in got.items() if abs(m2 - ref[k][1]) > 1e-7 * ref[k][1] + 5e-7]
    assert off == [], f"cells off ST_Area(ST_Intersection(a, b)): {off[:5]}"


@pytest.fixture
def pieces_counted(monkeypatch):
    """Small pieces (more cut lines through parcels), and a count of the subdivisions made: the
    county-wide tabulations below must take the pieces path."""
    calls = []
    real = pieces.load_pieces

    async def counted(conn, spec, *args):
        calls.append(spec.name)
        return await real(conn, spec, *args)

    monkeypatch.setattr(pieces, "SUBDIVIDE_VERTICES", 24)
    monkeypatch.setattr(pieces, "HALO_FEATURES", 2)  # small halo cells: some parcels fit none
    monkeypatch.setattr(pieces, "PIECES_MAX_FEATURES", 1000)  # the 56 zones, not the 7,029 parcels
    monkeypatch.setattr(pieces, "load_pieces", counted)
    return calls


@pytest.mark.parametrize("swap", [False, True], ids=["parcels_x_zones", "zones_x_parcels"])
def test_county_on_pieces_equals_whole_geometries(county_shared, pieces_counted, swap):
    got = _tabulate(county_shared, None, swap)
    assert pieces_counted == ["planning_zones"], "the county-wide table is computed on the zones' pieces"
    _assert_equal(got, _reference(county_shared, None))


def test_county_without_pieces_and_township_equal_whole_geometries(county_shared, monkeypatch):
    monkeypatch.setattr(pieces, "PIECES_MAX_FEATURES", 0)
    _assert_equal(_tabulate(county_shared, None, False), _reference(county_shared, None))
    _assert_equal(_tabulate(county_shared, TOWNSHIP, False), _reference(county_shared, TOWNSHIP))

"""The county tabulation's shortcuts on the parcels where they can go wrong: a parcel exactly on
a zone border, parcels with holes, multipolygons straddling two zones, a zone with a hole, a
parcel equal to its zone, a parcel touching a zone at one corner.

Why: the tabulation takes a parcel's stored area without any intersection when the parcel
lies wholly inside a zone (decided by comparing boxes for a piece that is its own box, by
ST_CoveredBy for the other pieces; geobase/analysis/pieces.py) and measures boundary parcels
against a halo of the zone. A shortcut that took a hole for part of a parcel, a multipolygon's
box for its parts, or an edge for an overlap would give a plausible number with no error. Each
cell is compared with the whole-geometry SQL written here (the stored area where the zone
covers the parcel, else the ellipsoidal area of the intersection) and with shapely + pyproj
areas computed without PostGIS."""

from __future__ import annotations

import importlib

import psycopg
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from geobase import analysis
from geobase.specs import get_registry
from tests.analysis_data import X0, Y0, D, geod_area, insert, run

pieces = importlib.import_module("geobase.analysis.pieces")

REFERENCE = """
    SELECT a.dlbm::text, b.ghfqdm::text,
           sum(CASE WHEN ST_Covers(b.geom, a.geom) THEN a._area_m2
                    ELSE ST_Area(ST_Intersection(a.geom, b.geom)::geography) END)
    FROM data.land_use a JOIN data.planning_zones b ON ST_Intersects(a.geom, b.geom)
    WHERE a._vto IS NULL AND b._vto IS NULL
    GROUP BY 1, 2"""


def _ring(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return list(box(x0, y0, x1, y1).exterior.coords)


def _zones() -> list[tuple[str, str, object]]:
    """West zone: a plain box (its pieces are their own boxes); east zone: a box with a square
    hole; a small zone inside the east zone's hole. Edges densified so the zones are cut into
    many pieces, with cut lines through the parcels."""
    west = box(X0, Y0, X0 + 2 * D, Y0 + 4 * D)
    east = Polygon(_ring(X0 + 2 * D, Y0, X0 + 4 * D, Y0 + 4 * D), [_ring(X0 + 2.5 * D, Y0 + 2.5 * D,
                                                                      X0 + 3.5 * D, Y0 + 3.5 * D)])
    inner = box(X0 + 2.75 * D, Y0 + 2.75 * D, X0 + 3.25 * D, Y0 + 3.25 * D)
    return [("ZW", "030", shapely.segmentize(west, D / 8)), ("ZE", "041", shapely.segmentize(east, D / 8)),
            ("ZI", "052", inner)]


def _parcels() -> list[tuple[str, str, object]]:
    e = 1e-9 * D
    holed = Polygon(_ring(X0 + 0.2 * D, Y0 + 0.2 * D, X0 + 0.8 * D, Y0 + 0.8 * D),
                    [_ring(X0 + 0.4 * D, Y0 + 0.4 * D, X0 + 0.6 * D, Y0 + 0.6 * D)])
    holed_across = Polygon(_ring(X0 + 1.6 * D, Y0 + 1.2 * D, X0 + 2.4 * D, Y0 + 1.8 * D),
                           [_ring(X0 + 1.9 * D, Y0 + 1.4 * D, X0 + 2.1 * D, Y0 + 1.6 * D)])
    return [
        ("on_border", "0101", box(X0 + D, Y0, X0 + 2 * D, Y0 + D)),  # its east edge is the zones' border
        ("on_border_east", "0102", box(X0 + 2 * D, Y0 + D, X0 + 2.5 * D, Y0 + 1.5 * D)),  # west edge on it
        ("across", "0103", box(X0 + 1.5 * D, Y0 + 2 * D, X0 + 2.5 * D, Y0 + 2.2 * D)),
        ("holed", "0201", holed),  # inside the west zone's box pieces, with a hole
        ("holed_across", "0202", holed_across),  # a hole on the border
        ("multi_two_zones", "0301", MultiPolygon([box(X0 + 1.7 * D, Y0 + 3.1 * D, X0 + 1.9 * D, Y0 + 3.3 * D),
                                                  box(X0 + 2.1 * D, Y0 + 3.1 * D, X0 + 2.3 * D, Y0 + 3.3 * D)])),
        ("multi_one_zone", "0302", MultiPolygon([box(X0 + 0.1 * D, Y0 + 3.1 * D, X0 + 0.3 * D, Y0 + 3.3 * D),
                                                 box(X0 + 1.5 * D, Y0 + 3.6 * D, X0 + 1.7 * D, Y0 + 3.8 * D)])),
        ("in_zone_hole_box", "0404", box(X0 + 2.6 * D, Y0 + 2.6 * D, X0 + 2.7 * D, Y0 + 2.7 * D)),  # in no zone
        ("over_hole_edge", "0702", box(X0 + 2.4 * D, Y0 + 2.4 * D, X0 + 2.8 * D, Y0 + 2.8 * D)),
        ("equal_to_zone", "1001", box(X0 + 2.75 * D, Y0 + 2.75 * D, X0 + 3.25 * D, Y0 + 3.25 * D)),
        # in the east zone's hole, touching the small zone at one corner
        ("corner_only", "1101", box(X0 + 2.65 * D, Y0 + 3.25 * D, X0 + 2.75 * D, Y0 + 3.35 * D)),
        ("over_the_edge", "1201", box(X0 + 0.5 * D, Y0 + 3.9 * D, X0 + 0.7 * D, Y0 + 4.1 * D)),  # half outside
        ("under_the_edge", "1202", box(X0 + 3.5 * D, Y0 - 0.1 * D, X0 + 3.7 * D, Y0 + 0.1 * D)),
        ("a_hair_over", "1102", box(X0 + 1.5 * D, Y0 + 0.5 * D, X0 + 2 * D + e * 1e3, Y0 + 0.7 * D)),
    ]


def seed_edges(db_settings, monkeypatch) -> None:
    """The edge parcels and zones loaded, and pieces small enough that cut lines cross parcels."""
    with psycopg.connect(db_settings.database_url) as conn:
        insert(conn, "land_use", [(k, {"bsm": k, "dlbm": c, "dlmc": k}, g) for k, c, g in _parcels()])
        insert(conn, "planning_zones", [(k, {"bsm": k, "ghfqdm": c}, g) for k, c, g in _zones()])
        conn.commit()
    monkeypatch.setattr(pieces, "SUBDIVIDE_VERTICES", 8)  # small pieces: cut lines through the parcels
    monkeypatch.setattr(pieces, "HALO_FEATURES", 2)


@pytest.fixture
def edges(db_settings, monkeypatch):
    seed_edges(db_settings, monkeypatch)
    reg = get_registry(db_settings)
    return db_settings, reg, list(reg.layers.values())


def _geod(g) -> float:
    """pyproj's geodesic area, rings oriented first (it adds a hole wound like its shell)."""
    return geod_area(shapely.orient_polygons(g))


def _independent() -> dict[tuple[str, str], float]:
    """Cells from shapely and pyproj's geodesic areas (no PostGIS), by the same rule: a parcel
    its zone covers counts whole (measured on its own vertices: the intersection would carry the
    zone's extra vertices along a shared edge, and a geodesic through them is another line)."""
    out: dict[tuple[str, str], float] = {}
    for _, ca, pg in _parcels():
        for _, cb, zg in _zones():
            m2 = _geod(pg if zg.covers(pg) else pg.intersection(zg)) if pg.intersects(zg) else 0.0
            if m2 > 1e-6:
                out[(ca, cb)] = out.get((ca, cb), 0.0) + m2
    return out


@pytest.mark.parametrize("path", ["pieces", "whole"])
def test_shortcuts_give_the_whole_geometry_areas(edges, monkeypatch, path):
    settings, reg, vis = edges
    if path == "whole":
        monkeypatch.setattr(pieces, "PIECES_MAX_FEATURES", -1)  # (unanalysed tables estimate 0 rows)
    calls = []
    real = pieces.load_pieces

    async def counted(*args):
        calls.append(args[1].name)
        return await real(*args)

    monkeypatch.setattr(pieces, "load_pieces", counted)
    t = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones", reuse=False))
    assert calls == (["planning_zones"] if path == "pieces" else [])
    got = {(c["a"], c["b"]): c["m2"] for c in t["cells"]}
    with psycopg.connect(settings.database_url) as conn:
        ref = {(ca, cb): float(m2) for ca, cb, m2 in conn.execute(REFERENCE).fetchall() if float(m2) > 1e-6}
    assert set(got) == set(ref)
    off = {k: (got[k], v) for k, v in ref.items() if abs(got[k] - v) > 1e-9 * v + 5e-7}
    assert off == {}, f"cells off the whole-geometry areas: {off}"
    indep = _independent()
    assert set(got) == set(indep)
    off = {k: (got[k], v) for k, v in indep.items() if abs(got[k] - v) > 1e-9 * v + 5e-7}
    assert off == {}, f"cells off shapely + pyproj: {off}"
    # the cases themselves: the border parcels lie in one zone each, the hole is not counted,
    # the parcel in the hole's box is in no zone, the corner touches nothing
    assert ("0101", "041") not in got and ("0102", "030") not in got
    assert got[("0201", "030")] == pytest.approx(_geod(_parcels()[3][2]), rel=1e-9)
    assert not any(k[0] in ("0404", "1101") for k in got)
    assert {k[1] for k in got if k[0] in ("0301", "0202", "0103")} == {"030", "041"}


def test_split_by_zone_over_connections_gives_the_same_table(edges, monkeypatch):
    """The county split by zone over several connections that see the same layer states
    (pieces.run_split) gives the one-connection table: every pair counted in exactly one part."""
    settings, reg, vis = edges
    states, parts = [], []
    real, real_merge = pieces._own_states, pieces.merge_cells

    async def spied(conn, specs):
        states.append(await real(conn, specs))
        return states[-1]

    def merged(got):
        parts.append(len(got))
        return real_merge(got)

    monkeypatch.setattr(pieces, "_own_states", spied)
    monkeypatch.setattr(pieces, "merge_cells", merged)
    tables = {}
    for n in (1, 3):
        monkeypatch.setattr(pieces, "SPLIT_CONNECTIONS", n)
        t = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones", reuse=False))
        tables[n] = {(c["a"], c["b"]): (c["m2"], c["pieces"]) for c in t["cells"]}
    assert len(states) == 1 and states[0] is not None and parts == [3], "three parts on three connections"
    assert set(tables[3]) == set(tables[1])
    for k, (m2, n) in tables[1].items():
        assert tables[3][k][1] == n, k
        assert tables[3][k][0] == pytest.approx(m2, rel=1e-12, abs=1e-6), k


def test_a_part_whose_snapshot_sees_another_state_is_computed_here(edges, monkeypatch):
    """A new connection that sees other layer states (an ingest committed in between) must not
    contribute its rows: its part is computed on the analysis's own connection."""
    settings, reg, vis = edges
    monkeypatch.setattr(pieces, "SPLIT_CONNECTIONS", 1)
    one = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones", reuse=False))
    calls = []
    real = pieces.layer_states

    async def other_state(conn, specs):
        calls.append(conn)
        got = await real(conn, specs)
        return got if len(calls) == 1 else {k: None for k in got}  # the new connections see "another" state

    monkeypatch.setattr(pieces, "layer_states", other_state)
    monkeypatch.setattr(pieces, "SPLIT_CONNECTIONS", 3)
    split = run(settings, lambda c: analysis.tabulate(c, reg, vis, "land_use", "planning_zones", reuse=False))
    assert len(calls) == 3 and len({id(c) for c in calls}) == 3
    assert [(c["a"], c["b"], c["pieces"]) for c in split["cells"]] == [(c["a"], c["b"], c["pieces"]) for c in one["cells"]]
    assert [c["m2"] for c in split["cells"]] == pytest.approx([c["m2"] for c in one["cells"]], rel=1e-12, abs=1e-6)

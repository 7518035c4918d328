"""Tabulation: areas by class of layer A x class of layer B within an area of interest (a
division code, a polygon, or the whole county).

Where the time goes and what is done about it (bench/bench_analysis.py measures each case):

* computed ("cold"): over the whole county, the layer of few large features (zones) is cut
  into pieces of at most 128 vertices that find the pairs (:mod:`geobase.analysis.pieces`); a
  parcel covered by a piece takes its stored ellipsoidal area, every other pair is measured as
  on the whole geometries: the whole-geometry table, cell for cell (tests/test_tabulate_exact.py,
  tests/test_tabulate_edges.py). The pieces, and the halos the boundary pairs are measured
  against, are cut once per zone version and kept in the database
  (:mod:`geobase.analysis.subdivision`), so a cold run after a restart starts from them
  (tests/test_tabulate_kept_pieces.py, tests/test_tabulate_kept_halos.py). The zones are split over one connection per core
  (:func:`geobase.analysis.pieces.run_split`), each checking it reads the same layer states;
* kept ("warm"): the table of the same layer versions, class fields and area of interest is
  answered from memory (:mod:`geobase.analysis.reuse`): a version's rows never change;
* corrected: when one layer got a new version since a kept table, the table is the kept one
  minus the pairs of the rows the new version retired plus those of the rows it added
  (``_vfrom``/``_vto``, indexed), so a 1 % change costs about 1 % of the overlay.

Every table says which of the three it is (``"reuse"``); areas, classes and piece counts
are the same whichever way it was obtained (tests/test_tabulate_reuse.py).

Conventions: see :mod:`geobase.analysis.common`."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from geobase.analysis import pieces
from geobase.analysis.common import (class_column, inputs_checked, layer_versions, read_only_snapshot,
                                     table_report, units)
from geobase.analysis.input import InputGeometry
from geobase.analysis.pieces import PAIR_AREA
from geobase.analysis.reuse import RESULTS, VersionState, layer_states, version_still_there
from geobase.errors import InvalidInput
from geobase.specs import LayerSpec, Registry
from geobase.storage import (DATA_SCHEMA, UNASSIGNED, added_between, current_filter, division_filter,
                             removed_between, table_ident)

#: the layer of administrative divisions an area of interest is named from, and its code and name fields
DIVISIONS_LAYER, DIVISION_CODE, DIVISION_NAME = "admin_divisions", "xzqdm", "xzqmc"


async def aoi_from_code(conn: psycopg.AsyncConnection, code: str) -> tuple[bytes, float, str]:
    """WKB, area and name of an administrative division (township or county) by its code."""
    if not code.isdigit() or len(code) not in (6, 9, 12):
        raise InvalidInput(f"aoi: {code!r} is not a 6/9/12-digit division code", parameter="aoi")
    cur = await conn.execute(sql.SQL(
        "SELECT ST_AsBinary(ST_Union(geom)), ST_Area(ST_Union(geom)::geography), min({name}) "
        "FROM {tbl} WHERE {cur} AND {code} = %s AND {county}").format(
            name=sql.Identifier(DIVISION_NAME), tbl=table_ident(DIVISIONS_LAYER), cur=current_filter(),
            code=sql.Identifier(DIVISION_CODE), county=division_filter(aoi_divisions(code))), (code,))
    wkb, area, name = await cur.fetchone()
    if wkb is None:
        raise InvalidInput(f"aoi: no administrative division with code {code!r}", parameter="aoi")
    return bytes(wkb), float(area), name


def aoi_divisions(aoi_code: str | None) -> list[str] | None:
    """The partitions an area of interest named by a division code reads: its county's and the
    unassigned one (rows no county claims); None (every county) for a polygon or the whole layer."""
    return [aoi_code[:6], UNASSIGNED] if aoi_code else None


def tabulate_sql(a: LayerSpec, fa: str, b: LayerSpec, fb: str, *, with_aoi: bool,
                 part: tuple[int, int] | None = None, part_on: str = "b",
                 rows_a: sql.Composable | None = None, rows_b: sql.Composable | None = None,
                 divisions: list[str] | None = None) -> sql.Composed:
    """Areas by class of A x class of B, on the layers' whole geometries (an area of interest,
    a split over connections, or a layer too large to subdivide; see :mod:`geobase.analysis.pieces`).

    A feature wholly covered by the other skips ST_Intersection and uses its precomputed
    ``_area_m2``; ``part`` = (k, n) splits the work by ``mod(<part_on>._rid, n)`` over several
    connections. ``rows_a``/``rows_b``: which rows of each layer take part (default: the
    current version's; a change between two versions for an incremental table)."""
    alias = sql.Identifier(part_on)
    part_sql = sql.SQL("AND mod({}._rid, {n}) = {k}").format(alias, n=sql.Literal(part[1]), k=sql.Literal(part[0])) \
        if part else sql.SQL("")
    if divisions:  # a county's area of interest: the planner reads that county's partitions only
        part_sql = sql.SQL("{} AND {} AND {}").format(part_sql, division_filter(divisions, "a"),
                                                      division_filter(divisions, "b"))
    names = {"fa": sql.Identifier(fa), "fb": sql.Identifier(fb), "ta": table_ident(a), "tb": table_ident(b),
             "part": part_sql, "cur_a": rows_a or current_filter("a"), "cur_b": rows_b or current_filter("b"),
             "area": PAIR_AREA}
    if not with_aoi:
        return sql.SQL("""
            SELECT a.{fa}::text, b.{fb}::text, sum(
                {area}), count(*)
            FROM {ta} a JOIN {tb} b ON ST_Intersects(a.geom, b.geom) AND {cur_b}
            WHERE {cur_a} {part}
            GROUP BY 1, 2 ORDER BY 1, 2
        """).format(**names)
    return sql.SQL("""
        WITH aoi AS (SELECT ST_GeomFromWKB(%(aoi)s, 4490) AS g)
        SELECT a.{fa}::text, b.{fb}::text, sum(
            CASE WHEN ST_Covers(aoi.g, a.geom) AND ST_Covers(b.geom, a.geom) THEN coalesce(a._area_m2, ST_Area(a.geom::geography))
                 WHEN ST_Covers(aoi.g, a.geom) THEN ST_Area(ST_Intersection(a.geom, b.geom)::geography)
                 ELSE ST_Area(ST_Intersection(ST_Intersection(a.geom, aoi.g), b.geom)::geography) END), count(*)
        FROM aoi, {ta} a JOIN {tb} b ON ST_Intersects(a.geom, b.geom) AND {cur_b}
        WHERE {cur_a} AND ST_Intersects(a.geom, aoi.g) AND ST_Intersects(b.geom, aoi.g) {part}
        GROUP BY 1, 2 ORDER BY 1, 2
    """).format(**names)


async def _row_estimate(conn: psycopg.AsyncConnection, spec: LayerSpec) -> float:
    """The planner's row count of a layer's table: the sum over its partitions (a partitioned
    table's own ``reltuples`` is -1, which made every layer look empty and small enough to cut)."""
    cur = await conn.execute(
        "SELECT sum(greatest(c.reltuples, 0)) FROM pg_partition_tree(to_regclass(%s)) t "
        "JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf", (f'{DATA_SCHEMA}."{spec.name}"',))
    row = await cur.fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


async def tabulate(conn: psycopg.AsyncConnection, registry: Registry, visible: list[LayerSpec], layer_a: str,
                   layer_b: str, *, class_a: str | None = None, class_b: str | None = None,
                   aoi: InputGeometry | None = None, aoi_code: str | None = None,
                   conninfo: str | None = None, workers: int = 1, principal=None, reuse: bool = True) -> dict:
    """Areas by class of ``layer_a`` x class of ``layer_b`` within an area of interest (a
    division code, a polygon, or the whole county when neither is given).

    ``reuse`` (default): the table of the same layer versions, class fields and area of
    interest is answered from memory, and one whose layer got a new version since is the
    kept table corrected by the rows that version added and retired
    (:mod:`geobase.analysis.reuse`); ``reuse=False`` computes from the rows. ``workers`` > 1
    with ``conninfo``: split over that many connections (computed, never reused)."""
    vis = {s.name: s for s in visible}
    for p, n in (("layer_a", layer_a), ("layer_b", layer_b)):
        if n not in vis or vis[n].geometry != "MultiPolygon":
            raise InvalidInput(f"{p}: unknown, hidden or non-polygon layer {n!r}", parameter=p)
    a, b = vis[layer_a], vis[layer_b]
    fa = class_column(registry, a, class_a, "class_a", principal)
    fb = class_column(registry, b, class_b, "class_b", principal)
    wkb, aoi_m2, aoi_info = await _area_of_interest(conn, aoi, aoi_code)
    inputs_checked()
    job = _Job(a, fa, b, fb, wkb, None, None, aoi_divisions(aoi_code))
    rows, how, layer_m2, versions = await _read(conn, job, conninfo, workers,
                                                reuse, whole=aoi_m2 is None)
    if aoi_m2 is None:
        aoi_m2 = layer_m2
        aoi_info["area"] = units(aoi_m2)
        aoi_info["area_source"] = f"sum of {layer_a} areas"
    report = table_report(layer_a, fa, layer_b, fb, rows, aoi_m2, aoi_info, versions)
    # how the table was obtained: "computed" from the rows, "kept" (the same versions were
    # tabulated before) or "corrected" (a kept table of an earlier version corrected by the change)
    report["reuse"] = how
    return report


async def _read(conn: psycopg.AsyncConnection, job: _Job, conninfo: str | None, workers: int, reuse: bool, *,
                whole: bool) -> tuple[list[tuple], str, float | None, dict]:
    """The rows of the table, how they were obtained, the sum of layer A's areas (``whole``:
    the county is the area of interest) and the layers' versions, all read in one snapshot.
    Kept tables are used and filed only in a repeatable-read snapshot: there the layers'
    states and the rows they name are read at the same instant (in read committed, an ingest
    committing between two statements would file one version's rows under another's state)."""
    async with read_only_snapshot(conn):
        split = workers > 1 and conninfo
        states = {}
        if reuse and not split and await _one_snapshot(conn):
            states = await layer_states(conn, [job.a, job.b])
        area = await _area_beside(conn, job.a, states.get(job.a.name)) if whole and not split else None
        try:
            if split:
                rows, how = await _split_rows(conn, job.a, job.fa, job.b, job.fb, job.wkb, conninfo, workers,
                                              job.divisions), "computed"
            else:
                job = dataclasses.replace(job, state_a=states.get(job.a.name), state_b=states.get(job.b.name))
                rows, how = await _rows(conn, job)
        finally:
            m2 = await area if area is not None else None  # never left running past the snapshot
        if whole and m2 is None:
            m2 = await _layer_area(conn, job.a, states.get(job.a.name))
        versions = await layer_versions(conn, [job.a.name, job.b.name])
    return rows, how, m2, versions


async def _one_snapshot(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("SELECT current_setting('transaction_isolation')")
    return (await cur.fetchone())[0] in ("repeatable read", "serializable")


async def _area_beside(conn: psycopg.AsyncConnection, spec: LayerSpec,
                       state: VersionState | None) -> asyncio.Future | None:
    """The sum of a layer's areas computed on another connection while the table is computed
    on ``conn`` (a county-wide sum of 200,000 areas took 0.05-0.2 s after the table, serially),
    as a task whose result is None when it cannot be: no state to check the other connection's
    snapshot against, a sum kept or correctable from memory (:func:`_layer_area` is cheaper
    then), another state seen there, or any error (then :func:`_layer_area` runs on ``conn``).
    The task never uses ``conn`` (busy with the table): the state it checks was read on ``conn``."""
    if state is None or RESULTS.get(("area", state)) is not None or \
            RESULTS.find(lambda k: k[0] == "area" and state.same_history(k[1])):
        return None
    timeout = (await (await conn.execute("SELECT current_setting('statement_timeout')")).fetchone())[0]

    async def run() -> float | None:
        try:
            total = sql.SQL("SELECT sum(coalesce(_area_m2, ST_Area(geom::geography))) FROM {} WHERE {}").format(
                table_ident(spec), current_filter())
            rows = await pieces.beside(conn, [spec], {spec.name: state}, total, None, timeout)
        except (psycopg.Error, OSError):
            return None
        if rows is None:
            return None
        m2 = float(rows[0][0] or 0)
        RESULTS.put(("area", state), m2)
        return m2

    return asyncio.ensure_future(run())


async def _layer_area(conn: psycopg.AsyncConnection, spec: LayerSpec, state: VersionState | None) -> float:
    """Sum of the ellipsoidal areas of a layer's current features (kept per layer state; the
    sum of an earlier version corrected by the areas of the rows added and retired since)."""
    m2 = RESULTS.get(("area", state)) if state is not None else None
    if m2 is not None:
        return m2
    total = sql.SQL("SELECT sum(coalesce(_area_m2, ST_Area(geom::geography))) FROM {} WHERE {}")
    for (_, old), kept in RESULTS.find(lambda k: k[0] == "area" and state is not None and state.same_history(k[1])):
        if await version_still_there(conn, old):
            m2 = kept
            for rows, sign in ((removed_between(old.version, state.version), -1),
                               (added_between(old.version, state.version), 1)):
                cur = await conn.execute(total.format(table_ident(spec), rows))
                m2 += sign * float((await cur.fetchone())[0] or 0)
            break
    if m2 is None:
        cur = await conn.execute(total.format(table_ident(spec), current_filter()))
        m2 = float((await cur.fetchone())[0] or 0)
    if state is not None:
        RESULTS.put(("area", state), m2)
    return m2


async def _area_of_interest(conn: psycopg.AsyncConnection, aoi: InputGeometry | None,
                            aoi_code: str | None) -> tuple[bytes | None, float | None, dict[str, Any]]:
    """(WKB, area, report entry) of the area of interest: a division, a polygon or the whole county."""
    if aoi_code:
        wkb, aoi_m2, name = await aoi_from_code(conn, aoi_code)
        return wkb, aoi_m2, {"code": aoi_code, "name": name, "area": units(aoi_m2)}
    if aoi is not None:
        return aoi.wkb, aoi.area_m2, {"geometry": aoi.geojson, "area": units(aoi.area_m2), "input_crs": aoi.source_crs}
    return None, None, {"whole": True}


@dataclass(frozen=True)
class _Job:
    """One tabulation's inputs: the layers, their class fields, the area of interest (WKB or
    None for the whole county) and the layers' states (None: not versioned, nothing reused)."""

    a: LayerSpec
    fa: str
    b: LayerSpec
    fb: str
    wkb: bytes | None
    state_a: VersionState | None
    state_b: VersionState | None
    divisions: list[str] | None = None  # the partitions an area of interest named by a code reads

    @property
    def aoi_key(self) -> str | None:
        return hashlib.sha256(self.wkb).hexdigest() if self.wkb is not None else None

    def key(self) -> tuple:
        return ("tabulate", self.state_a, self.state_b, self.fa, self.fb, self.aoi_key)


async def _rows(conn: psycopg.AsyncConnection, job: _Job) -> tuple[list[tuple], str]:
    """(class a, class b, m², pieces) rows: kept, corrected from a kept table, or computed;
    and which of the three."""
    if job.state_a is None or job.state_b is None:
        return await _computed(conn, job), "computed"
    key = job.key()
    rows, how = RESULTS.get(key), "kept"
    if rows is None:
        rows, how = await _incremental(conn, job), "corrected"
        if rows is None:
            rows, how = await _computed(conn, job), "computed"
        RESULTS.put(key, rows)
    return list(rows), how


async def _computed(conn: psycopg.AsyncConnection, job: _Job, rows_a: sql.Composable | None = None,
                    rows_b: sql.Composable | None = None) -> list[tuple]:
    """Rows computed from the tables (of the rows ``rows_a``/``rows_b`` when given): over the
    whole county on the subdivided pieces of the layer of fewer features, when it is small
    enough to hold in memory; else (and within an area of interest) on whole geometries."""
    a, b = job.a, job.b
    if job.wkb is None:
        est_a, est_b = await _row_estimate(conn, a), await _row_estimate(conn, b)
        cut = "b" if est_b <= est_a else "a"
        changed_cut = (rows_b if cut == "b" else rows_a) is not None
        if min(est_a, est_b) <= pieces.PIECES_MAX_FEATURES and not changed_cut:
            spec, state = (b, job.state_b) if cut == "b" else (a, job.state_a)
            params = await pieces.load_pieces(conn, spec, state, a if cut == "b" else b)
            rows_small = rows_a if cut == "b" else rows_b
            q = pieces.pieces_sql(a, job.fa, b, job.fb, cut=cut, rows_small=rows_small,
                                  kept_halos=params["grid"] is not None)
            # the whole county over the cores, by zone; a correction's few rows on this connection
            return await pieces.run_split(conn, q, params, [a, b], 1 if rows_small is not None else None)
    q = tabulate_sql(a, job.fa, b, job.fb, with_aoi=job.wkb is not None, rows_a=rows_a, rows_b=rows_b,
                     divisions=job.divisions)
    cur = await conn.execute(q, {"aoi": job.wkb} if job.wkb is not None else None)
    return await cur.fetchall()


async def _incremental(conn: psycopg.AsyncConnection, job: _Job) -> list[tuple] | None:
    """The kept table of an earlier version of one layer (the other layer's version, the class
    fields and the area of interest the same), corrected by that layer's change: minus the
    pairs of the rows it retired since, plus those of the rows it added. None: nothing to start from."""
    def earlier(k: tuple) -> bool:
        if k[0] != "tabulate" or k[3:] != (job.fa, job.fb, job.aoi_key):
            return False
        return (k[2] == job.state_b and job.state_a.same_history(k[1])) or \
            (k[1] == job.state_a and job.state_b.same_history(k[2]))

    for key, kept in RESULTS.find(earlier):
        side, old, new = ("a", key[1], job.state_a) if key[2] == job.state_b else ("b", key[2], job.state_b)
        if not await version_still_there(conn, old):
            continue
        retired, added = removed_between(old.version, new.version, side), added_between(old.version, new.version, side)
        minus = await _computed(conn, job, **{f"rows_{side}": retired})
        plus = await _computed(conn, job, **{f"rows_{side}": added})
        return _corrected(kept, minus, plus)
    return None


def _corrected(kept: list[tuple], minus: list[tuple], plus: list[tuple]) -> list[tuple]:
    """Cells of ``kept`` minus those of ``minus`` plus those of ``plus``; a cell left with no
    pair is gone (its area is then a rounding residue, not an area)."""
    cells: dict[tuple[str, str], list] = {(ca, cb): [float(m2 or 0), int(n)] for ca, cb, m2, n in kept}
    for rows, sign in ((minus, -1), (plus, 1)):
        for ca, cb, m2, n in rows:
            acc = cells.setdefault((ca, cb), [0.0, 0])
            acc[0] += sign * float(m2 or 0)
            acc[1] += sign * int(n)
    return [(ca, cb, m2, n) for (ca, cb), (m2, n) in sorted(cells.items()) if n > 0]


async def _split_rows(conn: psycopg.AsyncConnection, a: LayerSpec, fa: str, b: LayerSpec, fb: str,
                      wkb: bytes | None, conninfo: str, workers: int,
                      divisions: list[str] | None = None) -> list[tuple]:
    """(class a, class b, m², pieces) rows, split over ``workers`` connections."""
    params = {"aoi": wkb} if wkb is not None else None
    part_on = "b" if await _row_estimate(conn, b) <= await _row_estimate(conn, a) else "a"

    async def run_part(k: int) -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as c2:
            await c2.execute("SET max_parallel_workers_per_gather = 0")
            q = tabulate_sql(a, fa, b, fb, with_aoi=wkb is not None, part=(k, workers), part_on=part_on,
                             divisions=divisions)
            cur = await c2.execute(q, params)
            return await cur.fetchall()

    rows: list[tuple] = []
    for part_rows in await asyncio.gather(*(run_part(k) for k in range(workers))):
        rows.extend(part_rows)
    return rows

"""The county-wide tabulation on the subdivided pieces of the layer of few large features (the
zones), giving the whole-geometry table cell for cell (tests/test_tabulate_exact.py).

Why pieces: a zone of ~1,600 vertices is detoasted, converted and scanned for every parcel it
meets; a piece of at most :data:`SUBDIVIDE_VERTICES` is cheap to test and its box is tight, so
the pieces drive the join and find the parcels through their GiST index.

Why not measure on the pieces: a piece's cut lines add vertices on the edges they cross, and
``ST_Area(geography)`` joins two vertices by a geodesic, so a parcel measured in two halves is
not the parcel measured whole (cells were off by up to 4e-7, some m², on the sample county).
So the pieces only *find* pairs, and each pair is measured as on whole geometries
(:data:`PAIR_AREA`, the expression :func:`geobase.analysis.tabulate.tabulate_sql` uses):

* a parcel covered by a piece is covered by its zone: its stored ``_area_m2``. A piece that
  is its own box (the inside of a zone) decides this by comparing boxes in double precision;
* a parcel that crosses a cut line or a zone's edge is measured against a *halo*: its zone
  clipped to the cell of a grid (side: :data:`HALO_FEATURES` parcels) that holds the parcel's
  centre, grown by a quarter cell. The parcel's box lies within an eighth of a cell of it, so
  the halo's own cut edges lie outside the parcel and never reach the intersection: ``parcel
  ∩ halo`` has the vertices of ``parcel ∩ zone`` (the zone's own vertices, kept as they are by
  the clip, and the same edge crossings; GEOS clips the whole zone to an envelope around the
  parcel the same way), and the zone covers the parcel exactly when the halo does. Pieces
  cannot serve as halos: ST_Subdivide drops a zone's collinear vertices, so its pieces are
  few and large, and their halos would hold most of the zone;
* the rest (a parcel too large for its halo, or whose box holds its zone's: it may cover or
  equal the zone, which only the whole zone can say) is measured on the whole geometries.

Pairs are counted once per (parcel, zone), as on whole geometries. Most pairs are *sole*: the
parcel's box lies strictly inside a piece that is its own box and whose box no other piece of
the zone overlaps (``alone``), so no other piece of the zone can meet the parcel and the pair
is counted without being grouped with others; only the rest (a few percent) is deduplicated.

Where a cold run's CPU went at 200,000 parcels (2.4 s before the halos were kept, 2 cores):
clipping the halos 0.5 s (now kept per zone version and grid, :mod:`geobase.analysis.subdivision`,
and a cell the zone covers needs no halo at all), re-reading parcels by row id for the boundary
pairs 0.2 s (now carried along), computing each parcel's box four times 0.1 s (now once), the
boundary pairs' ST_Intersection 0.7 s and their ellipsoidal areas 0.35 s (the work itself),
finding the pairs through the index 0.3 s."""

from __future__ import annotations

import asyncio
import math
import os

import psycopg
from psycopg import sql

from geobase.analysis import subdivision
from geobase.analysis.reuse import PIECES, VersionState, layer_states
from geobase.lazy_import import load
from geobase.specs import LayerSpec
from geobase.storage import current_filter, table_ident

#: largest piece a layer is cut into for a county-wide tabulation (vertices, ST_Subdivide)
SUBDIVIDE_VERTICES = 128
#: a layer with more features than this is not subdivided (its pieces are held in memory)
PIECES_MAX_FEATURES = 100_000
#: the side of a halo cell, in extents of the other layer's features (see :data:`CELL_SQL`)
HALO_FEATURES = 8
#: connections a county-wide tabulation is split over, by zone (:func:`run_split`): one per
#: core the database can use (this one's own and the others' in the same snapshot)
SPLIT_CONNECTIONS = max(1, min(4, os.cpu_count() or 1))
#: the per-piece arrays of :func:`load_pieces`' parameters (``alone``: see :func:`alone`)
PIECE_ARRAYS = (*subdivision.ARRAYS, "alone")

#: the area of the pair a x b (whole geometries): a feature covered by the other takes its
#: stored ellipsoidal ``_area_m2``, the others the ellipsoidal area of their intersection. One
#: expression for every path (whole geometries, pieces, corrections): the same table
PAIR_AREA = sql.SQL("""CASE WHEN ST_Covers(b.geom, a.geom) THEN coalesce(a._area_m2, ST_Area(a.geom::geography))
                     WHEN ST_Covers(a.geom, b.geom) THEN coalesce(b._area_m2, ST_Area(b.geom::geography))
                     ELSE ST_Area(ST_Intersection(a.geom, b.geom)::geography) END""")


def pieces_sql(a: LayerSpec, fa: str, b: LayerSpec, fb: str, *, cut: str,
               rows_small: sql.Composable | None = None, kept_halos: bool = False) -> sql.Composed:
    """Areas by class of A x class of B over the whole county, the layer ``cut`` ("a" or "b")
    found through its pieces (``%(rids)s``, ``%(wkbs)s``, ``%(rects)s``, ``%(alone)s`` and the
    boxes: see :func:`load_pieces`). ``rows_small``: which rows of the other layer take part.
    ``kept_halos``: the halos are read from ``analysis.halos`` (grid ``%(grid)s``), else the
    zones are clipped here, for the cells the boundary pairs need.

    The scan (pieces, then the parcels through the index) tests each parcel against one piece
    after the other, so PostGIS's prepared-geometry cache serves ST_Intersects and
    ST_CoveredBy; the halo pairs are taken halo by halo for the same reason. A parcel's box is
    computed once (``bb``; ST_XMin(geom) computes it on every call), and the boundary pairs
    carry their parcel's geometry instead of reading it again by row id."""
    small, large = ("a", "b") if cut == "b" else ("b", "a")
    ts, tl = (table_ident(a), table_ident(b)) if cut == "b" else (table_ident(b), table_ident(a))
    s = sql.Identifier(small)
    # on the halo, PAIR_AREA in the argument order of the pair: the zone covers the parcel
    # exactly when the halo does; the parcel covering the zone was sent the whole way
    halo_inter = "ST_Intersection(e.geom, h.halo)" if cut == "b" else "ST_Intersection(h.halo, e.geom)"
    halos = HALOS_KEPT if kept_halos else HALOS_HERE
    return sql.SQL("""
        WITH p AS MATERIALIZED (
            SELECT t.rid, ST_GeomFromWKB(t.w, 4490) AS g, t.rect, t.alone, t.x0, t.y0, t.x1, t.y1
            FROM unnest(%(rids)s::bigint[], %(wkbs)s::bytea[], %(rects)s::boolean[], %(alone)s::boolean[],
                        %(x0)s::float8[], %(y0)s::float8[], %(x1)s::float8[], %(y1)s::float8[])
                 AS t(rid, w, rect, alone, x0, y0, x1, y1)),
        l AS MATERIALIZED (
            SELECT {l}._rid, {l}.{fl}::text AS cl, ST_SetSRID({l}.geom::box2d::geometry, 4490) AS lbox
            FROM {tl} {l} WHERE {l}._rid IN (SELECT rid FROM p)),
        f AS MATERIALIZED (
            SELECT srid, lrid, cs, cl, sm2, whole, sole, inside, CASE WHEN inside THEN NULL ELSE geom END AS geom
            FROM (SELECT *, sole OR rin OR ST_CoveredBy(geom, g) AS inside
                  FROM (SELECT {s}._rid AS srid, l._rid AS lrid, {s}.{fs}::text AS cs, l.cl, {s}.geom, p.g,
                               coalesce({s}._area_m2, ST_Area({s}.geom::geography)) AS sm2,
                               p.rect AND ST_XMin(k.bb) >= p.x0 AND ST_XMax(k.bb) <= p.x1
                                      AND ST_YMin(k.bb) >= p.y0 AND ST_YMax(k.bb) <= p.y1 AS rin,
                               p.rect AND p.alone AND ST_XMin(k.bb) > p.x0 AND ST_XMax(k.bb) < p.x1
                                      AND ST_YMin(k.bb) > p.y0 AND ST_YMax(k.bb) < p.y1 AS sole,
                               {s}.geom ~ l.lbox AS whole
                        FROM p JOIN l ON l._rid = p.rid JOIN {ts} {s} ON {s}.geom && p.g AND {rows}
                             CROSS JOIN LATERAL (SELECT {s}.geom::box3d AS bb OFFSET 0) k
                        OFFSET 0) y
                  WHERE rin OR ST_Intersects(geom, g) OFFSET 0) x),
        pr AS MATERIALIZED (
            SELECT DISTINCT ON (srid, lrid) srid, lrid, cs, cl, sm2, inside, whole, geom
            FROM f WHERE NOT sole ORDER BY srid, lrid, inside DESC),
        e AS MATERIALIZED (
            SELECT srid, lrid, cs, cl, sm2, geom, i, j,
                   ST_XMin(bb) >= (i - 0.125) * %(cell)s AND ST_XMax(bb) <= (i + 1.125) * %(cell)s
                   AND ST_YMin(bb) >= (j - 0.125) * %(cell)s AND ST_YMax(bb) <= (j + 1.125) * %(cell)s AS fits
            FROM (SELECT *, floor((ST_XMin(bb) + ST_XMax(bb)) / 2 / %(cell)s)::bigint AS i,
                            floor((ST_YMin(bb) + ST_YMax(bb)) / 2 / %(cell)s)::bigint AS j
                  FROM (SELECT *, geom::box3d AS bb FROM pr WHERE NOT inside AND NOT whole OFFSET 0) x) y),
        h AS {halos},
        cells AS (
            SELECT cs, cl, sum(sm2) AS m2, count(*) AS n FROM f WHERE sole GROUP BY 1, 2
            UNION ALL
            SELECT cs, cl, sum(sm2), count(*) FROM pr WHERE inside AND NOT whole GROUP BY 1, 2
            UNION ALL
            SELECT e.cs, e.cl,
                   CASE WHEN NOT e.fits OR h.covered IS NULL
                             THEN (SELECT {area} FROM {tl} {l} JOIN {ts} {s} ON {s}._rid = e.srid WHERE {l}._rid = e.lrid)
                        WHEN h.covered OR ST_Covers(h.halo, e.geom) THEN e.sm2
                        ELSE ST_Area({halo_inter}::geography) END, 1
            FROM (SELECT * FROM e ORDER BY lrid, i, j OFFSET 0) e
                 LEFT JOIN h ON h.lrid = e.lrid AND h.i = e.i AND h.j = e.j
            UNION ALL
            SELECT {s}.{fs}::text, {l}.{fl}::text, {area}, 1
            FROM (SELECT srid, lrid FROM pr WHERE whole ORDER BY lrid OFFSET 0) e
                 JOIN {tl} {l} ON {l}._rid = e.lrid JOIN {ts} {s} ON {s}._rid = e.srid)
        SELECT {ca}, {cb}, sum(m2), sum(n)::bigint FROM cells
        GROUP BY 1, 2 ORDER BY 1, 2
    """).format(s=s, l=sql.Identifier(large), ts=ts, tl=tl, halo_inter=sql.SQL(halo_inter),
                halos=halos.format(tl=tl),
                fs=sql.Identifier(fa if small == "a" else fb), fl=sql.Identifier(fb if small == "a" else fa),
                rows=rows_small or current_filter(small), area=PAIR_AREA,
                ca=sql.SQL("cs" if small == "a" else "cl"), cb=sql.SQL("cl" if small == "a" else "cs"))


#: the halos of the boundary pairs ``e`` read from the kept grid (:mod:`geobase.analysis.subdivision`)
HALOS_KEPT = sql.SQL("(SELECT rid AS lrid, i, j, covered, halo FROM analysis.halos WHERE grid = %(grid)s)")

#: the halos of the boundary pairs ``e`` clipped here: the zone clipped to the pair's cell grown
#: by a quarter (the same halo as a kept one; ``covered`` is not worked out, ST_Covers decides)
HALOS_HERE = sql.SQL("""MATERIALIZED (
    SELECT d.lrid, d.i, d.j, false AS covered,
           ST_Intersection(z.geom, ST_MakeEnvelope((d.i - 0.25) * %(cell)s, (d.j - 0.25) * %(cell)s,
                                                   (d.i + 1.25) * %(cell)s, (d.j + 1.25) * %(cell)s, 4490)) AS halo
    FROM (SELECT DISTINCT lrid, i, j FROM e) d JOIN {tl} z ON z._rid = d.lrid)""")


#: the pieces of a layer's current features; ``rect``: the piece is its own box (one ring,
#: valid, every vertex on the box's edges, the four corners among them), so a feature lies in
#: it exactly when its box does, compared in double precision (``x0``..``y1``: the box)
PIECES_SQL = sql.SQL("""
    SELECT _rid, ST_AsBinary(piece),
           ST_NumGeometries(piece) = 1 AND ST_NRings(piece) = 1 AND ST_IsValid(piece)
           AND (SELECT bool_and(ST_X(d.geom) IN (x0, x1) OR ST_Y(d.geom) IN (y0, y1))
                       AND count(DISTINCT (ST_X(d.geom), ST_Y(d.geom)))
                           FILTER (WHERE ST_X(d.geom) IN (x0, x1) AND ST_Y(d.geom) IN (y0, y1)) = 4
                FROM ST_DumpPoints(piece) d),
           x0, y0, x1, y1
    FROM (SELECT _rid, piece, ST_XMin(piece) AS x0, ST_YMin(piece) AS y0, ST_XMax(piece) AS x1, ST_YMax(piece) AS y1
          FROM {t}, LATERAL ST_Subdivide(geom, {n}) AS piece WHERE {cur}) x
""")

#: the side of the halo grid: :data:`HALO_FEATURES` times the 90th percentile of the extent of
#: the other layer's features (a sample), so that nearly all of them fit the halo of their cell;
#: rounded to a power of two by :func:`grid_side` (kept halos are found again by their side)
CELL_SQL = sql.SQL("""
    SELECT {k} * percentile_cont(0.9) WITHIN GROUP (ORDER BY
                     greatest(ST_XMax(bb) - ST_XMin(bb), ST_YMax(bb) - ST_YMin(bb)))
    FROM (SELECT geom::box3d AS bb FROM {small} WHERE {cur} LIMIT 2000 OFFSET 0) s
""")


async def load_pieces(conn: psycopg.AsyncConnection, spec: LayerSpec, state: VersionState | None,
                      other: LayerSpec) -> dict:
    """The parameters of :func:`pieces_sql` for the current features of ``spec``: each piece's
    row id, WKB, whether it is its box, the box and whether it is ``alone``; the side of the halo
    grid, from the features of ``other`` (it only affects speed); and the kept halos at that side
    (``grid``, None: :func:`pieces_sql` without ``kept_halos``). The pieces of a layer state are
    kept in memory and in the database (:mod:`geobase.analysis.subdivision`: cut once per zone
    version, read back after a restart); a later tabulation against another version of the
    other layer does not cut the zones again. Halos not kept yet are built for the next
    tabulation (this one's snapshot cannot see them)."""
    got = PIECES.get(state) if state is not None else None
    if got is None:
        cut = PIECES_SQL.format(n=sql.Literal(SUBDIVIDE_VERTICES), t=table_ident(spec), cur=current_filter())
        if state is not None:
            got = await subdivision.kept(conn, state, SUBDIVIDE_VERTICES)
            if got is None:
                got = await subdivision.build(conn, spec, state, SUBDIVIDE_VERTICES, cut)
        if got is None:  # no state to keep it under, or no kept copy could be made
            got = subdivision.as_arrays(await (await conn.execute(cut)).fetchall())
        got = got | {"alone": alone(got)}
        if state is not None:
            PIECES.put(state, got)
    cur = await conn.execute(CELL_SQL.format(k=sql.Literal(HALO_FEATURES), small=table_ident(other),
                                             cur=current_filter()))
    cell = grid_side((await cur.fetchone())[0])
    grid, sid = None, got.get("subdivision")
    if sid is not None:
        grid = await subdivision.halo_grid(conn, sid, cell)
        if grid is None:
            await subdivision.build_halos(conn, spec, state, sid, cell, table_ident(spec), current_filter())
    return {k: got[k] for k in PIECE_ARRAYS} | {"cell": cell, "grid": grid}


def grid_side(extent: float | None) -> float:
    """The halo grid's side: ``extent`` rounded to the nearest power of two (1 when unknown).
    A power of two makes the kept halos of one zone version serve every version of the other
    layer whose features are about as large, and every cell corner exact in double precision."""
    if not extent or extent <= 0 or not math.isfinite(extent):
        return 1.0
    return 2.0 ** round(math.log2(extent))


def alone(params: dict) -> list[bool]:
    """For each piece, whether no other piece of its zone has a box overlapping its box's
    interior. Then a feature whose box lies strictly inside the piece's box meets no other piece
    of the zone, and its pair with the zone is counted from this piece alone. ST_Subdivide's
    pieces are separated by its cut lines, so this holds unless a cut was rounded across one."""
    load("numpy")  # on first use, not at the server's start (tests/test_lazy_imports.py)
    import numpy as np

    x0, y0, x1, y1 = (np.asarray(params[k], dtype=float) for k in ("x0", "y0", "x1", "y1"))
    rids = np.asarray(params["rids"], dtype=np.int64)
    out = np.ones(len(rids), dtype=bool)
    order = np.argsort(rids, kind="stable")
    bounds = np.flatnonzero(np.diff(rids[order])) + 1
    for ks in np.split(order, bounds):
        if len(ks) < 2:
            continue
        over = ((x0[ks, None] < x1[None, ks]) & (x1[ks, None] > x0[None, ks])
                & (y0[ks, None] < y1[None, ks]) & (y1[ks, None] > y0[None, ks]))
        np.fill_diagonal(over, False)
        out[ks] = ~over.any(axis=1)
    return out.tolist()


def split_pieces(params: dict, n: int) -> list[dict]:
    """:func:`load_pieces`' parameters in at most ``n`` parts, by feature: every piece of a zone
    in the same part, so each (parcel, zone) pair is found, deduplicated and measured in one
    part only and the parts' cells add up to the whole table. Balanced by the pieces' box area
    (the parcels a part finds), largest zones first."""
    weight: dict[int, float] = {}
    for rid, x0, y0, x1, y1 in zip(*(params[k] for k in ("rids", "x0", "y0", "x1", "y1")), strict=True):
        weight[rid] = weight.get(rid, 0.0) + (x1 - x0) * (y1 - y0)
    load, part_of = [0.0] * max(1, n), {}
    for rid in sorted(weight, key=lambda r: (-weight[r], r)):
        k = min(range(len(load)), key=load.__getitem__)
        part_of[rid], load[k] = k, load[k] + weight[rid]
    parts = [{k: [] for k in PIECE_ARRAYS} | {"cell": params["cell"], "grid": params.get("grid")} for _ in load]
    for i, rid in enumerate(params["rids"]):
        for k in PIECE_ARRAYS:
            parts[part_of[rid]][k].append(params[k][i])
    return [p for p in parts if p["rids"]]


async def run_split(conn: psycopg.AsyncConnection, query: sql.Composable, params: dict, specs: list[LayerSpec],
                    n: int | None = None) -> list[tuple]:
    """The rows of :func:`pieces_sql`, its pieces split by zone over ``n`` connections
    (default :data:`SPLIT_CONNECTIONS`): this one and new ones, whose parts' cells are summed.

    Every part must read the rows ``conn`` reads. A snapshot cannot be shared (an analysis
    runs in a savepoint of the request's transaction, and PostgreSQL exports no snapshot from
    one), so each new connection opens its own repeatable-read snapshot and checks that the
    layers ``specs`` are in the state ``conn`` sees (version, its commit time, highest row id;
    a version's rows never change, see :mod:`geobase.analysis.reuse`); a part whose snapshot
    sees another state (an ingest committed in between) is computed on ``conn`` instead. One
    connection when there is one part, or when a layer has no version to check."""
    parts = split_pieces(params, n or SPLIT_CONNECTIONS)
    states = await _own_states(conn, specs) if len(parts) > 1 else None
    if states is None:
        cur = await conn.execute(query, params)
        return await cur.fetchall()
    timeout = (await (await conn.execute("SELECT current_setting('statement_timeout')")).fetchone())[0]

    async def here(p: dict) -> list[tuple]:
        cur = await conn.execute(query, p)
        return await cur.fetchall()

    async def sibling(p: dict) -> list[tuple] | None:  # None: this part is computed on ``conn``
        return await beside(conn, specs, states, query, p, timeout)

    got = await asyncio.gather(here(parts[0]), *(sibling(p) for p in parts[1:]), return_exceptions=True)
    for g in got:  # every part has finished (none left running on ``conn``) before one's error is raised
        if isinstance(g, BaseException):
            raise g
    for i, g in enumerate(got):
        if g is None:
            got[i] = await here(parts[i])
    return merge_cells(got)


async def beside(conn: psycopg.AsyncConnection, specs: list[LayerSpec], states: dict, query: sql.Composable,
                 params: dict | None, timeout: str | None = None) -> list[tuple] | None:
    """The rows of ``query`` run on a new connection in its own repeatable-read snapshot, when
    that snapshot sees the layers ``specs`` in ``states`` (as ``conn``'s: see :func:`run_split`);
    None when it sees another state (an ingest committed in between)."""
    if timeout is None:
        timeout = (await (await conn.execute("SELECT current_setting('statement_timeout')")).fetchone())[0]
    extra = {"password": conn.info.password} if conn.info.password else {}
    c2 = await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True, **extra)
    async with c2, c2.transaction():
        await c2.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await c2.execute("SELECT set_config('statement_timeout', %s, true)", (timeout,))
        if await layer_states(c2, specs) != states:
            return None
        cur = await c2.execute(query, params)
        return await cur.fetchall()


async def _own_states(conn: psycopg.AsyncConnection, specs: list[LayerSpec]) -> dict | None:
    """The layers' states as ``conn`` sees them, when its transaction is one repeatable-read
    snapshot and every layer has a version (else None: nothing another connection can check)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
        return None
    cur = await conn.execute("SELECT current_setting('transaction_isolation')")
    if (await cur.fetchone())[0] not in ("repeatable read", "serializable"):
        return None
    states = await layer_states(conn, specs)
    return states if all(v is not None for v in states.values()) else None


def merge_cells(parts: list[list[tuple]]) -> list[tuple]:
    """(class a, class b, m², pairs) rows of several parts summed by cell, sorted like one query's."""
    cells: dict[tuple[str, str], list] = {}
    for rows in parts:
        for ca, cb, m2, n in rows:
            acc = cells.setdefault((ca, cb), [0.0, 0])
            acc[0] += float(m2 or 0)
            acc[1] += int(n)
    return [(ca, cb, m2, n) for (ca, cb), (m2, n) in sorted(cells.items())]

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

* a parcel covered by a piece is covered by its zone: its stored ``_area_m2``;
* a parcel that crosses a cut line or a zone's edge is measured against the piece's *halo*:
  its zone clipped to the piece's box grown by :data:`HALO_SHARE` of its size. The parcel's
  box lies well inside the halo's box, so the halo's own cut edges lie outside the parcel and
  never reach the intersection: ``parcel ∩ halo`` has the vertices of ``parcel ∩ zone`` (the
  zone's own vertices, kept as they are by the clip, and the same edge crossings; GEOS clips
  the whole zone to an envelope around the parcel the same way), and the zone covers the
  parcel exactly when the halo does. About 200 vertices instead of the zone's 1,600;
* the rest (a parcel too large for any halo, or whose box holds its zone's: it may cover or
  equal the zone, which only the whole zone can say) is measured on the whole geometries.

Pairs are counted once per (parcel, zone), as on whole geometries."""

from __future__ import annotations

import psycopg
from psycopg import sql

from geobase.analysis.reuse import PIECES, VersionState
from geobase.specs import LayerSpec
from geobase.storage import current_filter, table_ident

#: largest piece a layer is cut into for a county-wide tabulation (vertices, ST_Subdivide)
SUBDIVIDE_VERTICES = 128
#: a layer with more features than this is not subdivided (its pieces are held in memory)
PIECES_MAX_FEATURES = 100_000
#: a halo is its piece's box grown by this share of the box's larger side on every side; a
#: parcel is measured against it when the parcel's box lies within half that growth
HALO_SHARE = 0.25

#: the area of the pair a x b (whole geometries): a feature covered by the other takes its
#: stored ellipsoidal ``_area_m2``, the others the ellipsoidal area of their intersection. One
#: expression for every path (whole geometries, pieces, corrections): the same table
PAIR_AREA = sql.SQL("""CASE WHEN ST_Covers(b.geom, a.geom) THEN coalesce(a._area_m2, ST_Area(a.geom::geography))
                     WHEN ST_Covers(a.geom, b.geom) THEN coalesce(b._area_m2, ST_Area(b.geom::geography))
                     ELSE ST_Area(ST_Intersection(a.geom, b.geom)::geography) END""")


def pieces_sql(a: LayerSpec, fa: str, b: LayerSpec, fb: str, *, cut: str,
               rows_small: sql.Composable | None = None) -> sql.Composed:
    """Areas by class of A x class of B over the whole county, the layer ``cut`` ("a" or "b")
    found through its pieces (``%(rids)s``, ``%(wkbs)s``, ``%(halos)s``, ``%(fits)s``: the
    zone's row id, the piece, its halo and the box a parcel must lie in to use the halo, as
    WKB; see :func:`load_pieces`). ``rows_small``: which rows of the other layer take part.

    The scan (pieces, then the parcels through the index) tests each parcel against one piece
    after the other, so PostGIS's prepared-geometry cache serves ST_Intersects and
    ST_CoveredBy; the halo pairs are taken piece by piece for the same reason."""
    small, large = ("a", "b") if cut == "b" else ("b", "a")
    ts, tl = (table_ident(a), table_ident(b)) if cut == "b" else (table_ident(b), table_ident(a))
    s = sql.Identifier(small)
    # on the halo, PAIR_AREA in the argument order of the pair: the zone covers the parcel
    # exactly when the halo does; the parcel covering the zone was sent the whole way
    halo_inter = "ST_Intersection(s.geom, p.h)" if cut == "b" else "ST_Intersection(p.h, s.geom)"
    return sql.SQL("""
        WITH p AS MATERIALIZED (
            SELECT t.k, t.rid, ST_GeomFromWKB(t.w, 4490) AS g, ST_GeomFromWKB(t.h, 4490) AS h,
                   ST_GeomFromWKB(t.f, 4490) AS fit, t.rect, t.x0, t.y0, t.x1, t.y1
            FROM unnest(%(rids)s::bigint[], %(wkbs)s::bytea[], %(halos)s::bytea[], %(fits)s::bytea[],
                        %(rects)s::boolean[], %(x0)s::float8[], %(y0)s::float8[], %(x1)s::float8[], %(y1)s::float8[])
                 WITH ORDINALITY AS t(rid, w, h, f, rect, x0, y0, x1, y1, k)),
        l AS MATERIALIZED (
            SELECT {l}._rid, {l}.{fl}::text AS cl, ST_SetSRID({l}.geom::box2d::geometry, 4490) AS lbox
            FROM {tl} {l} WHERE {l}._rid IN (SELECT rid FROM p)),
        pr AS MATERIALIZED (
            SELECT srid, lrid, cs, sm2, bool_or(inside) AS inside, bool_or(whole) AS whole,
                   min(k) FILTER (WHERE fits) AS k
            FROM (SELECT srid, lrid, cs, sm2, rin OR ST_CoveredBy(geom, g) AS inside, fits, whole, k
                  FROM (SELECT {s}._rid AS srid, l._rid AS lrid, {s}.{fs}::text AS cs, {s}.geom, p.g, p.k,
                               coalesce({s}._area_m2, ST_Area({s}.geom::geography)) AS sm2,
                               p.rect AND ST_XMin({s}.geom) >= p.x0 AND ST_XMax({s}.geom) <= p.x1
                                      AND ST_YMin({s}.geom) >= p.y0 AND ST_YMax({s}.geom) <= p.y1 AS rin,
                               {s}.geom @ p.fit AS fits, {s}.geom ~ l.lbox AS whole
                        FROM p JOIN l ON l._rid = p.rid JOIN {ts} {s} ON {s}.geom && p.g AND {rows}
                        OFFSET 0) y
                  WHERE rin OR ST_Intersects(geom, g)) x
            GROUP BY 1, 2, 3, 4),
        cells AS (
            SELECT pr.cs, l.cl, pr.sm2 AS m2 FROM pr JOIN l ON l._rid = pr.lrid
            WHERE pr.inside AND NOT pr.whole
            UNION ALL
            SELECT e.cs, l.cl, CASE WHEN ST_Covers(p.h, s.geom) THEN e.sm2
                                    ELSE ST_Area({halo_inter}::geography) END
            FROM (SELECT * FROM pr WHERE NOT inside AND NOT whole AND k IS NOT NULL ORDER BY k OFFSET 0) e
                 JOIN p ON p.k = e.k JOIN l ON l._rid = e.lrid JOIN {ts} s ON s._rid = e.srid
            UNION ALL
            SELECT {s}.{fs}::text, {l}.{fl}::text, {area}
            FROM (SELECT srid, lrid FROM pr WHERE whole OR (NOT inside AND k IS NULL) ORDER BY lrid OFFSET 0) e
                 JOIN {tl} {l} ON {l}._rid = e.lrid JOIN {ts} {s} ON {s}._rid = e.srid)
        SELECT {ca}, {cb}, sum(m2), count(*) FROM cells
        GROUP BY 1, 2 ORDER BY 1, 2
    """).format(s=s, l=sql.Identifier(large), ts=ts, tl=tl, halo_inter=sql.SQL(halo_inter),
                fs=sql.Identifier(fa if small == "a" else fb), fl=sql.Identifier(fb if small == "a" else fa),
                rows=rows_small or current_filter(small), area=PAIR_AREA,
                ca=sql.SQL("cs" if small == "a" else "cl"), cb=sql.SQL("cl" if small == "a" else "cs"))


#: the pieces of a layer's current features, with their halos and fit boxes (see the module
#: docstring), smallest halo first (a pair takes the first halo it fits: the cheapest); ``rect``:
#: the piece is its own box (one ring, valid, every vertex on the box's edges, the four corners
#: among them), so a feature lies in it exactly when its box does, compared in double precision
PIECES_SQL = sql.SQL("""
    SELECT _rid, ST_AsBinary(piece), ST_AsBinary(halo), ST_AsBinary(ST_SetSRID(ST_Expand(box, grow / 2), 4490)),
           ST_NumGeometries(piece) = 1 AND ST_NRings(piece) = 1 AND ST_IsValid(piece)
           AND (SELECT bool_and(ST_X(d.geom) IN (x0, x1) OR ST_Y(d.geom) IN (y0, y1))
                       AND count(DISTINCT (ST_X(d.geom), ST_Y(d.geom)))
                           FILTER (WHERE ST_X(d.geom) IN (x0, x1) AND ST_Y(d.geom) IN (y0, y1)) = 4
                FROM ST_DumpPoints(piece) d),
           x0, y0, x1, y1
    FROM (SELECT *, ST_Intersection(geom, ST_Expand(box, grow)) AS halo
          FROM (SELECT _rid, geom, piece, ST_SetSRID(piece::box2d::geometry, 4490) AS box,
                       ST_XMin(piece) AS x0, ST_YMin(piece) AS y0, ST_XMax(piece) AS x1, ST_YMax(piece) AS y1,
                       {share} * greatest(ST_XMax(piece) - ST_XMin(piece), ST_YMax(piece) - ST_YMin(piece)) AS grow
                FROM {t}, LATERAL ST_Subdivide(geom, {n}) AS piece WHERE {cur}) x) y
    ORDER BY ST_NPoints(halo), _rid
""")


async def load_pieces(conn: psycopg.AsyncConnection, spec: LayerSpec,
                      state: VersionState | None) -> dict[str, list]:
    """The parameters of :func:`pieces_sql` for the current features of ``spec``: each piece's
    row id, WKB, halo and fit box (kept per layer state: a later tabulation against another
    version of the other layer does not cut the zones again)."""
    got = PIECES.get(state) if state is not None else None
    if got is None:
        cur = await conn.execute(PIECES_SQL.format(share=sql.Literal(HALO_SHARE), n=sql.Literal(SUBDIVIDE_VERTICES),
                                                   t=table_ident(spec), cur=current_filter()))
        rows = await cur.fetchall()
        got = {name: [bytes(r[i]) if isinstance(r[i], (bytes, memoryview)) else r[i] for r in rows]
               for i, name in enumerate(("rids", "wkbs", "halos", "fits", "rects", "x0", "y0", "x1", "y1"))}
        if state is not None:
            PIECES.put(state, got)
    return got

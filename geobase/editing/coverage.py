"""Coverage layers (land use, planning zones: ``coverage: true`` in the spec) stay without gaps
or overlaps through every committed edit.

The layer was a coverage before the session; the session replaces the features it touched. So
the coverage stays exact when (1) no staged feature overlaps another staged feature or an
untouched current one (more than the two overlapped before: delivered data has slivers), and (2) the staged features cover exactly the area the touched features
covered before (their symmetric difference has no area): a boundary moved between two parcels
in one session passes, the same move of one parcel alone leaves a gap or an overlap and is
refused with the check, the features involved and a point inside the problem (422).

Gaps and overlaps are measured as planar areas (see :func:`_m2`); a difference below
``TOLERANCE_M2`` (or 1e-9 of the touched area) is floating-point noise of the overlay, not a gap.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from geobase.errors import CheckFailed
from geobase.specs import LayerSpec
from geobase.storage import current_filter, table_ident

TOLERANCE_M2 = 0.01
RELATIVE_TOLERANCE = 1e-9

#: the staged changes whose geometry differs from the current one (moved, new, deleted): only they
#: can open a gap or an overlap; a change of attributes alone stages the same EWKB it read
_MOVED = """SELECT c.key, c.geom AS ng, d.geom AS og FROM catalog.edit_changes c
    LEFT JOIN {t} d ON d._key = c.key AND d.division = c.division AND {cur}
    WHERE c.session_id = %(sid)s AND (c.op = 'delete' OR d._key IS NULL OR ST_AsEWKB(c.geom) <> ST_AsEWKB(d.geom))"""
#: the changes that matter to the coverage: the moved ones and the unmoved ones whose box meets a
#: moved geometry (old or new); the others cover the same area before and after and touch none of
#: the moved ones, so leaving them out of both sides of the difference changes nothing
_RELEVANT = f"""WITH m AS ({_MOVED})
    SELECT c.key FROM catalog.edit_changes c WHERE c.session_id = %(sid)s AND (c.key IN (SELECT key FROM m)
        OR EXISTS (SELECT 1 FROM m WHERE m.ng && c.geom OR m.og && c.geom))"""
_STAGED = f"""SELECT key, geom FROM catalog.edit_changes WHERE session_id = %(sid)s AND op = 'upsert'
    AND key IN ({_RELEVANT})"""
#: the (key, county) of the relevant changes: the layer's rows they replace. Every change names its
#: county by then (geobase.catalog.edits.refuse_shared_keys): another county's feature of the same
#: key is not touched
_TOUCHED = f"""SELECT key, division FROM catalog.edit_changes WHERE session_id = %(sid)s AND key IN ({_RELEVANT})"""


def _where(geom_sql: str) -> str:
    return f"ST_AsText(ST_PointOnSurface({geom_sql}), 7)"


def _m2(geom_sql: str) -> str:
    """The planar area of a gap or overlap in m² (Web Mercator scaled by cos² of the latitude: exact
    enough to tell a real gap from noise). Not geodesic on purpose: a piece whose edges run where
    the neighbour's straight edge ran has no planar area, while geodesic areas differ between an
    edge and the same edge with a vertex added on it (the edge is then two geodesics)."""
    return (f"coalesce(ST_Area(ST_Transform({geom_sql}, 3857)) * cos(radians(ST_Y(ST_PointOnSurface({geom_sql}))))"
            f" ^ 2, 0)")


def _overlap(conn: psycopg.Connection, spec: LayerSpec, sid: str) -> tuple | None:
    """The first (staged key, other key, m², point) whose overlap the session grows, if any.

    Measured per other feature: how much the staged features (other than it) overlap it now,
    against how much the touched features overlapped it before. An overlap the features already
    had (imperfect delivered data has slivers) is not the edit's doing, and it stays the same when
    the edit only redistributes it: a split hands a parcel's sliver with a neighbour to its pieces,
    a merge hands the pieces' slivers back to one parcel (counting, for each new feature, only its
    own old overlap called such a sliver new: a split or merge of a parcel with a sliver above the
    tolerance was refused). An attribute edit never fails on old slivers."""
    t = table_ident(spec)
    q = sql.SQL(f"""
        WITH mv AS ({_MOVED}), s AS ({_STAGED}),
        o AS (SELECT d._key AS key, d.geom FROM {{t}} d WHERE {{cur}} AND (d._key, d.division) IN ({_TOUCHED})),
        pairs AS (
            SELECT a.key AS k1, b.key AS k2, a.geom AS g1, b.geom AS g2, (SELECT geom FROM o WHERE o.key = b.key) AS og2
              FROM s a JOIN s b ON a.key <> b.key AND a.geom && b.geom AND ST_Relate(a.geom, b.geom, '2********')
             WHERE a.key IN (SELECT key FROM mv)
            UNION ALL
            SELECT a.key, d._key, a.geom, d.geom, d.geom FROM s a JOIN {{t}} d
              ON {{cur}} AND d.geom && a.geom AND ST_Relate(a.geom, d.geom, '2********')
             AND (d._key, d.division) NOT IN ({_TOUCHED}) WHERE a.key IN (SELECT key FROM mv)),
        k AS (SELECT DISTINCT ON (k2) k1, k2, g2, og2 FROM pairs
              ORDER BY k2, ST_Area(ST_Intersection(g1, g2)) DESC, k1),
        now AS (SELECT k1, k2, og2, ST_Intersection(
                    (SELECT ST_Union(s.geom) FROM s WHERE s.key <> k.k2 AND s.geom && k.g2), g2) AS i FROM k),
        grown AS (
            SELECT k1, k2, i, {_m2("i")} - coalesce(
                (SELECT {_m2("ST_Intersection(ST_Union(o.geom), now.og2)")} FROM o
                  WHERE o.key <> now.k2 AND o.geom && now.og2), 0) AS m2
            FROM now)
        SELECT k1, k2, m2, {_where("i")} FROM grown WHERE m2 > %(tol)s ORDER BY m2 DESC LIMIT 1
    """).format(t=t, cur=current_filter("d"))
    return conn.execute(q, {"sid": sid, "tol": TOLERANCE_M2}).fetchone()


def _difference(conn: psycopg.Connection, spec: LayerSpec, sid: str) -> tuple:
    """(m² covered before and not now, m² covered now and not before, touched m², a point of the larger)."""
    t = table_ident(spec)
    q = sql.SQL(f"""
        WITH o AS (SELECT coalesce(ST_Union(d.geom), 'SRID=4490;POLYGON EMPTY'::geometry) AS g FROM {{t}} d
                   WHERE {{cur}} AND (d._key, d.division) IN ({_TOUCHED})),
             n AS (SELECT coalesce(ST_Union(geom), 'SRID=4490;POLYGON EMPTY'::geometry) AS g FROM ({_STAGED}) s),
             gap AS (SELECT ST_Difference(o.g, n.g) AS g FROM o, n),
             extra AS (SELECT ST_Difference(n.g, o.g) AS g FROM o, n)
        SELECT {_m2("gap.g")}, {_m2("extra.g")}, ST_Area(o.g::geography),
               CASE WHEN ST_IsEmpty(gap.g) THEN NULL ELSE {_where("gap.g")} END,
               CASE WHEN ST_IsEmpty(extra.g) THEN NULL ELSE {_where("extra.g")} END
        FROM gap, extra, o
    """).format(t=t, cur=current_filter("d"))
    return conn.execute(q, {"sid": sid}).fetchone()


def check_session(conn: psycopg.Connection, spec: LayerSpec, sid: str) -> None:
    """422 (check ``coverage_overlap`` / ``coverage_gap``) unless the session keeps the coverage.
    A session that moves no geometry (attributes only) keeps it by construction: nothing to check."""
    moved = sql.SQL(f"SELECT EXISTS ({_MOVED})").format(t=table_ident(spec), cur=current_filter("d"))
    if not conn.execute(moved, {"sid": sid}).fetchone()[0]:
        return
    hit = _overlap(conn, spec, sid)
    if hit:
        raise CheckFailed("coverage_overlap", f"coverage of {spec.name!r}: feature {hit[0]!r} would overlap "
                          f"{hit[1]!r} by {hit[2]:.2f} m² (at {hit[3]}); move the neighbour's boundary in the same "
                          "edit session", field="geometry", feature=hit[0])
    gap, extra, touched, gap_at, extra_at = _difference(conn, spec, sid)
    tol = max(TOLERANCE_M2, RELATIVE_TOLERANCE * (touched or 0.0))
    if gap > tol:
        raise CheckFailed("coverage_gap", f"coverage of {spec.name!r}: the edit leaves {gap:.2f} m² uncovered "
                          f"(at {gap_at}); give that area to a neighbour in the same edit session", field="geometry")
    if extra > tol:
        raise CheckFailed("coverage_extent", f"coverage of {spec.name!r}: the edit covers {extra:.2f} m² the layer did "
                          f"not cover (at {extra_at}); a coverage edit redistributes the area it touches",
                          field="geometry")

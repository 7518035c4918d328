"""The SQL of the indicator terms (:class:`geobase.indicators.spec.Term`): m² per township.

Conventions of geobase/analysis/common.py: intersections in EPSG:4490, areas ellipsoidal on the
CGCS2000 ellipsoid (``ST_Area(geography)``, or the stored ``_area_m2`` of a feature wholly inside
a piece), identifiers from validated specs, filters compiled from validated codes
(:func:`geobase.analysis.rules.compile_filter`), values bound as parameters.

The townships of one recompute live in a temporary table of the job's transaction
(:func:`township_pieces`): all of them for a full recompute, only those the rows a version
changed meet for an incremental one, so the work follows the change. They are whole, not cut
into the tabulation's 128-vertex pieces: cutting splits the long edges of zones and control
lines, and a split edge's geodesic is not the whole edge's (5e-6 of a zone's area apart); a
township of ~1,000 vertices is prepared once by PostGIS and reused for its consecutive parcels.

A term's rows are the layers' rows as of the versions the values are computed for
(``as_of_filter``); for an incremental recompute, the rows one layer added or retired between
two versions (``added_between`` / ``removed_between``): the term's change is the first minus the
second, because a term is a sum over features.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psycopg
from psycopg import sql

from geobase.indicators.spec import DIVISIONS_LAYER, Term
from geobase.specs import Registry
from geobase.storage import added_between, as_of_filter, removed_between, table_ident

PIECES = sql.Identifier("_indicator_pieces")


@dataclass(frozen=True)
class Change:
    """The rows ``layer`` changed from version ``v1`` to ``v2`` (``sign`` +1 added, -1 retired)."""

    layer: str
    v1: int
    v2: int

    def rows(self, sign: int, alias: str) -> sql.Composable:
        return added_between(self.v1, self.v2, alias) if sign > 0 else removed_between(self.v1, self.v2, alias)

    def either(self, alias: str) -> sql.Composable:
        return sql.SQL("({} OR {})").format(self.rows(1, alias), self.rows(-1, alias))


@dataclass
class Context:
    """What a recompute reads: the connection (in the job's transaction), the specs, the layer
    versions the values are for, and where the DEM's files are."""

    conn: psycopg.AsyncConnection
    registry: Registry
    versions: dict[str, int]
    data_path: object = None

    def table(self, layer: str) -> sql.Composable:
        return table_ident(self.registry.layers[layer])

    def rows(self, layer: str, alias: str) -> sql.Composable:
        return as_of_filter(self.versions[layer], alias)

    def where(self, layer: str, flt: dict, alias: str) -> sql.Composable:
        from geobase.analysis.rules import compile_filter

        return compile_filter(self.registry, layer, flt, alias, "indicator")


async def divisions(ctx: Context) -> dict[str, dict]:
    """``{code: {"name", "level"}}`` of the county and township divisions as of the versions."""
    if DIVISIONS_LAYER not in ctx.versions:
        return {}
    cur = await ctx.conn.execute(sql.SQL(
        "SELECT DISTINCT xzqdm::text, xzqmc::text, level::text FROM {t} d WHERE {rows} "
        "AND level IN ('county', 'township') ORDER BY 1").format(t=ctx.table(DIVISIONS_LAYER),
                                                                   rows=ctx.rows(DIVISIONS_LAYER, "d")))
    return {c: {"name": n, "level": lv} for c, n, lv in await cur.fetchall()}


async def township_pieces(ctx: Context, change: Change | None) -> list[str]:
    """Fill the temporary table of township pieces (dropped at the end of the transaction): every
    piece for a full recompute; for a change, the pieces that meet a row the change added or
    retired. Returns the townships those pieces belong to (all, or those the change touches)."""
    near = sql.SQL("")
    if change is not None:
        # a row that only touches a township's border (a shared edge) changes nothing there
        near = sql.SQL("AND EXISTS (SELECT 1 FROM {t} x WHERE {ch} AND x.geom && p.g AND ST_Intersects(x.geom, p.g) "
                       "AND NOT ST_Touches(x.geom, p.g))").format(t=ctx.table(change.layer), ch=change.either("x"))
    await ctx.conn.execute(sql.SQL("DROP TABLE IF EXISTS {p}").format(p=PIECES))
    await ctx.conn.execute(sql.SQL(
        "CREATE TEMP TABLE {p} ON COMMIT DROP AS SELECT * FROM (SELECT d.xzqdm::text AS code, d.geom AS g "
        "FROM {t} d WHERE {rows} AND d.level = 'township') p WHERE TRUE {near}").format(
        p=PIECES, t=ctx.table(DIVISIONS_LAYER), rows=ctx.rows(DIVISIONS_LAYER, "d"), near=near))
    await ctx.conn.execute(sql.SQL("CREATE INDEX ON {p} USING gist (g)").format(p=PIECES))
    await ctx.conn.execute(sql.SQL("ANALYZE {p}").format(p=PIECES))
    cur = await ctx.conn.execute(sql.SQL("SELECT DISTINCT code FROM {p} ORDER BY 1").format(p=PIECES))
    return [r[0] for r in await cur.fetchall()]


def _zone_pieces(ctx: Context, term: Term, zrows: sql.Composable) -> sql.Composable:
    """The township pieces cut by the term's zones (a CTE body): (code, g)."""
    return sql.SQL("""
        SELECT p.code, ST_CollectionExtract(ST_Intersection(p.g, z.geom), 3) AS g
        FROM {zt} z JOIN {p} p ON p.g && z.geom AND ST_Intersects(p.g, z.geom)
        WHERE {zrows} AND {zwhere}""").format(
        zt=ctx.table(term.zone_layer), zrows=zrows, p=PIECES,
        zwhere=ctx.where(term.zone_layer, term.filter("zone"), "z"))


def term_sql(ctx: Context, term: Term, change: Change | None, sign: int) -> sql.Composed:
    """(township, m²) of the term: its rows as of the versions, or (``change``) the rows the
    change added (``sign`` +1) or retired (-1) on whichever side of the term the changed layer is."""
    xrows = change.rows(sign, "x") if change and change.layer == term.layer else ctx.rows(term.layer, "x")
    pieces: sql.Composable = PIECES
    ctes = []
    if term.zone_layer:
        zrows = change.rows(sign, "z") if change and change.layer == term.zone_layer else ctx.rows(term.zone_layer, "z")
        ctes.append(sql.SQL("zp AS MATERIALIZED ({})").format(_zone_pieces(ctx, term, zrows)))
        pieces = sql.Identifier("zp")
    x_changed = change is not None and change.layer == term.layer
    if x_changed:  # few rows: they drive, the pieces are found by their bounding boxes
        ctes.append(sql.SQL("x AS MATERIALIZED (SELECT x.geom, x._area_m2 FROM {t} x WHERE {rows} AND {w})").format(
            t=ctx.table(term.layer), rows=xrows, w=ctx.where(term.layer, term.filter(), "x")))
        source = sql.SQL("x JOIN {p} p ON p.g && x.geom AND ST_Intersects(x.geom, p.g)").format(p=pieces)
    else:  # each township (piece) drives and finds its features through the layer's spatial index
        # (LATERAL ... OFFSET 0 keeps it the outer side: PostGIS then prepares it once for all its features)
        source = sql.SQL("{p} p CROSS JOIN LATERAL (SELECT x.geom, x._area_m2 FROM {t} x WHERE x.geom && p.g "
                         "AND ST_Intersects(x.geom, p.g) AND {rows} AND {w} OFFSET 0) x").format(
            p=pieces, t=ctx.table(term.layer), rows=xrows, w=ctx.where(term.layer, term.filter(), "x"))
    with_ = sql.SQL("WITH {} ").format(sql.SQL(", ").join(ctes)) if ctes else sql.SQL("")
    if term.min_slope is not None:
        return sql.SQL("{w} SELECT p.code, ST_AsBinary(x.geom), sum({m2}) FROM {src} GROUP BY p.code, x.geom").format(
            w=with_, m2=_PIECE_M2, src=source)
    return sql.SQL("{w} SELECT p.code, sum({m2}) FROM {src} GROUP BY 1").format(w=with_, m2=_PIECE_M2, src=source)


_PIECE_M2 = sql.SQL("CASE WHEN ST_CoveredBy(x.geom, p.g) THEN coalesce(x._area_m2, ST_Area(x.geom::geography)) "
                    "ELSE ST_Area(ST_Intersection(x.geom, p.g)::geography) END")


async def term_m2(ctx: Context, term: Term, change: Change | None = None, sign: int = 1) -> dict[str, float]:
    """``{township: m²}`` of a term over the pieces in the temporary table (see :func:`term_sql`);
    a term over a layer with no version is empty."""
    if any(layer not in ctx.versions for layer in term.layers):
        return {}
    cur = await ctx.conn.execute(term_sql(ctx, term, change, sign))
    rows = await cur.fetchall()
    if term.min_slope is None:
        return {code: float(m2 or 0) for code, m2 in rows}
    return await _steep(ctx, term, rows)


async def _steep(ctx: Context, term: Term, rows: list[tuple]) -> dict[str, float]:
    """Sum the pieces of the parcels whose mean DEM slope exceeds the term's angle (the slope
    analysis's zonal statistics, geobase/analysis/slope.py) on the DEM version the values are
    computed for (``ctx.versions``, recorded with them), not the current one: a DEM version
    queued behind a land-use edit must not leak into the edit's values, which say they came
    from the previous DEM."""
    from geobase.analysis import slope
    from geobase.catalog import indicators as cat
    from geobase.catalog import layers as layer_reads

    if not rows:
        return {}
    version = await cat.raster_version(ctx.conn, term.dem_layer, ctx.versions[term.dem_layer])
    path = layer_reads.raster_file(version, ctx.data_path, parameter="dem")
    wkbs = sorted({bytes(r[1]) for r in rows})
    stats = await asyncio.to_thread(slope._zonal, path, wkbs, term.min_slope)
    steep = {w for w, (_, mean, _share) in zip(wkbs, stats) if mean > term.min_slope}
    out: dict[str, float] = {}
    for code, wkb, m2 in rows:
        if bytes(wkb) in steep:
            out[code] = out.get(code, 0.0) + float(m2 or 0)
    return out


async def moved_parcels(ctx: Context, term: Term, change: Change, division: str, limit: int = 50) -> list[dict]:
    """The features the change added or retired in a township that match the term on the changed
    side: the parcels that moved the indicator (key, added/retired, class, m² in the township)."""
    from geobase.analysis.common import feature_ids

    side = "where" if change.layer == term.layer else "zone"
    spec = ctx.registry.layers[change.layer]
    fid = (await feature_ids(ctx.conn, [spec], "x"))[spec.name]  # the id the Features API gives the feature
    cls = sql.SQL("x.{}::text").format(sql.Identifier(spec.class_field)) if spec.class_field else sql.SQL("NULL")
    cur = await ctx.conn.execute(sql.SQL("""
        SELECT {fid}, CASE WHEN {added} THEN 'added' ELSE 'retired' END, {cls}, sum({m2})
        FROM {p} p JOIN {t} x ON x.geom && p.g AND ST_Intersects(x.geom, p.g) AND {ch} AND {w}
        WHERE p.code = %(code)s GROUP BY x._rid, x.division, x._key, 2, 3 ORDER BY 4 DESC LIMIT %(n)s""").format(
        fid=fid, added=change.rows(1, "x"), cls=cls, m2=_PIECE_M2, p=PIECES, t=ctx.table(change.layer), ch=change.either("x"),
        w=ctx.where(change.layer, term.filter(side), "x")), {"code": division, "n": limit})
    return [{"key": k, "change": c, "class": cl, "m2": round(float(m2 or 0), 3)} for k, c, cl, m2 in await cur.fetchall()]

"""Low-zoom WMTS picture tiles of coverage layers drawn from class cells, as the vector tiles do
(:mod:`geobase.tiles.mvt`, :mod:`geobase.tiles.pyramid`).

Below a coverage layer's ``detail_zoom`` a WebMercatorQuad tile of a million-parcel county covers
hundreds of thousands of parcels: reading and drawing each of them (and refusing beyond
``GEOBASE_PRINT_MAX_FEATURES``) is neither fast nor useful at 256 pixels. The picture is then the
same as the vector tile's: each 2-pixel cell coloured by the class holding most area among the
parcels centred in it, read from the layer version's pyramid (``tiles.cells``, an index range of
at most 128 x 128 rows) once it is built, aggregated on the fly from the rows meanwhile (and the
pyramid's build started, as a vector tile starts it), plus the parcels big enough to be drawn as
themselves (``tiles.big``). The cells become an RGBA array placed on the tile in one image call;
the big parcels are drawn as paths like any other feature.

The CGCS2000 grid ``c`` keeps drawing features (the pyramid is laid on the Web Mercator grid)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from geobase.lazy_import import load
from geobase.printing.data import LayerData
from geobase.printing.draw import class_styles
from geobase.specs import LayerSpec, Registry
from geobase.storage import current_filter, division_filter, table_ident
from geobase.tiles.mvt import CELLS_PER_TILE, AGGREGATE_BELOW, LayerPlan, filter_envelope, plan_layer
from geobase.tiles.tms import TileMatrixSet

Box = tuple[float, float, float, float]


@dataclass
class CellLayer:
    """A coverage layer's low-zoom picture: dominant class per cell (row from the top, column
    from the left, 0..127) and the big parcels as ordinary drawable features."""

    spec: LayerSpec
    rows: list = field(default_factory=list)
    cols: list = field(default_factory=list)
    classes: list[str | None] = field(default_factory=list)
    big: LayerData | None = None
    pyramid_version: int | None = None


def cell_plan(spec: LayerSpec, registry: Registry, tms: TileMatrixSet, z: int, hidden: set[str]) -> LayerPlan | None:
    """The layer's vector-tile plan when its picture at ``z`` is drawn from cells, else None."""
    if tms.srid != 3857:
        return None
    plan = plan_layer(spec, registry, z, hidden)
    return plan if plan is not None and plan.aggregate else None


async def with_pyramid(conn: psycopg.AsyncConnection, url: str | None, plan: LayerPlan, version: int) -> LayerPlan:
    """The plan reading the version's pyramid when it is built; otherwise its build is started
    (once per process, as for vector tiles) and the cells are aggregated on the fly."""
    from geobase.tiles import pyramid

    if url is None:
        return plan
    try:
        if await pyramid.is_ready(conn, url, plan.name, version):
            return replace(plan, pyramid_version=version)
    except psycopg.errors.UndefinedTable:  # not migrated to the tiles schema: on the fly only
        return plan
    spec = plan.spec
    pyramid.build_in_background(url, spec, version, spec.style.class_field or spec.class_field,
                                spec.tiles.detail_zoom if spec.tiles.detail_zoom is not None else AGGREGATE_BELOW)
    return plan


def _hidden(plan: LayerPlan, column: sql.Composable) -> sql.Composable:
    if not plan.hidden_classes:
        return sql.SQL("")
    return sql.SQL(" AND COALESCE({} <> ALL({}), true)").format(column, sql.Literal(list(plan.hidden_classes)))


def _counties(plan: LayerPlan) -> sql.Composable:
    """`` AND division IN (...)`` of a plan naming its counties (``division=``), else nothing; a
    plan naming counties is never given a pyramid (which holds every county's cells)."""
    if plan.counties is None:
        return sql.SQL("")
    if plan.pyramid_version is not None:  # never every county's cells drawn as those of some
        raise ValueError(f"{plan.name}: a plan naming counties reads no pyramid")
    return sql.SQL(" AND {}").format(division_filter(plan.counties))


def cells_sql(plan: LayerPlan, tms: TileMatrixSet, z: int, row: int, col: int) -> sql.Composed:
    """(row from the top, column from the left, class) of each cell of the tile."""
    L = sql.Literal
    counties = _counties(plan)
    if plan.pyramid_version is not None:
        r0, c0 = row * CELLS_PER_TILE, col * CELLS_PER_TILE
        return sql.SQL(
            "SELECT cy - {r0}, cx - {c0}, cls FROM (SELECT DISTINCT ON (cy, cx) cy, cx, cls FROM tiles.cells "
            "WHERE layer = {layer} AND version = {v} AND z = {z} AND cy BETWEEN {r0} AND {r1} "
            "AND cx BETWEEN {c0} AND {c1}{hidden} ORDER BY cy, cx, round(w) DESC, cls) s").format(
            r0=L(r0), c0=L(c0), r1=L(r0 + CELLS_PER_TILE - 1), c1=L(c0 + CELLS_PER_TILE - 1), layer=L(plan.name),
            v=L(plan.pyramid_version), z=L(z), hidden=_hidden(plan, sql.Identifier("cls")))
    xmin, ymin, xmax, ymax = tms.bounds(z, row, col)
    cell = (xmax - xmin) / CELLS_PER_TILE
    cf = sql.Identifier(plan.spec.style.class_field or plan.spec.class_field)
    g = sql.Identifier("geom_3857")
    return sql.SQL("""
        SELECT {n} - 1 - cy, cx, cls FROM (
            SELECT DISTINCT ON (cx, cy) cx, cy, cls FROM (
                SELECT floor(((ST_XMin({g}) + ST_XMax({g})) / 2 - {xmin}) / {cell})::int AS cx,
                       floor(((ST_YMin({g}) + ST_YMax({g})) / 2 - {ymin}) / {cell})::int AS cy,
                       {cf}::text AS cls, sum(_area_m2) AS w
                FROM {tbl} WHERE {cur}{counties} AND geom && {env}{hidden}
                  AND (ST_XMax({g}) - ST_XMin({g})) * (ST_YMax({g}) - ST_YMin({g})) < {big}
                GROUP BY 1, 2, 3) s
            WHERE cx >= 0 AND cx < {n} AND cy >= 0 AND cy < {n}
            ORDER BY cx, cy, round(w) DESC, cls) c""").format(
        n=L(CELLS_PER_TILE), g=g, xmin=L(xmin), ymin=L(ymin), cell=L(cell), cf=cf, tbl=table_ident(plan.spec),
        cur=current_filter(), counties=counties, env=filter_envelope(tms, xmin, ymin, xmax, ymax),
        hidden=_hidden(plan, cf), big=L(cell * cell))


def big_sql(plan: LayerPlan, tms: TileMatrixSet, z: int, row: int, col: int, draw_box: Box) -> sql.Composed:
    """The parcels drawn as themselves (bounding box of a cell or more), simplified to half a
    pixel and clipped to the slightly enlarged tile: (WKB in EPSG:3857, class)."""
    L = sql.Literal
    xmin, _, xmax, _ = tms.bounds(z, row, col)
    cell, tol = (xmax - xmin) / CELLS_PER_TILE, (xmax - xmin) / 512
    env = sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, 3857)").format(*map(L, draw_box))
    counties = _counties(plan)
    if plan.pyramid_version is not None:
        return sql.SQL(
            "SELECT ST_AsBinary(ST_ClipByBox2D(ST_Simplify(geom, {tol}, true), {env})), cls FROM tiles.big "
            "WHERE layer = {layer} AND version = {v} AND big_from <= {z} AND geom && {env}{hidden}").format(
            tol=L(tol), env=env, layer=L(plan.name), v=L(plan.pyramid_version), z=L(z),
            hidden=_hidden(plan, sql.Identifier("cls")))
    cf = sql.Identifier(plan.spec.style.class_field or plan.spec.class_field)
    g = sql.Identifier("geom_3857")
    return sql.SQL(
        "SELECT ST_AsBinary(ST_ClipByBox2D(ST_Simplify({g}, {tol}, true), {env})), {cf}::text FROM {tbl} "
        "WHERE {cur}{counties} AND geom && {fenv}{hidden} AND (ST_XMax({g}) - ST_XMin({g})) * "
        "(ST_YMax({g}) - ST_YMin({g})) >= {big}").format(
            g=g, tol=L(tol), env=env, cf=cf, tbl=table_ident(plan.spec), cur=current_filter(), counties=counties,
            fenv=filter_envelope(tms, *draw_box), hidden=_hidden(plan, cf), big=L(cell * cell))


async def fetch_cells(conn: psycopg.AsyncConnection, plan: LayerPlan, tms: TileMatrixSet, z: int, row: int,
                      col: int, draw_box: Box) -> CellLayer:
    """The cells and the big parcels of one coverage layer in this tile (in the caller's snapshot)."""
    shapely = load("shapely")[0]
    out = CellLayer(plan.spec, pyramid_version=plan.pyramid_version)
    cur = await conn.execute(cells_sql(plan, tms, z, row, col))
    for r, c, cls in await cur.fetchall():
        out.rows.append(r)
        out.cols.append(c)
        out.classes.append(cls)
    cur = await conn.execute(big_sql(plan, tms, z, row, col, draw_box))
    big = [(bytes(w), cls) for w, cls in await cur.fetchall() if w is not None]
    geoms = shapely.from_wkb([w for w, _ in big]) if big else []
    keep = [(g, cls) for g, (_, cls) in zip(geoms, big) if g is not None and not g.is_empty]
    out.big = LayerData(plan.spec, geoms=[g for g, _ in keep], classes=[c for _, c in keep])
    return out


def cells_image(layer: CellLayer, registry: Registry):
    """The cells as a 256 x 256 RGBA array (2 x 2 pixels each) in the class colours at the
    layer's opacity; transparent where no parcel is centred."""
    np = load("numpy")[0]
    st = layer.spec.style
    styles = class_styles(layer.spec, registry)
    img = np.zeros((CELLS_PER_TILE, CELLS_PER_TILE, 4), dtype="uint8")
    if layer.rows:
        palette: dict[str | None, tuple[int, ...]] = {}
        for cls in set(layer.classes):
            colour = styles[cls].color if cls in styles else st.color
            palette[cls] = tuple(int(colour[k:k + 2], 16) for k in (1, 3, 5)) + (round(st.opacity * 255),)
        rgba = np.array([palette[c] for c in layer.classes], dtype="uint8")
        img[np.asarray(layer.rows), np.asarray(layer.cols)] = rgba
    return img.repeat(2, axis=0).repeat(2, axis=1)

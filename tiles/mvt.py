"""Mapbox Vector Tiles built by PostGIS in one SQL round trip, per layer and composite.

A layer's MVT is ``ST_AsMVT`` over ``ST_AsMVTGeom`` of its current rows in the tile; the
composite *one map* tile concatenates one such sub-select per layer (as Martin's composite
sources do: ``SELECT (SELECT ST_AsMVT(..) FROM l1) || (SELECT ST_AsMVT(..) FROM l2)``). The
same statement also returns the layers' current versions, read in the same snapshot as the
rows, so the cache stores a tile under exactly the versions its content came from.

Generalisation by zoom, all decided from the layer spec:
  * layer ``tiles.minzoom``/``maxzoom``: outside them the layer contributes nothing;
  * class minimum zooms (code list ``minzoom``) drop classes at small scales;
  * attributes: ``tiles.attributes``, plus ``detail_attributes`` from ``detail_zoom``,
    minus the caller's masked attributes (security.hidden_attributes);
  * ``ST_Simplify`` with a tolerance of half a pixel below :data:`SIMPLIFY_BELOW`, then the
    4096-unit quantisation of ST_AsMVTGeom;
  * polygons smaller than ``tiles.min_area_px`` pixels are dropped;
  * coverage layers (land use: a million parcels tiling the county) below their
    ``detail_zoom`` (else :data:`AGGREGATE_BELOW`) are drawn as a grid of 2-pixel cells, each coloured by the class
    holding most area among the parcels centred in it (parcels whose bounding box covers a
    cell or more are drawn as themselves), so a z8 tile of the whole county still draws the land-use picture
    in a few hundred kilobytes.

Geometry is ``geom_3857`` for WebMercatorQuad and the stored ``geom`` (EPSG:4490) for the
CGCS2000 grid, with the tile's bounds in that CRS: no per-feature ST_Transform either way.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

from geobase.tiles.tms import TileMatrixSet
from psycopg import sql

from geobase.catalog import current_versions_sql
from geobase.opendata.desensitise import Desensitisation
from geobase.specs import LayerSpec, Registry
from geobase.storage import DIVISION, as_of_filter, current_filter, division_filter, table_ident

EXTENT = 4096
BUFFER = 64
SIMPLIFY_BELOW = 14
AGGREGATE_BELOW = 12
CELLS_PER_TILE = 128  # 2-pixel cells on a 256-pixel tile
CELL_UNITS = EXTENT // CELLS_PER_TILE
# one cell in tile space (y down), ring as ST_AsMVTGeom writes it: cells are placed by translation,
# which costs a fraction of clipping and quantising a polygon per cell
CELL_SHAPE = sql.SQL(f"'POLYGON(({CELL_UNITS} 0,{CELL_UNITS} {CELL_UNITS},0 {CELL_UNITS},0 0,{CELL_UNITS} 0))'::geometry")


@dataclass(frozen=True)
class LayerPlan:
    """What one layer contributes to a tile at one zoom for one caller."""

    spec: LayerSpec
    attributes: tuple[str, ...]
    hidden_classes: tuple[str, ...]
    aggregate: bool
    pyramid_version: int | None = None  # read low zooms from tiles.cells/tiles.big of this version
    #: draw the rows current in this earlier version (the map as it was) instead of today's rows
    as_of: int | None = None
    #: an outside caller's desensitisation (geobase.opendata.desensitise): masked values, rounded geometry
    desensitise: Desensitisation | None = None
    #: a request key's box (CGCS2000 degrees): nothing outside it is drawn
    within: tuple | None = None
    #: the counties whose partitions are read (None: every county's): those a ``division=``
    #: names, or those whose extent meets the tile (geobase.tiles.prune) — a predicate on the
    #: partition key the planner prunes by, at plan time or, prepared generically, at execution
    counties: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return self.spec.name


def plan_layer(spec: LayerSpec, registry: Registry, z: int, hidden_attrs: set[str],
               desensitise: Desensitisation | None = None, within: tuple | None = None) -> LayerPlan | None:
    """The layer's plan at zoom z, or None when the layer is not drawn at that zoom (or has no
    geometry for this caller: generalised to the township)."""
    if spec.kind != "vector" or not spec.tiles.minzoom <= z <= spec.tiles.maxzoom:
        return None
    if desensitise is not None and desensitise.no_geometry:
        return None
    masked = desensitise.shown_masked if desensitise is not None else []
    attrs = list(spec.tiles.attributes)
    if spec.tiles.detail_zoom is not None and z >= spec.tiles.detail_zoom:
        attrs += [a for a in spec.tiles.detail_attributes if a not in attrs]
    attrs = [a for a in attrs if a not in hidden_attrs or a in masked]
    class_field = spec.style.class_field or spec.class_field
    hidden_classes: list[str] = []
    if class_field:
        codes = registry.codes_for(spec, class_field) or {}
        hidden_classes = sorted(c.code for c in codes.values() if c.minzoom is not None and c.minzoom > z)
    aggregate_below = spec.tiles.detail_zoom if spec.tiles.detail_zoom is not None else AGGREGATE_BELOW
    aggregate = bool(spec.coverage and z < aggregate_below and spec.geometry == "MultiPolygon"
                     and class_field and class_field not in hidden_attrs
                     and (desensitise is None or desensitise.exact_geometry) and within is None)
    return LayerPlan(spec, tuple(attrs), tuple(hidden_classes), aggregate, desensitise=desensitise, within=within)


def rows_filter(plan: LayerPlan) -> sql.Composed:
    """The rows a plan draws: today's, or those current in its ``as_of`` version."""
    return current_filter() if plan.as_of is None else as_of_filter(plan.as_of)


def _class_field(spec: LayerSpec) -> str | None:
    return spec.style.class_field or spec.class_field


def county_filter(plan: LayerPlan, slots: list[sql.Composable] | None = None) -> sql.Composable | None:
    """The plan's county predicate (None: every county): the counties as literals, or, in a
    prepared statement, its :data:`COUNTY_SLOTS` county parameters (codes sent as numbers, as
    the tile's other numbers are: ``lpad(n::int::text, 6, '0')`` is immutable, so PostgreSQL
    prunes by it — at plan time in a custom plan, at executor start in a generic one)."""
    if plan.counties is None:
        return None
    if slots is None:
        return division_filter(plan.counties)
    return sql.SQL("{} IN ({})").format(sql.Identifier(DIVISION), sql.SQL(", ").join(
        sql.SQL("lpad(({})::int::text, 6, '0')").format(s) for s in slots))


def _feature_select(plan: LayerPlan, tms: TileMatrixSet, z: int, env: sql.Composable,
                    env_buffered: sql.Composable, filter_buffered: sql.Composable,
                    slots: list[sql.Composable] | None = None) -> sql.Composed:
    spec = plan.spec
    col = sql.Identifier("geom_3857" if tms.srid == 3857 else "geom")
    d = plan.desensitise
    where = [rows_filter(plan), sql.SQL("geom && {}").format(filter_buffered)]
    if d is not None and not d.exact_geometry:  # rows found and drawn by the rounded geometry only
        col = d.geometry_sql(tms.srid)
        where = [rows_filter(plan), sql.SQL("geom && ST_Expand({}, {})").format(
            filter_buffered, sql.Literal(3 * float(d.geometry.metres or 0) / 110_574.0)),
            sql.SQL("{} && {}").format(col, env_buffered)]
    county = county_filter(plan, slots)
    if county is not None:
        where.insert(1, county)
    if plan.within is not None:
        box = sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, 4490)").format(*(sql.Literal(float(v)) for v in plan.within))
        where.append(sql.SQL("geom && {b} AND ST_Intersects(geom, {b})").format(b=box))
    px = tms.tile_span(z) / 256
    geom = col
    if z < SIMPLIFY_BELOW:
        geom = sql.SQL("ST_Simplify({}, {}, true)").format(col, sql.Literal(px / 2))
    if spec.geometry == "MultiPolygon" and spec.tiles.min_area_px > 0:
        where.append(sql.SQL("ST_Area({}) >= {}").format(col, sql.Literal(spec.tiles.min_area_px * px * px)))
    cf = _class_field(spec)
    if plan.hidden_classes and cf:
        where.append(sql.SQL("COALESCE({} <> ALL({}), true)").format(
            sql.Identifier(cf), sql.Literal(list(plan.hidden_classes))))
    cols = [sql.SQL("ST_AsMVTGeom({}, {}, {}, {}, true) AS geom").format(
        geom, env, sql.Literal(EXTENT), sql.Literal(BUFFER)), sql.SQL("_key")]
    cols += [sql.SQL("{} AS {}").format(d.column_sql(a), sql.Identifier(a)) if d else sql.Identifier(a)
             for a in plan.attributes]
    return sql.SQL("SELECT {cols} FROM {tbl} WHERE {where}").format(
        cols=sql.SQL(", ").join(cols), tbl=table_ident(spec), where=sql.SQL(" AND ").join(where))


def _aggregate_select(plan: LayerPlan, tms: TileMatrixSet, z: int, bounds, env: sql.Composable,
                      filter_env: sql.Composable, filter_buffered: sql.Composable) -> sql.Composed:
    """Dominant class per 2-pixel cell for small parcels, real geometry for large ones."""
    spec = plan.spec
    col = sql.Identifier("geom_3857" if tms.srid == 3857 else "geom")
    cf = sql.Identifier(_class_field(spec))
    xmin, ymin, xmax, _ = bounds
    cell = (xmax - xmin) / CELLS_PER_TILE
    big = cell * cell  # parcels with a bbox of at least one cell are drawn as themselves
    px = tms.tile_span(z) / 256
    filters = [rows_filter(plan)]
    county = county_filter(plan)
    if county is not None:
        filters.append(county)
    if plan.hidden_classes:
        filters.append(sql.SQL("COALESCE({} <> ALL({}), true)").format(cf, sql.Literal(list(plan.hidden_classes))))
    flt = sql.SQL(" AND ").join(filters)
    L = sql.Literal
    return sql.SQL(
        """
        SELECT ST_Translate({cell_shape}, cx * {unit}, ({n} - 1 - cy) * {unit}) AS geom, cls AS {cf}
        FROM (
            SELECT DISTINCT ON (cx, cy) cx, cy, cls FROM (
                SELECT floor(((ST_XMin({col}) + ST_XMax({col})) / 2 - {xmin}) / {cell})::int AS cx,
                       floor(((ST_YMin({col}) + ST_YMax({col})) / 2 - {ymin}) / {cell})::int AS cy,
                       {cf} AS cls, sum(_area_m2) AS w
                FROM {tbl}
                WHERE {flt} AND geom && {filter_env}
                  AND (ST_XMax({col}) - ST_XMin({col})) * (ST_YMax({col}) - ST_YMin({col})) < {big}
                GROUP BY 1, 2, 3
            ) s
            WHERE cx >= 0 AND cx < {n} AND cy >= 0 AND cy < {n}
            ORDER BY cx, cy, round(w) DESC, cls
        ) cells
        UNION ALL
        SELECT ST_AsMVTGeom(ST_Simplify({col}, {tol}, true), {env}, {extent}, {buffer}, true) AS geom, {cf}
        FROM {tbl}
        WHERE {flt} AND geom && {filter_buffered}
          AND (ST_XMax({col}) - ST_XMin({col})) * (ST_YMax({col}) - ST_YMin({col})) >= {big}
        """
    ).format(xmin=L(xmin), ymin=L(ymin), cell=L(cell), cell_shape=CELL_SHAPE, unit=L(CELL_UNITS), env=env, extent=L(EXTENT),
             cf=cf, col=col, tbl=table_ident(spec), flt=flt, big=L(big), n=L(CELLS_PER_TILE), tol=L(px / 2),
             buffer=L(BUFFER), filter_env=filter_env, filter_buffered=filter_buffered)


def _pyramid_select(plan: LayerPlan, tms: TileMatrixSet, z: int, row: int, col: int, env: sql.Composable,
                    env_buffered: sql.Composable) -> sql.Composed:
    """The same cells and big parcels as :func:`_aggregate_select`, read from the pyramid."""
    cf = sql.Identifier(_class_field(plan.spec))
    px = tms.tile_span(z) / 256
    L = sql.Literal
    hidden = sql.SQL("")
    if plan.hidden_classes:
        hidden = sql.SQL(" AND COALESCE(cls <> ALL({}), true)").format(L(list(plan.hidden_classes)))
    return sql.SQL(
        """
        SELECT ST_Translate({cell_shape}, (cx - {c0}) * {unit}, (cy - {r0}) * {unit}) AS geom, cls AS {cf}
        FROM (
            SELECT DISTINCT ON (cy, cx) cy, cx, cls FROM tiles.cells
            WHERE layer = {layer} AND version = {v} AND z = {z}
              AND cy BETWEEN {r0} AND {r1} AND cx BETWEEN {c0} AND {c1}{hidden}
            ORDER BY cy, cx, round(w) DESC, cls
        ) cells
        UNION ALL
        SELECT ST_AsMVTGeom(ST_Simplify(geom, {tol}, true), {env}, {extent}, {buffer}, true), cls
        FROM tiles.big WHERE layer = {layer} AND version = {v} AND big_from <= {z} AND geom && {env_buffered}{hidden}
        """
    ).format(cell_shape=CELL_SHAPE, unit=L(CELL_UNITS), env=env, extent=L(EXTENT), cf=cf, layer=L(plan.name),
             v=L(plan.pyramid_version), z=L(z), r0=L(row * CELLS_PER_TILE), r1=L(row * CELLS_PER_TILE + CELLS_PER_TILE - 1),
             c0=L(col * CELLS_PER_TILE), c1=L(col * CELLS_PER_TILE + CELLS_PER_TILE - 1), hidden=hidden,
             tol=L(px / 2), buffer=L(BUFFER), env_buffered=env_buffered)


def filter_box(tms: TileMatrixSet, xmin: float, ymin: float, xmax: float, ymax: float
               ) -> tuple[tuple[float, float, float, float], int]:
    """The box (and its SRID) that finds a tile's rows with the layer's one spatial index, on the
    stored ``geom`` (EPSG:4490): a Web Mercator rectangle is a longitude/latitude rectangle too
    (the projection is cylindrical), so ``geom && <that rectangle>`` selects what ``geom_3857 &&
    <tile>`` would, and ``geom_3857`` (what the tile is drawn from) needs no index of its own.
    That index was a second GiST build of every bulk load."""
    if tms.srid != 3857:
        return (xmin, ymin, xmax, ymax), tms.srid
    r = 6378137.0

    def lon(x: float) -> float:
        return max(-180.0, min(180.0, math.degrees(x / r)))

    def lat(y: float) -> float:
        return math.degrees(math.atan(math.sinh(y / r)))
    return (lon(xmin), lat(ymin), lon(xmax), lat(ymax)), 4490


def _envelope(values, srid: int) -> sql.Composed:
    return sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, {})").format(*values, sql.Literal(srid))


def filter_envelope(tms: TileMatrixSet, xmin: float, ymin: float, xmax: float, ymax: float) -> sql.Composed:
    """:func:`filter_box` as an ``ST_MakeEnvelope`` of literals."""
    box, srid = filter_box(tms, xmin, ymin, xmax, ymax)
    return _envelope([sql.Literal(v) for v in box], srid)


#: how many numbers :func:`tile_numbers` gives (and a prepared tile statement takes)
TILE_NUMBERS = 12


def tile_numbers(tms: TileMatrixSet, z: int, row: int, col: int) -> tuple[float, ...]:
    """What a feature tile's statement depends on besides its zoom: the tile's bounds, the same
    grown by the buffer, and that buffered box as :func:`filter_box` finds rows with."""
    xmin, ymin, xmax, ymax = tms.bounds(z, row, col)
    margin = (xmax - xmin) * BUFFER / EXTENT
    buffered = (xmin - margin, ymin - margin, xmax + margin, ymax + margin)
    return (xmin, ymin, xmax, ymax) + buffered + filter_box(tms, *buffered)[0]


def _feature_envelopes(tms: TileMatrixSet, values: list[sql.Composable]) -> tuple[sql.Composed, ...]:
    """(tile, buffered tile, buffered filter box) from the 12 :func:`tile_numbers` as SQL values."""
    filter_srid = filter_box(tms, 0.0, 0.0, 0.0, 0.0)[1]
    return _envelope(values[0:4], tms.srid), _envelope(values[4:8], tms.srid), _envelope(values[8:12], filter_srid)


def _layer_sub_select(plan: LayerPlan, inner: sql.Composable) -> sql.Composed:
    # OFFSET 0 keeps the planner from flattening the sub-select, which would evaluate
    # ST_AsMVTGeom twice per row (once in the IS NOT NULL filter, once in the output)
    return sql.SQL("(SELECT COALESCE(ST_AsMVT(t, {name}, {extent}, 'geom'), ''::bytea) FROM ({inner} OFFSET 0) t "
                   "WHERE t.geom IS NOT NULL)").format(name=sql.Literal(plan.name), extent=sql.Literal(EXTENT),
                                                       inner=inner)


def layer_mvt_sql(plan: LayerPlan, tms: TileMatrixSet, z: int, row: int, col: int) -> sql.Composed:
    """A scalar sub-select yielding the layer's MVT bytes (empty bytea when no feature)."""
    bounds = tms.bounds(z, row, col)
    env, env_buffered, filter_buffered = _feature_envelopes(
        tms, [sql.Literal(v) for v in tile_numbers(tms, z, row, col)])
    if plan.aggregate and plan.pyramid_version is not None and tms.srid == 3857:
        inner = _pyramid_select(plan, tms, z, row, col, env, env_buffered)
    elif plan.aggregate:
        inner = _aggregate_select(plan, tms, z, bounds, env, filter_envelope(tms, *bounds), filter_buffered)
    else:
        inner = _feature_select(plan, tms, z, env, env_buffered, filter_buffered)
    return _layer_sub_select(plan, inner)


def tile_sql(plans: list[LayerPlan], names: list[str], tms: TileMatrixSet, z: int, row: int, col: int) -> sql.Composed:
    """One statement: the concatenated MVT of every plan, and the current versions of ``names``
    (all layers that make up the tile's cache key), read in the same snapshot."""
    return _tile_select([layer_mvt_sql(p, tms, z, row, col) for p in plans], names)


def _tile_select(parts: list[sql.Composable], names: list[str]) -> sql.Composed:
    return sql.SQL("SELECT {tile} AS tile, {versions} AS versions").format(
        tile=sql.SQL(" || ").join(parts or [sql.SQL("''::bytea")]), versions=current_versions_sql(names))


def preparable(plan: LayerPlan) -> bool:
    """Whether the plan's statement depends on the tile only through :func:`statement_numbers`
    (today's rows drawn as features, of at most :data:`COUNTY_SLOTS` counties when it names
    some; not the class cells of a coverage at small zooms, not an old version)."""
    return (not plan.aggregate and plan.as_of is None
            and (plan.counties is None or len(plan.counties) <= COUNTY_SLOTS))


#: county parameters of a prepared tile statement whose plans name counties: a tile meeting
#: more counties than this is composed with literals (or reads every county, geobase.tiles.prune)
COUNTY_SLOTS = 8
#: a county parameter no county has (an unused slot; GB/T 2260 codes start at 11)
NO_COUNTY = 1.0


def statement_counties(plans: list[LayerPlan]) -> tuple[str, ...] | None:
    """The counties the county parameters of the plans' statement carry: every county any plan
    names (a plan reads those of them its rows lie in; a superset prunes less, never wrongly);
    None when no plan names any (the statement has no county parameters)."""
    named = [p.counties for p in plans if p.counties is not None]
    return tuple(sorted(set().union(*named))) if named else None


def statement_numbers(plans: list[LayerPlan], tms: TileMatrixSet, z: int, row: int, col: int) -> tuple[float, ...]:
    """What a :func:`tile_template` statement is executed with: the :func:`tile_numbers`, then,
    when the plans name counties, :data:`COUNTY_SLOTS` county codes as numbers (unused slots
    :data:`NO_COUNTY`)."""
    counties = statement_counties(plans)
    if counties is None:
        return tile_numbers(tms, z, row, col)
    if len(counties) > COUNTY_SLOTS:  # never a county dropped: the caller composes such a tile per tile
        raise ValueError(f"{len(counties)} counties for {COUNTY_SLOTS} county parameters")
    codes = [float(int(c)) for c in counties]
    return tile_numbers(tms, z, row, col) + tuple(codes + [NO_COUNTY] * (COUNTY_SLOTS - len(codes)))


def preparable_together(plans: list[LayerPlan]) -> bool:
    """Whether the plans make one prepared statement: each :func:`preparable`, and the counties
    they name fit the :data:`COUNTY_SLOTS` county parameters."""
    return all(preparable(p) for p in plans) and len(statement_counties(plans) or ()) <= COUNTY_SLOTS


def statement_arity(plans: list[LayerPlan]) -> int:
    """How many numbers the plans' :func:`tile_template` statement takes."""
    return TILE_NUMBERS + (COUNTY_SLOTS if statement_counties(plans) is not None else 0)


def tile_template(plans: list[LayerPlan], names: list[str], tms: TileMatrixSet, z: int) -> sql.Composed:
    """:func:`tile_sql` of :func:`preparable` plans with ``$1`` .. ``$n`` in place of the
    :func:`statement_numbers`: the very statement, to be prepared once and executed with each
    tile's numbers (see geobase.tiles.render). A plan that names counties gets them as
    ``division IN (<the county parameters>)``, for every tile the same statement."""
    params = [sql.SQL(f"${i + 1}") for i in range(TILE_NUMBERS)]
    envelopes = _feature_envelopes(tms, params)
    slots = None
    if statement_counties(plans) is not None:
        slots = [sql.SQL(f"${TILE_NUMBERS + i + 1}") for i in range(COUNTY_SLOTS)]
    return _tile_select([_layer_sub_select(p, _feature_select(p, tms, z, *envelopes, slots)) for p in plans], names)


def feature_rows_sql(plan: LayerPlan, tms: TileMatrixSet, z: int, row: int, col: int) -> sql.Composed:
    """The rows a :func:`preparable` plan draws in a tile, each with its MVT geometry, before
    ``ST_AsMVT`` encodes them: the benchmark times the steps of a cold tile with it."""
    numbers = [sql.Literal(v) for v in tile_numbers(tms, z, row, col)]
    return _feature_select(plan, tms, z, *_feature_envelopes(tms, numbers))

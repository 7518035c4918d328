"""The generalisation pyramid of a coverage layer version, for its low-zoom tiles.

A z10 tile of a million-parcel county covers most of it: aggregating the parcels on the fly
reads hundreds of thousands of rows per tile. The pyramid does that once per layer version:
one scan of the layer computes each parcel's bbox centre, class, area and the zoom from which
it is drawn as itself (``big_from``); then, per zoom below the detail zoom, the summed area per
class in every 2-pixel cell of the global Web Mercator grid. A low-zoom tile then reads at most
128 x 128 cells (an index range) plus the few big parcels.

It is built lazily in a background thread on the first low-zoom tile of a new version (tiles
are rendered on the fly meanwhile, with the same cells and the same result), under an advisory
lock so that several workers build it once, and it replaces the rows of older versions in the
same transaction. ``geobase tiles seed`` builds it first, synchronously.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from geobase.tiles.tms import WEB_MERCATOR_QUAD as W
from psycopg import sql

from geobase.specs import LayerSpec
from geobase.storage import as_of_filter, table_ident

log = logging.getLogger("geobase.tiles")
CELLS_PER_TILE = 128
_ready: dict[tuple[str, str, int], bool] = {}
_building: set[tuple[str, str, int]] = set()
_lock = threading.Lock()


def cell_size(z: int) -> float:
    return W.tile_span(z) / CELLS_PER_TILE


def zoom_range(spec: LayerSpec, detail_zoom: int) -> tuple[int, int]:
    """Zooms served from the pyramid: the layer's minzoom up to (excluding) the detail zoom."""
    return spec.tiles.minzoom, detail_zoom - 1


def build(url: str, spec: LayerSpec, version: int, class_field: str, detail_zoom: int) -> bool:
    """Build the pyramid of (layer, version) unless another process does or did; True if built now."""
    zmin, zmax = zoom_range(spec, detail_zoom)
    if zmax < zmin:
        return False
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute("SET LOCAL statement_timeout = 0")
        got = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext('geobase.tiles.pyramid'), hashtext(%s))",
                           (spec.name,)).fetchone()[0]
        if not got:
            return False
        if conn.execute("SELECT 1 FROM tiles.pyramids WHERE layer = %s AND version = %s",
                        (spec.name, version)).fetchone():
            return False
        ox, oy = W.origin
        # the zoom from which a parcel is drawn as itself: its bbox covers a cell at that zoom
        big_from = sql.SQL("CASE ") + sql.SQL(" ").join(
            sql.SQL("WHEN ba >= {} THEN {}").format(sql.Literal(cell_size(z) ** 2), sql.Literal(z))
            for z in range(zmin, zmax + 1)) + sql.SQL(" ELSE {} END").format(sql.Literal(zmax + 1))
        conn.execute(sql.SQL(
            """
            CREATE TEMP TABLE pyr ON COMMIT DROP AS
            SELECT mx, my, cls, w, {big_from} AS big_from, _rid FROM (
                SELECT (ST_XMin(geom_3857) + ST_XMax(geom_3857)) / 2 AS mx,
                       (ST_YMin(geom_3857) + ST_YMax(geom_3857)) / 2 AS my,
                       (ST_XMax(geom_3857) - ST_XMin(geom_3857)) * (ST_YMax(geom_3857) - ST_YMin(geom_3857)) AS ba,
                       {cf}::text AS cls, coalesce(_area_m2, 0) AS w, _rid
                FROM {tbl} WHERE {asof}) s
            """).format(big_from=big_from, cf=sql.Identifier(class_field), tbl=table_ident(spec),
                        asof=as_of_filter(version)))
        # keep the newest pyramid built so far (requests that read the previous version a moment
        # ago still find their cells); drop everything older
        keep = conn.execute("SELECT coalesce(max(version), -1) FROM tiles.pyramids WHERE layer = %s",
                            (spec.name,)).fetchone()[0]
        for t in ("cells", "big", "pyramids"):
            conn.execute(sql.SQL("DELETE FROM tiles.{} WHERE layer = %s AND version <> %s").format(sql.Identifier(t)),
                         (spec.name, keep))
        for z in range(zmin, zmax + 1):
            c = cell_size(z)
            conn.execute(
                """
                INSERT INTO tiles.cells (layer, version, z, cy, cx, cls, w)
                SELECT %(l)s, %(v)s, %(z)s, floor((%(oy)s - my) / %(c)s)::int, floor((mx - %(ox)s) / %(c)s)::int,
                       cls, sum(w)
                FROM pyr WHERE big_from > %(z)s GROUP BY 4, 5, 6 ORDER BY 4, 5
                """, {"l": spec.name, "v": version, "z": z, "oy": oy, "ox": ox, "c": c})
        conn.execute(sql.SQL(
            """
            INSERT INTO tiles.big (layer, version, big_from, cls, geom)
            SELECT %s, %s, p.big_from, p.cls, t.geom_3857 FROM pyr p JOIN {tbl} t USING (_rid)
            WHERE p.big_from <= %s
            """).format(tbl=table_ident(spec)), (spec.name, version, zmax))
        conn.execute("INSERT INTO tiles.pyramids (layer, version, zmin, zmax, seconds) VALUES (%s, %s, %s, %s, %s)",
                     (spec.name, version, zmin, zmax, time.perf_counter() - t0))
        conn.commit()
    conn_analyze(url)
    log.info("tile pyramid of %s v%s built in %.1f s", spec.name, version, time.perf_counter() - t0)
    return True


def conn_analyze(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE tiles.cells")
        conn.execute("ANALYZE tiles.big")


async def is_ready(conn: psycopg.AsyncConnection, url: str, layer: str, version: int) -> bool:
    """True when the pyramid of (layer, version) is complete (cached in-process once true)."""
    key = (url, layer, version)
    if _ready.get(key):
        return True
    cur = await conn.execute("SELECT 1 FROM tiles.pyramids WHERE layer = %s AND version = %s", (layer, version))
    ok = await cur.fetchone() is not None
    if ok:
        _ready[key] = True
    return ok


def build_in_background(url: str, spec: LayerSpec, version: int, class_field: str, detail_zoom: int) -> None:
    """Start one background build per (layer, version) in this process; errors are logged only."""
    key = (url, spec.name, version)
    with _lock:
        if key in _building:
            return
        _building.add(key)

    def work():
        try:
            build(url, spec, version, class_field, detail_zoom)
        except Exception as exc:  # noqa: BLE001 — a failed build leaves tiles on the on-the-fly path
            log.error("tile pyramid of %s v%s failed: %s", spec.name, version, exc)
        finally:
            with _lock:
                _building.discard(key)

    threading.Thread(target=work, name=f"pyramid-{spec.name}-{version}", daemon=True).start()

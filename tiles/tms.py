"""Tile matrix sets: Web Mercator (WebMercatorQuad) and the CGCS2000 geographic grid that
Tianditu's ``_c`` services use (EPSG:4490, level 1 = 2x1 tiles of 180°, origin -180/90).

The maths is small and exact, so it lives here rather than behind a library: every tile
request validates (z, row, col) and turns it into bounds in the grid's own CRS, which the
MVT SQL then uses directly (so no ST_Transform per feature for the CGCS2000 grid)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from geobase.errors import InvalidInput, NotFound

WEB_MERCATOR_HALF = 20037508.3427892  # metres: half the equator of the sphere of EPSG:3857
EARTH_CIRCUMFERENCE_M = 2 * math.pi * 6378137.0
PIXEL_M = 0.00028  # OGC standardized rendering pixel size (m)


@dataclass(frozen=True)
class TileMatrixSet:
    """A quad-tree tile matrix set whose level z has ``cols0 * 2**z`` x ``rows0 * 2**z`` tiles."""

    id: str
    title: str
    crs: str  # OGC CRS URI
    srid: int
    origin: tuple[float, float]  # top-left corner (x, y) in the CRS
    span0: float  # tile width = height at level 0, in CRS units
    cols0: float  # matrix width at level 0 (may be 0.5: CGCS2000 level 0 does not exist)
    rows0: float
    minzoom: int
    maxzoom: int
    units_per_metre: float  # CRS units per ground metre at the equator
    uri: str

    def tile_span(self, z: int) -> float:
        return self.span0 / 2**z

    def matrix_size(self, z: int) -> tuple[int, int]:
        """(columns, rows) at level z."""
        return int(self.cols0 * 2**z), int(self.rows0 * 2**z)

    def validate(self, z: int, row: int, col: int) -> None:
        """Raise a 400 naming the parameter when (z, row, col) is outside this grid."""
        if not self.minzoom <= z <= self.maxzoom:
            raise InvalidInput(
                f"tileMatrix {z} is outside {self.id} ({self.minzoom}..{self.maxzoom})", parameter="tileMatrix"
            )
        cols, rows = self.matrix_size(z)
        if not 0 <= row < rows:
            raise InvalidInput(f"tileRow {row} is outside 0..{rows - 1} at level {z} of {self.id}", parameter="tileRow")
        if not 0 <= col < cols:
            raise InvalidInput(f"tileCol {col} is outside 0..{cols - 1} at level {z} of {self.id}", parameter="tileCol")

    def bounds(self, z: int, row: int, col: int) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of a tile in the grid's CRS."""
        span = self.tile_span(z)
        xmin = self.origin[0] + col * span
        ymax = self.origin[1] - row * span
        return xmin, ymax - span, xmin + span, ymax

    def pixel_metres(self, z: int, tile_size: int = 256) -> float:
        """Ground size of one pixel at the equator in metres (drives simplification and min area)."""
        return self.tile_span(z) / tile_size / self.units_per_metre

    def scale_denominator(self, z: int, tile_size: int = 256) -> float:
        return self.pixel_metres(z, tile_size) / PIXEL_M

    def tiles_covering(self, z: int, bbox_lonlat: tuple[float, float, float, float]):
        """(row, col) of every tile at level z that intersects a lon/lat bbox."""
        xmin, ymin, xmax, ymax = bbox_lonlat
        if self.srid == 3857:
            xmin, ymin = lonlat_to_mercator(xmin, ymin)
            xmax, ymax = lonlat_to_mercator(xmax, ymax)
        span = self.tile_span(z)
        cols, rows = self.matrix_size(z)
        c0 = max(0, int((xmin - self.origin[0]) // span))
        c1 = min(cols - 1, int((xmax - self.origin[0]) // span))
        r0 = max(0, int((self.origin[1] - ymax) // span))
        r1 = min(rows - 1, int((self.origin[1] - ymin) // span))
        for row in range(r0, r1 + 1):
            for col in range(c0, c1 + 1):
                yield row, col

    def as_json(self, base: str = "") -> dict:
        """The OGC Two Dimensional Tile Matrix Set (2.0) JSON document."""
        matrices = []
        for z in range(self.minzoom, self.maxzoom + 1):
            cols, rows = self.matrix_size(z)
            matrices.append({
                "id": str(z),
                "scaleDenominator": self.scale_denominator(z),
                "cellSize": self.tile_span(z) / 256,
                "cornerOfOrigin": "topLeft",
                "pointOfOrigin": list(self.origin),
                "tileWidth": 256, "tileHeight": 256,
                "matrixWidth": cols, "matrixHeight": rows,
            })
        doc = {
            "id": self.id, "title": self.title, "uri": self.uri, "crs": self.crs,
            "orderedAxes": ["E", "N"] if self.srid == 3857 else ["Lon", "Lat"],
            "tileMatrices": matrices,
        }
        if base:
            doc["links"] = [{"rel": "self", "type": "application/json", "href": f"{base}/tileMatrixSets/{self.id}"}]
        return doc


def lonlat_to_mercator(lon: float, lat: float) -> tuple[float, float]:
    lat = max(min(lat, 85.0511287798), -85.0511287798)
    x = lon * WEB_MERCATOR_HALF / 180.0
    y = math.log(math.tan((90 + lat) * math.pi / 360.0)) * WEB_MERCATOR_HALF / math.pi
    return x, y


WEB_MERCATOR_QUAD = TileMatrixSet(
    id="WebMercatorQuad", title="Google Maps Compatible for the World", crs="http://www.opengis.net/def/crs/EPSG/0/3857",
    srid=3857, origin=(-WEB_MERCATOR_HALF, WEB_MERCATOR_HALF), span0=2 * WEB_MERCATOR_HALF, cols0=1, rows0=1,
    minzoom=0, maxzoom=24, units_per_metre=1.0,
    uri="http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad",
)

# Tianditu's `_c` layout: level 1 has 2 x 1 tiles of 180 degrees; level z has 2**z x 2**(z-1).
CGCS2000_QUAD = TileMatrixSet(
    id="CGCS2000Quad", title="CGCS2000 geographic quad (Tianditu _c layout)",
    crs="http://www.opengis.net/def/crs/EPSG/0/4490", srid=4490, origin=(-180.0, 90.0), span0=360.0,
    cols0=1, rows0=0.5, minzoom=1, maxzoom=20, units_per_metre=360.0 / EARTH_CIRCUMFERENCE_M,
    uri="urn:geobase:tilematrixset:CGCS2000Quad",
)

TILE_MATRIX_SETS: dict[str, TileMatrixSet] = {t.id: t for t in (WEB_MERCATOR_QUAD, CGCS2000_QUAD)}
ALIASES = {"TianDiTuCGCS2000": "CGCS2000Quad", "webmercatorquad": "WebMercatorQuad"}


def get_tms(tms_id: str) -> TileMatrixSet:
    tms_id = ALIASES.get(tms_id, tms_id)
    try:
        return TILE_MATRIX_SETS[tms_id]
    except KeyError:
        raise NotFound(
            f"tile matrix set {tms_id!r} not found (known: {', '.join(TILE_MATRIX_SETS)})", parameter="tileMatrixSetId"
        ) from None

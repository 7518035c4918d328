"""Input geometries of the analyses (a project site, an area of interest): parse, reproject to
the storage CRS (EPSG:4490) and refuse anything that would give a wrong answer silently.

Accepted: a GeoJSON geometry, Feature or FeatureCollection (as text or a parsed object) in one
of the supported CRSs, or an uploaded file (zipped shapefile, GeoPackage, GeoJSON) read with
pyogrio, whose own CRS is used. Refused, with a message naming the problem: empty geometries,
non-polygons where a polygon is needed, self-intersections (unless ``repair``), too many
vertices or too large an area (limits in Settings), coordinates that do not fit the declared
CRS (lon/lat numbers declared as a Gauss-Kruger zone, a zone prefix that does not match) and
anything outside China's extent.

The result is WKB in EPSG:4490, bound as a query parameter by the services (never formatted
into SQL).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geobase.crs import GK_UNPREFIXED, GK_ZONE_PREFIX, is_supported, parse_input_crs
from geobase.errors import InvalidInput
from geobase.jsonbody import decode_json_body
from geobase.lazy_import import load
from geobase.settings import Settings

if TYPE_CHECKING:  # shapely (with numpy, ~0.1 s) is imported by the first analysis, not at server start
    from shapely.geometry.base import BaseGeometry

CHINA_EXTENT = (73.0, 3.0, 136.0, 54.0)  # lon/lat bounds incl. the South China Sea islands
# Edges are densified so that every consumer (PostGIS geography, pyproj Geod, the pieces cut
# along the edge) sees the same line: a 1.5 km lon/lat edge read as a geodesic bulges ~2 cm,
# i.e. ~1e-5 of a 1.6 km² site, and the pieces cut along it would not sum to the site.
DENSIFY_DEG = 0.0005  # ~50 m: the bulge error left is ~(50/1500)² of the above, < 1e-7
DENSIFY_M = 50.0  # the same for inputs in a projected CRS, before the inverse projection


@dataclass(frozen=True)
class InputGeometry:
    """A checked input geometry in EPSG:4490 with its ellipsoidal area."""

    geom: BaseGeometry
    source_crs: str
    area_m2: float
    vertices: int
    repaired: bool = False

    @property
    def wkb(self) -> bytes:
        import shapely

        return shapely.to_wkb(self.geom, output_dimension=2)

    @property
    def geojson(self) -> dict:
        from shapely.geometry import mapping

        return mapping(self.geom)


def _check_position(pos: Any, parameter: str, kind: str) -> None:
    if not isinstance(pos, (list, tuple)) or not 2 <= len(pos) <= 3:
        raise InvalidInput(f"{parameter}: {kind}: a position must be [x, y] or [x, y, z], got {str(pos)[:60]}",
                           parameter=parameter)
    for v in pos:
        # bool is an int in Python; "112.9" would be converted silently by shapely/numpy
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidInput(f"{parameter}: {kind}: coordinate {v!r} is not a number", parameter=parameter)
        if not math.isfinite(v):
            raise InvalidInput(f"{parameter}: {kind}: coordinate {v!r} is not finite", parameter=parameter)


def _check_rings(rings: Any, parameter: str, kind: str) -> None:
    if not isinstance(rings, (list, tuple)):  # [] is an empty polygon: refused later as empty
        raise InvalidInput(f"{parameter}: {kind}: expected a list of linear rings", parameter=parameter)
    for i, ring in enumerate(rings):
        if not isinstance(ring, (list, tuple)):
            raise InvalidInput(f"{parameter}: {kind}: ring {i} is not a list of positions", parameter=parameter)
        for pos in ring:
            _check_position(pos, parameter, kind)
        if len(ring) < 4:
            raise InvalidInput(f"{parameter}: {kind}: ring {i} has {len(ring)} positions; a linear ring needs at "
                               "least 4 (closed: the last equals the first)", parameter=parameter)
        if list(ring[0]) != list(ring[-1]):
            raise InvalidInput(f"{parameter}: {kind}: ring {i} is not closed (its last position {ring[-1]} differs "
                               f"from its first {ring[0]}); GeoJSON rings must repeat the first position",
                               parameter=parameter)


def check_geojson_coordinates(obj: dict, parameter: str) -> None:
    """What shapely would silently accept or change: unclosed rings (closed for us), string
    or boolean coordinates (converted), positions of the wrong length. RFC 7946 §3.1."""
    kind = obj.get("type")
    coords = obj.get("coordinates")
    if kind == "GeometryCollection":
        geoms = obj.get("geometries")
        if not isinstance(geoms, (list, tuple)):
            raise InvalidInput(f"{parameter}: GeometryCollection: 'geometries' must be a list", parameter=parameter)
        for g in geoms:
            if not isinstance(g, dict):
                raise InvalidInput(f"{parameter}: GeometryCollection: a member is not a geometry", parameter=parameter)
            check_geojson_coordinates(g, parameter)
        return
    if kind not in ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"):
        raise InvalidInput(f"{parameter}: unknown GeoJSON geometry type {str(kind)[:40]!r}", parameter=parameter)
    if not isinstance(coords, (list, tuple)):
        raise InvalidInput(f"{parameter}: {kind}: 'coordinates' must be an array", parameter=parameter)
    if kind == "Point":
        _check_position(coords, parameter, kind)
    elif kind in ("MultiPoint", "LineString"):
        for pos in coords:
            _check_position(pos, parameter, kind)
    elif kind == "MultiLineString":
        for line in coords:
            if not isinstance(line, (list, tuple)):
                raise InvalidInput(f"{parameter}: {kind}: a line is not a list of positions", parameter=parameter)
            for pos in line:
                _check_position(pos, parameter, kind)
    elif kind == "Polygon":
        _check_rings(coords, parameter, kind)
    else:
        for poly in coords:
            _check_rings(poly, parameter, kind)


def _geometries_of(obj: Any, parameter: str) -> list[BaseGeometry]:
    if isinstance(obj, bytes):
        obj = decode_json_body(obj, parameter)
    elif isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except ValueError as exc:
            raise InvalidInput(f"{parameter}: not valid JSON: {exc}", parameter=parameter) from None
    if not isinstance(obj, dict) or "type" not in obj:
        raise InvalidInput(f"{parameter}: expected a GeoJSON geometry, Feature or FeatureCollection",
                           parameter=parameter)
    kind = obj["type"]
    if kind == "FeatureCollection":
        feats = obj.get("features")
        if not isinstance(feats, list) or not feats:
            raise InvalidInput(f"{parameter}: the FeatureCollection has no features", parameter=parameter)
        out: list[BaseGeometry] = []
        for f in feats:
            out.extend(_geometries_of(f, parameter))
        return out
    if kind == "Feature":
        if not obj.get("geometry"):
            raise InvalidInput(f"{parameter}: the Feature has no geometry (empty)", parameter=parameter)
        return _geometries_of(obj["geometry"], parameter)
    check_geojson_coordinates(obj, parameter)
    load("shapely", "shapely.geometry")  # the first analysis imports it, one thread at a time
    from shapely.geometry import shape

    try:
        return [shape(obj)]
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise InvalidInput(f"{parameter}: malformed GeoJSON {kind} geometry: {exc}", parameter=parameter) from None


def _check_projected_numbers(geom: BaseGeometry, epsg: int, parameter: str) -> None:
    """Catch lon/lat numbers declared as a projected CRS, and GK zone-prefix mismatches."""
    minx, miny, maxx, maxy = geom.bounds
    if epsg == 3857 or epsg in GK_ZONE_PREFIX or epsg in GK_UNPREFIXED:
        if max(abs(minx), abs(maxx)) <= 360 and max(abs(miny), abs(maxy)) <= 90:
            raise InvalidInput(
                f"{parameter}: coordinates look like longitude/latitude degrees (x {minx:.4f}..{maxx:.4f}) "
                f"but crs is EPSG:{epsg}, a projected CRS in metres; declare crs=CRS84 or EPSG:4490",
                parameter="crs")
    if epsg in GK_ZONE_PREFIX:
        zone = GK_ZONE_PREFIX[epsg]
        for x in (minx, maxx):
            if int(x // 1_000_000) != zone:
                raise InvalidInput(
                    f"{parameter}: easting {x:.1f} does not carry the zone prefix {zone} of EPSG:{epsg} "
                    f"(expected {zone}xxxxxx.x); use the unprefixed zone CRS or fix the coordinates",
                    parameter="crs")
    if epsg in GK_UNPREFIXED:
        for x in (minx, maxx):
            if not 0 < x < 1_000_000:
                raise InvalidInput(
                    f"{parameter}: easting {x:.1f} is not possible in EPSG:{epsg} (false easting 500000, "
                    f"no zone prefix); a prefixed easting needs the zone-numbered CRS", parameter="crs")


def _to_4490(geom: BaseGeometry, epsg: int | None) -> BaseGeometry:
    if epsg in (None, 4490, 4326):  # CGCS2000 vs WGS 84: below survey accuracy for this purpose
        return geom
    load("pyproj")
    import shapely
    from pyproj import CRS, Transformer

    geom = shapely.segmentize(geom, DENSIFY_M)  # straight lines of the projected input stay straight
    tr = Transformer.from_crs(CRS.from_epsg(epsg), CRS.from_epsg(4490), always_xy=True)
    return shapely.transform(geom, lambda xy: _stack(tr.transform(xy[:, 0], xy[:, 1])))


def _stack(xy):
    import numpy as np

    return np.column_stack(xy)


@lru_cache(maxsize=1)
def _geod():
    """The GRS80 ellipsoid: CGCS2000 and GRS80 share a = 6378137, 1/f = 298.257222101."""
    return load("pyproj")[0].Geod(ellps="GRS80")


def ellipsoidal_area(geom: BaseGeometry) -> float:
    """Area on the GRS80 (= CGCS2000) ellipsoid in m² of a lon/lat polygon."""
    return abs(_geod().geometry_area_perimeter(geom)[0])


def check_geometry(geoms: list[BaseGeometry], settings: Settings, *, epsg: int | None, crs_label: str,
                   parameter: str = "geometry", polygonal: bool = True, repair: bool = False) -> InputGeometry:
    """Validate and reproject parsed geometries; the union of all parts is the input."""
    load("shapely", "shapely.geometry")
    import shapely

    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        raise InvalidInput(f"{parameter}: the geometry is empty", parameter=parameter)
    if polygonal:
        bad = sorted({g.geom_type for g in geoms if g.geom_type not in ("Polygon", "MultiPolygon")})
        if bad:
            raise InvalidInput(f"{parameter}: expected Polygon or MultiPolygon, got {', '.join(bad)}",
                               parameter=parameter)
    vertices = int(sum(shapely.get_num_coordinates(g) for g in geoms))
    if vertices > settings.analysis_max_vertices:
        raise InvalidInput(f"{parameter}: too many vertices ({vertices:,} > limit "
                           f"{settings.analysis_max_vertices:,}); simplify the geometry", parameter=parameter)
    repaired = False
    for g in geoms:
        if not g.is_valid:
            if not repair:
                raise InvalidInput(f"{parameter}: invalid geometry ({shapely.is_valid_reason(g)}); fix the "
                                   "self-intersection or pass repair=true", parameter=parameter)
            repaired = True
    if repaired:
        geoms = [shapely.make_valid(g) if not g.is_valid else g for g in geoms]
        if polygonal:
            geoms = [_polygonal_part(g) for g in geoms]
    geom = shapely.union_all(geoms) if len(geoms) > 1 else geoms[0]
    if epsg is not None and epsg != 4490:
        _check_projected_numbers(geom, epsg, parameter)
    geom = _to_4490(geom, epsg)
    # extent first: densifying a geometry with absurd coordinates (1e308) would never finish
    minx, miny, maxx, maxy = geom.bounds
    x0, y0, x1, y1 = CHINA_EXTENT
    if not (x0 <= minx and maxx <= x1 and y0 <= miny and maxy <= y1):
        raise InvalidInput(
            f"{parameter}: coordinates fall outside China's extent (lon {minx:.4f}..{maxx:.4f}, lat "
            f"{miny:.4f}..{maxy:.4f} after reading them as {crs_label}); check the crs and the axis order "
            "(x = longitude/easting)", parameter=parameter)
    geom = shapely.segmentize(geom, DENSIFY_DEG)
    if polygonal:
        geom = _polygonal_part(geom)
        if geom.is_empty:
            raise InvalidInput(f"{parameter}: the geometry has no area", parameter=parameter)
    area = ellipsoidal_area(geom) if polygonal else 0.0
    if polygonal and area <= 0:
        raise InvalidInput(f"{parameter}: the geometry has no area", parameter=parameter)
    if area > settings.analysis_max_area_km2 * 1e6:
        raise InvalidInput(f"{parameter}: area {area / 1e6:,.1f} km² exceeds the limit of "
                           f"{settings.analysis_max_area_km2:,.0f} km²", parameter=parameter)
    return InputGeometry(geom=geom, source_crs=crs_label, area_m2=area, vertices=vertices, repaired=repaired)


def _polygonal_part(g: BaseGeometry) -> BaseGeometry:
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(g, (Polygon, MultiPolygon)):
        return MultiPolygon([g]) if isinstance(g, Polygon) else g
    polys: list[Polygon] = []
    for part in getattr(g, "geoms", []):
        if isinstance(part, Polygon):
            polys.append(part)
        elif isinstance(part, MultiPolygon):
            polys.extend(part.geoms)
    return MultiPolygon(polys)


def parse_geojson(obj: Any, settings: Settings, *, crs: str | int | None = None, parameter: str = "geometry",
                  polygonal: bool = True, repair: bool = False) -> InputGeometry:
    """A checked geometry from GeoJSON text/object declared in ``crs`` (default CRS84)."""
    epsg = parse_input_crs(crs)
    label = "CRS84" if epsg is None else f"EPSG:{epsg}"
    return check_geometry(_geometries_of(obj, parameter), settings, epsg=epsg, crs_label=label,
                          parameter=parameter, polygonal=polygonal, repair=repair)


def parse_upload(data: bytes, filename: str, settings: Settings, *, parameter: str = "file",
                 polygonal: bool = True, repair: bool = False) -> InputGeometry:
    """A checked geometry from an uploaded file (zip of a shapefile, .gpkg, .geojson/.json)."""
    load("pyogrio", "shapely")  # pyogrio brings geopandas, pandas and pyarrow: first upload only
    import pyogrio

    from geobase.errors import PayloadTooLarge
    from geobase.uploads import ZipLimits, extract_zip

    if len(data) > settings.public_upload_max_bytes:
        raise PayloadTooLarge(f"{parameter}: the file is larger than {settings.public_upload_max_bytes:,} bytes",
                              parameter=parameter)
    name = Path(filename or "upload").name
    suffix = "".join(Path(name).suffixes[-2:]).lower() if name.lower().endswith(".shp.zip") else Path(name).suffix.lower()
    if suffix not in (".zip", ".shp.zip", ".gpkg", ".geojson", ".json"):
        raise InvalidInput(f"{parameter}: unsupported file type {suffix or name!r}; upload a zipped shapefile, "
                           ".gpkg or .geojson", parameter=parameter)
    with tempfile.TemporaryDirectory(prefix="geobase-upload-") as tmp:
        path = Path(tmp) / ("upload" + (".zip" if suffix.endswith("zip") else suffix))
        path.write_bytes(data)
        if suffix.endswith("zip"):
            (Path(tmp) / "x").mkdir()
            extract_zip(path, Path(tmp) / "x", ZipLimits.for_public(settings), parameter=parameter,
                        label=f"{parameter} {name}")
            shps = sorted((Path(tmp) / "x").rglob("*.shp")) + sorted((Path(tmp) / "x").rglob("*.gpkg")) \
                + sorted((Path(tmp) / "x").rglob("*.geojson"))
            if not shps:
                raise InvalidInput(f"{parameter}: the zip holds no .shp, .gpkg or .geojson", parameter=parameter)
            path = shps[0]
        try:
            df = pyogrio.read_dataframe(path)
        except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ...
            raise InvalidInput(f"{parameter}: cannot read {name}: {exc}", parameter=parameter) from None
    if df.crs is None:
        raise InvalidInput(f"{parameter}: {name} declares no CRS (missing .prj); add it and upload again",
                           parameter=parameter)
    epsg = df.crs.to_epsg(min_confidence=70)
    if df.crs.is_geographic and epsg in (None, 4326, 4490, 4610, 4214):
        if epsg in (4610, 4214):
            raise InvalidInput(f"{parameter}: {name} is in a legacy datum (EPSG:{epsg}); transform it to CGCS2000 "
                               "with published parameters first", parameter=parameter)
        epsg = 4490 if epsg is None else epsg
    if not is_supported(epsg):
        raise InvalidInput(f"{parameter}: the CRS of {name} ({df.crs.name}) is not supported; use CGCS2000 "
                           "(EPSG:4490 or a Gauss-Kruger zone), WGS 84 or Web Mercator", parameter=parameter)
    return check_geometry(list(df.geometry.values), settings, epsg=epsg, crs_label=f"EPSG:{epsg}",
                          parameter=parameter, polygonal=polygonal, repair=repair)

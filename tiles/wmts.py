"""OGC WMTS 1.0.0: the capabilities document and its tile matrix sets, for the clients the
provinces already run (ArcGIS, SuperMap, Cesium, QGIS, OpenLayers, Tianditu-style viewers).

Two tile matrix sets, the grids the vector tiles use (:mod:`geobase.tiles.tms`):

* ``WebMercatorQuad`` (well-known scale set GoogleMapsCompatible, EPSG:3857), levels 0..20;
* ``c``: the CGCS2000 geographic grid laid out like Tianditu's ``_c`` services (``vec_c``,
  ``img_c``): EPSG:4490, level 1 = 2 x 1 tiles of 256 px covering -180..180, -90..90, level z
  has 2^z x 2^(z-1) tiles, top-left corner written ``90 -180`` (latitude first: the axis
  order of EPSG:4490), identifiers ``1``..``18``.

Scale denominators follow the WMTS rule (0.28 mm pixel, 111319.49 m per degree), so a client
computing a tile's bounds from this document gets exactly Tianditu's vec_c tile of the same
matrix/row/col. (Tianditu's own documents write 2.958293554545656E8 for level 1: the same
grid described with a 96-dpi pixel, 0.2645833 mm; taken by the 0.28 mm rule it would describe
tiles 5.8 % larger than the ones Tianditu serves, so those numbers are not copied here.)"""

from __future__ import annotations

from dataclasses import dataclass

from geobase.tiles.tms import CGCS2000_QUAD, WEB_MERCATOR_QUAD, TileMatrixSet

from geobase.errors import NotFound

FORMAT = "image/png"
#: GetFeatureInfo formats and their RESTful extensions (geobase/tiles/wmts_info.py)
INFO_FORMATS = {"application/json": "json", "text/html": "html"}


@dataclass(frozen=True)
class WmtsSet:
    """A tile matrix set as WMTS publishes it: identifier, CRS URN, levels, corner order."""

    id: str
    tms: TileMatrixSet
    crs_urn: str
    minzoom: int
    maxzoom: int
    lat_first: bool
    well_known: str | None = None

    def corner(self) -> str:
        x, y = self.tms.origin
        return f"{y!r} {x!r}" if self.lat_first else f"{x!r} {y!r}"


SETS: dict[str, WmtsSet] = {
    "WebMercatorQuad": WmtsSet("WebMercatorQuad", WEB_MERCATOR_QUAD, "urn:ogc:def:crs:EPSG::3857", 0, 20, False,
                               "urn:ogc:def:wkss:OGC:1.0:GoogleMapsCompatible"),
    "c": WmtsSet("c", CGCS2000_QUAD, "urn:ogc:def:crs:EPSG::4490", 1, 18, True),
}
ALIASES = {"GoogleMapsCompatible": "WebMercatorQuad", "CGCS2000Quad": "c", "TianDiTuCGCS2000": "c"}


def get_set(name: str, parameter: str = "TileMatrixSet") -> WmtsSet:
    s = SETS.get(ALIASES.get(name, name))
    if s is None:
        raise NotFound(f"{parameter}: tile matrix set {name[:60]!r} not found (known: {', '.join(SETS)})",
                       parameter=parameter)
    return s


def tile_matrix(s: WmtsSet, ident: str, parameter: str = "TileMatrix") -> int:
    """The level of a TileMatrix identifier of ``s`` (identifiers are the level numbers)."""
    from geobase.errors import InvalidInput

    if not ident.isdigit() or not s.minzoom <= int(ident) <= s.maxzoom:
        raise InvalidInput(f"{parameter}: {ident[:20]!r} is not a tile matrix of {s.id} ({s.minzoom}..{s.maxzoom})",
                           parameter=parameter)
    return int(ident)


def tile_address(tms_id: str, matrix: str, row: str, col: str, names: dict[str, str]) -> tuple[WmtsSet, int, int, int]:
    """(set, level, row, column) of a WMTS tile as a request names it; ``names`` maps ``tms``,
    ``matrix``, ``row`` and ``col`` to the parameter names of the request's binding (KVP or REST)
    so that a refusal names the parameter the caller wrote."""
    from geobase.errors import InvalidInput

    s = get_set(tms_id, names["tms"])
    z = tile_matrix(s, matrix, names["matrix"])
    try:
        return s, z, int(row), int(col)
    except ValueError:
        raise InvalidInput(f"{names['row']}/{names['col']}: not integers", parameter=names["row"]) from None


def _matrix_set_xml(s: WmtsSet) -> str:
    out = [f"<TileMatrixSet><ows:Identifier>{s.id}</ows:Identifier>",
           f"<ows:SupportedCRS>{s.crs_urn}</ows:SupportedCRS>"]
    if s.well_known:
        out.append(f"<WellKnownScaleSet>{s.well_known}</WellKnownScaleSet>")
    for z in range(s.minzoom, s.maxzoom + 1):
        cols, rows = s.tms.matrix_size(z)
        out.append(f"<TileMatrix><ows:Identifier>{z}</ows:Identifier>"
                   f"<ScaleDenominator>{s.tms.scale_denominator(z)!r}</ScaleDenominator>"
                   f"<TopLeftCorner>{s.corner()}</TopLeftCorner><TileWidth>256</TileWidth><TileHeight>256</TileHeight>"
                   f"<MatrixWidth>{cols}</MatrixWidth><MatrixHeight>{rows}</MatrixHeight></TileMatrix>")
    out.append("</TileMatrixSet>")
    return "".join(out)


def _operation(name: str, root: str) -> str:
    from xml.sax.saxutils import quoteattr  # (see capabilities)
    get = (f'<ows:Get xlink:href={quoteattr(root + "/wmts?")}><ows:Constraint name="GetEncoding"><ows:AllowedValues>'
           "<ows:Value>KVP</ows:Value></ows:AllowedValues></ows:Constraint></ows:Get>")
    rest = (f'<ows:Get xlink:href={quoteattr(root + "/wmts/1.0.0/")}><ows:Constraint name="GetEncoding">'
            "<ows:AllowedValues><ows:Value>RESTful</ows:Value></ows:AllowedValues></ows:Constraint></ows:Get>")
    return f'<ows:Operation name="{name}"><ows:DCP><ows:HTTP>{get}{rest}</ows:HTTP></ows:DCP></ows:Operation>'


@dataclass(frozen=True)
class WmtsLayer:
    id: str
    title: str
    abstract: str
    bbox: list[float] | None


def capabilities(root: str, layers: list[WmtsLayer]) -> str:
    """The WMTS 1.0.0 capabilities document (KVP and RESTful) for these layers."""
    from xml.sax.saxutils import escape, quoteattr  # only for this document: it imports urllib.request (~10 ms of a start)
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             ('<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1" '
              'xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:gml="http://www.opengis.net/gml" '
              'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.opengis.net/wmts/1.0 '
              'http://schemas.opengis.net/wmts/1.0/wmtsGetCapabilities_response.xsd" version="1.0.0">'),
             ("<ows:ServiceIdentification><ows:Title>geobase 一张图 WMTS</ows:Title>"
              "<ows:ServiceType>OGC WMTS</ows:ServiceType><ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion>"
              "</ows:ServiceIdentification>"),
             "<ows:ServiceProvider><ows:ProviderName>geobase</ows:ProviderName></ows:ServiceProvider>",
             "<ows:OperationsMetadata>" + "".join(_operation(n, root) for n in ("GetCapabilities", "GetTile",
                                                                                  "GetFeatureInfo"))
             + "</ows:OperationsMetadata>", "<Contents>"]
    for lay in layers:
        b = lay.bbox or [-180.0, -90.0, 180.0, 90.0]
        template = f"{root}/wmts/1.0.0/{lay.id}/{{Style}}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.png"
        info = "".join(f'<ResourceURL format="{f}" resourceType="FeatureInfo" template='
                       + quoteattr(f"{template[:-4]}/{{J}}/{{I}}.{ext}") + "/>" for f, ext in INFO_FORMATS.items())
        parts.append(
            f"<Layer><ows:Title>{escape(lay.title)}</ows:Title><ows:Abstract>{escape(lay.abstract)}</ows:Abstract>"
            f"<ows:WGS84BoundingBox><ows:LowerCorner>{b[0]!r} {b[1]!r}</ows:LowerCorner>"
            f"<ows:UpperCorner>{b[2]!r} {b[3]!r}</ows:UpperCorner></ows:WGS84BoundingBox>"
            f"<ows:Identifier>{escape(lay.id)}</ows:Identifier>"
            '<Style isDefault="true"><ows:Identifier>default</ows:Identifier></Style>'
            f"<Format>{FORMAT}</Format>" + "".join(f"<InfoFormat>{f}</InfoFormat>" for f in INFO_FORMATS)
            + "".join(f"<TileMatrixSetLink><TileMatrixSet>{s}</TileMatrixSet></TileMatrixSetLink>" for s in SETS)
            + f'<ResourceURL format="{FORMAT}" resourceType="tile" template={quoteattr(template)}/>{info}</Layer>')
    parts += [_matrix_set_xml(s) for s in SETS.values()]
    parts.append(f"</Contents><ServiceMetadataURL xlink:href={quoteattr(root + '/wmts/1.0.0/WMTSCapabilities.xml')}/>"
                 "</Capabilities>")
    return "".join(parts)

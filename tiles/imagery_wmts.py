"""Imagery collections as WMTS 1.0.0 layers and OGC API - Tiles tilesets.

Each collection with scenes is a WMTS layer ``imagery.<collection>`` (the dot keeps it apart
from every vector layer name) in both tile matrix sets of :mod:`geobase.tiles.wmts`, in PNG
and WebP, whose **styles** are the drawing presets of :mod:`geobase.tiles.imagery`:
``default`` (= true colour), ``truecolor`` and, when the bands have red and nir common names,
``ndvi``. Styles are what QGIS's WMTS dialog and OWSLib offer a user to pick; free band
maths (``bands``, ``expression``, ``rescale``, ``colormap_name``, ``datetime``, ``order``)
stays on the RESTful template's query string and on ``/imagery/{c}/tiles``.

The layers are added to the capabilities document the WMTS router builds (one hook call:
:func:`add_layers`), so the vector layers' own document is not rewritten here."""

from __future__ import annotations

from dataclasses import dataclass

from geobase.tiles.tms import TILE_MATRIX_SETS
from geobase.tiles.wmts import SETS

PREFIX = "imagery."
FORMATS = {"image/png": "png", "image/webp": "webp"}


def collection_of(layer: str) -> str | None:
    """The collection of a WMTS layer name ``imagery.<collection>``, else None."""
    return layer[len(PREFIX):] if layer.startswith(PREFIX) else None


@dataclass(frozen=True)
class ImageryLayer:
    collection: str
    title: str
    bbox: tuple[float, float, float, float]
    styles: tuple[str, ...]  # presets; "default" is added in front


def layer_xml(root: str, lay: ImageryLayer) -> str:
    """One ``<Layer>``: styles, both formats, both grids, a RESTful template per format."""
    from xml.sax.saxutils import escape, quoteattr  # on first use: it imports urllib.request (geobase.tiles.wmts)
    w, s, e, n = lay.bbox
    styles = ['<Style isDefault="true"><ows:Identifier>default</ows:Identifier>'
              "<ows:Title>true colour</ows:Title></Style>"]
    styles += [f"<Style><ows:Identifier>{escape(p)}</ows:Identifier><ows:Title>{escape(p)}</ows:Title></Style>"
               for p in lay.styles]
    urls = [f'<ResourceURL format="{mime}" resourceType="tile" template='
            + quoteattr(f"{root}/imagery/{lay.collection}/wmts/{{Style}}/{{TileMatrixSet}}/{{TileMatrix}}/"
                        f"{{TileRow}}/{{TileCol}}.{ext}") + "/>" for mime, ext in FORMATS.items()]
    return (f"<Layer><ows:Title>{escape(lay.title)}</ows:Title>"
            f"<ows:Abstract>imagery mosaic of collection {escape(lay.collection)} (latest scene on top)</ows:Abstract>"
            f"<ows:WGS84BoundingBox><ows:LowerCorner>{w!r} {s!r}</ows:LowerCorner>"
            f"<ows:UpperCorner>{e!r} {n!r}</ows:UpperCorner></ows:WGS84BoundingBox>"
            f"<ows:Identifier>{escape(PREFIX + lay.collection)}</ows:Identifier>" + "".join(styles)
            + "".join(f"<Format>{m}</Format>" for m in FORMATS)
            + "".join(f"<TileMatrixSetLink><TileMatrixSet>{t}</TileMatrixSet></TileMatrixSetLink>" for t in SETS)
            + "".join(urls) + "</Layer>")


def add_layers(doc: str, root: str, layers: list[ImageryLayer]) -> str:
    """The capabilities document with the imagery layers after its own layers (before the
    tile matrix sets, the order the WMTS schema asks for)."""
    if not layers:
        return doc
    xml = "".join(layer_xml(root, lay) for lay in layers)
    at = doc.find("<TileMatrixSet><ows:Identifier>")
    if at < 0:
        at = doc.index("</Contents>")
    return doc[:at] + xml + doc[at:]


def tilesets(root: str, collection: str, title: str) -> dict:
    """OGC API - Tiles: the collection's tilesets list (one per tile matrix set)."""
    return {"tilesets": [
        {"title": f"{title} ({t.id})", "dataType": "map", "crs": t.crs, "tileMatrixSetURI": t.uri,
         "links": [{"rel": "self", "type": "application/json", "href": f"{root}/imagery/{collection}/tiles/{t.id}"},
                   {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", "type": "application/json",
                    "href": f"{root}/tileMatrixSets/{t.id}"}]}
        for t in TILE_MATRIX_SETS.values()]}


def tileset(root: str, collection: str, title: str, tms_id: str, bbox: tuple[float, float, float, float]) -> dict:
    """OGC API - Tiles: one tileset's metadata. The tile URL is the XYZ-ordered
    ``/imagery/{c}/tiles/{tms}/{z}/{x}/{y}.{format}``: its template names the variables
    (``{tileMatrix}/{tileCol}/{tileRow}``), which is all a Tiles client substitutes."""
    t = TILE_MATRIX_SETS[tms_id]
    base = f"{root}/imagery/{collection}/tiles/{t.id}"
    return {
        "title": title, "dataType": "map", "crs": t.crs, "tileMatrixSetURI": t.uri,
        "boundingBox": {"lowerLeft": list(bbox[:2]), "upperRight": list(bbox[2:]),
                        "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"},
        "links": [
            {"rel": "self", "type": "application/json", "href": base},
            {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", "type": "application/json",
             "href": f"{root}/tileMatrixSets/{t.id}"},
            *({"rel": "item", "type": mime, "templated": True,
               "href": f"{base}/{{tileMatrix}}/{{tileCol}}/{{tileRow}}.{ext}"} for mime, ext in FORMATS.items()),
        ],
    }

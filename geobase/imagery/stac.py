"""STAC documents of the imagery catalogue, built with pystac: an Item per scene (eo, raster
and projection extensions: band names, common names, wavelengths, data type, nodata, the
scene's CRS and shape) and a Collection per collection id. The stored Item carries a relative
asset href (``imagery/<collection>/<item>.tif`` under the data directory); the API rewrites
hrefs to its own URLs when it serves the Item."""

from __future__ import annotations

from datetime import datetime

from geobase.imagery.bands import COMMON_NAMES

STAC_VERSION = "1.1.0"


def build_item(item_id: str, collection: str, when: datetime, bbox: tuple[float, float, float, float],
               scene: dict, common: dict[str, str], sensor: str | None, cloud_cover: float | None,
               href: str) -> dict:
    """The scene's STAC Item as a dict. ``scene``: ``count, dtype, nodata, epsg, wkt, shape,
    transform`` read from the COG."""
    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterBand, RasterExtension

    w, s, e, n = bbox
    geometry = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    item = pystac.Item(item_id, geometry, list(bbox), when, {}, collection=collection)
    if sensor:
        item.common_metadata.instruments = [sensor]
    asset = pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["data"], title="Cloud-Optimized GeoTIFF")
    item.add_asset("data", asset)
    eo_item = EOExtension.ext(item, add_if_missing=True)
    if cloud_cover is not None:
        eo_item.cloud_cover = cloud_cover
    bands = []
    for i in range(1, scene["count"] + 1):
        name = f"b{i}"
        cn = common.get(name)
        bands.append(Band.create(name=name, common_name=cn, center_wavelength=COMMON_NAMES.get(cn) if cn else None))
    EOExtension.ext(asset, add_if_missing=True).bands = bands
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        RasterBand.create(data_type=scene["dtype"], nodata=scene["nodata"]) for _ in range(scene["count"])]
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    if scene.get("epsg"):
        proj.epsg = scene["epsg"]
    else:
        proj.wkt2 = scene["wkt"]
    proj.shape = list(scene["shape"])
    proj.transform = list(scene["transform"])
    out = item.to_dict(include_self_link=False, transform_hrefs=False)
    # an Item naming its collection must link to it (STAC item spec); the API makes it absolute
    out["links"] = [{"rel": "collection", "href": f"/stac/collections/{collection}", "type": "application/json"}]
    return out


def build_collection(row: dict, links: list[dict]) -> dict:
    """A STAC Collection from a catalogue row (extent derived from its items)."""
    import pystac

    bbox = [row["xmin"], row["ymin"], row["xmax"], row["ymax"]] if row.get("xmin") is not None else [-180, -90, 180, 90]
    extent = pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[row.get("start"), row.get("end")]]))
    coll = pystac.Collection(row["id"], row.get("description") or row.get("title") or row["id"], extent,
                             title=row.get("title") or row["id"], license="other")
    out = coll.to_dict(include_self_link=False, transform_hrefs=False)
    out["links"] = links
    return out

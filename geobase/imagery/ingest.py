"""``geobase imagery add``: a GeoTIFF scene becomes a COG under the data directory and a STAC
Item in a collection.

Hostile input is refused before anything is written, each refusal naming the problem: the
path must be a regular ``.tif``/``.tiff`` file within the upload size limit
(``GEOBASE_MAX_UPLOAD_BYTES``) that GDAL opens as a GeoTIFF with a CRS and a geotransform,
8/16-bit integer or 32-bit float bands; collection and item ids follow the name rule (so the
stored path never leaves ``imagery/<collection>/``); band names are checked
(:func:`geobase.imagery.bands.parse_band_map`). The COG is written to a ``.partial`` file, the
catalogue rows are inserted in one transaction, the file is renamed into place before the
commit and removed if the commit fails: a kill at any point leaves either nothing registered
(an orphan ``.partial`` at worst, ignored by every reader and removed by the next ingest of
that item once its process is gone) or the whole scene."""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from geobase.catalog import imagery as cat
from geobase.errors import InvalidInput, PayloadTooLarge
from geobase.imagery.alpha import Bands, data_vrt, decide
from geobase.imagery.bands import parse_band_map
from geobase.imagery.stac import build_item
from geobase.settings import Settings
from geobase.vocab import is_name

DTYPES = ("uint8", "int8", "uint16", "int16", "float32")


def check_source(path: Path, max_bytes: int) -> Path:
    """The file to ingest, resolved; InvalidInput/PayloadTooLarge naming what is wrong."""
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        raise InvalidInput(f"{p.name}: not a .tif/.tiff file", parameter="file")
    if not p.is_file():
        raise InvalidInput(f"{p}: no such regular file", parameter="file")
    size = p.stat().st_size
    if size > max_bytes:
        raise PayloadTooLarge(f"{p.name}: {size} bytes, more than the limit of {max_bytes} (GEOBASE_MAX_UPLOAD_BYTES)")
    return p.resolve()


def read_scene(path: Path) -> dict:
    """What the catalogue needs from the file, after checking it is a usable GeoTIFF."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            if src.driver != "GTiff":
                raise InvalidInput(f"{path.name}: is a {src.driver} file, not a GeoTIFF", parameter="file")
            if src.crs is None or src.transform.is_identity:
                raise InvalidInput(f"{path.name}: has no CRS or no geotransform (not georeferenced)", parameter="file")
            dtypes = set(src.dtypes)
            if len(dtypes) != 1 or not dtypes <= set(DTYPES):
                raise InvalidInput(f"{path.name}: band type {', '.join(sorted(dtypes))} is not one of "
                                   f"{', '.join(DTYPES)}", parameter="file")
            bands = decide(path, src)
            return {"count": src.count - len(bands.alpha), "dtype": src.dtypes[0], "nodata": src.nodata,
                    "epsg": src.crs.to_epsg(), "wkt": src.crs.to_wkt(), "crs": src.crs, "bounds": tuple(src.bounds),
                    "bands": bands}
    except RasterioIOError as exc:
        raise InvalidInput(f"{path.name}: not a readable GeoTIFF ({str(exc)[:200]})", parameter="file") from None


def item_id_for(path: Path) -> str:
    """A name-rule id from the file name (``L7_ETMs.tif`` -> ``l7_etms``)."""
    stem = re.sub(r"[^a-z0-9_]+", "_", path.stem.lower()).strip("_")[:60]
    return stem if is_name(stem) else f"scene_{stem}"[:63]


def parse_datetime(text: str | None) -> datetime:
    if not text:
        raise InvalidInput("--datetime: the acquisition date is required (not read from the file)",
                           parameter="datetime")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--datetime: {text!r} is not an ISO 8601 date or date-time", parameter="datetime") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _to_cog(src: Path, dst: Path, nodata: float | None, bands: Bands) -> None:
    """The COG of ``src``. Bands GDAL reads as alpha that the file does not declare alpha
    (:mod:`geobase.imagery.alpha`) are read through a VRT that makes them data and the COG is
    written PHOTOMETRIC=MINISBLACK; a declared alpha becomes the COG's internal mask."""
    import rasterio
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    profile = cog_profiles.get("deflate")
    if bands.as_data:
        with rasterio.open(src) as ds:
            vrt = data_vrt(src, ds)
        with rasterio.open(vrt) as view:
            cog_translate(view, str(dst), dict(profile, photometric="MINISBLACK"), nodata=nodata, quiet=True,
                          in_memory=False, use_cog_driver=False)
        return
    cog_translate(str(src), str(dst), profile, nodata=nodata, quiet=True, in_memory=False, use_cog_driver=False,
                  add_mask=bool(bands.alpha))


def _cog_facts(path: Path, scene: dict) -> dict:
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as cog:
        scene = dict(scene, count=cog.count, shape=(cog.height, cog.width), transform=tuple(cog.transform)[:6],
                     nodata=cog.nodata)
        scene["bbox"] = tuple(transform_bounds(cog.crs, "EPSG:4326", *cog.bounds, densify_pts=21))
    return scene


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _sweep_partials(folder: Path, iid: str) -> None:
    """Remove the ``.partial`` files of earlier ingests of this item whose process is gone (a
    killed ``geobase imagery add``): nothing registered them, nothing else will delete them. A
    partial of a live process (a concurrent ingest) is left alone."""
    for p in folder.glob(f".{iid}.*.partial"):
        parts = p.name.split(".")  # "", iid, pid, uuid, "partial"
        if len(parts) == 5 and parts[2].isdigit() and not _pid_alive(int(parts[2])):
            p.unlink(missing_ok=True)


def add_image(settings: Settings, file: Path, collection: str, *, when: str | None, sensor: str | None = None,
              cloud_cover: float | None = None, bands: str | None = None, item_id: str | None = None,
              nodata: float | None = None, notes: list[str] | None = None) -> dict:
    """Ingest one scene; returns the stored STAC Item. ``notes`` (when given) receives what the
    ingest decided on the caller's behalf (a band GDAL reads as alpha kept as data, a declared
    alpha kept as the mask), for the ingest report."""
    if not is_name(collection):
        raise InvalidInput("--collection: lowercase letters, digits and _ (1-63), starting with a letter",
                           parameter="collection")
    if cloud_cover is not None and not 0 <= cloud_cover <= 100:
        raise InvalidInput("--cloud-cover: a percentage 0..100", parameter="cloud_cover")
    if sensor is not None and not re.fullmatch(r"[A-Za-z0-9 ._+-]{1,60}", sensor):
        raise InvalidInput("--sensor: 1-60 letters, digits, space . _ + -", parameter="sensor")
    path = check_source(file, settings.max_upload_bytes)
    moment = parse_datetime(when)
    iid = item_id or item_id_for(path)
    if not is_name(iid):
        raise InvalidInput("--id: lowercase letters, digits and _ (1-63), starting with a letter", parameter="id")
    scene = read_scene(path)
    common = parse_band_map(bands, scene["count"])
    folder = settings.data_path / "imagery" / collection
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{iid}.tif"
    _sweep_partials(folder, iid)
    partial = folder / f".{iid}.{os.getpid()}.{uuid.uuid4().hex}.partial"
    rel = final.relative_to(settings.data_path).as_posix()
    from geobase.db import database_url

    try:
        _to_cog(path, partial, nodata if nodata is not None else scene["nodata"], scene["bands"])
        scene = _cog_facts(partial, scene)
        item = build_item(iid, collection, moment, scene["bbox"], scene, common, sensor, cloud_cover, rel)
        with psycopg.connect(database_url(settings)) as conn:
            cat.ensure_collection(conn, collection)
            cat.insert_item(conn, collection, iid, moment, scene["bbox"], cloud_cover, rel, item)
            if final.exists():  # a leftover of a killed ingest that never committed: not registered
                final.unlink()
            os.replace(partial, final)
            try:
                conn.commit()
            except BaseException:
                final.unlink(missing_ok=True)
                raise
        if notes is not None:
            notes.extend(scene["bands"].notes)
        return item
    finally:
        partial.unlink(missing_ok=True)

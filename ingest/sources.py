"""Where the features come from: resolve a delivered path (file, folder, zip, .gdb) to one GDAL
dataset + layer, refuse unsafe archives, and checksum what was delivered.

Deliveries arrive as whatever the department's GIS wrote: a Shapefile folder, a zip holding
several Shapefiles or a whole FileGDB, a GeoPackage with many layers. We read zips in place
through GDAL's ``/vsizip/`` (no extraction to disk), after checking every member name and the
uncompressed sizes so a hostile upload cannot escape the upload folder or fill the disk.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from geobase.errors import InvalidInput

#: Refuse archives whose members expand to more than this (bytes) in total.
MAX_UNCOMPRESSED_BYTES = 50 * 1024**3
#: Refuse members compressed more than this ratio (a zip bomb expands 1000:1 and more).
MAX_COMPRESSION_RATIO = 200
#: Refuse archives with more members than this (a FileGDB holds a few hundred files).
MAX_MEMBERS = 20_000

VECTOR_SUFFIXES = {
    ".shp": "ESRI Shapefile", ".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON",
    ".geojsonl": "GeoJSONSeq", ".geojsons": "GeoJSONSeq", ".geojsonseq": "GeoJSONSeq", ".ndjson": "GeoJSONSeq",
    ".fgb": "FlatGeobuf", ".csv": "CSV", ".gdb": "OpenFileGDB",
}
RASTER_SUFFIXES = {".tif", ".tiff"}
#: CSV: geometry from a WKT column or from lon/lat (x/y) columns.
CSV_OPTIONS = {
    "GEOM_POSSIBLE_NAMES": "wkt,geom,geometry,the_geom,shape",
    "X_POSSIBLE_NAMES": "lon,lng,long,longitude,x,经度",
    "Y_POSSIBLE_NAMES": "lat,latitude,y,纬度",
    "KEEP_GEOM_COLUMNS": "NO",
    "AUTODETECT_TYPE": "YES",
}
SHAPEFILE_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


@dataclass
class Source:
    """One resolved input: the GDAL path to open, the layer in it, and facts about the files."""

    path: Path  # what the user gave
    gdal_path: str  # what GDAL opens (may be /vsizip/...)
    layer: str | None
    driver: str
    files: list[Path] = field(default_factory=list)  # delivered files, for the checksum
    shapefile_members: dict[str, bytes | None] = field(default_factory=dict)  # .cpg/.dbf head/.prj
    available_layers: list[str] = field(default_factory=list)
    open_options: dict[str, str] = field(default_factory=dict)  # GDAL dataset open options

    @property
    def is_shapefile(self) -> bool:
        return self.driver == "ESRI Shapefile"


def check_zip(path: Path, limits=None) -> zipfile.ZipFile:
    """Open a zip after the app's one archive check (:func:`geobase.uploads.check_zip`: slip,
    absolute names, links, nested archives, member count, bombs)."""
    from geobase.uploads import ZipLimits
    from geobase.uploads import check_zip as checked

    if limits is None:
        limits = ZipLimits(MAX_UNCOMPRESSED_BYTES, MAX_MEMBERS, MAX_COMPRESSION_RATIO)
    return checked(path, limits, parameter="path")


def sha256_files(files: list[Path]) -> str:
    """sha256 over the delivered file(s), in name order, so a re-delivery is recognised."""
    h = hashlib.sha256()
    for f in sorted(files):
        if f.is_dir():
            for sub in sorted(p for p in f.rglob("*") if p.is_file()):
                h.update(sub.relative_to(f).as_posix().encode())
                _feed(h, sub)
        else:
            _feed(h, f)
    return h.hexdigest()


#: checksums begun before the delivery was resolved (:func:`start_checksum`), by the exact
#: files they hash (path, size, modification time of each)
_EARLY: dict[tuple, object] = {}


def _files_key(files: list[Path]) -> tuple | None:
    """What identifies the bytes :func:`sha256_files` hashes: each (regular) file's path, size
    and modification time, in name order; None for a folder (a FileGDB) or a missing file."""
    key = []
    for f in sorted(files):
        try:
            st = f.stat()
        except OSError:
            return None
        if not f.is_file():
            return None
        key.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(key)


def _likely_files(path: Path) -> list[Path] | None:
    """The files :func:`resolve` will most likely name for a delivered file ``path``: a
    Shapefile's .shp and the sidecars of its very stem, any other file itself; None else."""
    if not path.is_file():
        return None
    if path.suffix.lower() != ".shp":
        return [path]
    return [p for p in path.parent.iterdir() if p.stem == path.stem and p.suffix.lower() in SHAPEFILE_SIDECARS]


def start_checksum(path: Path) -> None:
    """Begin hashing the files delivered at ``path`` in a thread (hashlib and file reads release
    the GIL), before the load's modules are imported: the command's ~0.5 s of imports use one
    core, and the checksum (~0.1 CPU-s at 200,000 parcels) was hashed while the rows load,
    when both cores are busy. :func:`checksum_of` takes it if the delivery turns out to be
    exactly these files, unchanged; else it is hashed again."""
    from geobase.ingest.threads import in_thread

    files = _likely_files(Path(path))
    key = _files_key(files) if files else None
    if key is not None:
        _EARLY[key] = in_thread(sha256_files, files)


def checksum_of(files: list[Path]):
    """A function that waits for :func:`sha256_files` of ``files``, hashed in a thread: the one
    :func:`start_checksum` began if it hashes exactly these files, as they are now."""
    from geobase.ingest.threads import in_thread

    early = _EARLY.pop(_files_key(files), None) if files else None
    return early if early is not None else in_thread(sha256_files, files)


def _feed(h, path: Path) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)


def _pick_layer(available: list[str], wanted: str | None, preferred: list[str], where: str) -> str:
    if wanted:
        for name in available:
            if name == wanted or name.lower() == wanted.lower():
                return name
        raise InvalidInput(f"{where}: has no layer {wanted!r} (layers: {', '.join(available) or 'none'})",
                           parameter="layer")
    if len(available) == 1:
        return available[0]
    lowered = {a.lower(): a for a in available}
    for p in preferred:
        if p.lower() in lowered:
            return lowered[p.lower()]
    raise InvalidInput(
        f"{where}: holds several layers ({', '.join(available)}); choose one with --layer", parameter="layer")


def _list_layers(gdal_path: str, where: str) -> list[str]:
    # pyogrio (and with it geopandas, pandas and pyarrow, ~0.3 s) is imported by the first
    # file read, not by the server's start: the API imports this module for its zip checks
    import pyogrio

    try:
        return [str(row[0]) for row in pyogrio.list_layers(gdal_path)]
    except Exception as exc:  # GDAL says why (truncated file, unknown format)
        raise InvalidInput(f"{where}: cannot be read as vector data: {_gdal_msg(exc)}", parameter="path") from None


def _gdal_msg(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def check_shp_length(header: bytes, actual: int, where: str) -> None:
    """Refuse a .shp shorter than its header says (a cut-off copy or upload)."""
    if len(header) < 28 or header[:4] != b"\x00\x00\x27\x0a":
        raise InvalidInput(f"{where}: the .shp is not a Shapefile (bad header)", parameter="path")
    declared = int.from_bytes(header[24:28], "big") * 2
    if actual < declared:
        raise InvalidInput(f"{where}: the .shp is truncated: its header declares {declared} bytes but the file has "
                           f"{actual}; deliver the complete file", parameter="path")


def _shapefile_facts(read, stem: str, where: str) -> dict[str, bytes | None]:
    """Bytes of .cpg/.prj and the .dbf header, and the presence of .shx/.dbf, for one Shapefile."""
    facts: dict[str, bytes | None] = {}
    for ext in (".shx", ".dbf", ".prj", ".cpg"):
        facts[ext] = read(stem + ext, 32 if ext == ".dbf" else None)
    if facts[".shx"] is None:
        raise InvalidInput(f"{where}: the Shapefile has no .shx index file ({Path(stem).name}.shx is missing); "
                           "deliver .shp, .shx, .dbf and .prj together", parameter="path")
    if facts[".dbf"] is None:
        raise InvalidInput(f"{where}: the Shapefile has no .dbf attribute table ({Path(stem).name}.dbf is missing); "
                           "deliver .shp, .shx, .dbf and .prj together", parameter="path")
    return facts


def _case_insensitive(directory: Path, name: str) -> Path | None:
    p = directory / name
    if p.exists():
        return p
    low = name.lower()
    for cand in directory.iterdir():
        if cand.name.lower() == low:
            return cand
    return None


def resolve(path: Path, *, source_layer: str | None = None, preferred_layers: list[str] | None = None) -> Source:
    """Resolve a delivered path to one vector layer, or refuse with a message naming the problem."""
    path = Path(path)
    preferred = preferred_layers or []
    where = path.name
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or folder", parameter="path")
    name = path.name.lower()

    if path.is_dir() and name.endswith(".gdb"):
        layers = _list_layers(str(path), where)
        return Source(path, str(path), _pick_layer(layers, source_layer, preferred, where), "OpenFileGDB",
                      [path], available_layers=layers)

    if path.is_dir():  # a folder of Shapefiles (or of anything GDAL reads)
        shps = sorted(p for p in path.iterdir() if p.suffix.lower() == ".shp")
        gdbs = sorted(p for p in path.iterdir() if p.is_dir() and p.name.lower().endswith(".gdb"))
        if gdbs and not shps:
            return resolve(gdbs[0], source_layer=source_layer, preferred_layers=preferred)
        if not shps:
            raise InvalidInput(f"{where}: the folder holds no .shp or .gdb to load", parameter="path")
        stems = [p.stem for p in shps]
        stem = _pick_layer(stems, source_layer, preferred, where)
        shp = shps[stems.index(stem)]
        return _shapefile_source(path, shp, where)

    if name.endswith(".zip"):
        return _zip_source(path, source_layer, preferred, where)

    suffix = path.suffix.lower()
    if suffix == ".shp":
        return _shapefile_source(path, path, where)
    if suffix in (".dbf", ".shx", ".prj"):
        raise InvalidInput(f"{where}: give the .shp of the Shapefile (or its folder / zip)", parameter="path")
    driver = VECTOR_SUFFIXES.get(suffix)
    if driver is None:
        raise InvalidInput(
            f"{where}: unsupported file type {suffix or '(none)'}; expected Shapefile (.shp, folder or .zip), "
            "GeoPackage, GeoJSON/GeoJSONSeq, FileGDB (.gdb or .gdb.zip), FlatGeobuf, CSV or GeoTIFF",
            parameter="path")
    gdal_path = str(path)
    layers = _list_layers(gdal_path, where)
    return Source(path, gdal_path, _pick_layer(layers, source_layer, preferred, where), driver, [path],
                  available_layers=layers, open_options=CSV_OPTIONS if driver == "CSV" else {})


def _shapefile_source(given: Path, shp: Path, where: str) -> Source:
    directory, stem = shp.parent, shp.stem
    files: list[Path] = []

    def read(fname: str, limit: int | None) -> bytes | None:
        p = _case_insensitive(directory, Path(fname).name)
        if p is None:
            return None
        files.append(p)
        with open(p, "rb") as fh:
            return fh.read(limit) if limit else fh.read()

    facts = _shapefile_facts(read, str(directory / stem), where)
    with open(shp, "rb") as fh:
        check_shp_length(fh.read(100), shp.stat().st_size, where)
    files.append(shp)
    layers = _list_layers(str(shp), where)
    return Source(given, str(shp), layers[0] if layers else stem, "ESRI Shapefile", files, facts, layers)


def _zip_source(path: Path, source_layer: str | None, preferred: list[str], where: str) -> Source:
    zf = check_zip(path)
    with zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        gdb_roots = sorted({_gdb_root(n) for n in names if _gdb_root(n)})
        shps = sorted(n for n in names if n.lower().endswith(".shp"))
        others = sorted(n for n in names if Path(n).suffix.lower() in VECTOR_SUFFIXES and not n.lower().endswith(".shp")
                        and not _gdb_root(n))
        if gdb_roots:
            gdal_path = f"/vsizip/{path}/{gdb_roots[0]}"
            layers = _list_layers(gdal_path, where)
            return Source(path, gdal_path, _pick_layer(layers, source_layer, preferred, where), "OpenFileGDB",
                          [path], available_layers=layers)
        if shps:
            stems = [PurePosixPath(s).stem for s in shps]
            stem = _pick_layer(stems, source_layer, preferred, where)
            inner = shps[stems.index(stem)]
            base = inner[: -len(".shp")]
            lower_map = {n.lower(): n for n in names}

            def read(fname: str, limit: int | None) -> bytes | None:
                real = lower_map.get(fname.lower())
                if real is None:
                    return None
                with zf.open(real) as fh:
                    return fh.read(limit) if limit else fh.read()

            facts = _shapefile_facts(read, base, f"{where}/{inner}")
            with zf.open(inner) as fh:
                check_shp_length(fh.read(100), zf.getinfo(inner).file_size, f"{where}/{inner}")
            gdal_path = f"/vsizip/{path}/{inner}"
            layers = _list_layers(gdal_path, where)
            return Source(path, gdal_path, layers[0] if layers else stem, "ESRI Shapefile", [path], facts, stems)
        if others:
            inner = others[0]
            gdal_path = f"/vsizip/{path}/{inner}"
            layers = _list_layers(gdal_path, where)
            return Source(path, gdal_path, _pick_layer(layers, source_layer, preferred, where),
                          VECTOR_SUFFIXES[Path(inner).suffix.lower()], [path], available_layers=layers)
    raise InvalidInput(f"{where}: the zip holds no Shapefile, FileGDB or other vector file", parameter="path")


def _gdb_root(name: str) -> str | None:
    parts = PurePosixPath(name).parts
    for i, part in enumerate(parts):
        if part.lower().endswith(".gdb"):
            return "/".join(parts[: i + 1])
    return None

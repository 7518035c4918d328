"""Full downloads of a dataset, prepared once per version and view, served from a file (so with
range requests and a checksum): zipped Shapefile (UTF-8, or GBK with ``f=shp-gbk``, named in its
``.cpg``; field names cut to 10
characters with a mapping file), GeoParquet, GeoPackage, FlatGeobuf, GeoJSON.

Why prepared and not streamed per request: a harvester downloading the whole 1M-parcel land use
should not make the server re-read and re-encode it each time, and a broken transfer should
resume (Range) rather than restart. The file is keyed by the layer, the version it was read
from, the caller's view (the attributes it may read: masked and desensitised ones are not in
the query, so not in the file) and the format; a new version gets new files. Rows are read
batch by batch from a server-side cursor and written through GDAL (or pyarrow for GeoParquet):
memory is bounded by a batch whatever the size. The version is read in the same repeatable-read
snapshot as the rows, so the file is named by the version its rows really are.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

import psycopg
from psycopg import sql

from geobase.features.ids import id_sql, qualified_ids_sync
from geobase.opendata.desensitise import Desensitisation
from geobase.specs import LayerSpec
from geobase.storage import STORAGE_SRID, current_filter, table_ident

#: format -> (file extension, media type)
FORMATS: dict[str, tuple[str, str]] = {
    "shp": ("shp.zip", "application/zip"), "shp-gbk": ("gbk.shp.zip", "application/zip"),
    "parquet": ("parquet", "application/vnd.apache.parquet"),
    "gpkg": ("gpkg", "application/geopackage+sqlite3"), "fgb": ("fgb", "application/flatgeobuf"),
    "geojson": ("geojson", "application/geo+json"),
}
_DRIVERS = {"gpkg": "GPKG", "fgb": "FlatGeobuf", "geojson": "GeoJSON", "shp": "ESRI Shapefile",
            "shp-gbk": "ESRI Shapefile"}
#: the Shapefile's character set (written into its .cpg): UTF-8, or GBK for older desktop GIS
_ENCODINGS = {"shp-gbk": "GBK"}


def short_names(names: list[str], width: int = 10) -> dict[str, str]:
    """Unique field names of at most ``width`` characters (dBase), in order: a cut name that
    collides gets a numbered tail (``qsdwmc_1``...). ``id`` is the feature key."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        short = name[:width]
        n = 1
        while short.lower() in used:
            tail = f"_{n}"
            short = name[:width - len(tail)] + tail
            n += 1
        used.add(short.lower())
        out[name] = short
    return out


def cache_key(spec: LayerSpec, attributes: list[str], fmt: str, desensitise: Desensitisation | None = None,
              bbox: list[float] | None = None) -> str:
    """What a prepared file depends on besides the version: the view (attributes, the caller's
    desensitisation, a scoped key's box) and the format."""
    view = f"{spec.name}|{spec.spec_hash()}|{','.join(attributes)}|{fmt}|{desensitise!r}|{bbox!r}"
    return hashlib.sha256(view.encode()).hexdigest()[:20]


def prepared_path(root: Path, spec: LayerSpec, version: str, attributes: list[str], fmt: str,
                  desensitise: Desensitisation | None = None, bbox: list[float] | None = None) -> Path:
    key = cache_key(spec, attributes, fmt, desensitise, bbox)
    return root / "downloads" / spec.name / version / f"{key}.{FORMATS[fmt][0]}"


def sha256_of(path: Path) -> str:
    side = path.with_name(path.name + ".sha256")
    if side.exists():
        return side.read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _query(spec: LayerSpec, attributes: list[str], desensitise: Desensitisation | None = None,
           bbox: list[float] | None = None, qualified: bool = False) -> sql.Composed:
    """The rows of the file: current, desensitised for an outside caller (masked values, the
    rounded or no geometry), and for a key limited to a box only the features in it, clipped."""
    geom = desensitise.geometry_sql() if desensitise is not None else sql.Identifier("geom")
    where = [current_filter()]
    if bbox is not None:
        env = sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, 4490)").format(*(sql.Literal(float(v)) for v in bbox))
        where.append(sql.SQL("geom && {e} AND ST_Intersects(geom, {e})").format(e=env))
        geom = clipped_sql(geom, env, spec.geometry)
    cols = [sql.SQL("{} AS id").format(id_sql(qualified))]  # the feature id (geobase/features/ids.py)
    cols += [desensitise.column_sql(a) if desensitise is not None else sql.Identifier(a) for a in attributes]
    cols.append(sql.SQL("ST_AsBinary({})").format(geom))
    return sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY _key").format(
        sql.SQL(", ").join(cols), table_ident(spec), sql.SQL(" AND ").join(where))


def clipped_sql(geom: sql.Composable, env: sql.Composable, geometry_type: str | None) -> sql.Composable:
    """``geom`` cut to the box ``env``, kept to the layer's geometry type."""
    kind = {"MultiPoint": 1, "MultiLineString": 2, "MultiPolygon": 3}.get(geometry_type or "", 0)
    cut = sql.SQL("ST_Intersection({}, {})").format(geom, env)
    return sql.SQL("ST_Multi(ST_CollectionExtract({}, {}))").format(cut, sql.Literal(kind)) if kind else cut


def _current_version(conninfo: str, layer: str) -> str:
    """The current version as it names a prepared file: its number and when it was made (a
    database reloaded from scratch has a version 1 again, never with the same time)."""
    from geobase.catalog import current_layers_sync

    with psycopg.connect(conninfo) as conn:
        cur = current_layers_sync(conn, [layer]).get(layer)
    if cur is None or cur.version is None:
        from geobase.errors import NotFound

        raise NotFound(f"layer {layer!r} has no loaded version", parameter="collectionId")
    made = cur.created_at.strftime("%Y%m%dT%H%M%S%f") if cur.created_at else "0"
    return f"v{int(cur.version)}-{made}"


def prepare(conninfo: str, spec: LayerSpec, attributes: list[str], fmt: str, root: Path, timeout_ms: int,
            desensitise: Desensitisation | None = None, bbox: list[float] | None = None) -> Path:
    """Write the full download of the layer's current version for this view (if not there yet)
    and return its path (with a ``.sha256`` beside it). Runs in a worker thread.

    The version is read before and after the rows: the writer's snapshot lies between, so when
    both reads agree the file holds that version's rows; when an ingest committed meanwhile the
    file is thrown away and written again for the new version."""
    from geobase.formats import write_file
    from geobase.geoparquet import write_geoparquet_file

    types = {a.name: a.type for a in spec.attributes}
    shp = fmt.startswith("shp")
    names = short_names(["id", *attributes]) if shp else {n: n for n in ["id", *attributes]}
    columns = [(names[a], types[a]) for a in attributes]
    with psycopg.connect(conninfo) as conn:
        qualified = qualified_ids_sync(conn, spec)
    query = _query(spec, attributes, desensitise, bbox, qualified)
    for _ in range(3):
        version = _current_version(conninfo, spec.name)
        path = prepared_path(root, spec, version, attributes, fmt, desensitise, bbox)
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=path.parent, prefix=".work-"))
        try:
            out = work / f"{spec.name}.{FORMATS[fmt][0].split('.')[-2 if shp else -1]}"
            if fmt == "parquet":
                write_geoparquet_file(conninfo, query, columns, True, STORAGE_SRID, out, timeout_ms)
            else:
                write_file(conninfo, query, columns, True, _DRIVERS[fmt], out, spec.name,
                           STORAGE_SRID, timeout_ms, spec.geometry, encoding=_ENCODINGS.get(fmt, "UTF-8"))
            if _current_version(conninfo, spec.name) != version:
                continue   # an ingest committed while the rows were read: write again
            final = work / "final"
            if shp:
                _zip_shapefile(work, spec.name, names, final)
            else:
                out.rename(final)
            digest = sha256_of(final)
            path.with_name(path.name + ".sha256").write_text(digest)
            os.replace(final, path)
            return path
        finally:
            for p in work.glob("*"):
                p.unlink(missing_ok=True)
            work.rmdir()
    from geobase.errors import ServiceUnavailable

    raise ServiceUnavailable(f"layer {spec.name!r} changed during three attempts to prepare its download: try again")


def _zip_shapefile(work: Path, name: str, names: dict[str, str], final: Path) -> None:
    """The Shapefile's parts and ``fields.csv`` (full name -> 10-character name) in one zip."""
    mapping = io.StringIO()
    w = csv.writer(mapping)
    w.writerow(["field", "shapefile_field"])
    for full, short in names.items():
        w.writerow([full, short])
    with zipfile.ZipFile(final, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for part in sorted(work.glob(f"{name}.*")):
            z.write(part, part.name)
        z.writestr("fields.csv", "\ufeff" + mapping.getvalue())

"""The steps of an ingest that read the delivered file before a row is loaded: resolve it, decide
its text encoding and coordinate reference system, check its geometry family against the layer
and plan which of its fields fill which attributes. Each step reads and fills the
:class:`~geobase.ingest.context.IngestContext`; nothing here touches the database.
"""

from __future__ import annotations

import pyogrio
from geobase import crs as crsmod
from geobase.ingest.context import IngestContext
from geobase.ingest.encoding import EncodingSniffer, check_encoding_name, cpg_encoding, dbf_ldid
from geobase.ingest.normalize import FID_COLUMN, BatchNormalizer, plan_fields
from geobase.ingest.options import IngestOptions
from geobase.ingest.report import QualityReport
from geobase.ingest.sources import checksum_of, resolve

from geobase.errors import InvalidInput
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry

#: geometry types of a file that can never fit a layer's geometry (the rest are checked per row)
_FOREIGN_FAMILIES = {
    "MultiPolygon": (("LineString", "MultiLineString", "Point", "MultiPoint"), "polygons (MultiPolygon)"),
    "MultiLineString": (("Polygon", "MultiPolygon", "Point", "MultiPoint"), "lines (MultiLineString)"),
    "MultiPoint": (("Polygon", "MultiPolygon", "LineString", "MultiLineString"), "points"),
}


def open_source(settings: Settings, opts: IngestOptions, spec: LayerSpec, registry: Registry) -> IngestContext:
    """Find what to read in the delivery; start hashing it (the checksum is only needed at the
    end: hashed in a thread, hashlib releases the GIL, while the rows load), unless the command
    began already (:func:`geobase.ingest.sources.start_checksum`)."""
    src = resolve(opts.path, source_layer=opts.source_layer, preferred_layers=spec.source_layers)
    checksum = checksum_of(src.files)
    report = QualityReport(source=opts.path.name, driver=src.driver, source_layer=src.layer, on_error=opts.on_error)
    return IngestContext(settings, opts, spec, registry, src, report, checksum)


def choose_encoding(ctx: IngestContext) -> None:
    """--encoding, else a Shapefile's .cpg or .dbf language driver id, else detection from the
    text itself; other formats are UTF-8 by definition."""
    src, report, encoding = ctx.src, ctx.report, ctx.opts.encoding
    if encoding:
        ctx.gdal_encoding = check_encoding_name(encoding)
        report.encoding, report.encoding_how = encoding, "--encoding"
    elif src.is_shapefile:
        cpg = cpg_encoding(src.shapefile_members.get(".cpg"))
        ldid = dbf_ldid(src.shapefile_members.get(".dbf"))
        if cpg:
            ctx.gdal_encoding = cpg
            report.encoding, report.encoding_how = cpg, ".cpg"
        elif ldid:
            report.encoding_how = f"dbf language driver id {ldid}"
        else:
            ctx.gdal_encoding = "ISO-8859-1"
            ctx.sniffer = EncodingSniffer()
            report.encoding_how = "detected (no .cpg, no language driver id)"
    else:
        report.encoding, report.encoding_how = "UTF-8", f"{src.driver} text is UTF-8"


def read_info(ctx: IngestContext) -> None:
    """The file's fields, CRS, bounds and feature count, as GDAL states them."""
    src = ctx.src
    try:
        ctx.info = pyogrio.read_info(src.gdal_path, layer=src.layer, encoding=ctx.gdal_encoding,
                                     force_total_bounds=True, **src.open_options)
    except Exception as exc:
        raise InvalidInput(f"{ctx.name}: cannot be read: {str(exc).strip().splitlines()[0]}",
                           parameter="path") from None
    if ctx.report.encoding is None and ctx.sniffer is None:
        ctx.report.encoding = ctx.info.get("encoding")
    ctx.total_features = ctx.info.get("features") if ctx.info.get("features", -1) >= 0 else None


def choose_crs(ctx: IngestContext) -> None:
    """--crs, else the file's own; a file that states none is refused with a hint from its bounds."""
    report, src = ctx.report, ctx.src
    if ctx.opts.crs:
        ctx.src_crs = crsmod.parse_user_crs(ctx.opts.crs)
        report.crs_how = "--crs"
    else:
        ctx.src_crs = crsmod.file_crs(ctx.info.get("crs"), src.shapefile_members.get(".prj"))
        report.crs_how = "file"
        if ctx.src_crs is None:
            hint = crsmod.suggest_from_bounds(ctx.info.get("total_bounds"))
            missing_prj = " (no .prj)" if src.is_shapefile and src.shapefile_members.get(".prj") is None else ""
            raise InvalidInput(f"{ctx.name}: the file states no coordinate reference system{missing_prj}; {hint}",
                               parameter="crs", details={"report": report.as_dict()})
    report.crs = crsmod.describe(ctx.src_crs)


def check_geometry_family(ctx: IngestContext) -> None:
    """A file of lines for a polygon layer (and the like) is refused as a whole, before reading."""
    gtype = (ctx.info.get("geometry_type") or "").replace(" Z", "").replace(" M", "").replace("3D ", "")
    foreign, takes = _FOREIGN_FAMILIES.get(ctx.spec.geometry, ((), ""))
    if gtype in foreign:
        raise InvalidInput(f"{ctx.name}: the file holds {gtype} geometries; layer {ctx.opts.layer!r} takes {takes}",
                           parameter="path", details={"report": ctx.report.as_dict()})


def plan_normalizer(ctx: IngestContext) -> None:
    """Which file field fills which attribute, and the normaliser that converts the batches."""
    report = ctx.report
    plan = plan_fields(ctx.spec, [str(f) for f in ctx.info.get("fields", [])], ctx.opts.field_map)
    report.field_map = dict(plan.columns)
    report.ignored_fields = plan.ignored
    ctx.plan = plan
    ctx.norm = BatchNormalizer(ctx.spec, ctx.registry, plan, ctx.src_crs, report, ctx.sniffer)
    ctx.source_cols = sorted(set(plan.columns.values()) - {FID_COLUMN})
    if plan.uses_fid:
        report.notes.append("feature key taken from the file's feature ids (no key field delivered): "
                            "keys may change when the supplier re-exports the file")


#: in order: each may refuse the file (InvalidInput with the report so far)
SOURCE_STEPS = (choose_encoding, read_info, choose_crs, check_geometry_family, plan_normalizer)

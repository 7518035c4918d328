"""A feature a client sends (GeoJSON) -> the row an edit stages, checked as an ingest checks it.

The checks are the ingest's, on one feature: the layer spec's attributes only, each of its type,
required ones present, code-list fields one of the list's assignable codes (:mod:`geobase.specs`),
the geometry present, of the layer's type (a Polygon is promoted to the layer's MultiPolygon, as
an ingest does), valid and not empty. A failure is a :class:`~geobase.errors.CheckFailed` (422)
naming the check and the field. Coordinates come in the CRS of ``Content-Crs`` (default CRS84)
and are transformed with :func:`geobase.crs.to_storage`, the one check of client coordinates.

The content hash (the feature's ETag) is XXH3-128 over the same field encodings the ingest hashes
(PostgreSQL binary COPY fields: attributes in spec order, then the EPSG:4490 EWKB), so an edit
that restores a feature's content restores its hash.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from dataclasses import dataclass
from typing import Any

from geobase.crs import Crs, to_storage
from geobase.errors import CheckFailed, InvalidInput
from geobase.specs import Attribute, LayerSpec, Registry
from geobase.storage import measure_column

STORAGE_SRID = 4490
_PG_EPOCH = dt.date(2000, 1, 1)
_PG_EPOCH_TS = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
_PARTS = {"MultiPolygon": ("Polygon", "MultiPolygon"), "MultiLineString": ("LineString", "MultiLineString"),
          "MultiPoint": ("Point", "MultiPoint")}


@dataclass
class Row:
    """A feature's content as stored: typed attribute values (spec order) and EWKB (EPSG:4490)."""

    attributes: dict[str, Any]
    ewkb: bytes

    def key(self, spec: LayerSpec) -> str:
        return "|".join(str(self.attributes[k]) for k in spec.source_key)

    def hash(self, spec: LayerSpec) -> str:
        return content_hash(spec, self.attributes, self.ewkb)

    def as_json(self) -> dict[str, Any]:
        """The attributes as JSON values (dates and times as ISO 8601) for staging."""
        return {k: v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v for k, v in self.attributes.items()}


def _field(payload: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if payload is None else struct.pack(">i", len(payload)) + payload


def _encode(a: Attribute, v: Any) -> bytes | None:
    """The binary COPY encoding of a typed value (what the ingest hashes)."""
    if v is None:
        return None
    if a.type == "text":
        return v.encode()
    if a.type == "integer":
        return struct.pack(">q", v)
    if a.type == "number":
        return struct.pack(">d", v)
    if a.type == "boolean":
        return b"\x01" if v else b"\x00"
    if a.type == "date":
        return struct.pack(">i", (v - _PG_EPOCH).days)
    delta = v - _PG_EPOCH_TS
    return struct.pack(">q", (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def content_hash(spec: LayerSpec, attributes: dict[str, Any], ewkb: bytes) -> str:
    import xxhash

    body = b"".join(_field(_encode(a, attributes.get(a.name))) for a in spec.attributes) + _field(ewkb)
    return xxhash.xxh3_128_hexdigest(body)


def _convert(a: Attribute, value: Any) -> Any:
    """``value`` (JSON) as ``a``'s type; ValueError says why not."""
    if value is None:
        return None
    t = a.type
    if t == "text" and isinstance(value, str):
        return value
    if t == "integer" and isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2 ** 63:
        return value
    if t == "number" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if t == "boolean" and isinstance(value, bool):
        return value
    if t == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if t == "datetime" and isinstance(value, str):
        out = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if out.tzinfo is None:
            raise ValueError("a date-time needs a time zone (e.g. 2026-01-31T08:00:00+08:00)")
        return out.astimezone(dt.timezone.utc)
    raise ValueError(f"{str(value)[:60]!r} is not {'an' if t == 'integer' else 'a'} {t}")


def check_attributes(spec: LayerSpec, registry: Registry, properties: dict[str, Any]) -> dict[str, Any]:
    """The spec's attributes typed and checked (unknown, type, required, code list). The stored
    measure a read returns (``_area_m2`` / ``_length_m``) may come back in a body read before: it
    is recomputed from the geometry on the ellipsoid, whatever it says."""
    names = set(spec.attribute_names) | {measure_column(spec)} - {None}
    unknown = [k for k in properties if k not in names]
    if unknown:
        raise CheckFailed("unknown_field", f"properties: layer {spec.name!r} has no attribute {unknown[0][:100]!r}",
                          field=unknown[0][:100])
    out: dict[str, Any] = {}
    for a in spec.attributes:
        try:
            value = _convert(a, properties.get(a.name))
        except ValueError as exc:
            raise CheckFailed("type", f"{a.name}: {exc}", field=a.name) from None
        if value is None and (a.required or a.name in spec.source_key):
            raise CheckFailed("required", f"{a.name}: required by the layer spec of {spec.name!r}", field=a.name)
        if value is not None and a.code_list:
            code = registry.code_list(a.code_list).lookup().get(value)
            if code is None or not code.assignable:
                raise CheckFailed("code_list", f"{a.name}: {str(value)[:60]!r} is not an assignable code of "
                                  f"code list {a.code_list!r}", field=a.name)
        out[a.name] = value
    return out


def check_geometry(spec: LayerSpec, geometry: Any, crs: Crs) -> bytes:
    """The GeoJSON geometry in EPSG:4490 as EWKB, of the layer's type, valid and not empty."""
    import shapely

    if geometry is None:
        raise CheckFailed("geometry_required", f"geometry: every feature of {spec.name!r} needs one", field="geometry")
    if not isinstance(geometry, dict) or not isinstance(geometry.get("type"), str):
        raise InvalidInput("geometry: not a GeoJSON geometry object", parameter="geometry")
    if geometry["type"] not in _PARTS[spec.geometry]:
        raise CheckFailed("geometry_type", f"geometry: {spec.name!r} holds {spec.geometry}, not "
                          f"{geometry['type'][:40]}", field="geometry")
    try:
        geom = shapely.geometry.shape(geometry)
    except Exception as exc:  # shapely raises several kinds for malformed coordinates
        raise InvalidInput(f"geometry: malformed coordinates ({str(exc)[:200]})", parameter="geometry") from None
    if geom.is_empty:
        raise CheckFailed("geometry_empty", "geometry: empty", field="geometry")
    geom = to_storage(geom, crs, "geometry")
    if not geom.is_valid:
        raise CheckFailed("geometry_valid", f"geometry: not valid ({shapely.is_valid_reason(geom)})", field="geometry")
    if not geom.geom_type.startswith("Multi"):
        geom = getattr(shapely.geometry, spec.geometry)([geom])
    return shapely.to_wkb(shapely.set_srid(geom, STORAGE_SRID), include_srid=True, byte_order=1)


def feature_parts(body: Any) -> tuple[dict[str, Any], Any]:
    """(properties, geometry) of a GeoJSON Feature body (400 for anything else)."""
    if not isinstance(body, dict) or body.get("type") != "Feature":
        raise InvalidInput('body: a GeoJSON Feature is expected ({"type": "Feature", ...})', parameter="body")
    props = body.get("properties") or {}
    if not isinstance(props, dict):
        raise InvalidInput("body: properties must be an object", parameter="properties")
    return props, body.get("geometry")


def stored_row(spec: LayerSpec, record: dict) -> Row:
    """A current or staged feature (attributes + EWKB) as a :class:`Row`."""
    if "attributes" in record:  # staged: JSON values
        props = record["attributes"] or {}
        attrs = {a.name: _convert(a, props.get(a.name)) for a in spec.attributes}
    else:
        attrs = {a.name: record.get(a.name) for a in spec.attributes}
        attrs = {k: float(v) if v is not None and spec.attribute(k).type == "number" else v for k, v in attrs.items()}
    return Row(attrs, bytes(record["geom"]))


def geojson_of(row: Row) -> dict:
    """The row's geometry as GeoJSON (CRS84 / EPSG:4490 lon/lat)."""
    import shapely

    return shapely.geometry.mapping(shapely.from_wkb(row.ewkb))

"""JSON Schemas of a layer's features, built from its spec, in the caller's view.

Two documents, because the clients that read schemas expect two different shapes:

* :func:`feature_schema` — OGC API - Features Part 5 ("Schemas"): the *logical* schema of a
  feature, one JSON Schema property per feature property plus the id (``x-ogc-role: id``) and
  the geometry (``x-ogc-role: primary-geometry``, ``format: geometry-multipolygon``...), with
  titles in Chinese and English, units and code lists as ``enum``. Served at
  ``/collections/{id}/schema`` and linked with ``[ogc-rel:schema]``.
* :func:`geojson_feature_schema` — the schema of one GeoJSON Feature as the items endpoint
  writes it (``type``/``id``/``geometry``/``properties``). GDAL's OAPIF driver (3.6 of Debian 12
  and every later release up to the newest) follows a collection's ``describedby`` link of type
  ``application/schema+json`` and types its fields from ``properties.properties`` of such a
  document; the flat Part 5 document carries no ``properties`` member there, so GDAL would
  silently fall back to guessing types from the first page. Linked with ``describedby``.

Both list exactly the properties the items endpoint outputs for the same caller (masked
attributes are left out) and share one mapping of spec types to JSON Schema.
"""

from __future__ import annotations

from typing import Any

from geobase.specs import Attribute, LayerSpec, Registry
from geobase.storage import measure_column

JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
MEDIA_TYPE = "application/schema+json"
#: the link relation of OGC API - Features Part 5 (both spellings are in use)
REL_SCHEMA = "http://www.opengis.net/def/rel/ogc/1.0/schema"
REL_SCHEMA_CURIE = "[ogc-rel:schema]"

#: spec attribute type -> JSON Schema (``type`` and ``format``); one plain type each, no
#: ``["number", "null"]`` unions: GDAL reads only a string ``type`` and would make a union a
#: text field
JSON_TYPES: dict[str, dict[str, str]] = {
    "text": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
}

_MEASURES = {
    "_area_m2": ({"zh": "椭球面积", "en": "Ellipsoidal area"}, "m2"),
    "_length_m": ({"zh": "椭球长度", "en": "Ellipsoidal length"}, "m"),
}


def _titled(schema: dict[str, Any], zh: str, en: str) -> dict[str, Any]:
    """``title`` in both languages (JSON Schema has one title) plus each language on its own,
    for clients that show one."""
    schema["title"] = f"{zh} / {en}"
    schema["x-title"] = {"zh": zh, "en": en}
    return schema


def property_schemas(spec: LayerSpec, hidden: set[str], registry: Registry) -> dict[str, dict[str, Any]]:
    """Property name -> JSON Schema of every property the items endpoint writes for a caller
    who may not see ``hidden``, in output order (the spec's attributes, then the stored
    ellipsoidal area/length)."""
    props: dict[str, dict[str, Any]] = {}
    for attr in spec.attributes:
        if attr.name not in hidden:
            props[attr.name] = _attribute_schema(attr, registry)
    m = measure_column(spec)
    if m:
        title, unit = _MEASURES[m]
        props[m] = _titled({"type": "number", "readOnly": True, "x-ogc-unit": unit}, title["zh"], title["en"])
    return props


def _attribute_schema(attr: Attribute, registry: Registry) -> dict[str, Any]:
    schema: dict[str, Any] = dict(JSON_TYPES[attr.type])
    if attr.title:
        _titled(schema, attr.title.zh, attr.title.en)
    if attr.description:
        schema["description"] = attr.description
    if attr.unit:
        schema["x-ogc-unit"] = attr.unit
    if attr.code_list:
        cl = registry.code_lists[attr.code_list]
        # the codes a feature may carry (group headings excluded), each with its meaning
        codes = [c for c in cl.codes if c.assignable]
        schema["enum"] = [c.code for c in codes]
        schema["x-ogc-codelist"] = attr.code_list
        schema["x-ogc-codelistTitles"] = {c.code: f"{c.zh} / {c.en}" for c in codes}
    return schema


def _geometry_format(spec: LayerSpec) -> str:
    return f"geometry-{(spec.geometry or 'any').lower()}"


def feature_schema(spec: LayerSpec, hidden: set[str], registry: Registry, schema_id: str) -> dict[str, Any]:
    """The OGC API - Features Part 5 schema of the layer's features (see the module doc)."""
    props: dict[str, dict[str, Any]] = {
        "id": _titled({"type": "string", "x-ogc-role": "id", "readOnly": True,
                       "description": "Stable feature key (from " + ", ".join(spec.source_key) + ")"},
                      "要素标识", "Feature id"),
        "geometry": _titled({"format": _geometry_format(spec), "x-ogc-role": "primary-geometry"},
                            "几何", "Geometry"),
    }
    props.update(property_schemas(spec, hidden, registry))
    for seq, schema in enumerate(props.values()):
        schema["x-ogc-propertySeq"] = seq
    required = [a.name for a in spec.attributes if a.required and a.name not in hidden]
    doc: dict[str, Any] = {"$schema": JSON_SCHEMA, "$id": schema_id, "type": "object"}
    _titled(doc, spec.title.zh, spec.title.en)
    doc["description"] = spec.description.strip()
    doc["properties"] = props
    doc["required"] = ["id", "geometry", *required]
    return doc


def geojson_feature_schema(spec: LayerSpec, hidden: set[str], registry: Registry, schema_id: str) -> dict[str, Any]:
    """The JSON Schema of one GeoJSON Feature of the layer (see the module doc)."""
    props = property_schemas(spec, hidden, registry)
    required = [a.name for a in spec.attributes if a.required and a.name not in hidden]
    geom = {"type": "object", "required": ["type", "coordinates"],
            "properties": {"type": {"type": "string", "enum": [spec.geometry]},
                           "coordinates": {"type": "array"}}}
    doc: dict[str, Any] = {"$schema": JSON_SCHEMA, "$id": schema_id, "type": "object"}
    _titled(doc, spec.title.zh, spec.title.en)
    doc["description"] = "One feature as GeoJSON (RFC 7946), as /items writes it"
    doc["required"] = ["type", "geometry", "properties"]
    doc["properties"] = {
        "type": {"type": "string", "enum": ["Feature"]},
        "id": {"type": "string"},
        "geometry": geom,
        "properties": {"type": "object", "required": required, "properties": props},
    }
    return doc

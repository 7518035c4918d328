"""The features query service: OGC API - Features requests -> one SQL statement per page.

Everything a request may vary — bbox (in any supported CRS), datetime (mapped to a layer
version), CQL2 filter, distance, properties, sortby, output CRS and precision, paging — is
validated here against the layer spec and the caller's view (masked attributes are neither
output nor filterable) and composed with ``psycopg.sql`` and bound parameters.

GeoJSON is assembled by PostGIS (``json_build_object`` + ``ST_AsGeoJSON``): Python only
concatenates the feature texts it streams from a server-side cursor.

Paging is keyset, never OFFSET: rows are ordered by ``_key`` (unique within a version) or by
the ``sortby`` keys with ``_rid`` as tiebreak (NULLs last), and the opaque ``cursor`` token
carries the boundary row's sort values, the direction and the *version* — so a client paging
through a layer while it is replaced keeps reading the version it started on.

The parts, in the order a request meets them:
  params    the raw parameters (:class:`ItemsParams`), their parsing, ``datetime`` -> version
  cursors   the opaque paging tokens
  build     :func:`build_query`: every parameter checked and turned into a :class:`FeatureQuery`
  query     :class:`FeatureQuery`: the SQL of a page, a count, a download; the change feed's source
The layer's state (current version, versions) comes from the catalog
(:class:`geobase.catalog.state.LayerState`), the versioned-row conditions from
:mod:`geobase.storage`.
"""

from geobase.features.build import build_query
from geobase.features.cursors import decode_cursor, encode_cursor
from geobase.features.params import ItemsParams, resolve_datetime
from geobase.features.query import FeatureQuery, changes_source, etag_for, queryable_types

__all__ = [
    "FeatureQuery",
    "ItemsParams",
    "build_query",
    "changes_source",
    "decode_cursor",
    "encode_cursor",
    "etag_for",
    "queryable_types",
    "resolve_datetime",
]

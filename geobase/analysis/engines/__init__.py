"""Batch engines other than PostGIS for the province-wide analyses, reading GeoParquet exports.

- :mod:`~geobase.analysis.engines.export`: the current version of a layer, in the caller's view,
  written as GeoParquet with the storage coordinates (EPSG:4490, no transformation), the same
  encoder as the ``f=parquet`` download;
- :mod:`~geobase.analysis.engines.sedona`: tabulation and steep farmland on Apache Sedona
  (imported on first use only; the optional ``sedona`` extra installs it).
"""

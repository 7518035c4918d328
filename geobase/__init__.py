"""geobase: the natural-resources and geospatial base database ("one map") service.

Departments load their layers into one PostGIS database through :mod:`geobase.ingest`;
everyone reads them through the OGC API in :mod:`geobase.api`, the tiles in
:mod:`geobase.tiles` and the overlay analyses in :mod:`geobase.analysis`.
"""

__version__ = "0.1.0"

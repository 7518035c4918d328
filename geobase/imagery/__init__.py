"""Imagery: multiband scenes ingested as COGs and catalogued as STAC Items (:mod:`.ingest`,
:mod:`.stac`), band names and the expression rule (:mod:`.bands`), and the mosaic reading behind
the imagery tiles, point queries and polygon statistics (:mod:`.render`). Core: no FastAPI; the
catalogue's SQL is :mod:`geobase.catalog.imagery`."""

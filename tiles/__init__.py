"""Tiles: tile matrix sets, MVT built in PostGIS, the composite one-map tile, raster DEM tiles,
the tile cache, the MapLibre style and the web map page."""

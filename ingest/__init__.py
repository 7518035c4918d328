"""Ingest: read department deliveries, check them against the layer spec, load them into
PostGIS as a new version of the layer, atomically."""

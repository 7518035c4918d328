"""Synthetic sample data for geobase: a deterministic generator of a fictional county (示范县, 339901)
and the committed small sample in ``county/`` (see ``generate.py`` and ``county/manifest.json``)."""

"""The open catalog's core: data grades, openness classes and network zones
(:mod:`geobase.opendata.grades`), the catalog records' standard encodings (OGC API - Records,
DCAT JSON-LD, CSV: :mod:`geobase.opendata.encode`) and the CSW glue over pycsw
(:mod:`geobase.opendata.csw`). Who may see a dataset is still decided in :mod:`geobase.security`
alone; this package holds the rules it reads."""

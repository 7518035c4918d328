"""HTTP API: the FastAPI app factory (:func:`geobase.api.app.create_app`) and thin routers
over the services in :mod:`geobase`."""

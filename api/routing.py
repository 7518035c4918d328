"""Routes analysed on first use, not at import (issue #15: server start to first answer < 1 s).

FastAPI analyses a route when its decorator runs: the endpoint's signature and every
dependency's, a pydantic field (``TypeAdapter``) for each parameter, body and response model,
the path regex. For geobase's ~130 routes that was ~0.18 CPU-s of each server start, about a
fifth of it, spent before the first answer on routes that request may never touch. And it is
spent twice: since FastAPI 0.16x an included router serves each route through a per-inclusion
copy (``_EffectiveRouteContext``) that analyses the endpoint again, on the first request that
reaches that router; the decorator's analysis only feeds that copy the route's options.

:class:`LazyAPIRoute` keeps the decorator's arguments and runs :class:`~fastapi.routing.APIRoute`'s
own ``__init__``, unchanged, the first time anything asks for an attribute it has not set: when
the app routes a request through its router (the per-inclusion copy reads the original's
options), when the OpenAPI document is built, or when a test walks ``router.routes``. The path
and name are set at once because ``include_router`` checks them. Nothing about the route
differs once built, so no answer changes; only when the work is done (the first request through
a router pays its routes' analysis, ~1-2 ms a route). Every router module uses it
(``router = APIRouter(..., route_class=LazyAPIRoute)``; tests/test_lazy_imports.py checks it).
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import get_name

_BUILD = threading.RLock()


class LazyAPIRoute(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` whose analysis runs on first attribute access."""

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:  # noqa: D107 - see the class
        # only what include_router reads before any request; both equal what APIRoute sets
        self.path = path
        self.name = get_name(endpoint) if kwargs.get("name") is None else kwargs["name"]
        self.__dict__["_lazy_args"] = (path, endpoint, kwargs)

    @property
    def analysed(self) -> bool:
        """True once FastAPI's analysis has run (tests check that app creation runs none)."""
        return "_lazy_args" not in self.__dict__

    def _analyse(self) -> None:
        # one lock for all routes: another thread asking for a route being analysed waits for
        # it; the analysing thread itself reads its half-set route through _lazy_building
        with _BUILD:
            args = self.__dict__.get("_lazy_args")
            if args is None:
                return
            path, endpoint, kwargs = args
            self.__dict__["_lazy_building"] = threading.get_ident()
            try:
                APIRoute.__init__(self, path, endpoint, **kwargs)
            finally:
                del self.__dict__["_lazy_building"]
            del self.__dict__["_lazy_args"]

    def __getattr__(self, name: str) -> Any:
        # called only for attributes not set yet; never for dunders (copy, pickle and
        # introspection probe those), nor from APIRoute.__init__ while it sets the route up
        if (name.startswith("__") or "_lazy_args" not in self.__dict__
                or self.__dict__.get("_lazy_building") == threading.get_ident()):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._analyse()
        return getattr(self, name)

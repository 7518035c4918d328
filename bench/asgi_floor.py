"""The floor of a Python tile server on this machine: a bare ASGI app under the same uvicorn
(httptools, uvloop) as ours, answering each tile path with the very gzip bytes our cache sent,
from memory, with the same Content-Type and Content-Encoding, and nothing else — no routing, no
key check, no rate limit, no audit, no freshness check.

bench_tiles times it beside our cached tiles and nginx: nginx shows what the machine can serve,
this app what any server written as a Python ASGI app can, and the gap from it to ours is what
our own checks per cached tile cost. Run as ``uvicorn asgi_floor:app`` with
``GEOBASE_BENCH_FLOOR_ROOT`` naming the directory of tile files (the nginx document root)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("GEOBASE_BENCH_FLOOR_ROOT", "."))
_BODIES: dict[str, list] = {}


def _load() -> None:
    for f in ROOT.rglob("*.mvt"):
        body = f.read_bytes()
        _BODIES["/" + str(f.relative_to(ROOT))] = [
            {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/vnd.mapbox-vector-tile"), (b"content-encoding", b"gzip"),
                         (b"content-length", str(len(body)).encode())]},
            {"type": "http.response.body", "body": body}]
    _BODIES["/health"] = [{"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]},
                          {"type": "http.response.body", "body": b"ok"}]


_NOT_FOUND = [{"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]},
              {"type": "http.response.body", "body": b""}]


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _load()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    for message in _BODIES.get(scope["path"], _NOT_FOUND):
        await send(message)

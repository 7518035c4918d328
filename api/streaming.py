"""Streamed HTTP responses of the bodies the core produces (:mod:`geobase.formats`).

The core makes async iterators of bytes (GeoJSON, CSV, files); this is where they become
responses: closed for sure when the client goes away, gzipped here when the client takes it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from starlette.responses import StreamingResponse

from geobase import formats


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its body iterator, also when the client hangs
    up while the body generator is suspended: each generator of the chain closes the one it
    reads from, which gives the pooled connection and the export slot back at once instead
    of whenever the garbage collector finalizes the generators."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


def streamed(request: Request, body: AsyncIterator[bytes], media_type: str, headers: dict) -> ClosingStreamingResponse:
    """A streamed response, gzipped here (fast level, off the event loop) when the client
    accepts it."""
    if formats.accepts_gzip(request.headers.get("accept-encoding")):
        headers = dict(headers, **{"Content-Encoding": "gzip"})
        headers.pop("Content-Length", None)
        body = formats.gzipped(body)
    headers["Vary"] = headers.get("Vary", "Accept") + ", Accept-Encoding"
    return ClosingStreamingResponse(body, media_type=media_type, headers=headers)

"""Streamed HTTP responses of the bodies the core produces (:mod:`geobase.formats`).

The core makes async iterators of bytes (GeoJSON, CSV, files); this is where they become
responses: closed for sure when the client goes away, gzipped here when the client takes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request
from starlette.responses import StreamingResponse

from geobase import formats
from geobase.errors import InvalidInput


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


#: a Server-Sent Events stream stays open this long (the client reconnects with Last-Event-ID),
#: polls the database this often (a connection held only for the query) and sends a comment
#: this often so that proxies keep an idle stream open
STREAM_SECONDS, POLL_SECONDS, HEARTBEAT_SECONDS = 50.0, 0.5, 15.0


def last_event_id(value: str | None, what: str) -> int | None:
    """The ``Last-Event-ID`` a resuming client sent (an event id), or None; 400 otherwise."""
    if value is not None and not value.strip().isdigit():
        raise InvalidInput(f"Last-Event-ID: {what}", parameter="Last-Event-ID")
    return int(value) if value is not None else None


def event_stream(request: Request, start: int, until: int | None,
                 read_since: Callable[[object, int], Awaitable[list[tuple[int, bytes | None]]]],
                 headers: dict) -> ClosingStreamingResponse:
    """Server-Sent Events after event ``start``: every poll asks ``read_since(conn, last)`` for
    the newer events as (id, encoded event, or None for one this caller is not sent), until
    ``until`` was passed, the client left or :data:`STREAM_SECONDS` are up. One loop for every
    stream (layer versions, indicator warnings)."""
    from geobase.api.deps import request_connection

    async def events():
        yield b"retry: 1000\n\n"
        last, loop = start, asyncio.get_running_loop()
        deadline, beat = loop.time() + STREAM_SECONDS, loop.time() + HEARTBEAT_SECONDS
        while (until is None or last < until) and loop.time() < deadline:
            async with request_connection(request) as conn:  # held only for the query, not between polls
                for last, event in await read_since(conn, last):
                    if event is not None:
                        yield event
            if (until is not None and last >= until) or await request.is_disconnected():
                break
            if loop.time() > beat:
                beat = loop.time() + HEARTBEAT_SECONDS
                yield b": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    return ClosingStreamingResponse(events(), media_type="text/event-stream",
                                    headers={"Cache-Control": "no-store", **headers, "X-Accel-Buffering": "no"})

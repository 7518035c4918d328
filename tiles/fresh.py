"""Fresh layer states for many requests at once: one catalog query serves every tile request
that arrived before it started.

A cached tile is answered from the layers' current access facts and versions (the cache key
holds both); they are read per request, so an ingest or a sharing change is visible on the very
next request. With many clients at once, one query per request costs more than the cache hit
itself (the database's work and a pool connection per hit). :class:`StatesFeed` keeps that
guarantee with far fewer queries: a request waits for a read that *started after it arrived*
(the one in flight began earlier, so a request arriving meanwhile joins the next one, which
starts as soon as the current one is done). Each answer is therefore at least as fresh as a
query of its own would have been; only the number of queries changes (one per batch of
concurrent requests instead of one per request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from geobase.catalog.state import LayerState


class StatesFeed:
    """Single-flight reader of every layer's state (see the module docstring).

    ``read`` runs one query (it takes its own pooled connection); its errors reach every
    request of its batch (the caller then answers as without the feed)."""

    def __init__(self, read: Callable[[], Awaitable[dict[str, LayerState]]]):
        self._read = read
        self._current: asyncio.Future | None = None  # the read in flight
        self._next: asyncio.Future | None = None  # the read after it: requests that came meanwhile

    async def states(self) -> dict[str, LayerState]:
        """Every layer's state, read by a query that started after this call."""
        loop = asyncio.get_running_loop()
        if self._current is None:
            fut = self._current = loop.create_future()
            loop.create_task(self._run(fut))
        else:
            if self._next is None:
                self._next = loop.create_future()
            fut = self._next
        # shielded: a request that goes away (client disconnect) must not cancel its batch's read
        return await asyncio.shield(fut)

    async def _run(self, fut: asyncio.Future) -> None:
        try:
            fut.set_result(await self._read())
        except asyncio.CancelledError:  # the server stops: so do the waiters
            fut.cancel()
            raise
        except Exception as exc:  # every waiter gets it; none is left hanging
            fut.set_exception(exc)
            fut.exception()  # retrieved here too: a batch whose waiters all left logs nothing
        finally:
            self._current = None
            if self._next is not None:
                nxt, self._next = self._next, None
                self._current = nxt
                asyncio.get_running_loop().create_task(self._run(nxt))

"""The single-flight layer-states reader of cached tiles (geobase.tiles.fresh.StatesFeed):
requests that arrive before a read has begun share it; a request that arrives once a read has
begun gets the next one (never states read before it arrived)."""

from __future__ import annotations

import asyncio

from geobase.tiles.fresh import StatesFeed


class _CountedRead:
    """A catalog read that answers how many reads there have been."""

    def __init__(self) -> None:
        self.reads = 0

    async def __call__(self) -> dict:
        self.reads += 1
        return {"read": self.reads}


def test_requests_arriving_before_the_read_begins_share_it() -> None:
    """Five requests of the same event-loop turn: one catalog read, not two (the first request's
    read had been scheduled, not begun, when the other four came)."""
    read = _CountedRead()

    async def main() -> list:
        feed = StatesFeed(read)
        return await asyncio.gather(*[feed.states() for _ in range(5)])

    results = asyncio.run(main())
    assert read.reads == 1
    assert results == [{"read": 1}] * 5


def test_a_request_arriving_during_a_read_waits_for_the_next_one() -> None:
    """Freshness: a read that has begun may miss a commit made before a later request arrived,
    so that request joins the read after it."""
    reads = 0
    started = None
    release = None

    async def read() -> dict:
        nonlocal reads
        reads += 1
        n = reads
        started.set()
        await release.wait()
        return {"read": n}

    async def main() -> tuple:
        nonlocal started, release
        started, release = asyncio.Event(), asyncio.Event()
        feed = StatesFeed(read)
        first = asyncio.create_task(feed.states())
        await started.wait()  # the first read has begun
        second = asyncio.create_task(feed.states())
        third = asyncio.create_task(feed.states())
        await asyncio.sleep(0)
        release.set()
        return await first, await second, await third

    first, second, third = asyncio.run(main())
    assert first == {"read": 1}
    assert second == third == {"read": 2}
    assert reads == 2


def test_with_a_max_age_recent_states_are_answered_at_once_and_refreshed_in_the_background() -> None:
    """``max_age_s`` (GEOBASE_TILE_STATES_MAX_AGE_MS): states of a read begun less than that ago
    are answered without a read; past half of it a read starts in the background; past all of
    it a request waits for a read of its own again."""
    read = _CountedRead()

    async def main() -> list:
        feed = StatesFeed(read, max_age_s=1.0)
        out = [await feed.states(), await feed.states()]  # the second: no read of its own
        reads_then = read.reads
        await asyncio.sleep(0.6)  # past half the bound: answered, and a read starts behind it
        out.append(await feed.states())
        await asyncio.sleep(0.05)
        out.append(await feed.states())
        await asyncio.sleep(1.2)  # past the bound: waits for a new read
        out.append(await feed.states())
        return [reads_then, *out]

    reads_then, *results = asyncio.run(main())
    assert reads_then == 1
    assert results == [{"read": 1}, {"read": 1}, {"read": 1}, {"read": 2}, {"read": 3}]

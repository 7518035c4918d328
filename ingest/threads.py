"""Threads beside the pipeline's own: the checksum of the delivered files is hashed while
the rows load, the source CRS's transformer is built while the load is set up, and the next
arrow batch is read (and its geometries parsed) while this one is normalised and COPYed. GDAL, arrow, hashlib and shapely release the GIL, so two cores work.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


def in_thread(fn, *args, name: str = "ingest-checksum"):
    """Start ``fn(*args)`` in a daemon thread; returns a function that waits for its result."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller of the result
            box["error"] = exc

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()

    def result():
        t.join()
        if "error" in box:
            raise box["error"]
        return box["value"]
    return result


def prefetch(reader, prepare: Callable | None = None, depth: int = 2):
    """Read arrow batches in a background thread (GDAL and arrow release the GIL while reading),
    so the next batch is decoded while this one is normalised and COPYed: two cores, bounded
    memory (at most ``depth`` batches ahead). With ``prepare``, yields ``(batch, prepare(batch))``,
    the thread doing that work as well (GEOS parsing: shapely releases the GIL too)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for batch in reader:
                if prepare is not None:
                    batch = (batch, prepare(batch))
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    t = threading.Thread(target=work, name="ingest-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=10)

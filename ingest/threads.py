"""Threads beside the pipeline's own: the checksum of the delivered files is hashed while
the rows load, the source CRS's transformer is built while the load is set up, and the
batches are read (and their geometries parsed) from before the load's database set-up on,
the next while this one is normalised and COPYed. GDAL, arrow, hashlib and shapely release the GIL, so two cores work.
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


class Prefetch:
    """Batches read in a background thread from the moment this is made (GDAL, arrow and numpy
    release the GIL while reading), at most ``depth`` ahead: iterate it to get them, in order,
    ``(batch, prepare(batch))`` with ``prepare`` (the thread does that work as well: GEOS
    parsing, shapely releases the GIL too). ``open_reader()`` opens the reader (a context
    manager yielding an iterable of batches) in the thread, so that a file that cannot be
    opened is an error raised to the consumer when it asks for the first batch, as a failed
    read is. :meth:`close` stops the thread (after the batch it is reading).

    Why a thread started before it is consumed: the first batches are read while the load's
    database set-up runs (a new table, locks, the catalog: a tenth of a second or more of
    round trips during which the process computes nothing)."""

    _END = object()

    def __init__(self, open_reader: Callable, prepare: Callable | None = None, depth: int = 2):
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.open_reader, self.prepare = open_reader, prepare
        self.thread = threading.Thread(target=self._work, name="ingest-reader", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            with self.open_reader() as reader:
                for batch in reader:
                    if self.prepare is not None:
                        batch = (batch, self.prepare(batch))
                    if not self._put(batch):
                        return
            self._put(self._END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""A load generator that is not the bottleneck: keep-alive HTTP/1.1 GETs from several client
processes, each an event loop (uvloop when installed) of raw ``asyncio.Protocol`` connections.

Why not httpx or asyncio streams: at thousands of requests per second on two shared cores, a
client that parses headers into objects spends more CPU per request than a cached tile costs
the server, and the figure measured would be the client's. Here a request is one ``write`` of
prebuilt bytes, and an answer one ``find`` of the header end and of ``Content-Length``. The same
client hits every server compared (ours, nginx), so whatever it costs is paid by both sides
alike; nginx, which needs far less CPU per answer, shows how much the client can generate.

Each connection sends its next request only once the previous answer is complete (no
pipelining): ``clients`` connections are ``clients`` concurrent users. Every answer's status
must be in ``ok`` (default 200), else the run fails: a fast error is not a fast tile."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from array import array
from dataclasses import dataclass

BROWSER = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate, br, zstd"}


@dataclass
class HammerResult:
    wall_s: float  # first request sent (any process) to last answer received (any process)
    latencies_s: list[float]  # one per request
    client_cpu_s: float  # user + system CPU of the client processes (what the generator cost)

    @property
    def rate(self) -> float:
        return len(self.latencies_s) / self.wall_s


def _content_length(head: bytes) -> int:
    """``Content-Length`` of a lower-cased response head (0 when absent: 204, 304)."""
    k = head.find(b"\r\ncontent-length:")
    if k < 0:
        return 0
    stop = head.find(b"\r\n", k + 2)
    return int(head[k + 17:stop if stop > 0 else len(head)])


class _Conn(asyncio.Protocol):
    """One keep-alive connection sending ``requests`` one after the other."""

    def __init__(self, requests: list[bytes], count: int, lat: array, done: asyncio.Future, ok: tuple[bytes, ...]):
        self.requests, self.left, self.lat, self.done, self.ok = requests, count, lat, done, ok
        self.buf = bytearray()
        self.i = 0
        self.t0 = 0.0
        self.need = -1  # bytes of the whole current answer, once its header is in

    def connection_made(self, transport) -> None:
        self.transport = transport

    def start(self) -> None:
        self._send()

    def _send(self) -> None:
        self.t0 = time.perf_counter()
        self.transport.write(self.requests[self.i % len(self.requests)])
        self.i += 1

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                status = head[9:12]
                if status not in self.ok:
                    self._fail(f"HTTP {status.decode()}: {bytes(buf[:300])!r}")
                    return
                self.need = end + 4 + _content_length(head)
            if len(buf) < self.need:
                return
            del buf[:self.need]
            self.need = -1
            self.lat.append(time.perf_counter() - self.t0)
            self.left -= 1
            if self.left <= 0:
                if not self.done.done():
                    self.done.set_result(None)
                return
            self._send()
            if not buf:
                return

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"connection closed after {self.i} requests ({exc})"))


async def _run(port: int, requests: list[bytes], conns: int, per_conn: int, offset: int, barrier,
               ok: tuple[bytes, ...]) -> tuple[float, float, array]:
    loop = asyncio.get_running_loop()
    lat = array("d")
    protos = []
    for i in range(conns):
        done = loop.create_future()
        # each connection starts at its own place in the list: different clients, different tiles
        start = (offset + i) * 7 % len(requests)
        mine = requests[start:] + requests[:start]
        _, proto = await loop.create_connection(lambda m=mine, d=done: _Conn(m, per_conn, lat, d, ok), "127.0.0.1", port)
        protos.append(proto)
    await loop.run_in_executor(None, barrier.wait)  # every process connected: start together
    t0 = time.perf_counter()
    for p in protos:
        p.start()
    await asyncio.gather(*(p.done for p in protos))
    t1 = time.perf_counter()
    for p in protos:
        p.transport.close()
    return t0, t1, lat


def _child(port, requests, conns, per_conn, offset, barrier, ok, pipe) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        t0, t1, lat = asyncio.run(_run(port, requests, conns, per_conn, offset, barrier, ok))
        cpu = os.times()
        pipe.send(("ok", t0, t1, lat.tobytes(), cpu.user + cpu.system))
    except BaseException as exc:  # noqa: BLE001 — reported to the parent, which raises
        barrier.abort()
        pipe.send(("error", repr(exc)))


def hammer(port: int, paths: list[str], clients: int, total: int, processes: int = 2,
           headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200,)) -> HammerResult:
    """``total`` GETs of ``paths`` (cycled) over ``clients`` keep-alive connections spread over
    ``processes`` client processes; every answer's status must be in ``ok``."""
    # what a browser's fetch of a tile sends (MapLibre): any type, the usual encodings
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or BROWSER).items())
    requests = [f"GET {p} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode() for p in paths]
    processes = max(1, min(processes, clients))
    per_conn = max(1, total // clients)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(processes)
    kids = []
    for k in range(processes):
        conns = clients // processes + (1 if k < clients % processes else 0)
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(port, requests, conns, per_conn, k * 1000, barrier,
                                                tuple(str(s).encode() for s in ok), send), daemon=True)
        proc.start()
        kids.append((proc, recv))
    results = []
    for proc, recv in kids:
        results.append(recv.recv())
        proc.join()
    errors = [r[1] for r in results if r[0] != "ok"]
    if errors:
        raise RuntimeError(f"hammer: {errors[0]}")
    lat = array("d")
    for r in results:
        lat.frombytes(r[3])
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    return HammerResult(wall, lat.tolist(), sum(r[4] for r in results))

"""A one-connection keep-alive HTTP/1.1 client that costs the measurement next to nothing.

Why not httpx for timing single requests: measured on the cold-tile benchmark (200,000 parcels,
z13-z16, 2026-12-07), httpx's sync client spent ~1.3 ms of its own per request (building the
request and header objects, h11's state machine, reading the body in chunks) against ~0.05 ms
here; on a 1-2 ms tile that is most of the figure, and it was counted against the server. The
bare-SQL floor is timed with psycopg (libpq, C), curl and browsers are C/C++: a Python client
library is not what "a cold tile over HTTP" means. Here a request is one ``sendall`` of prebuilt
bytes and an answer is read to its ``Content-Length`` (or its chunks); the timer runs from the
first byte sent to the last byte of the body received, so everything the server does and the
transfer of the body are in it. Every server compared is timed with the same client."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes
    seconds: float  # first request byte sent -> last body byte received


class RawClient:
    """Sequential GETs over one keep-alive connection to ``127.0.0.1:port`` (reopened if the
    server closes it)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 600.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        return s

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        self.buf += chunk

    def _read_until(self, marker: bytes) -> bytes:
        while (k := self.buf.find(marker)) < 0:
            self._recv()
        out, self.buf = self.buf[:k], self.buf[k + len(marker):]
        return out

    def _read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._recv()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        if self.sock is None:
            self.sock = self._connect()
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        t0 = time.perf_counter()
        self.sock.sendall(request)
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        hdrs = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            hdrs[name.strip().lower()] = value.strip()
        if "content-length" in hdrs:
            body = self._read_exactly(int(hdrs["content-length"]))
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while (size := int(self._read_until(b"\r\n").split(b";")[0], 16)) > 0:
                parts.append(self._read_exactly(size))
                self._read_exactly(2)
            while self._read_until(b"\r\n"):  # trailers, up to the empty line
                pass
            body = b"".join(parts)
        elif status in (204, 304) or status < 200:
            body = b""
        else:
            raise RuntimeError(f"{path}: HTTP {status} without Content-Length or chunks (a closing body)")
        seconds = time.perf_counter() - t0
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, hdrs, body, seconds)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

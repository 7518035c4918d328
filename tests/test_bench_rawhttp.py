"""The benchmarks' HTTP client (bench/rawhttp.py) reads every answer whole and exactly: a
timing client that stopped reading early, or glued two answers together on a keep-alive
connection, would print a figure for bytes nobody received."""

from __future__ import annotations

import gzip
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from rawhttp import RawClient  # noqa: E402  (bench/ is not a package)

BODY = bytes(range(256)) * 4000  # ~1 MB: more than one recv()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.startswith("/length"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.send_header("Server-Timing", "tile;dur=1.50;desc=x")
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(BODY), 70_000):
                part = BODY[i:i + 70_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/empty":
            self.send_response(204)
            self.end_headers()
        elif self.path == "/gzip":
            packed = gzip.compress(BODY)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)
        elif self.path == "/close":
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"bye!!")
            self.close_connection = True
        else:
            self.send_error(404)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_answers_are_read_whole_one_after_the_other_on_one_connection(server):
    c = RawClient(server)
    try:
        first = c.get("/length?x=1", {"Accept-Encoding": "identity"})
        assert (first.status, first.body) == (200, BODY)
        assert first.headers["server-timing"] == "tile;dur=1.50;desc=x" and first.seconds > 0
        sock = c.sock
        assert c.get("/chunked").body == BODY
        assert (c.get("/empty").status, c.get("/empty").body) == (204, b"")
        packed = c.get("/gzip", {"Accept-Encoding": "gzip"})
        assert packed.headers["content-encoding"] == "gzip" and gzip.decompress(packed.body) == BODY
        assert c.sock is sock  # all of them over the one keep-alive connection
        assert c.get("/nothing").status == 404  # (http.server's error page: Connection: close)
        assert c.get("/close").body == b"bye!!" and c.sock is None  # the server closed it
        assert c.get("/length").body == BODY  # reopened
    finally:
        c.close()

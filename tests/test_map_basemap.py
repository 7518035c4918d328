"""An optional external basemap under the one map (issue 21): off by default (the map's every
request goes to this server, see test_map_tools), named by one setting, GEOBASE_MAP_BASEMAP_URL,
checked at start, and when set drawn as the bottom layer from that host."""

from __future__ import annotations

import re
import struct
import threading
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from test_map_browser import count_near
from test_map_tools import browser_page, open_map, settle, shot

from geobase.errors import ConfigError
from geobase.settings import check_settings, load_settings

TIANDITU = ("https://t0.tianditu.gov.cn/vec_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=vec&STYLE=default"
            "&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&tk=secretkey123")
MAGENTA = (255, 0, 255)


def test_the_basemap_setting_is_off_by_default_and_checked_at_start():
    assert load_settings().map_basemap_url is None
    assert load_settings(map_basemap_url=TIANDITU).map_basemap_url == TIANDITU
    assert load_settings(map_basemap_url="  ").map_basemap_url is None  # blank: none
    for bad in ("ftp://tiles.example/{z}/{x}/{y}.png", "tiles.example/{z}/{x}/{y}.png", "https:///{z}/{x}/{y}.png",
                TIANDITU.replace("TILEROW={y}", "TILEROW=1"), "javascript:alert(1)//{z}{x}{y}"):
        with pytest.raises(ConfigError) as err:
            load_settings(map_basemap_url=bad)
        assert "GEOBASE_MAP_BASEMAP_URL" in str(err.value)
    with pytest.raises(ConfigError) as err:
        check_settings(load_settings().model_copy(update={"map_basemap_url": TIANDITU.replace("{x}", "")}))
    assert "secretkey123" not in str(err.value)  # the key is not written into logs


def _png(rgb: tuple[int, int, int], size: int = 256) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes(rgb) * size for _ in range(size))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@contextmanager
def tile_host():
    """Another host (a second port) answering every tile with one magenta PNG; yields its
    host:port and the paths asked of it."""
    tile, asked = _png(MAGENTA), []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(tile)))
            self.end_headers()
            self.wfile.write(tile)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}", asked
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_configured_basemap_is_the_bottom_layer(county_shared, live_server):
    with tile_host() as (host, asked):
        srv = live_server(county_shared, env={"GEOBASE_MAP_BASEMAP_URL": f"http://{host}/t/{{z}}/{{x}}/{{y}}.png?k=1"})
        with srv.client() as c:
            style = c.get("/map/style.json").json()
        ids = [layer["id"] for layer in style["layers"]]
        assert ids[:2] == ["background", "basemap"], ids  # under the hillshade and every data layer
        assert style["sources"]["basemap"]["tiles"] == [f"http://{host}/t/{{z}}/{{x}}/{{y}}.png?k=1"]
        with browser_page(also=(host,)) as (page, seen):
            open_map(page, f"{srv.url}/map#map=9/29.1/117.2")  # west of the county: only the basemap there
            settle(page)
            img = shot(page, "map-basemap.png")
            assert not seen["outside"] and not seen["problems"], seen
        assert asked and all(re.fullmatch(r"/t/(9|10)/\d+/\d+\.png\?k=1", p) for p in asked), asked
        assert count_near(img, np.array(MAGENTA, dtype=float), 60) > 20_000  # drawn where no layer covers


def test_without_the_setting_no_basemap_layer(county_server):
    with county_server.client() as c:
        style = c.get("/map/style.json").json()
    assert "basemap" not in style["sources"] and "basemap" not in [layer["id"] for layer in style["layers"]]

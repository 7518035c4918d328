"""The map's own labels beyond place names (issue 21): parcel numbers at high zoom, written with
the glyph set this server builds at setup (scripts/build_glyphs.py) and serves under
/map/glyphs/ — every glyph request answered by this server with 200, no other host asked."""

from __future__ import annotations

from urllib.parse import quote

import numpy as np
import psycopg
from test_map_tools import browser_page, open_map, settle, shot

FONT = "DejaVu Sans Book"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message's (field number, value) pairs: varints as int, the rest as bytes."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        if key & 7 == 0:
            v, i = _varint(buf, i)
        elif key & 7 == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise AssertionError(f"unexpected wire type {key & 7}")
        out.append((key >> 3, v))
    return out


def decode_range(pbf: bytes) -> tuple[str, str, dict[int, dict]]:
    """MapLibre's glyphs.proto: glyphs{stacks=1: fontstack{name=1, range=2, glyphs=3: glyph}}."""
    (num, stack), = _fields(pbf)
    assert num == 1
    name = rng = None
    glyphs = {}
    for k, v in _fields(stack):
        if k == 1:
            name = v.decode()
        elif k == 2:
            rng = v.decode()
        elif k == 3:
            g = dict(_fields(v))
            zig = lambda n: (n >> 1) ^ -(n & 1)
            glyphs[g[1]] = {"bitmap": g.get(2, b""), "width": g[3], "height": g[4], "left": zig(g[5]),
                            "top": zig(g[6]), "advance": g[7]}
    return name, rng, glyphs


def test_the_glyph_set_is_served_by_this_server(county_server):
    """Digits and Latin letters as MapLibre reads them: 24 px SDF bitmaps with a 3 px buffer,
    the outline at 191 (ink inside, nothing far outside); a range the font lacks is a valid empty
    set; other font stacks and names are 404, not a guess."""
    with county_server.client() as c:
        r = c.get(f"/map/glyphs/{quote(FONT)}/0-255.pbf")
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
        name, rng, glyphs = decode_range(r.content)
        assert (name, rng) == (FONT, "0-255")
        assert set(map(ord, "0123456789ABCDEFabcdef-")) <= set(glyphs)
        for ch in "0128AMl":
            g = glyphs[ord(ch)]
            assert len(g["bitmap"]) == (g["width"] + 6) * (g["height"] + 6), ch
            assert 5 <= g["advance"] <= 24 and 10 <= g["height"] <= 20 and -8 <= g["top"] <= 0, (ch, g)
            assert max(g["bitmap"]) > 191 and min(g["bitmap"]) < 64, ch  # ink inside, clear outside
        space = glyphs[32]
        assert space["bitmap"] == b"" and space["advance"] > 0  # a space advances, draws nothing
        cjk = c.get(f"/map/glyphs/{quote(FONT)}/20224-20479.pbf")  # CJK: the browser's font draws it
        assert cjk.status_code == 200 and decode_range(cjk.content)[2] == {}
        for bad in (f"/map/glyphs/{quote('Arial Unicode MS')}/0-255.pbf", f"/map/glyphs/{quote(FONT)}/0-255.png",
                    f"/map/glyphs/{quote(FONT)}/..%2F..%2Fpasswd", "/map/glyphs/..%2F.vendor/0-255.pbf"):
            assert c.get(bad).status_code == 404, bad


def test_parcel_numbers_are_written_at_high_zoom(county_server, county_shared):
    """From zoom 16 each parcel's number is written on it (placed without overlap by MapLibre's
    collision detection); the glyph ranges come from this server with 200 and nothing else is
    asked of any other host. Below zoom 16 no parcel number is drawn."""
    with psycopg.connect(county_shared.database_url) as conn:
        lon, lat = conn.execute("SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_PointOnSurface(geom) c FROM data.land_use "
                                "WHERE _vto IS NULL AND dlbm LIKE '07%%' ORDER BY _area_m2 LIMIT 1 OFFSET 20) x").fetchone()
    with browser_page() as (page, seen):
        glyph_answers: list[tuple[int, str]] = []
        page.on("response", lambda r: glyph_answers.append((r.status, r.url)) if "/glyphs/" in r.url else None)
        open_map(page, f"{county_server.url}/map#map=15/{lat}/{lon}")
        assert page.evaluate("window.geobaseMap.queryRenderedFeatures({layers: ['label-parcel']}).length") == 0
        page.evaluate(f"window.geobaseMap.jumpTo({{center: [{lon}, {lat}], zoom: 17.5}})")
        settle(page)
        page.wait_for_timeout(500)
        shown = page.evaluate("window.geobaseMap.queryRenderedFeatures({layers: ['label-parcel']})"
                              ".map((f) => f.properties.bsm)")
        bounds = page.evaluate("window.geobaseMap.getBounds().toArray()")
        with_codes = shot(page, "map-parcel-codes.png")
        page.evaluate("window.geobaseMap.setLayoutProperty('label-parcel', 'visibility', 'none')")
        settle(page)
        without = shot(page, "map-parcel-codes-hidden.png")
        assert not seen["outside"] and not seen["problems"], seen
    with psycopg.connect(county_shared.database_url) as conn:
        in_view = {r[0] for r in conn.execute(
            "SELECT bsm FROM data.land_use WHERE _vto IS NULL AND geom && ST_MakeEnvelope(%s, %s, %s, %s, 4490)",
            (bounds[0][0], bounds[0][1], bounds[1][0], bounds[1][1]))}
    assert len(set(shown)) >= 3 and set(shown) <= in_view, (shown, len(in_view))
    assert glyph_answers and all(s == 200 for s, _ in glyph_answers), glyph_answers
    assert all(u.startswith(f"{county_server.url}/map/glyphs/{quote(FONT)}/") for _, u in glyph_answers), glyph_answers
    ink = np.array([0x3a, 0x3a, 0x3a], dtype=float)  # the codes' text colour, drawn by the glyphs
    dark = lambda img: int((np.abs(img - ink).max(axis=-1) <= 40).sum())
    assert dark(with_codes) > dark(without) + 300, (dark(with_codes), dark(without))


def test_a_canal_is_named_along_its_banks(county_server, county_shared):
    """A canal has no centre line in the rivers layer and one label point cannot name a ditch
    many kilometres long: looking at any stretch of it from zoom 13 its name is written along it."""
    with psycopg.connect(county_shared.database_url) as conn:
        name, lon, lat = conn.execute(
            "SELECT name, ST_X(p), ST_Y(p) FROM (SELECT name, ST_PointOnSurface(geom) p FROM data.water_areas "
            "WHERE _vto IS NULL AND kind = 'canal' AND name IS NOT NULL ORDER BY _area_m2 DESC LIMIT 1) x").fetchone()
    with browser_page() as (page, seen):
        open_map(page, f"{county_server.url}/map#map=15/{lat}/{lon}")
        page.wait_for_function("window.geobaseLabels.state.loaded", timeout=30_000)
        settle(page)
        shot(page, "map-canal-name.png")
        names = page.evaluate("window.geobaseMap.queryRenderedFeatures({layers: ['label-canal']}).map((f) => f.properties.name)")
        assert names and set(names) == {name}, names
        assert not seen["outside"] and not seen["problems"], seen

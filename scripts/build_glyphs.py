#!/usr/bin/env python3
"""Build the map's glyph set: signed-distance-field glyph PBFs that MapLibre GL JS needs to write
digits and Latin letters (parcel codes, river codes) on the map. Chinese names are drawn by the
browser's own CJK font (MapLibre's localIdeographFontFamily), so only a Latin font is built.

Run by scripts/setup.sh with Debian's python3 (python3-freetype, fonts-dejavu-core), never at
request time and never committed: the server hands the files out under /map/glyphs/, so the
map needs nothing from the internet.

    python3 scripts/build_glyphs.py OUT_DIR [FONT_FILE]

writes OUT_DIR/<fontstack>/<start>-<end>.pbf for all 256 ranges of the Basic Multilingual Plane
(a range the font does not cover is a valid, empty glyph set, as fontnik's sets have), into a
temporary directory renamed into place at the end, so an interrupted build leaves nothing half
done. The encoding is node-fontnik's (the one MapLibre expects): glyphs rendered at 24 px, a
3 px buffer around each bitmap, distances scaled 32 levels per pixel with the outline at 191
(cutoff 0.25, radius 8); ``top`` is relative to the font's ascender.

FreeType's own SDF renderer (FT_RENDER_MODE_SDF, FreeType >= 2.11) computes the distances from
the glyph outline; its 8-bit output (edge at 128, 128/spread levels per pixel, a ``spread`` px
margin) is mapped onto fontnik's scale and cropped to the 3 px buffer.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import freetype  # Debian: python3-freetype

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Debian: fonts-dejavu-core
SIZE = 24  # px, fontnik's
BUFFER = 3  # px around each glyph bitmap, fontnik's
SPREAD = 8  # px, FreeType's default SDF spread (checked on a glyph before building)
EDGE = 191.25  # fontnik: 255 - 0.25 * 255, where MapLibre's shader puts the outline
PER_PX = 256 / 8  # fontnik: radius 8 px over 256 levels


# ---- the small protobuf of a glyph range (glyphs.proto of node-fontnik / MapLibre) ---------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, value) -> bytes:
    """One field: an int (varint) or bytes/str (length-delimited)."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 31)


def glyph_message(cp: int, bitmap: bytes, width: int, height: int, left: int, top: int, advance: int) -> bytes:
    msg = _field(1, cp)
    if bitmap:
        msg += _field(2, bitmap)
    return msg + _field(3, width) + _field(4, height) + _field(5, _zigzag(left)) + _field(6, _zigzag(top)) + _field(7, advance)


def range_message(name: str, start: int, glyphs: list[bytes]) -> bytes:
    stack = _field(1, name) + _field(2, f"{start}-{start + 255}") + b"".join(_field(3, g) for g in glyphs)
    return _field(1, stack)


# ---- rendering ---------------------------------------------------------------------------
def render(face: freetype.Face, cp: int, ascender: int) -> bytes:
    """One glyph in fontnik's encoding (a space: metrics only, no bitmap)."""
    face.load_char(cp, freetype.FT_LOAD_NO_HINTING)
    slot = face.glyph
    advance = slot.metrics.horiAdvance // 64
    if slot.outline.n_points == 0:
        return glyph_message(cp, b"", 0, 0, 0, 0, advance)
    slot.render(freetype.FT_RENDER_MODE_SDF)
    bm = slot.bitmap
    width, height = bm.width - 2 * SPREAD, bm.rows - 2 * SPREAD
    if width <= 0 or height <= 0:
        return glyph_message(cp, b"", 0, 0, 0, 0, advance)
    crop = SPREAD - BUFFER
    buf, pitch = bm.buffer, bm.pitch
    out = bytearray()
    for row in range(crop, bm.rows - crop):
        base = row * pitch
        for col in range(crop, bm.width - crop):
            inside_px = (buf[base + col] - 128) * SPREAD / 128  # FreeType: positive inside
            out.append(max(0, min(255, round(EDGE + inside_px * PER_PX))))
    return glyph_message(cp, bytes(out), width, height, slot.bitmap_left + SPREAD,
                         slot.bitmap_top - SPREAD - ascender, advance)


def check_spread(face: freetype.Face) -> None:
    """FreeType's SDF margin must be the SPREAD this mapping assumes (a changed default would
    scale every distance wrongly and draw blurred or bold text without any error)."""
    face.load_char("H", freetype.FT_LOAD_NO_HINTING)
    box = face.glyph.outline.get_bbox()
    face.glyph.render(freetype.FT_RENDER_MODE_SDF)
    margin = (box.xMin // 64) - face.glyph.bitmap_left
    if margin != SPREAD:
        raise SystemExit(f"build_glyphs: FreeType's SDF spread is {margin}, expected {SPREAD}")


def build(out_dir: str, font: str = FONT) -> str:
    face = freetype.Face(font)
    face.set_char_size(SIZE * 64)
    check_spread(face)
    name = f"{face.family_name.decode()} {face.style_name.decode()}"
    ascender = face.size.ascender // 64
    chars: dict[int, list[int]] = {}
    for cp, _ in face.get_chars():
        if cp < 65536:
            chars.setdefault(cp // 256 * 256, []).append(cp)
    os.makedirs(out_dir, exist_ok=True)
    for old in os.listdir(out_dir):  # an interrupted earlier build
        if old.startswith(".build-"):
            shutil.rmtree(os.path.join(out_dir, old), ignore_errors=True)
    tmp = tempfile.mkdtemp(dir=out_dir, prefix=".build-")
    os.chmod(tmp, 0o755)
    for start in range(0, 65536, 256):
        glyphs = [render(face, cp, ascender) for cp in chars.get(start, [])]
        with open(os.path.join(tmp, f"{start}-{start + 255}.pbf"), "wb") as f:
            f.write(range_message(name, start, glyphs))
    final = os.path.join(out_dir, name)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    print("build_glyphs: wrote", build(*sys.argv[1:]))

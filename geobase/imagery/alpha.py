"""Which bands of a GeoTIFF are data and which are an alpha mask, decided at ingest.

GDAL writes every 4-band 8-bit GeoTIFF created without a PHOTOMETRIC option (rasterio's and
gdal_translate's default) as PHOTOMETRIC=RGB with ExtraSamples=2 ("unassociated alpha"), and
reads it back with band 4 as alpha. A blue/green/red/NIR scene saved that way would lose its
NIR band to a mask: every pixel whose NIR is 0 goes transparent, the NIR values vanish from
tiles, points and statistics, and nothing says so. So the ExtraSamples tag is read from the
file itself (GDAL's colour interpretation cannot tell GDAL's own guess from a declaration) and:

* ExtraSamples=1 (associated, premultiplied alpha) always declares alpha: no spectral band is
  premultiplied into the others;
* ExtraSamples=2 declares alpha except in exactly the layout GDAL writes on its own (8-bit,
  PHOTOMETRIC=RGB, four samples, the fourth the only extra one), unless the band's
  description names it alpha (``alpha``, ``mask``, ``transparency``);
* a band GDAL reads as alpha without such a declaration (a TIFF without a PHOTOMETRIC tag, the
  GDAL default above) is data: the COG is written PHOTOMETRIC=MINISBLACK with the bands
  interpreted gray/undefined, so every reader sees it as a band.

A declared alpha band is kept as the COG's internal mask (not a band) and the ingest says so;
a band kept as data despite GDAL's reading says so too. Wrong is never silent: at worst a real
alpha band of a GDAL-default RGBA file becomes a visible band ``b4`` (its values intact)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

PHOTOMETRIC, EXTRA_SAMPLES, BITS = 262, 338, 258
ALPHA_NAMES = {"alpha", "mask", "transparency"}
_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}  # SHORT, LONG, LONG8


@dataclass
class Bands:
    """The ingest's decision: ``alpha`` = 1-based bands kept as the mask; ``as_data`` = bands
    GDAL reads as alpha that are kept as data (the COG is rewritten MINISBLACK); ``notes`` for
    the ingest report."""

    alpha: list[int] = field(default_factory=list)
    as_data: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def tiff_tags(path: Path) -> dict[int, list[int]]:
    """PHOTOMETRIC, ExtraSamples and BitsPerSample of the first IFD (classic TIFF or BigTIFF),
    read from the file's bytes; absent tags are absent from the result."""
    with open(path, "rb") as f:
        head = f.read(16)
        bo = {b"II": "<", b"MM": ">"}.get(head[:2])
        if bo is None:
            return {}
        big = struct.unpack(bo + "H", head[2:4])[0] == 43
        if big:
            (ifd,) = struct.unpack(bo + "Q", head[8:16])
            cnt_fmt, entry, off_fmt, inline = "Q", 20, "Q", 8
        else:
            (ifd,) = struct.unpack(bo + "I", head[4:8])
            cnt_fmt, entry, off_fmt, inline = "H", 12, "I", 4
        f.seek(ifd)
        (n,) = struct.unpack(bo + cnt_fmt, f.read(struct.calcsize(cnt_fmt)))
        raw = f.read(n * entry)
        out: dict[int, list[int]] = {}
        for k in range(min(n, 4096)):
            e = raw[k * entry:(k + 1) * entry]
            tag, typ = struct.unpack(bo + "HH", e[:4])
            if tag not in (PHOTOMETRIC, EXTRA_SAMPLES, BITS) or typ not in _TYPES:
                continue
            (count,) = struct.unpack(bo + cnt_fmt, e[4:4 + struct.calcsize(cnt_fmt)])
            fmt, size = _TYPES[typ]
            count = min(count, 65535)
            body = e[entry - inline:]
            if count * size > inline:
                (offset,) = struct.unpack(bo + off_fmt, body)
                pos = f.tell()
                f.seek(offset)
                body = f.read(count * size)
                f.seek(pos)
            out[tag] = list(struct.unpack(bo + fmt * count, body[:count * size]))
        return out


def decide(path: Path, src) -> Bands:
    """Which of ``src``'s (an open rasterio dataset of ``path``) bands are alpha, which data."""
    from rasterio.enums import ColorInterp

    gdal_alpha = [i for i, c in enumerate(src.colorinterp, 1) if c == ColorInterp.alpha]
    if not gdal_alpha:
        return Bands()
    tags = tiff_tags(path) if src.driver == "GTiff" else {}
    extra = tags.get(EXTRA_SAMPLES, [])
    photometric = (tags.get(PHOTOMETRIC) or [None])[0]
    gdal_default = (photometric == 2 and src.count == 4 and extra == [2] and src.dtypes[0] in ("uint8", "int8"))
    first_extra = src.count - len(extra) + 1
    out = Bands()
    for b in gdal_alpha:
        kind = extra[b - first_extra] if b >= first_extra else 0
        named = (src.descriptions[b - 1] or "").strip().lower() in ALPHA_NAMES
        if kind == 1 or (kind == 2 and (named or not gdal_default)):
            out.alpha.append(b)
            what = "associated (premultiplied)" if kind == 1 else "unassociated"
            out.notes.append(f"band {b}: the file declares it {what} alpha (TIFF ExtraSamples={kind}); kept as "
                             "the COG's mask, not a band")
        else:
            out.as_data.append(b)
            photo = "no PHOTOMETRIC tag" if photometric is None else f"PHOTOMETRIC={photometric}"
            why = ("GDAL's default for a 4-band 8-bit file written without PHOTOMETRIC" if gdal_default
                   else f"{photo}, ExtraSamples={extra or 'absent'}")
            out.notes.append(f"band {b}: GDAL reads it as alpha ({why}), the file does not declare it; kept as "
                             f"data band b{b}, the COG written PHOTOMETRIC=MINISBLACK")
    return out


def data_vrt(path: Path, src) -> str:
    """A VRT of ``path`` whose bands are all data (colour interpretation gray, then undefined)
    and keep the file's nodata: what the COG is made from when a band GDAL reads as alpha is
    kept as data (no alpha band, no mask derived from it)."""
    gt = src.transform.to_gdal()
    bands = []
    for i in range(1, src.count + 1):
        nd = f"<NoDataValue>{src.nodata!r}</NoDataValue>" if src.nodata is not None else ""
        bands.append(
            f'<VRTRasterBand dataType="{_gdal_type(src.dtypes[i - 1])}" band="{i}">{nd}'
            f"<ColorInterp>{'Gray' if i == 1 else 'Undefined'}</ColorInterp>"
            f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(path))}</SourceFilename>'
            f"<SourceBand>{i}</SourceBand></SimpleSource></VRTRasterBand>")
    return (f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}">'
            f"<SRS>{escape(src.crs.to_wkt())}</SRS><GeoTransform>{', '.join(repr(v) for v in gt)}</GeoTransform>"
            + "".join(bands) + "</VRTDataset>")


def _gdal_type(dtype: str) -> str:
    return {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}[dtype]

"""Shapefile text encoding: honour ``.cpg``, otherwise sniff UTF-8 vs GBK/GB18030.

A ``.dbf`` without ``.cpg`` and with language-driver byte 0 is decoded by GDAL as ISO-8859-1,
which silently turns 水田 into ``Ë®Ìï`` (domain.md §5). We read such files as ISO-8859-1 (a
lossless byte mapping), then decode the original bytes strictly: UTF-8 first (it almost never
decodes non-UTF-8 text by accident), else GB18030 (a superset of GBK) provided the result looks
like Chinese text. Anything else is refused with a message asking for ``--encoding``: mojibake
must never reach the database silently.
"""

from __future__ import annotations

import codecs
import re

from geobase.errors import InvalidInput

#: .cpg contents GDAL cannot map (ArcGIS writes "System" = the machine's ANSI code page).
UNUSABLE_CPG = {"", "system", "oem"}
_CPG_ALIASES = {"936": "GBK", "65001": "UTF-8", "utf8": "UTF-8", "1252": "CP1252", "88591": "ISO-8859-1"}
# CJK ideographs, CJK punctuation, full-width forms, Chinese-friendly symbols
_CHINESE_OK = re.compile(r"^[\u0000-\u007f\u00b7\u00d7\u2010-\u206f\u2160-\u217f\u2460-\u24ff\u3000-\u303f"
                         r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\u2e80-\u2fdf\u3200-\u33ff]*$")


def _looks_gb2312(raw: bytes) -> bool:
    """True when the double-byte pairs are mostly in the GB2312 block (both bytes >= 0xA1).

    Latin-1 text such as ``Rautjärvi`` also decodes as GB18030 (``ä`` + ``r`` is a valid pair), but
    its trail bytes are ASCII letters; real Chinese text is overwhelmingly GB2312-range."""
    pairs = gb = 0
    i = 0
    while i < len(raw):
        b = raw[i]
        if b < 0x80:
            i += 1
            continue
        if i + 1 < len(raw):
            pairs += 1
            if b >= 0xA1 and raw[i + 1] >= 0xA1:
                gb += 1
        i += 2
    return pairs > 0 and gb * 2 >= pairs


def cpg_encoding(cpg: bytes | None) -> str | None:
    """The encoding a ``.cpg`` names, or None when absent or unusable (e.g. "System")."""
    if cpg is None:
        return None
    text = cpg.decode("ascii", "ignore").strip()
    if text.lower() in UNUSABLE_CPG:
        return None
    name = _CPG_ALIASES.get(text.lower().replace("-", "").replace("_", ""), text)
    try:
        codecs.lookup(name)
    except LookupError:
        return None
    return name


def dbf_ldid(header: bytes | None) -> int:
    """The dBase language-driver id (byte 29); 0 means 'not stated'."""
    return header[29] if header and len(header) > 29 else 0


def check_encoding_name(name: str) -> str:
    try:
        codecs.lookup(name)
    except LookupError:
        raise InvalidInput(f"--encoding: unknown encoding {name!r} (e.g. UTF-8, GBK, GB18030)",
                           parameter="encoding") from None
    return name


class EncodingSniffer:
    """Decides the encoding from the first non-ASCII text and then decodes every value strictly."""

    def __init__(self) -> None:
        self.encoding: str | None = None  # None until non-ASCII text is seen
        self.samples: list[str] = []

    def decode(self, value: str) -> str:
        """Turn a value GDAL decoded as ISO-8859-1 back into its real text (raises on mojibake)."""
        if value.isascii():
            return value
        raw = value.encode("latin-1")
        if self.encoding is None:
            self.encoding = self._choose(raw)
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError:
            raise ValueError(f"text {value!r} is not valid {self.encoding} (the encoding detected earlier in the "
                             "file); pass --encoding") from None
        if self.encoding == "gb18030" and not (_CHINESE_OK.match(text) and _looks_gb2312(raw)):
            raise ValueError(f"text decodes as GB18030 to {text!r}, which does not look like Chinese; "
                             "pass --encoding")
        return text

    @staticmethod
    def _choose(raw: bytes) -> str:
        try:
            raw.decode("utf-8")
            return "utf-8"
        except UnicodeDecodeError:
            pass
        try:
            text = raw.decode("gb18030")
        except UnicodeDecodeError:
            text = None
        if text is not None and _CHINESE_OK.match(text) and _looks_gb2312(raw):
            return "gb18030"
        raise InvalidInput(
            f"the .dbf has no .cpg and its text {raw[:40]!r} is neither UTF-8 nor GBK/GB18030 Chinese; "
            "pass --encoding (e.g. --encoding CP1252)", parameter="encoding")

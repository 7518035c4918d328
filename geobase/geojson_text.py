"""GeoJSON geometries kept as the text PostGIS wrote, until someone needs their coordinates.

A site check returns thousands of pieces; parsing each piece's GeoJSON into nested Python lists
only for ``orjson`` to write the same text back cost more than the overlay itself (the
allocations also keep Python's garbage collector busy). A :class:`GeoJSONText` is written out
verbatim (:func:`json_default` hands orjson a ``Fragment``) and parsed lazily, once, by the
consumers that draw or measure it (``value``, ``__geo_interface__`` for ``shapely.geometry.shape``).
"""

from __future__ import annotations

from typing import Any

import orjson


class GeoJSONText:
    __slots__ = ("text", "_value")

    def __init__(self, text: str | bytes):
        self.text = text
        self._value: dict | None = None

    @property
    def value(self) -> dict:
        if self._value is None:
            self._value = orjson.loads(self.text)
        return self._value

    @property
    def __geo_interface__(self) -> dict:
        return self.value

    def __getitem__(self, key: str) -> Any:  # reads like the dict it stands for
        return self.value[key]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GeoJSONText):
            return self.value == other.value
        return self.value == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"GeoJSONText({str(self.text)[:60]!r}...)"


def json_default(obj: Any) -> Any:
    """``default=`` for orjson: GeoJSONText verbatim, anything else (dates, decimals) as text."""
    if isinstance(obj, GeoJSONText):
        return orjson.Fragment(obj.text)
    return str(obj)


def plain(obj: Any) -> Any:
    """The parsed geometry of a GeoJSONText; any other value as it is."""
    return obj.value if isinstance(obj, GeoJSONText) else obj

"""The catalog search index: one per list of visible records (a caller's view of one catalog
state), so a search does no per-record work it can avoid.

Why: a search filtered 10,000 record dicts in Python and counted eight facets over every hit,
re-parsing each record's time interval per request — 347 ms at p95 under load. The records are
kept in memory already (:class:`geobase.catalog.records.RecordCache`, one list per view); here
each list gets, once, what a search reads of it:

* per facet value a bit set (a Python int: bit i = record i has the value), so facet filters
  are ORs and ANDs of ints and each facet count is ``(hits & value).bit_count()``;
* the lower-cased search text (a word's bit set kept once searched), the boxes and the
  intervals (as POSIX seconds) in numpy arrays (a box or time test is a few vector compares),
  scanned only when the query has words, a box or a time.

Search results are the same as :func:`geobase.opendata.encode.matches` record by record (a test
compares both over generated records).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

_NEG, _POS = float("-inf"), float("inf")
_NO_BOX, _NO_TIME = (float("nan"),) * 4, (float("nan"),) * 2
#: words whose bit sets an index keeps (cleared when full: queries repeat their words)
_WORDS_KEPT = 1024
#: query answers (bit set and facet counts) an index keeps, likewise
_ANSWERS_KEPT = 256


def _seconds(text: str | None, default: float) -> float:
    if not text or text == "..":
        return default
    value = dt.datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


@dataclass
class Index:
    """What a search reads of one record list (see the module docstring)."""

    records: list[dict]
    full: int
    facets: dict[str, dict[str, int]]
    texts: list[str]
    #: (n, 4) minx, miny, maxx, maxy (NaN: no box); (n, 2) start, end in POSIX seconds (NaN: no time)
    boxes: np.ndarray
    times: np.ndarray
    types: dict[str, int]
    _reversed: list[str] | None = None
    _words: dict[str, int] = field(default_factory=dict)
    _answers: dict[tuple, tuple[int, dict]] = field(default_factory=dict)

    @classmethod
    def build(cls, records: list[dict], facet_keys: dict[str, str], text_of, values_of) -> Index:
        facets: dict[str, dict[str, int]] = {name: {} for name in facet_keys}
        types: dict[str, int] = {}
        texts, boxes, times = [], [], []
        for i, r in enumerate(records):
            bit = 1 << i
            for name, key in facet_keys.items():
                bucket = facets[name]
                for v in values_of(r, key):
                    bucket[v] = bucket.get(v, 0) | bit
            types[r["type"]] = types.get(r["type"], 0) | bit
            text = r.get("_text")
            if text is None:
                text = r["_text"] = text_of(r)
            texts.append(text)
            b = r.get("bbox")
            boxes.append(tuple(b) if b else _NO_BOX)
            iv = r.get("interval")
            times.append((_seconds(iv[0], _NEG), _seconds(iv[1], _POS)) if iv else _NO_TIME)
        return cls(records, (1 << len(records)) - 1, facets, texts, np.array(boxes, dtype=float).reshape(-1, 4),
                   np.array(times, dtype=float).reshape(-1, 2), types)

    def answer(self, query) -> tuple[int, dict[str, dict[str, int]]]:
        """(:meth:`select`, :meth:`counts`) of ``query``, kept per query (a catalog's searches
        repeat: the same facet links, the same first page); the counts are shared, read only."""
        key = (tuple(query.q), tuple(query.bbox or ()), query.interval, tuple(query.types),
               tuple(sorted((k, tuple(v)) for k, v in query.facets.items())))
        got = self._answers.get(key)
        if got is None:
            mask = self.select(query)
            if len(self._answers) >= _ANSWERS_KEPT:
                self._answers.clear()
            got = self._answers[key] = (mask, self.counts(mask))
        return got

    def select(self, query) -> int:
        """The bit set of the records matching ``query`` (a :class:`geobase.opendata.encode.Query`)."""
        mask = self.full
        for name, wanted in query.facets.items():
            bucket = self.facets[name]
            any_of = 0
            for v in wanted:
                any_of |= bucket.get(v, 0)
            mask &= any_of
        if query.types:
            any_of = 0
            for t in query.types:
                any_of |= self.types.get(t, 0)
            mask &= any_of
        for term in query.q if mask else ():
            mask &= self._word(term)
        if mask and query.bbox:
            x0, y0, x1, y1 = query.bbox
            b = self.boxes   # a record without a box has NaN there: every comparison is false
            mask &= _mask_of((b[:, 0] <= x1) & (b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 3] >= y0))
        if mask and query.interval:
            lo = query.interval[0].timestamp() if query.interval[0] else _NEG
            hi = query.interval[1].timestamp() if query.interval[1] else _POS
            mask &= _mask_of((self.times[:, 0] <= hi) & (self.times[:, 1] >= lo))
        return mask

    def _word(self, term: str) -> int:
        """The records whose text contains ``term``: one comprehension of C-level substring tests
        over the texts (kept in reverse order, so its bytes are the bit set's binary digits),
        kept per term (the index belongs to one list of one catalog state: never stale)."""
        got = self._words.get(term)
        if got is not None:
            return got
        if self._reversed is None:
            self._reversed = self.texts[::-1]
        got = int(bytes([49 if term in t else 48 for t in self._reversed]), 2) if self._reversed else 0
        if len(self._words) >= _WORDS_KEPT:
            self._words.clear()
        self._words[term] = got
        return got

    def counts(self, mask: int) -> dict[str, dict[str, int]]:
        """Facet name -> value -> records among ``mask`` having it (values with none left out)."""
        out: dict[str, dict[str, int]] = {}
        for name, bucket in self.facets.items():
            got = {}
            for v, bits in bucket.items():
                n = (bits & mask).bit_count()
                if n:
                    got[v] = n
            out[name] = got
        return out

    def hits(self, mask: int) -> Hits:
        return Hits(self.records, mask, mask == self.full)


class Hits(Sequence):
    """The records of a bit set, in list order, read only as far as asked: a page of ten of
    10,000 hits does not build the other 9,990 (``len`` is the bit count)."""

    def __init__(self, records: list[dict], mask: int, full: bool):
        self._records, self._mask, self._full = records, mask, full
        self._n = len(records) if full else mask.bit_count()

    def __len__(self) -> int:
        return self._n

    def __iter__(self):
        if self._full:
            return iter(self._records)
        return (self._records[i] for i in _bits(self._mask))

    def __getitem__(self, item):
        if self._full:
            return self._records[item]
        if isinstance(item, slice):
            start, stop, step = item.indices(self._n)
            return list(islice(iter(self), start, stop, step))
        if item < 0:
            item += self._n
        if not 0 <= item < self._n:
            raise IndexError(item)
        return next(islice(iter(self), item, None))


def _mask_of(flags: np.ndarray) -> int:
    """The bit set of a boolean array (bit i = ``flags[i]``): packed to bytes in C, one int."""
    return int.from_bytes(np.packbits(flags, bitorder="little").tobytes(), "little")


def _bits(mask: int):
    """The positions of the set bits, ascending (via the binary text: a C loop, not a Python one)."""
    text = bin(mask)[:1:-1]
    i = text.find("1")
    while i != -1:
        yield i
        i = text.find("1", i + 1)


_INDEXES: dict[int, tuple[list[dict], Index]] = {}
_LOCK = threading.Lock()


def index_for(records: list[dict], facet_keys: dict[str, str], text_of, values_of) -> Index:
    """The index of this record list (built on first use; the list is kept with it, so its id
    is not reused while the entry lives)."""
    hit = _INDEXES.get(id(records))
    if hit is not None and hit[0] is records:
        return hit[1]
    idx = Index.build(records, facet_keys, text_of, values_of)
    with _LOCK:
        if len(_INDEXES) > 64:
            _INDEXES.clear()
        _INDEXES[id(records)] = (records, idx)
    return idx

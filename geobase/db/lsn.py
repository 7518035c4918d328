"""WAL positions as integers: the read-your-writes token of the read replicas (geobase/pool.py).

A write's answer carries the primary's WAL position after it; a replica serves the caller's
next read only once it has replayed that position. Positions are compared as integers (bytes
from ``0/0``), written as PostgreSQL writes an LSN (``16/B374D848``)."""

from __future__ import annotations

_SEGMENT = 16 * 1024 * 1024


def wal_position(lsn: int) -> int:
    """A WAL insert position as the end of the last record, comparable with a standby's
    ``pg_last_wal_replay_lsn()``: at the very start of a page the insert position is reported
    after the page header (24 bytes, 40 at a segment's start), where no record can end; the
    replay position of a record that ends at the page boundary is the boundary itself."""
    if lsn % _SEGMENT == 40:
        return lsn - 40
    if lsn % 8192 == 24:
        return lsn - 24
    return lsn


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str | None) -> int | None:
    """``'16/B374D848'`` -> its integer; None for anything else (a token is never trusted blindly)."""
    if not text or "/" not in text or len(text) > 20:
        return None
    hi, _, lo = text.strip().partition("/")
    try:
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        return None


PRIMARY_POSITION_SQL = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
REPLAY_POSITION_SQL = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint"

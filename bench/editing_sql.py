"""The editing benchmark's data and its baseline: the same versioned write as bare SQL.

The grid of ``parcels`` land-use parcels is loaded once per scale with SQL (version 1, with the
per-county map an ingest records, so that an edit's version carries it forward as it would after
a real ingest) and put back to version 1 before each run (untimed).

Baseline (``bare SQL``): what a client holding a psycopg connection to the database (no HTTP, no
checks, no audit, no session table) must do at least for the same change to be a version with a
precondition: one transaction that locks the layer row, reads the feature's current row FOR
UPDATE and compares its content hash (the If-Match), adds the version row (carrying the previous
version's counts and per-county map), retires the row (``_vto``) and inserts its new state with a
new hash, and moves the layer's current version. A session of 1,000 changes is the same in one
transaction with one version row.
"""

from __future__ import annotations

import math

import psycopg
from psycopg import sql

CELL = 0.0005
LON0, LAT0 = 119.0, 30.0
CODES = ["0101", "0102", "0103", "0201", "0301", "0305", "0404", "0702", "1001", "1101"]


def key_of(i: int) -> str:
    return f"{i:018d}"


def _fill(conn: psycopg.Connection, parcels: int, side: int) -> None:
    print(f"bench editing: loading {parcels:,} parcels ...", flush=True)
    conn.execute("DELETE FROM catalog.layer_versions WHERE layer = 'land_use'")
    conn.execute("TRUNCATE data.land_use")
    for lo in range(0, parcels, 200_000):
        conn.execute("""
            INSERT INTO data.land_use (_key, _hash, _vfrom, bsm, dlbm, sjnf, _area_m2, geom, geom_3857)
            SELECT k, md5(k), 1, k, c, 2025, ST_Area(g::geography), g, ST_Transform(g, 3857)
            FROM (SELECT lpad(i::text, 18, '0') AS k, (%(codes)s::text[])[i %% 10 + 1] AS c,
                         ST_Multi(ST_Segmentize(ST_MakeEnvelope(
                             %(x0)s + (i %% %(side)s) * %(d)s, %(y0)s + (i / %(side)s) * %(d)s,
                             %(x0)s + (i %% %(side)s + 1) * %(d)s, %(y0)s + (i / %(side)s + 1) * %(d)s, 4490),
                             %(d)s / 5)) AS g
                  FROM generate_series(%(lo)s::int, %(hi)s::int) i) s""",
                     {"codes": CODES, "x0": LON0, "y0": LAT0, "d": CELL, "side": side, "lo": lo,
                      "hi": min(parcels, lo + 200_000) - 1})
    conn.execute("INSERT INTO catalog.layer_versions (layer, version, mode, rows_total) "
                 "VALUES ('land_use', 1, 'replace', %s)", (parcels,))
    conn.execute("VACUUM ANALYZE data.land_use")


def load(url: str, parcels: int) -> int:
    """The grid (once per scale), then back to its version 1. Returns the grid's side."""
    side = math.ceil(math.sqrt(parcels))
    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("SELECT rows_total FROM catalog.layer_versions WHERE layer = 'land_use' AND version = 1").fetchone()
        if not (have and have[0] == parcels):
            _fill(conn, parcels, side)
        conn.execute("DELETE FROM data.land_use WHERE _vfrom > 1")
        conn.execute("UPDATE data.land_use SET _vto = NULL WHERE _vto IS NOT NULL")
        conn.execute("DELETE FROM catalog.layer_versions WHERE layer = 'land_use' AND version > 1")
        extent = [LON0, LAT0, LON0 + side * CELL, LAT0 + math.ceil(parcels / side) * CELL]
        conn.execute("UPDATE catalog.layer_versions SET extent = %s, divisions = jsonb_build_object('000000', "
                     "jsonb_build_object('rows', %s::int, 'extent', %s::float8[])) WHERE layer = 'land_use' AND version = 1",
                     (extent, parcels, extent))
        conn.execute("UPDATE catalog.layers SET current_version = 1 WHERE name = 'land_use'")
        conn.execute("DELETE FROM catalog.edit_sessions")
        conn.execute("DELETE FROM catalog.webhooks")
        conn.execute("VACUUM ANALYZE data.land_use")
    return side


class BareSql:
    """The baseline's connection (one, kept, as a client of the database would keep it)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        cols = [r[0] for r in self.conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'data' AND table_name = "
            "'land_use' AND column_name NOT IN ('_rid', '_hash', '_vfrom', '_vto', 'bz', 'dlbm') ORDER BY ordinal_position")]
        self.conn.commit()
        self._copy = sql.SQL(
            "INSERT INTO data.land_use (_hash, _vfrom, bz, dlbm, {cols}) SELECT md5(_key || %(v)s::text), %(v)s, "
            "coalesce(%(bz)s, bz), coalesce(%(dlbm)s, dlbm), {cols} FROM data.land_use WHERE _rid = %(rid)s").format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols))

    def current_hash(self, key: str) -> str:
        h = self.conn.execute("SELECT _hash FROM data.land_use WHERE _key = %s AND _vto IS NULL", (key,)).fetchone()[0]
        self.conn.commit()
        return h

    def _version(self) -> int:
        cur = self.conn.execute("SELECT current_version FROM catalog.layers WHERE name = 'land_use' FOR UPDATE"
                                ).fetchone()[0]
        v = self.conn.execute("SELECT max(version) + 1 FROM catalog.layer_versions WHERE layer = 'land_use'"
                              ).fetchone()[0]
        self.conn.execute("INSERT INTO catalog.layer_versions (layer, version, mode, rows_total, extent, divisions, "
                          "created_by, metadata) SELECT layer, %s, 'edit', rows_total, extent, divisions, 'bench-sql', "
                          "'{}' FROM catalog.layer_versions WHERE layer = 'land_use' AND version = %s", (v, cur))
        self.conn.execute("UPDATE catalog.layers SET current_version = %s WHERE name = 'land_use'", (v,))
        return v

    def _change(self, v: int, key: str, if_match: str, bz: str | None, dlbm: str | None) -> None:
        row = self.conn.execute("SELECT _rid, _hash FROM data.land_use WHERE _key = %s AND _vto IS NULL FOR UPDATE",
                                (key,)).fetchone()
        if row is None or row[1] != if_match:
            raise RuntimeError(f"bare SQL: {key} changed (412)")
        self.conn.execute("UPDATE data.land_use SET _vto = %s WHERE _rid = %s", (v, row[0]))
        self.conn.execute(self._copy, {"v": v, "bz": bz, "dlbm": dlbm, "rid": row[0]})

    def patch(self, key: str, if_match: str, bz: str) -> int:
        """One change, one version, one transaction."""
        with self.conn.transaction():
            v = self._version()
            self._change(v, key, if_match, bz, None)
        self.conn.commit()
        return v

    def session(self, changes: list[tuple[str, str, str]]) -> int:
        """(key, if_match, dlbm) changes as one version in one transaction."""
        with self.conn.transaction():
            v = self._version()
            for key, if_match, dlbm in changes:
                self._change(v, key, if_match, None, dlbm)
        self.conn.commit()
        return v

    def close(self) -> None:
        self.conn.close()

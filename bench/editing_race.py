"""The editing benchmark's race: 16 clients on a block of 100 overlapping parcels for 30 s (quick:
10 s). 12 change an attribute (GET the ETag, PATCH with If-Match; 412 on a race is the expected
answer), 4 split parcels by a line. Checked afterwards: 0 lost updates (each successful write is
the row of its version, and each parcel's current value is its last successful write, unless a
split retired the parcel since), 0 5xx, the coverage's total ellipsoidal area unchanged (relative
difference printed) and no two current parcels of the block overlapping."""

from __future__ import annotations

import json
import random
import threading
import time

import httpx
import psycopg
from common import Context, Result
from editing_sql import CELL, LAT0, LON0


class _Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: dict[int, int] = {}
        self.writes: list[tuple[str, str, int]] = []  # (key, value, version) of each successful attribute write
        self.splits = 0

    def count(self, status: int) -> None:
        with self.lock:
            self.status[status] = self.status.get(status, 0) + 1


def _hot_keys(c: httpx.Client, box: list[float]) -> list[str]:
    r = c.get("/collections/land_use/items", params={"bbox": ",".join(f"{v:.9f}" for v in box), "limit": 2000,
                                                    "properties": "bsm"})
    return [f["id"] for f in r.json().get("features", [])] if r.status_code == 200 else []


def _attribute_client(base: str, token: str, box: list[float], cid: int, until: float, tally: _Tally) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        keys, n = [], 0
        while time.monotonic() < until:
            if n % 20 == 0 or not keys:
                keys = _hot_keys(c, box) or keys
            n += 1
            key, value = random.choice(keys), f"c{cid}-{n}"
            g = c.get(f"/collections/land_use/items/{key}")
            tally.count(g.status_code)
            if g.status_code != 200:
                continue
            r = c.patch(f"/collections/land_use/items/{key}", params={"reason": value},
                        content=json.dumps({"properties": {"bz": value}}),
                        headers={"If-Match": g.headers["etag"], "Content-Type": "application/merge-patch+json"})
            tally.count(r.status_code)
            if r.status_code == 200:
                with tally.lock:
                    tally.writes.append((key, value, r.json()["version"]))


def _split_client(base: str, token: str, box: list[float], cid: int, until: float, tally: _Tally) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        n = 0
        while time.monotonic() < until:
            keys = _hot_keys(c, box)
            if not keys:
                continue
            n += 1
            key = random.choice(keys)
            g = c.get(f"/collections/land_use/items/{key}")
            tally.count(g.status_code)
            if g.status_code != 200:
                continue
            xs = [p[0] for poly in g.json()["geometry"]["coordinates"] for ring in poly for p in ring]
            ys = [p[1] for poly in g.json()["geometry"]["coordinates"] for ring in poly for p in ring]
            if max(xs) - min(xs) < 2e-5:
                continue  # thin enough
            x, dy = (min(xs) + max(xs)) / 2, (max(ys) - min(ys)) * 0.1
            line = {"type": "LineString", "coordinates": [[x, min(ys) - dy], [x, max(ys) + dy]]}
            r = c.post(f"/collections/land_use/items/{key}/split", params={"reason": f"split s{cid}-{n}"},
                       json={"line": line, "ids": [f"{key[:18]}s{cid}x{n}a", f"{key[:18]}s{cid}x{n}b"]},
                       headers={"If-Match": g.headers["etag"]})
            tally.count(r.status_code)
            if r.status_code == 200:
                with tally.lock:
                    tally.splits += 1


def _coverage(conn: psycopg.Connection, box: list[float]) -> tuple[float, int]:
    total = conn.execute("SELECT sum(ST_Area(geom::geography)) FROM data.land_use WHERE _vto IS NULL").fetchone()[0]
    overlaps = conn.execute("""
        WITH h AS (SELECT _key, geom FROM data.land_use WHERE _vto IS NULL
                   AND geom && ST_MakeEnvelope(%s, %s, %s, %s, 4490))
        SELECT count(*) FROM h a JOIN h b ON a._key < b._key AND ST_Intersects(a.geom, b.geom)
        WHERE ST_Area(ST_Intersection(a.geom, b.geom)) > 1e-14""", box).fetchone()[0]
    return total, overlaps


def _lost_updates(conn: psycopg.Connection, writes: list[tuple[str, str, int]]) -> int:
    """Successful writes not kept: the row of the write's version lacks its value, or a parcel's
    current value is not its last successful write (a later write lost an earlier one's winner)."""
    lost = 0
    last: dict[str, tuple[int, str]] = {}
    for key, value, v in writes:
        row = conn.execute("SELECT bz FROM data.land_use WHERE _key = %s AND _vfrom = %s", (key, v)).fetchone()
        lost += row is None or row[0] != value
        if key not in last or v > last[key][0]:
            last[key] = (v, value)
    for key, (_, value) in last.items():
        cur = conn.execute("SELECT bz FROM data.land_use WHERE _key = %s AND _vto IS NULL", (key,)).fetchone()
        lost += cur is not None and cur[0] != value  # (a split may have retired the parcel since)
    return lost


def concurrency(ctx: Context, url: str, base: str, token: str, side: int) -> None:
    seconds = 10 if ctx.quick else 30
    o = min(100, side - 10)
    box = [LON0 + o * CELL + 1e-7, LAT0 + o * CELL + 1e-7, LON0 + (o + 10) * CELL - 1e-7, LAT0 + (o + 10) * CELL - 1e-7]
    with psycopg.connect(url) as conn:
        before = _coverage(conn, box)
    tally, until = _Tally(), time.monotonic() + seconds
    threads = [threading.Thread(target=_attribute_client, args=(base, token, box, i, until, tally)) for i in range(12)]
    threads += [threading.Thread(target=_split_client, args=(base, token, box, i, until, tally)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(url) as conn:
        after = _coverage(conn, box)
        lost = _lost_updates(conn, tally.writes)
    fivexx = sum(n for s, n in tally.status.items() if s >= 500)
    rel = abs(after[0] - before[0]) / before[0]
    r = Result(f"editing: 16 clients x {seconds} s on 100 overlapping parcels, successful writes", len(tally.writes)
               + tally.splits, None, None, "writes")
    r.extra = {"lost_updates": lost, "5xx": fivexx, "statuses": dict(sorted(tally.status.items())),
               "attribute_writes": len(tally.writes), "splits": tally.splits,
               "coverage_total_rel_diff": rel, "overlapping_pairs": after[1], "baseline": "none (absolute)"}
    ctx.report(r)
    if lost or fivexx or rel > 1e-9 or after[1]:
        print(f"bench editing: FAILED invariants: lost={lost} 5xx={fivexx} rel={rel:.3g} overlaps={after[1]}", flush=True)

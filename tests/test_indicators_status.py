"""The indicator recompute's edges (issue 18): a county without a township layer waits with a
clear status (no failed job, no warning logged every poll); the steep-farmland term reads the
DEM version recorded with the values, not whichever DEM is current; a recompute job whose
server died is failed by the start-up sweep like ingest and analysis jobs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys

import psycopg
import pytest
from indicators_common import computed_db, computed_template, latest, process  # noqa: F401

from geobase.catalog import indicators as cat
from geobase.indicators.compute import Context, term_m2, township_pieces
from geobase.indicators.monitor import IndicatorMonitor, run_job
from geobase.indicators.service import overview
from geobase.indicators.spec import get_indicators
from geobase.specs import get_registry


class _Pool:
    """What the monitor asks of the server's pool: ``connection()`` as an async context."""

    def __init__(self, url: str):
        self.url = url

    def connection(self):
        return _Conn(self.url)


class _Conn:
    def __init__(self, url: str):
        self.url = url

    async def __aenter__(self):
        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        return self.conn

    async def __aexit__(self, *exc):
        await self.conn.close()


def test_without_a_township_layer_the_recompute_waits_with_a_clear_status(new_db, caplog):
    from test_tiles_data import load_test_county

    settings = new_db()
    load_test_county(settings, dem=False)  # land use, control lines, water: no admin_divisions
    reg = get_registry(settings)
    out = process(settings)
    assert out["steps"] == [] and "admin_divisions" in out["waiting"] and "no loaded version" in out["waiting"]

    async def go():
        monitor = IndicatorMonitor(settings, reg, _Pool(settings.database_url))
        due = await monitor.due()
        job = await run_job(settings, reg, created_by="test")
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            doc = await overview(conn, reg, get_indicators(reg))
        return monitor, due, job, doc

    with caplog.at_level(logging.INFO, logger="geobase.indicators"):
        monitor, due, job, doc = asyncio.run(go())
    assert due is False and "admin_divisions" in monitor.waiting  # the poll starts no job
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert job["status"] == "successful" and job["result"]["waiting"] == out["waiting"]
    with psycopg.connect(settings.database_url) as conn:
        status, message = conn.execute("SELECT status, message FROM catalog.jobs WHERE id = %s", (job["id"],)).fetchone()
    assert status == "successful" and message == out["waiting"]
    assert doc["status"] == out["waiting"] and doc["versions"] is None
    assert all(v["value"] is None for i in doc["indicators"] for v in i["values"])


def _flat_dem(settings, src_path, out_path) -> None:
    """The DEM's grid with every height 100 m: no slope anywhere."""
    import numpy as np
    import rasterio

    with rasterio.open(src_path) as src:
        profile = src.profile
        data = np.full((src.count, src.height, src.width), 100, dtype=profile["dtype"])
    profile.update(driver="GTiff")
    for k in ("blockxsize", "blockysize", "tiled", "interleave", "compress"):
        profile.pop(k, None)
    with rasterio.open(out_path, "w", **profile) as dst:
        dst.write(data)


def test_steep_farmland_uses_the_dem_version_recorded_with_the_values(computed_db, tmp_path):
    from geobase.catalog.layers import current_layers_sync, raster_file
    from geobase.ingest.pipeline import ingest

    settings = computed_db
    reg = get_registry(settings)
    indicators = get_indicators(reg)
    steep = next(t for ind in indicators.values() for t in ind.terms if t.min_slope is not None)
    with psycopg.connect(settings.database_url) as conn:
        dem_v1 = current_layers_sync(conn, [steep.dem_layer])[steep.dem_layer]
    before = {k: v for k, v in latest(settings).items() if k[0] == "steep_farmland_area"}
    assert sum(v for v in before.values() if v) > 0  # the sample county has steep farmland
    flat = tmp_path / "flat.tif"
    _flat_dem(settings, raster_file(dem_v1, settings.data_path), flat)
    v2 = ingest(settings, steep.dem_layer, flat, user="test").version
    assert v2 == dem_v1.version + 1

    async def recomputed_with_recorded_versions():
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            versions, _ = await cat.state(conn)
            assert versions[steep.dem_layer] == dem_v1.version  # the values still say DEM v1
            stored = await cat.latest_values(conn)
            ctx = Context(conn, reg, dict(versions), settings.data_path)
            await township_pieces(ctx, None)
            got = await term_m2(ctx, steep)
            await conn.rollback()
            return stored, got

    stored, got = asyncio.run(recomputed_with_recorded_versions())
    recorded = {div: row["parts"][steep.key] for (i, div), row in stored.items()
                if i == "steep_farmland_area" and len(div) == 9}
    assert sum(recorded.values()) > 0
    for div, m2 in recorded.items():  # DEM v1's slopes, though the flat DEM v2 is current
        assert got.get(div, 0.0) == pytest.approx(m2, rel=1e-9, abs=1e-6), div
    # processing the queued DEM version: a full recompute on the flat DEM, no steep farmland left
    steps = process(settings)["steps"]
    assert [(s["layer"], s["version"], s["kind"]) for s in steps] == [(steep.dem_layer, v2, "full")]
    after = {k: v for k, v in latest(settings).items() if k[0] == "steep_farmland_area"}
    assert after and all(v == 0 for v in after.values())


def test_an_orphaned_indicator_job_is_failed_by_the_start_up_sweep(db_settings):
    from geobase.ingest import jobs

    from geobase.db import connect

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = {"host": socket.gethostname()}
    ids = ("00000000-0000-0000-0000-0000000000b1", "00000000-0000-0000-0000-0000000000b2")
    with connect(db_settings) as conn:
        for job_id, pid in zip(ids, (dead.pid, os.getpid())):
            conn.execute("INSERT INTO catalog.jobs (id, kind, status, params, created_by) "
                         "VALUES (%s, 'indicators', 'running', %s, 'server')", (job_id, json.dumps({**here, "pid": pid})))
        conn.commit()
    assert jobs.fail_orphaned_jobs(db_settings) == 1
    orphan = jobs.get_job(db_settings, ids[0])
    assert orphan["status"] == "failed" and "recompute" in orphan["message"]
    assert jobs.get_job(db_settings, ids[1])["status"] == "running"

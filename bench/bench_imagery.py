"""Imagery tiles: ours (``/imagery/{collection}/tiles/...``) against titiler (titiler-core's
TilerFactory, the reference dynamic tiler on rio-tiler) serving the very same COG, same tiles,
same expression, rescale and colour map, one uvicorn worker each, sequential requests.

Data: the real Landsat 7 scene (``../shared/realdata/br_olinda_landsat7/L7_ETMs.tif``, used by
path), ingested once into the bench database (collection ``landsat``); titiler reads the COG
our ingest wrote, so both read identical bytes. The tiles are every WebMercatorQuad tile of the
scene at z12-z14; the request is NDVI ``(b4-b3)/(b4+b3)``, ``rescale=-1,1``, ``rdylgn``.

Figures:
  * cold: the first request of each tile on freshly started servers (GDAL's block cache empty
    for that tile), interleaved tile by tile (ours, titiler, ours, ...): p50 per side. Single
    measurement (a cold pass cannot be repeated without restarting both servers);
  * warm: the same tiles again for ``ctx.rounds`` interleaved rounds, p50 per round per side.
    Neither side keeps rendered imagery tiles (no tile cache for imagery yet), so "warm" is
    GDAL's block cache, not a tile cache;
  * agreement: both tiles decoded (GDAL's PNG driver) and compared pixel for pixel.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench_features import Server, _free_port, _ours
from common import Context, Result, percentile

SCENE = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "br_olinda_landsat7" / "L7_ETMs.tif"
PARAMS = {"expression": "(b4-b3)/(b4+b3)", "rescale": "-1,1", "colormap_name": "rdylgn"}
TITILER_APP = '''
from fastapi import FastAPI
from titiler.core.errors import DEFAULT_STATUS_CODES, add_exception_handlers
from titiler.core.factory import TilerFactory

app = FastAPI()
app.include_router(TilerFactory().router, prefix="/cog")
add_exception_handlers(app, DEFAULT_STATUS_CODES)


@app.get("/health")
def health():
    return {"ok": True}
'''


def _ingest(ctx: Context) -> tuple[str, Path, Path]:
    from geobase.errors import Conflict
    from geobase.imagery.ingest import add_image

    url = ctx.named_database("imagery")
    settings = ctx.settings.model_copy(update={"database_url": url})
    try:
        add_image(settings, SCENE, "landsat", when="2000-02-27", sensor="etm+",
                  bands="b1=blue,b2=green,b3=red,b4=nir,b5=swir16,b6=swir22")
    except Conflict:
        pass  # ingested by an earlier run
    return url, settings.data_path, settings.data_path / "imagery" / "landsat" / "l7_etms.tif"


def _titiler(data_dir: Path) -> Server:
    port = _free_port()
    app_dir = Path(tempfile.mkdtemp(prefix="titiler_"))
    (app_dir / "titiler_bench_app.py").write_text(TITILER_APP)
    env = dict(os.environ, PORT_FOR_BENCH=str(port), PYTHONPATH=str(app_dir))
    return Server([sys.executable, "-m", "uvicorn", "titiler_bench_app:app", "--port", str(port), "--workers", "1",
                   "--log-level", "warning"], env, "/health", data_dir / "titiler.log")


def _tiles(cog: Path) -> list[tuple[int, int, int]]:
    import morecantile
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(cog) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    tms = morecantile.tms.get("WebMercatorQuad")
    return [(t.z, t.x, t.y) for z in (12, 13, 14) for t in tms.tiles(w, s, e, n, [z])]


def _get(client: httpx.Client, url: str, params: dict) -> tuple[float, bytes]:
    t = time.perf_counter()
    r = client.get(url, params=params)
    dt = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
    return dt, r.content


def _pixels(png: bytes):
    from rasterio.io import MemoryFile

    with MemoryFile(png) as mf, mf.open() as ds:
        return ds.read()


def run(ctx: Context) -> None:
    import numpy as np

    url, data_dir, cog = _ingest(ctx)
    tiles = _tiles(cog)[: 12 if ctx.quick else None]
    ours, tit = _ours(url, data_dir), _titiler(data_dir)
    try:
        with httpx.Client(base_url=ours.url, timeout=60) as a, httpx.Client(base_url=tit.url, timeout=60) as b:
            def one(z, x, y):
                ta, pa = _get(a, f"/imagery/landsat/tiles/WebMercatorQuad/{z}/{x}/{y}.png", PARAMS)
                tb, pb = _get(b, f"/cog/tiles/WebMercatorQuad/{z}/{x}/{y}.png", {**PARAMS, "url": str(cog)})
                return ta, tb, pa, pb

            cold_a, cold_b, same = [], [], 0
            for t in tiles:
                ta, tb, pa, pb = one(*t)
                cold_a.append(ta)
                cold_b.append(tb)
                same += bool(np.array_equal(_pixels(pa), _pixels(pb)))
            warm_a, warm_b = [], []
            for _ in range(ctx.rounds):
                ra, rb = [], []
                for t in tiles:
                    ta, tb, _, _ = one(*t)
                    ra.append(ta)
                    rb.append(tb)
                warm_a.append(percentile(ra, 50))
                warm_b.append(percentile(rb, 50))
    finally:
        ours.stop()
        tit.stop()
    extra = {"tiles": len(tiles), "identical_tiles": same, "request": PARAMS}
    ctx.report(Result("imagery NDVI tile p50, cold (first request per tile)", percentile(cold_a, 50) * 1000,
                      percentile(cold_b, 50) * 1000, "titiler-core", "ms", extra=extra))
    ctx.report(Result.rounds("imagery NDVI tile p50, warm (GDAL block cache)", [v * 1000 for v in warm_a],
                             [v * 1000 for v in warm_b], "titiler-core", "ms", extra=extra))

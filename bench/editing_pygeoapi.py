"""The editing benchmark's second baseline: pygeoapi's PostgreSQL provider with transactions.

pygeoapi is the one open-source OGC API - Features server whose PostgreSQL provider writes
(``editable: true``): a PUT replaces the row in place (SQLAlchemy ``merge``), with no If-Match, no
version, no audit and no authorisation, so it is a floor for "an OGC API write over HTTP", not a
like-for-like server. It is not a dependency of geobase: it runs from its own virtualenv, given by
``GEOBASE_BENCH_PYGEOAPI_VENV`` (default ``bench/.pygeoapi-venv``), made once with::

    python3 -m venv bench/.pygeoapi-venv
    bench/.pygeoapi-venv/bin/pip install pygeoapi==0.21.0 psycopg2-binary "SQLAlchemy<2.1" \\
        "GeoAlchemy2<0.16" gunicorn

(0.21.0: the last release for Python 3.11; SQLAlchemy 2.1 / GeoAlchemy2 0.20 fail its writes).
Configuration: gunicorn with 1 sync worker (ours: 1 uvicorn worker), the provider on a plain
table ``bench_pga.parcels`` (id primary key, dlbm, bz, sjnf, geom with a GiST index) holding the
same parcels as version 1 of ours, ``storage_crs`` EPSG:4326 (its writes need an EPSG code).
Without the virtualenv the baseline is left out and the run says so.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import psycopg
from common import REPO
from editing_sql import CELL, LAT0, LON0

NAME = "pygeoapi 0.21.0 PUT (PostgreSQL provider, editable; no If-Match, no version; gunicorn 1 sync worker)"

_CONFIG = """server:
  bind: {{host: 127.0.0.1, port: {port}}}
  url: http://127.0.0.1:{port}
  mimetype: application/json; charset=UTF-8
  encoding: utf-8
  languages: [en-US]
  limits: {{default_items: 10, max_items: 1000}}
  map: {{url: 'https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png', attribution: OSM}}
logging: {{level: ERROR}}
metadata:
  identification: {{title: bench, description: bench, keywords: [bench], keywords_type: theme,
                   terms_of_service: https://example.org, url: https://example.org}}
  license: {{name: CC-BY 4.0, url: https://creativecommons.org/licenses/by/4.0/}}
  provider: {{name: bench, url: https://example.org}}
  contact: {{name: bench, position: bench, address: x, city: x, stateorprovince: x, postalcode: x, country: x,
            phone: x, fax: x, email: x@example.org, url: https://example.org, hours: x, instructions: x,
            role: pointOfContact}}
resources:
  parcels:
    type: collection
    title: parcels
    description: parcels
    keywords: [parcels]
    extents:
      spatial: {{bbox: [119, 30, 120, 31], crs: 'http://www.opengis.net/def/crs/OGC/1.3/CRS84'}}
    providers:
      - type: feature
        name: PostgreSQL
        editable: true
        data: {{host: {host}, port: {dbport}, dbname: {db}, user: {user}, password: '', search_path: [bench_pga]}}
        id_field: id
        table: parcels
        geom_field: geom
        storage_crs: http://www.opengis.net/def/crs/EPSG/0/4326
"""


def venv() -> Path | None:
    path = Path(os.environ.get("GEOBASE_BENCH_PYGEOAPI_VENV", REPO / "bench" / ".pygeoapi-venv"))
    return path if (path / "bin" / "gunicorn").exists() and (path / "bin" / "pygeoapi").exists() else None


def prepare(url: str, parcels: int) -> None:
    """``bench_pga.parcels``: version 1 of ours as a plain table (once per scale; its rows reset)."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('bench_pga.parcels') IS NOT NULL").fetchone()[0]
        if exists and conn.execute("SELECT count(*) FROM bench_pga.parcels").fetchone()[0] == parcels:
            conn.execute("UPDATE bench_pga.parcels SET bz = NULL WHERE bz IS NOT NULL")
            return
        conn.execute("DROP SCHEMA IF EXISTS bench_pga CASCADE")
        conn.execute("CREATE SCHEMA bench_pga")
        conn.execute("CREATE TABLE bench_pga.parcels AS SELECT _key AS id, dlbm, bz, sjnf, "
                     "ST_SetSRID(geom, 4326)::geometry(MultiPolygon, 4326) AS geom FROM data.land_use "
                     "WHERE _vfrom = 1 AND _vto IS NULL")
        conn.execute("ALTER TABLE bench_pga.parcels ADD PRIMARY KEY (id)")
        conn.execute("CREATE INDEX ON bench_pga.parcels USING gist (geom)")
        conn.execute("ANALYZE bench_pga.parcels")


def start(url: str, data_dir: Path, port: int, server_cls) -> object:
    """pygeoapi under gunicorn on ``port`` (its OpenAPI document generated first, as it requires)."""
    from urllib.parse import urlsplit

    home = venv()
    u = urlsplit(url)
    config = data_dir / "pygeoapi.yml"
    config.write_text(_CONFIG.format(port=port, host=u.hostname, dbport=u.port or 5432, db=u.path.lstrip("/"),
                                     user=u.username))
    openapi = data_dir / "pygeoapi-openapi.yml"
    env = dict(os.environ, PYGEOAPI_CONFIG=str(config), PYGEOAPI_OPENAPI=str(openapi), PORT_FOR_BENCH=str(port))
    subprocess.run([str(home / "bin" / "pygeoapi"), "openapi", "generate", str(config), "--output-file", str(openapi)],
                   env=env, check=True, capture_output=True, timeout=300)
    return server_cls([str(home / "bin" / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}",
                       "pygeoapi.flask_app:APP"], env, "/collections/parcels", data_dir / "pygeoapi.log")


def feature(i: int, side: int, dlbm: str, bz: str) -> bytes:
    """Parcel ``i`` of the grid as a GeoJSON Feature (its 20-vertex ring, as loaded)."""
    x0, y0 = LON0 + (i % side) * CELL, LAT0 + (i // side) * CELL
    d = CELL / 5
    ring = [[x0, y0 + k * d] for k in range(5)] + [[x0 + k * d, y0 + CELL] for k in range(5)]
    ring += [[x0 + CELL, y0 + CELL - k * d] for k in range(5)] + [[x0 + CELL - k * d, y0] for k in range(5)]
    ring.append(ring[0])
    return json.dumps({"type": "Feature", "id": f"{i:018d}", "properties": {"dlbm": dlbm, "bz": bz, "sjnf": 2025},
                       "geometry": {"type": "MultiPolygon", "coordinates": [[ring]]}}).encode()


def put(c: httpx.Client, i: int, side: int, dlbm: str, bz: str) -> httpx.Response:
    return c.put(f"/collections/parcels/items/{i:018d}", content=feature(i, side, dlbm, bz),
                 headers={"Content-Type": "application/geo+json"})

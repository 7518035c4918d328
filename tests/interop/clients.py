"""Helpers of the interop tests: the clients' locations and how to run them, and the
database side of every comparison (read with psycopg, never through our own JSON)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from geobase.specs import LayerSpec, load_registry
from geobase.storage import measure_column, table_ident

REGISTRY = load_registry()
#: every vector layer of layers/*.yaml (the acceptance of issue 12 item 1 covers each)
VECTOR_LAYERS = [s.name for s in REGISTRY.layers.values() if s.kind == "vector"]
PUBLIC_VECTOR_LAYERS = [s.name for s in REGISTRY.layers.values() if s.kind == "vector" and s.sharing == "public"]
#: layers written only by their analysis job (geobase/imagery/derived.py): listed, but without rows
#: in the sample county until the job runs; tests/test_imagery_flags.py runs it and reads them
#: through GDAL against the database
DERIVED_LAYERS = [s.name for s in REGISTRY.layers.values() if "derived" in s.keywords]
#: the vector layers the sample county loads: the per-layer value checks run on each
LOADED_VECTOR_LAYERS = [n for n in VECTOR_LAYERS if n not in DERIVED_LAYERS]
REPO_SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "county"
OGR2OGR_36 = "/usr/bin/ogr2ogr"  # Debian 12's GDAL 3.6 (scripts/setup.sh --test installs gdal-bin)

#: GeoPackage column types a spec type may become (GDAL writes a 32-bit Integer as MEDIUMINT)
GPKG_TYPES = {"text": {"TEXT"}, "number": {"REAL"}, "integer": {"INTEGER", "MEDIUMINT"},
              "boolean": {"BOOLEAN"}, "date": {"DATE"}, "datetime": {"DATETIME"}}


def spec_of(layer: str) -> LayerSpec:
    return REGISTRY.layers[layer]


def output_types(spec: LayerSpec) -> dict[str, str]:
    """Property -> spec type of what the items endpoint writes for a caller who sees every
    attribute (the spec's attributes and the stored ellipsoidal area/length)."""
    types = {a.name: a.type for a in spec.attributes}
    m = measure_column(spec)
    if m:
        types[m] = "number"
    return types


def db_rows(database_url: str, spec: LayerSpec) -> dict[str, dict[str, Any]]:
    """The layer's current features as the database holds them: key -> {property: value}."""
    cols = list(output_types(spec))
    q = sql.SQL("SELECT _key, {} FROM {} WHERE _vto IS NULL").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in cols), table_ident(spec))
    with psycopg.connect(database_url) as conn:
        return {r[0]: dict(zip(cols, r[1:])) for r in conn.execute(q)}


def gpkg_columns(path: Path, table: str) -> dict[str, str]:
    """Column -> declared type of a GeoPackage table, read with sqlite3 (not through GDAL)."""
    with sqlite3.connect(path) as conn:
        return {r[1]: r[2] for r in conn.execute(f'PRAGMA table_info("{table}")')}


def gpkg_rows(path: Path, table: str, columns: list[str]) -> dict[str, dict[str, Any]]:
    """id -> {column: value} of a GeoPackage table, read with sqlite3."""
    cols = ", ".join(f'"{c}"' for c in ["id", *columns])
    with sqlite3.connect(path) as conn:
        return {r[0]: dict(zip(columns, r[1:])) for r in conn.execute(f'SELECT {cols} FROM "{table}"')}


def assert_same_values(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]], what: str) -> None:
    """Every feature and value equal (floats bit for bit, text code point for code point)."""
    assert set(got) == set(want), f"{what}: feature ids differ: {len(set(got) ^ set(want))} not in both"
    bad = []
    for key, row in want.items():
        for col, value in row.items():
            g = got[key][col]
            if isinstance(value, (dt.date, dt.datetime)):
                value = value.isoformat()
            if g != value or type(g) is not type(value) and not (isinstance(g, int) and isinstance(value, int)):
                bad.append((key, col, value, g))
    assert not bad, f"{what}: {len(bad)} values differ from the database, e.g. {bad[:5]}"


def run_ogr2ogr(exe: str, args: list[str], key: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """ogr2ogr with the API key sent as a header (GDAL_HTTP_HEADERS), no user config."""
    env = dict(os.environ, CPL_DEBUG="OFF", GDAL_HTTP_TIMEOUT="120")
    env.pop("GDAL_DATA", None)
    if key:
        env["GDAL_HTTP_HEADERS"] = f"X-API-Key: {key}"
    return subprocess.run([exe, *args], check=False, capture_output=True, text=True, env=env, timeout=timeout)


# -- QGIS (make interop) ---------------------------------------------------------------------
QGIS_PYTHON = "/usr/bin/python3"
QGIS_PROBE = Path(__file__).with_name("qgis_probe.py")


def qgis_available() -> bool:
    return shutil.which(QGIS_PYTHON) is not None and subprocess.run(
        [QGIS_PYTHON, "-c", "import qgis.core"], check=False, capture_output=True).returncode == 0


def run_qgis(url: str, layer: str, *, values: list[str] | None = None, timeout: int = 600) -> dict:
    """Open ``layer`` with QGIS's OAPIF provider in a headless QGIS (Debian's python3-qgis run by
    the system Python) and return its fields, and with ``values`` those properties of every
    feature (id -> values)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR="/tmp/runtime-geobase-qgis")
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    args = [QGIS_PYTHON, str(QGIS_PROBE), url, layer, json.dumps(values or [])]
    proc = subprocess.run(args, check=False, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])

"""Interop harness: real third-party clients against a real server over the sample county.

The clients are the ones users run: GDAL 3.6 of Debian 12 (``/usr/bin/ogr2ogr``), the current
GDAL bundled in the pyogrio wheel from PyPI, OWSLib, a CSV reader that decides the encoding the
way Excel does, and (``make interop``: ``-m interop``) QGIS 3.22's OAPIF provider from Debian's
``python3-qgis``. Everything they read is compared with the database read with psycopg, never
with our own JSON.

The GDAL/OWSLib/CSV tests run in ``make test`` against the session's ``county_server``
(tests/conftest.py). The QGIS tests carry the ``interop`` marker, which the default test command
leaves out; ``make interop`` installs QGIS (``scripts/setup.sh --interop``) and runs them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
from interop.clients import OGR2OGR_36


@pytest.fixture(scope="session")
def admin_key(county_shared) -> str:
    """An admin API key in the shared county database: it sees every layer and attribute."""
    from geobase.keys import create_key

    with psycopg.connect(county_shared.database_url, autocommit=True) as conn:
        return create_key(conn, name="interop", role="admin", department=None).token


@pytest.fixture(scope="session")
def ogr2ogr_36() -> str:
    """Debian 12's ogr2ogr (GDAL 3.6); the test fails if it is missing (setup.sh installs it)."""
    assert Path(OGR2OGR_36).exists(), "gdal-bin is missing: run scripts/setup.sh --test"
    out = subprocess.run([OGR2OGR_36, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("GDAL 3."), out
    return OGR2OGR_36

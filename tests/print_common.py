"""Shared by tests/test_print*.py and tests/test_wmts*.py: the small test county
(tests/test_tiles_data.py: 20 x 20 parcels of 0.005° at 113.00..113.10 E, 30.00..30.10 N, the
land-use class by column) behind a live server, an admin key, and colour helpers."""

from __future__ import annotations

import psycopg
import pytest
from test_tiles_data import LAND_CODES, LAND_COLOURS, LAT0, LON0, STEP, load_test_county

from geobase.db import database_url
from geobase.keys import create_key


@pytest.fixture(scope="module")
def county_small(pg_server, template_db, tmp_path_factory, request):
    from conftest import create_database, drop_database, settings_for

    name = f"gb_print_{request.module.__name__.rsplit('.', 1)[-1][:20]}"
    url = create_database(pg_server, name, template_db)
    s = settings_for(url, tmp_path_factory.mktemp("printcounty"))
    load_test_county(s, dem=False)
    yield s
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def admin_token(county_small) -> str:
    with psycopg.connect(database_url(county_small)) as conn:
        token = create_key(conn, name="print-admin", role="admin", department=None).token
        conn.commit()
    return token


def parcel_centre(i: int, j: int) -> tuple[float, float]:
    """Lon/lat of the centre of parcel (column i, row j)."""
    return LON0 + (i + 0.5) * STEP, LAT0 + (j + 0.5) * STEP


def class_of_column(i: int) -> str:
    return LAND_CODES[i % len(LAND_CODES)]


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))  # type: ignore[return-value]


def blended(hex_colour: str, alpha: float) -> tuple[int, int, int]:
    """The colour a fill of ``alpha`` over white shows."""
    return tuple(round(c * alpha + 255 * (1 - alpha)) for c in rgb(hex_colour))  # type: ignore[return-value]


def close(a, b, tol: int = 6) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


__all__ = ["LAND_COLOURS", "blended", "class_of_column", "close", "parcel_centre", "rgb"]

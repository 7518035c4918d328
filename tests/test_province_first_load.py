"""A county's first delivery into a province loads straight into its new partition (issue 16's
figure "ingest of one county into a 10-county province vs into an empty database <= 1.1").

Before, only a first load into an *empty* layer (or one naming its county with ``--division``)
skipped staging; a county whose rows name it, delivered into a layer holding other counties,
was COPYed into staging and INSERTed again into its new partition: its rows written twice, 1.22x
the empty database's ingest at 10 x 200,000 parcels. Now the county of the file's first row
decides, as ``--division`` does: no partition yet, so the rows go straight into the new one.
Observed from another connection while the rows load: no staging table exists. A re-delivery of
a county that has a partition still goes through staging (it is diffed against its rows), and a
file whose later rows name another county is loaded through staging as before.

Real PostGIS, real Shapefiles through GDAL.
"""

from __future__ import annotations

import psycopg
from geobase.ingest import pipeline
from geobase.ingest.pipeline import ingest
from test_divisions import A, B, C, county_gdf, county_rows, load, partitions
from test_ingest import query, write_shp


def _staging_tables(settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'").fetchone()[0]


def _ingest_watching(settings, path, seen: list[int], **kw):
    """Ingest ``path`` into land use; at each batch, count the staging tables another
    connection sees (0 while a direct load COPYs: its table is not committed, and not staging)."""
    return ingest(settings, "land_use", path, coverage=False, progress=lambda *_: seen.append(_staging_tables(settings)),
                  **kw)


def test_a_new_countys_delivery_into_a_province_loads_straight_into_its_partition(db_settings, tmp_path, monkeypatch):
    s = db_settings
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 0)  # the sizes a bench loads, with 16 parcels
    load(s, tmp_path, A)
    before = county_rows(s, A)
    seen: list[int] = []
    gdf = county_gdf(B, dx=2000)
    r = _ingest_watching(s, write_shp(gdf, tmp_path / "b"), seen)  # no --division: the rows name county B
    assert seen and seen == [0] * len(seen), "the new county's rows went through a staging table"
    assert r.divisions == [B] and r.added == len(gdf) and r.removed == 0
    assert partitions(s) == ["land_use__000000", f"land_use__{A}", f"land_use__{B}"]
    assert county_rows(s, A) == before  # the other county: not a row touched
    assert query(s, "SELECT count(*) FROM data.land_use WHERE division = %s AND _vto IS NULL", (B,))[0][0] == len(gdf)
    assert query(s, "SELECT touched FROM catalog.layer_versions WHERE version = %s", (r.version,))[0][0] == [B]
    assert query(s, "SELECT count(*) FROM pg_tables WHERE schemaname = 'data' AND position('__load_' in tablename) > 0"
                 )[0][0] == 0

    again: list[int] = []  # county B again: diffed against its partition's rows, through staging
    gdf2 = gdf.copy()
    gdf2.loc[0, "DLBM"] = "0702"
    r2 = _ingest_watching(s, write_shp(gdf2, tmp_path / "b2"), again)
    assert again and max(again) == 1
    assert (r2.divisions, r2.added, r2.removed, r2.changed) == ([B], 0, 0, 1)
    assert county_rows(s, A) == before


def test_a_delivery_whose_later_rows_name_another_county_goes_through_staging(db_settings, tmp_path, monkeypatch):
    s = db_settings
    monkeypatch.setattr(pipeline, "DIRECT_MIN_ROWS", 0)
    load(s, tmp_path, A)
    gdf = county_gdf(B, dx=2000)
    gdf.loc[len(gdf) // 2:, "ZLDWDM"] = f"{C}1010010000000"  # the first rows name B, the later ones C
    seen: list[int] = []
    r = _ingest_watching(s, write_shp(gdf, tmp_path / "bc"), seen)
    assert seen and max(seen) == 1  # the direct load was rolled back at C's first row; staging loaded both
    assert sorted(r.divisions) == [B, C]
    assert query(s, "SELECT division, count(*) FROM data.land_use WHERE _vto IS NULL AND division <> %s "
                    "GROUP BY 1 ORDER BY 1", (A,)) == [(B, len(gdf) // 2), (C, len(gdf) - len(gdf) // 2)]
    assert partitions(s) == ["land_use__000000", f"land_use__{A}", f"land_use__{B}", f"land_use__{C}"]

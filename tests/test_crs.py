"""geobase/crs.py is the one home of CRS parsing: the API's CRS URIs and the CRSs deliveries
name (it absorbed ingest/crs.py). These pin what both users rely on, without a database."""

from __future__ import annotations

import pytest

from geobase import crs
from geobase.errors import InvalidInput


@pytest.mark.parametrize(("prj", "epsg"), [
    ('PROJCS["CGCS2000_3_Degree_GK_Zone_39",GEOGCS[...]]', 4527),
    ('PROJCS["CGCS2000_3_Degree_GK_CM_117E",GEOGCS[...]]', 4548),
    ('PROJCS["CGCS2000_GK_Zone_20",GEOGCS[...]]', 4498),
    ('PROJCS["CGCS2000_GK_CM_117E",GEOGCS[...]]', 4509),
    ('GEOGCS["GCS_China_Geodetic_Coordinate_System_2000",DATUM[...]]', 4490),
    ('PROJCS["CGCS2000_3_Degree_GK_Zone_99",GEOGCS[...]]', None),
    ('PROJCS["WGS_1984_Web_Mercator",GEOGCS[...]]', None),
])
def test_arcgis_gk_names_map_to_their_epsg_codes(prj: str, epsg: int | None) -> None:
    assert crs.gk_epsg_from_name(prj) == epsg


def test_a_delivery_crs_named_by_prj_wins_over_the_fuzzy_wkt() -> None:
    got = crs.file_crs("EPSG:4326", b'PROJCS["CGCS2000_3_Degree_GK_Zone_39",GEOGCS[]]')
    assert got.to_epsg() == 4527 and crs.describe(got).startswith("EPSG:4527 ")
    assert crs.file_crs(None) is None and crs.file_crs("not a crs") is None
    assert crs.file_crs("EPSG:4490").to_epsg() == 4490


def test_an_operator_crs_proj_does_not_understand_is_a_400_naming_crs() -> None:
    assert crs.parse_user_crs("EPSG:4527").to_epsg() == 4527
    with pytest.raises(InvalidInput) as exc:
        crs.parse_user_crs("EPSG:999999")
    assert exc.value.parameter == "crs" and "--crs" in exc.value.message


def test_a_refusal_suggests_the_crs_the_coordinates_look_like() -> None:
    assert "EPSG:4490" in crs.suggest_from_bounds((117.0, 29.0, 118.0, 30.0))
    assert "EPSG:4527" in crs.suggest_from_bounds((39_500_000.0, 3_300_000.0, 39_600_000.0, 3_400_000.0))
    assert "EPSG:4498" in crs.suggest_from_bounds((20_500_000.0, 3_300_000.0, 20_600_000.0, 3_400_000.0))
    assert "without a zone prefix" in crs.suggest_from_bounds((400_000.0, 3_300_000.0, 500_000.0, 3_400_000.0))
    assert "--crs" in crs.suggest_from_bounds(None)


def test_the_api_resolves_crs_uris_with_their_axis_order() -> None:
    assert crs.parse_crs(None, "crs") == crs.Crs(crs.CRS84, 4326, False)
    assert crs.parse_crs("EPSG:4490", "crs") == crs.Crs(crs.STORAGE_CRS, 4490, True)
    assert crs.parse_crs(crs.EPSG_URI.format(4527), "bbox-crs").flip  # GK zones: northing first
    with pytest.raises(InvalidInput) as exc:
        crs.parse_crs("EPSG:2000", "bbox-crs")
    assert exc.value.parameter == "bbox-crs"

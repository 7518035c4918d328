"""One CRS parser (issue 14): the CRS an analysis input is declared in is read by geobase/crs.py,
the parser of the features API, so the two cannot disagree on which CRSs exist (the analysis
input kept its own ``parse_crs`` and its own list of supported codes)."""

from __future__ import annotations

import pytest
from shapely.geometry import box, mapping

from geobase import crs
from geobase.analysis.input import parse_geojson
from geobase.errors import InvalidInput
from geobase.settings import Settings

GK = [*range(4491, 4555)]


@pytest.mark.parametrize("srid", [4490, 4326, 3857, *GK])
def test_every_crs_of_the_features_api_is_an_input_crs_in_every_spelling(srid):
    assert crs.parse_crs(crs.EPSG_URI.format(srid), "crs").srid == srid
    assert crs.is_supported(srid)
    for spelling in (srid, str(srid), f"EPSG:{srid}", f"epsg:{srid}", f"urn:ogc:def:crs:EPSG::{srid}",
                     crs.EPSG_URI.format(srid)):
        assert crs.parse_input_crs(spelling) == srid, spelling


@pytest.mark.parametrize("value", [None, "", "CRS84", "crs84", "OGC:CRS84", crs.CRS84,
                                   "urn:ogc:def:crs:OGC:1.3:CRS84"])
def test_crs84_is_lon_lat_without_a_code(value):
    assert crs.parse_input_crs(value) is None


@pytest.mark.parametrize("value", ["EPSG:4555", "EPSG:4490x", 2000, "EPSG:4214", "WGS84", "4326; DROP TABLE x"])
def test_what_the_features_api_refuses_an_input_refuses_too(value, tmp_path):
    with pytest.raises(InvalidInput) as exc:
        crs.parse_input_crs(value)
    assert exc.value.parameter == "crs" and "Gauss-Kruger zone (EPSG:4491-4554)" in exc.value.message
    with pytest.raises(InvalidInput):
        parse_geojson(mapping(box(118.3, 30.0, 118.31, 30.01)), Settings(data_dir=tmp_path), crs=value)


def test_the_zone_prefix_table_is_the_one_of_gk_zones():
    """The prefixed zones are those crs.gk_zones names for the prefixed 3° and 6° series."""
    assert set(crs.GK_ZONE_PREFIX) | crs.GK_UNPREFIXED == set(GK)
    assert crs.GK_ZONE_PREFIX[4527] == 39 and crs.GK_ZONE_PREFIX[4498] == 20 and 4548 in crs.GK_UNPREFIXED
    assert set(crs.gk_zones([73.5, 0, 135.5, 0])) == set(GK)

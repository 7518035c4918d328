"""The README's province (``geobase sample generate --counties 10``, default seed 20261206) can be
made: its outline is one valid polygon covering exactly its counties (GEOS 3.14's coverage
union fails on this outline; the generator then takes the full union)."""

from __future__ import annotations

import shapely
from geobase.sample_data.province_world import Province


def test_the_default_ten_county_province_has_a_valid_outline_of_its_counties():
    p = Province(20261206, 10, 339901)
    assert len(p.counties) == 10
    assert p.outline.geom_type == "Polygon" and p.outline.is_valid
    counties = shapely.union_all(p.counties)
    assert abs(p.outline.area - sum(c.area for c in p.counties)) <= 1e-9 * p.outline.area
    assert shapely.symmetric_difference(p.outline, counties).area <= 1e-9 * p.outline.area

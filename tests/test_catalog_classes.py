"""The resource catalogue's 4x4 classification (issue 19): every shipped layer declares its data
class (现状/规划/管理/社会经济), level (国家/省/市/县) and themes in its spec, so every record of the
sample county has them and the class, level and theme facets are never empty; filtering by a
facet value finds exactly the layers that declare it; an admin's metadata still overrides."""

from __future__ import annotations

import httpx

from geobase.opendata.classes import CLASSES, LEVELS
from geobase.specs import load_registry


def test_every_shipped_layer_is_classified():
    registry = load_registry()
    assert registry.layers
    for name, spec in registry.layers.items():
        assert spec.catalog is not None, name
        assert spec.catalog.data_class in CLASSES and spec.catalog.level in LEVELS and spec.catalog.themes, name


def test_facets_never_empty(county_server):
    registry = load_registry()
    with httpx.Client(base_url=county_server.url, timeout=60) as c:
        r = c.get("/catalog/items", params={"limit": 1000})
        assert r.status_code == 200, r.text
        doc = r.json()
        records = {f["id"]: f["properties"] for f in doc["features"]}
        layers = [n for n in registry.layers if n in records]
        assert layers
        facets = doc["facets"]
        for name in ("class", "level", "theme"):
            assert facets[name], name
        # every listed layer is counted in the class and level facets (none fell back to nothing)
        assert sum(facets["class"].values()) == len(records) == sum(facets["level"].values())
        for n in layers:
            spec = registry.layers[n].catalog
            assert records[n]["dataClass"] == spec.data_class and records[n]["level"] == spec.level, n
            themes = {c["id"] for t in records[n]["themes"] if t["scheme"] == "geobase:theme" for c in t["concepts"]}
            assert set(spec.themes) <= themes, n
        # a facet value finds exactly the layers declaring it
        planning = {f["id"] for f in c.get("/catalog/items", params={"class": "planning", "limit": 1000}).json()["features"]}
        assert planning == {n for n in layers if registry.layers[n].catalog.data_class == "planning"} and planning
        water = {f["id"] for f in c.get("/catalog/items", params={"theme": "水资源", "limit": 1000}).json()["features"]}
        assert water == {n for n in layers if "水资源" in registry.layers[n].catalog.themes} and water

"""The resource catalogue's 4x4 classification (资源目录: data class 现状/规划/管理/社会经济 x
administrative level 国家/省/市/县) and themes, as every layer spec declares them (``catalog:``)
so that a record's class, level and theme facets are never empty; an admin's metadata
(``PUT /admin/catalog/{id}``) overrides them per record (:mod:`geobase.catalog.records`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DataClass = Literal["status", "planning", "management", "socioeconomic"]
Level = Literal["national", "provincial", "municipal", "county"]

#: the terms as the catalogue prints them
CLASSES: dict[str, str] = {"status": "现状", "planning": "规划", "management": "管理", "socioeconomic": "社会经济"}
LEVELS: dict[str, str] = {"national": "国家", "provincial": "省", "municipal": "市", "county": "县"}


class CatalogDefaults(BaseModel):
    """A layer's place in the catalogue: its data class, the administrative level that owns the
    data, and its themes (主题). Required in every shipped spec (tests/test_catalog_classes.py)."""

    # defer_build: its schema is built by its first use, not by every server start (issue #15)
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    data_class: DataClass
    level: Level
    themes: list[str] = Field(min_length=1, max_length=20)

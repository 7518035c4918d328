"""The shared words (geobase/vocab.py) are defined once and every checker agrees with them.

Names of layers and departments were checked by two patterns that disagreed: ``{0,62}`` after
the first letter (layer specs, the gate, analysis rules) and ``{1,62}`` (department codes, the
admin API), so a one-letter department was refused by the API while a one-letter layer was a
valid spec. The right one is ``{0,62}``: 1 to 63 characters, the length of a PostgreSQL
identifier (a layer's name is its table's name)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from geobase import vocab
from geobase.catalog import departments
from geobase.api.admin import DepartmentIn, KeyIn, SharingIn
from geobase.errors import InvalidInput
from geobase.limits import LAYER_IN_PATH_RE
from geobase.specs import Attribute

GOOD = ["a", "z9", "land_use", "a" * 63, "a_" + "0" * 61]
BAD = ["", "A", "9a", "_a", "a-b", "a" * 64, "abc\n", "ab c", "lánd", "a\x00"]


@pytest.mark.parametrize("name", GOOD)
def test_a_name_of_1_to_63_characters_is_accepted_everywhere(name: str) -> None:
    assert vocab.is_name(name)
    assert Attribute(name=name).name == name
    assert DepartmentIn(code=name, name_zh="部门", name_en="dept").code == name
    assert KeyIn(name="k", role="viewer", department=name).department == name
    assert LAYER_IN_PATH_RE.match(f"/collections/{name}/items").group(1) == name


@pytest.mark.parametrize("name", BAD)
def test_a_bad_name_is_refused_everywhere(name: str) -> None:
    assert not vocab.is_name(name)
    with pytest.raises(ValidationError):
        Attribute(name=name)
    with pytest.raises(ValidationError):
        DepartmentIn(code=name, name_zh="部门", name_en="dept")
    with pytest.raises(InvalidInput):
        departments.add_department(None, name, "部门", "dept")  # refused before the database is asked
    m = LAYER_IN_PATH_RE.match(f"/collections/{name}/items")
    assert m is None or m.group(1) != name


def test_the_words_are_the_ones_the_api_accepts() -> None:
    assert vocab.SHARING_LEVELS == ("public", "internal", "restricted", "private")
    assert vocab.ROLES == ("viewer", "analyst", "editor", "steward", "admin")
    assert [vocab.ROLE_RANK[r] for r in vocab.ROLES] == [0, 1, 2, 3, 4]
    assert vocab.INGEST_MODES == ("replace", "append", "upsert", "delete")
    for level in vocab.SHARING_LEVELS:
        assert SharingIn(sharing=level).sharing == level
    with pytest.raises(ValidationError):
        SharingIn(sharing="secret")
    for role in vocab.ROLES:
        assert KeyIn(name="k", role=role).role == role
    with pytest.raises(ValidationError):
        KeyIn(name="k", role="superuser")

"""Layer specs: the declarative description of every layer, loaded from ``layers/*.yaml``.

A spec says what a layer is (titles, owner department, sharing level, licence), what its rows
look like (attributes with types, code lists and the field names real deliveries use), and how
it is drawn (tile zooms, per-zoom attributes, colours). Ingest, the features API, tiles, the
style and the analyses all read the layer from here, so a layer is added by adding a file.

Loading validates every file and reports errors as ``file: key.path: problem``.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from geobase.errors import SpecError
from geobase.opendata.classes import CatalogDefaults
from geobase.opendata.desensitise import DesensitiseRule, check_rules
from geobase.opendata.grades import Grade, Openness
from geobase.vocab import NAME_PATTERN, Audience, SharingLevel

AttrType = Literal["text", "integer", "number", "boolean", "date", "datetime"]
GeometryType = Literal["MultiPolygon", "MultiLineString", "MultiPoint"]

PG_TYPES = {
    "text": "text",
    "integer": "bigint",
    "number": "double precision",
    "boolean": "boolean",
    "date": "date",
    "datetime": "timestamptz",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalText(_Strict):
    zh: str
    en: str


class Code(_Strict):
    code: str
    zh: str
    en: str
    color: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")
    group: str | None = None  # e.g. the first-level class of a second-level code
    category: str | None = None  # e.g. GB/T 21010 三大类: A agricultural, C construction, U unused
    minzoom: int | None = Field(default=None, ge=0, le=24)
    assignable: bool = Field(default=True, description="False for group headings that features may not carry")


class CodeList(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    scheme: str
    title: LocalText
    codes: list[Code]

    @model_validator(mode="after")
    def _unique(self) -> "CodeList":
        seen: set[str] = set()
        for c in self.codes:
            if c.code in seen:
                raise ValueError(f"duplicate code {c.code!r}")
            seen.add(c.code)
        return self

    def lookup(self) -> dict[str, Code]:
        return {c.code: c for c in self.codes}


class Department(_Strict):
    code: str = Field(pattern=NAME_PATTERN)
    name: LocalText
    contact: str | None = None


class Attribute(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    type: AttrType = "text"
    title: LocalText | None = None
    required: bool = False
    source: list[str] = Field(default_factory=list, description="field names seen in real deliveries")
    code_list: str | None = None
    unit: str | None = None
    hidden_from: list[Audience] = Field(
        default_factory=list, description="audiences that must not see this attribute (masked)"
    )
    description: str | None = None

    @property
    def pg_type(self) -> str:
        return PG_TYPES[self.type]


class TileSpec(_Strict):
    minzoom: int = Field(default=0, ge=0, le=24)
    maxzoom: int = Field(default=16, ge=0, le=24)
    attributes: list[str] = Field(default_factory=list, description="attributes in tiles from minzoom")
    detail_zoom: int | None = Field(default=None, ge=0, le=24, description="zoom from which detail_attributes appear")
    detail_attributes: list[str] = Field(default_factory=list)
    min_area_px: float = Field(default=1.0, ge=0, description="drop polygons smaller than this many pixels²")

    @model_validator(mode="after")
    def _order(self) -> "TileSpec":
        if self.minzoom > self.maxzoom:
            raise ValueError(f"minzoom {self.minzoom} > maxzoom {self.maxzoom}")
        return self


class StyleSpec(_Strict):
    kind: Literal["fill", "line", "outline", "circle", "raster"] = "fill"
    color: str = Field(default="#888888", pattern=r"^#[0-9a-fA-F]{6}$")
    class_field: str | None = Field(default=None, description="attribute whose code list colours features")
    opacity: float = Field(default=0.7, ge=0, le=1)
    line_width: float = Field(default=1.0, ge=0)
    order: int = Field(default=0, description="draw order in the one map (low first)")


class RasterSpec(_Strict):
    unit: str = "m"
    nodata: float | None = None
    resampling: str = "bilinear"


class LayerSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    title: LocalText
    description: str
    department: str
    sharing: SharingLevel = "internal"
    shared_with: list[str] = Field(default_factory=list, description="departments for sharing=restricted")
    grade: Grade = Field(default="general", description="data grade: general (一般) / important (重要) / core (核心)")
    openness: Openness = Field(default="open", description="openness class: open (无条件开放) / conditional (有条件开放) "
                               "/ closed (不予开放); see geobase.opendata.grades for the zones each may exist in")
    desensitise: dict[Openness, list[DesensitiseRule]] = Field(
        default_factory=dict, description="per openness class: drop/mask/round/township rules applied to outside "
        "callers (geobase/opendata/desensitise.py)")
    catalog: CatalogDefaults | None = Field(default=None, description="resource catalogue: data class, level, themes")
    licence: str
    contact: str
    update_frequency: Literal["continual", "daily", "weekly", "monthly", "quarterly", "annual", "irregular", "as-needed"]
    keywords: list[str] = Field(default_factory=list)
    kind: Literal["vector", "raster"] = "vector"
    geometry: GeometryType | None = None
    coverage: bool = Field(default=False, description="features tile the area with no gaps or overlaps")
    source_key: list[str] = Field(default_factory=list, description="attributes forming the stable feature key")
    source_layers: list[str] = Field(default_factory=list, description="layer names seen in deliveries")
    class_field: str | None = Field(default=None, description="the attribute that classifies features")
    stated_area_field: str | None = Field(default=None, description="attribute holding the delivery's stated area")
    stated_area_unit: Literal["m2", "ha"] = "m2"
    attributes: list[Attribute] = Field(default_factory=list)
    tiles: TileSpec = Field(default_factory=TileSpec)
    style: StyleSpec = Field(default_factory=StyleSpec)
    raster: RasterSpec | None = None

    @field_validator("attributes")
    @classmethod
    def _unique_attrs(cls, attrs: list[Attribute]) -> list[Attribute]:
        names = [a.name for a in attrs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate attribute names: {sorted(dup)}")
        reserved = {n for n in names if n.startswith("_") or n in ("geom", "geom_3857", "id")}
        if reserved:
            raise ValueError(f"reserved attribute names: {sorted(reserved)}")
        return attrs

    @model_validator(mode="after")
    def _consistent(self) -> "LayerSpec":
        names = {a.name for a in self.attributes}
        if self.kind == "vector":
            if self.geometry is None:
                raise ValueError("geometry: required for vector layers")
            if not self.source_key:
                raise ValueError("source_key: required for vector layers (the stable feature key)")
        for key, value in (("source_key", self.source_key), ("tiles.attributes", self.tiles.attributes),
                           ("tiles.detail_attributes", self.tiles.detail_attributes)):
            missing = [v for v in value if v not in names]
            if missing:
                raise ValueError(f"{key}: unknown attributes {missing}")
        for key, value in (("class_field", self.class_field), ("stated_area_field", self.stated_area_field),
                           ("style.class_field", self.style.class_field)):
            if value and value not in names:
                raise ValueError(f"{key}: unknown attribute {value!r}")
        if self.sharing == "restricted" and not self.shared_with:
            raise ValueError("shared_with: required when sharing is 'restricted'")
        for cls, rules in self.desensitise.items():  # geobase/opendata/desensitise.py
            check_rules(cls, rules, {a.name: a.type for a in self.attributes})
        return self

    # -- helpers used across services ------------------------------------------------------
    @property
    def table(self) -> str:
        return self.name

    def attribute(self, name: str) -> Attribute:
        for a in self.attributes:
            if a.name == name:
                return a
        raise KeyError(name)

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def source_field_map(self) -> dict[str, str]:
        """Upper-cased delivery field name -> our attribute name (our own name matches too)."""
        mapping: dict[str, str] = {}
        for a in self.attributes:
            mapping[a.name.upper()] = a.name
            for s in a.source:
                mapping[s.upper()] = a.name
        return mapping

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


class Registry(BaseModel):
    """Everything in a specs directory: departments, code lists and layers, cross-checked."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    root: Path
    departments: dict[str, Department]
    code_lists: dict[str, CodeList]
    layers: dict[str, LayerSpec]

    def layer(self, name: str) -> LayerSpec:
        from geobase.errors import NotFound

        try:
            return self.layers[name]
        except KeyError:
            raise NotFound(f"unknown layer {name!r}") from None

    def code_list(self, name: str) -> CodeList:
        return self.code_lists[name]

    def codes_for(self, spec: LayerSpec, attribute: str) -> dict[str, Code] | None:
        attr = spec.attribute(attribute)
        return self.code_lists[attr.code_list].lookup() if attr.code_list else None


def default_layers_dir() -> Path:
    import geobase.layer_specs as pkg

    return Path(pkg.__file__).parent


#: libyaml's safe loader where PyYAML was built with it (the wheels are): the specs parse in a
#: fraction of the pure-Python loader's time, which every CLI command pays at start.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    """A spec or rules file as data; SpecError naming the file when it is not valid YAML/UTF-8."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text: {exc}") from exc


def _format_validation(path: Path, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{loc}: {msg}")
    return f"{path}: " + "; ".join(problems)


def _parse(model: type[BaseModel], path: Path, data: Any) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_validation(path, exc)) from None


def load_registry(root: Path | None = None) -> Registry:
    """Load and cross-check every spec under ``root`` (default: the shipped ``layers/``)."""
    root = Path(root) if root else default_layers_dir()
    if not root.is_dir():
        raise SpecError(f"{root}: layer specs directory does not exist")

    dept_file = root / "departments.yaml"
    if not dept_file.exists():
        raise SpecError(f"{dept_file}: missing (departments are declared there)")
    raw = read_yaml(dept_file) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("departments"), list):
        raise SpecError(f"{dept_file}: departments: expected a list")
    departments: dict[str, Department] = {}
    for i, item in enumerate(raw["departments"]):
        try:
            d = Department.model_validate(item)
        except ValidationError as exc:
            raise SpecError(_format_validation(dept_file, exc).replace(": ", f": departments.{i}.", 1)) from None
        departments[d.code] = d

    code_lists: dict[str, CodeList] = {}
    for path in sorted((root / "codelists").glob("*.yaml")):
        cl = _parse(CodeList, path, read_yaml(path))
        if cl.name != path.stem:
            raise SpecError(f"{path}: name: {cl.name!r} must match the file name {path.stem!r}")
        code_lists[cl.name] = cl

    layers: dict[str, LayerSpec] = {}
    for path in sorted(root.glob("*.yaml")):
        if path.name == "departments.yaml":
            continue
        spec = _parse(LayerSpec, path, read_yaml(path))
        if spec.name != path.stem:
            raise SpecError(f"{path}: name: {spec.name!r} must match the file name {path.stem!r}")
        if spec.department not in departments:
            raise SpecError(f"{path}: department: unknown department {spec.department!r} (known: {sorted(departments)})")
        for d in spec.shared_with:
            if d not in departments:
                raise SpecError(f"{path}: shared_with: unknown department {d!r}")
        for i, attr in enumerate(spec.attributes):
            if attr.code_list and attr.code_list not in code_lists:
                raise SpecError(
                    f"{path}: attributes.{i}.code_list: unknown code list {attr.code_list!r} "
                    f"(known: {sorted(code_lists)})"
                )
        layers[spec.name] = spec
    if not layers:
        raise SpecError(f"{root}: no layer specs (*.yaml) found")
    return Registry(root=root, departments=departments, code_lists=code_lists, layers=layers)


@lru_cache(maxsize=8)
def _cached(root: str) -> Registry:
    return load_registry(Path(root))


def get_registry(settings=None) -> Registry:
    """The registry for the configured specs directory (cached per directory)."""
    from geobase.settings import get_settings

    settings = settings or get_settings()
    root = settings.layers_dir or default_layers_dir()
    return _cached(str(Path(root).resolve()))


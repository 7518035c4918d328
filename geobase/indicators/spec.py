"""Indicator models declared as data (``layers/indicators/*.yaml``), validated at start like the
layer specs, and compiled to the area terms geobase computes.

Why terms: every shipped indicator is a sum (or a ratio of sums) of areas of the kind "features
of layer X matching a filter, inside township T, optionally inside the zone features of layer Z
matching a filter". Such an area is additive over features, so when one layer gets a new
version the term changes by the area of the rows it added minus the rows it retired
(geobase/indicators/engine.py): an incremental recompute costs the change, not the county. An
indicator keeps its terms' m² (``parts``) and derives its value from them.

A typo (an unknown layer, attribute, code or unit) fails when the file is loaded: the filters
are compiled with :func:`geobase.analysis.rules.compile_filter` against the layer specs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from geobase.errors import InvalidInput, SpecError
from geobase.specs import Registry, read_yaml
from geobase.vocab import NAME_PATTERN

#: the layer whose townships (level township, code xzqdm) the indicators are computed for
DIVISIONS_LAYER = "admin_divisions"
#: m² per unit of an area indicator
UNIT_M2 = {"m²": 1.0, "ha": 10_000.0, "mu": 10_000.0 / 15}
UNITS = (*UNIT_M2, "%")
LEVELS = ("county", "township")
FARMLAND = {"dlbm": {"group": ["01"]}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AreaOf(_Strict):
    layer: str
    where: dict[str, Any] = Field(default_factory=dict)


class Zoned(AreaOf):
    zone_layer: str
    zone: dict[str, Any] = Field(default_factory=dict)


class Steep(_Strict):
    min_slope_deg: float = Field(gt=0, lt=90)
    layer: str = "land_use"
    where: dict[str, Any] = Field(default_factory=lambda: dict(FARMLAND))
    dem_layer: str = "dem"


class AreaDefinition(_Strict):
    """Exactly one of the area kinds."""

    area_of: AreaOf | None = None
    area_inside: Zoned | None = None
    area_outside: Zoned | None = None
    steep_farmland: Steep | None = None

    @model_validator(mode="after")
    def _one(self) -> AreaDefinition:
        if sum(v is not None for v in (self.area_of, self.area_inside, self.area_outside, self.steep_farmland)) != 1:
            raise ValueError("give exactly one of area_of, area_inside, area_outside, steep_farmland")
        return self


class Share(_Strict):
    part: AreaDefinition
    whole: AreaDefinition


class Definition(AreaDefinition):
    share: Share | None = None

    @model_validator(mode="after")
    def _one(self) -> Definition:
        n = sum(v is not None for v in (self.area_of, self.area_inside, self.area_outside, self.steep_farmland,
                                        self.share))
        if n != 1:
            raise ValueError("give exactly one of area_of, area_inside, area_outside, steep_farmland, share")
        return self


class Thresholds(_Strict):
    direction: Literal["at_least", "at_most"]
    red: float = Field(ge=0)
    yellow: float = Field(ge=0)

    @model_validator(mode="after")
    def _order(self) -> Thresholds:
        if self.direction == "at_least" and self.yellow < self.red:
            raise ValueError("at_least: yellow (a margin above the target) must be >= red")
        if self.direction == "at_most" and self.yellow > self.red:
            raise ValueError("at_most: yellow (a margin below the target) must be <= red")
        return self


class IndicatorModel(_Strict):
    id: str = Field(pattern=NAME_PATTERN)
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    unit: Literal["ha", "mu", "%", "m²"]
    definition: Definition
    applies_to: list[Literal["county", "township"]] = Field(min_length=1)
    thresholds: Thresholds | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _unit(self) -> IndicatorModel:
        if (self.unit == "%") != (self.definition.share is not None):
            raise ValueError("unit '%' goes with a share definition, and a share with unit '%'")
        return self


class _File(_Strict):
    indicators: list[IndicatorModel]


@dataclass(frozen=True)
class Term:
    """One additive area: features of ``layer`` matching ``where`` in a township, inside the
    features of ``zone_layer`` matching ``zone`` when given, or (``min_slope``) on parcels whose
    mean DEM slope exceeds it. ``where``/``zone`` are canonical JSON (hashable)."""

    layer: str
    where: str
    zone_layer: str | None = None
    zone: str | None = None
    min_slope: float | None = None
    dem_layer: str | None = None

    @property
    def key(self) -> str:
        """A short stable name of the term (the key of its m² in a value's ``parts``)."""
        text = json.dumps([self.layer, self.where, self.zone_layer, self.zone, self.min_slope], ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def layers(self) -> set[str]:
        return {x for x in (self.layer, self.zone_layer, self.dem_layer, DIVISIONS_LAYER) if x}

    def filter(self, which: str = "where") -> dict:
        return json.loads(getattr(self, which) or "{}")


@dataclass(frozen=True)
class Indicator:
    """A compiled indicator: value = sum of sign x term (``num``), or 100 x num / den (a share)."""

    model: IndicatorModel
    num: tuple[tuple[Term, int], ...]
    den: tuple[tuple[Term, int], ...] | None = None
    layers: frozenset[str] = field(default_factory=frozenset)

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def terms(self) -> list[Term]:
        return [t for t, _ in self.num + (self.den or ())]

    def value(self, parts: dict[str, float]) -> float | None:
        """The value in the indicator's unit from its terms' m² (None: a share of nothing)."""
        num = sum(sign * parts.get(t.key, 0.0) for t, sign in self.num)
        if self.den is None:
            return num / UNIT_M2[self.model.unit]
        den = sum(sign * parts.get(t.key, 0.0) for t, sign in self.den)
        return 100.0 * num / den if den > 1e-6 else None

    def document(self) -> dict:
        """The model as listed by the API (names, unit, definition, levels, thresholds)."""
        return {**self.model.model_dump(mode="json", exclude_none=True), "layers": sorted(self.layers)}


def _canon(flt: dict) -> str:
    return json.dumps(flt, sort_keys=True, ensure_ascii=False)


def _terms(d: AreaDefinition) -> tuple[tuple[Term, int], ...]:
    if d.area_of is not None:
        return ((Term(d.area_of.layer, _canon(d.area_of.where)), 1),)
    if d.steep_farmland is not None:
        s = d.steep_farmland
        return ((Term(s.layer, _canon(s.where), min_slope=s.min_slope_deg, dem_layer=s.dem_layer), 1),)
    z = d.area_inside or d.area_outside
    inside = Term(z.layer, _canon(z.where), z.zone_layer, _canon(z.zone))
    if d.area_inside is not None:
        return ((inside, 1),)
    return ((Term(z.layer, _canon(z.where)), 1), (inside, -1))


def compile_indicator(registry: Registry, model: IndicatorModel) -> Indicator:
    """Check every layer and filter against the specs and build the terms."""
    from geobase.analysis.rules import compile_filter

    d = model.definition
    num, den = (_terms(d.share.part), _terms(d.share.whole)) if d.share else (_terms(d), None)
    for term, _ in num + (den or ()):
        for layer, flt in ((term.layer, term.where), (term.zone_layer, term.zone)):
            if layer is None:
                continue
            spec = registry.layers.get(layer)
            if spec is None or spec.geometry != "MultiPolygon":
                raise InvalidInput(f"indicator {model.id}: {layer!r} is not a polygon layer", parameter="layer")
            compile_filter(registry, layer, json.loads(flt), "x", f"indicator {model.id}")
        if term.dem_layer and (registry.layers.get(term.dem_layer) is None
                               or registry.layers[term.dem_layer].kind != "raster"):
            raise InvalidInput(f"indicator {model.id}: {term.dem_layer!r} is not a raster layer", parameter="dem")
    layers = frozenset(x for t, _ in num + (den or ()) for x in t.layers)
    return Indicator(model, num, den, layers)


def indicators_dir(registry: Registry) -> Path:
    return Path(registry.root) / "indicators"


def load_indicators(registry: Registry) -> dict[str, Indicator]:
    """Every indicator of ``layers/indicators/*.yaml``, validated (SpecError naming the file and
    the problem); ids are unique across files."""
    out: dict[str, Indicator] = {}
    folder = indicators_dir(registry)
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            models = _File.model_validate(read_yaml(path)).indicators
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SpecError(f"{path}: {problems}") from None
        for m in models:
            if m.id in out:
                raise SpecError(f"{path}: indicator id {m.id!r} is declared twice")
            try:
                out[m.id] = compile_indicator(registry, m)
            except InvalidInput as exc:
                raise SpecError(f"{path}: {exc.message}") from None
    return out


_CACHE: dict[tuple[str, tuple], dict[str, Indicator]] = {}


def get_indicators(registry: Registry) -> dict[str, Indicator]:
    """:func:`load_indicators`, kept per registry root and the files' modification times."""
    folder = indicators_dir(registry)
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.yaml"))) if folder.is_dir() else ()
    key = (str(registry.root), stamp)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = load_indicators(registry)
    return _CACHE[key]


def fingerprint(indicators: dict[str, Indicator]) -> str:
    """What the stored values were computed from: a changed definition recomputes everything."""
    text = json.dumps({i: [t.key for t in ind.terms] for i, ind in sorted(indicators.items())})
    return hashlib.sha256(text.encode()).hexdigest()[:16]

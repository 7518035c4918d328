"""Declarative rules of the analyses (``layers/rules/site_check.yaml``, ``conflicts.yaml``) and
the feature filters they use, compiled to SQL.

A filter is ``{attribute: [codes]}``, ``{attribute: {prefix: [...]}}`` or
``{attribute: {category: [...]}}`` / ``{attribute: {group: [...]}}`` (resolved through the
attribute's code list, e.g. GB/T 21010 三大类 C = construction). Every attribute and code is
checked against the layer spec when the rules are loaded, so a typo fails loudly at start-up
instead of silently matching nothing. Values enter SQL as ``sql.Literal`` of validated codes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geobase.errors import InvalidInput, SpecError
from geobase.specs import Registry, read_yaml
from geobase.vocab import NAME_PATTERN

VERDICT_ORDER = {"ok": 0, "not-evaluated": 0, "warning": 1, "needs-approval": 2, "prohibited": 3}
CODE_RE = re.compile(r"^[0-9A-Za-z_\-.]{1,40}$")


class _Strict(BaseModel):
    # defer_build: its schema is built by its first use, not by every server start (issue #15)
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class Title(_Strict):
    zh: str
    en: str


class SiteRule(_Strict):
    id: str = Field(pattern=NAME_PATTERN)
    title: Title
    layer: str
    filter: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["overlap", "outside"] = "overlap"
    verdict: Literal["warning", "needs-approval", "prohibited"]
    applies_to: list[str] = Field(default_factory=list)
    min_area_m2: float | None = None
    note: str | None = None


class Side(_Strict):
    layer: str
    filter: dict[str, Any] = Field(default_factory=dict)


class ConflictRule(_Strict):
    id: str = Field(pattern=NAME_PATTERN)
    title: Title
    a: Side
    b: Side
    min_area_m2: float | None = None


class _SiteFile(_Strict):
    rules: list[SiteRule]


class _ConflictFile(_Strict):
    rules: list[ConflictRule]


def compile_filter(registry: Registry, layer: str, flt: dict[str, Any], alias: str, where: str,
                   hidden: set[str] | frozenset[str] = frozenset()) -> sql.Composable:
    """SQL predicate for ``flt`` on table alias ``alias``; raises SpecError/InvalidInput naming ``where``.
    ``hidden``: the caller's masked attributes of the layer, refused like unknown ones."""
    from geobase.security import require_field

    spec = registry.layers.get(layer)
    if spec is None:
        raise InvalidInput(f"{where}: unknown layer {layer!r}", parameter="layer")
    if not isinstance(flt, dict):
        raise InvalidInput(f"{where}: expected an object {{attribute: codes}}", parameter="filter")
    parts: list[sql.Composable] = []
    for attr, cond in (flt or {}).items():
        require_field(spec, attr, "filter", hidden=set(hidden), where=where)
        col = sql.Identifier(alias, attr)
        codes_known = registry.codes_for(spec, attr)
        if isinstance(cond, (str, int)):
            cond = [cond]
        if isinstance(cond, list):
            values = [str(v) for v in cond]
            _check_codes(values, codes_known, where, attr, layer)
            parts.append(sql.SQL("{} = ANY({})").format(col, sql.Literal(values)))
        elif isinstance(cond, dict) and len(cond) == 1:
            (op, vals), = cond.items()
            vals = [str(v) for v in (vals if isinstance(vals, list) else [vals])]
            for v in vals:
                if not CODE_RE.match(v):
                    raise InvalidInput(f"{where}: {attr}.{op}: {v!r} is not a code", parameter="filter")
            if op == "prefix":
                parts.append(sql.SQL("({})").format(sql.SQL(" OR ").join(
                    sql.SQL("starts_with({}, {})").format(col, sql.Literal(v)) for v in vals)))
            elif op in ("category", "group"):
                if not codes_known:
                    raise InvalidInput(f"{where}: {attr} has no code list to resolve {op}", parameter="filter")
                codes = sorted(c.code for c in codes_known.values() if getattr(c, op) in vals and c.assignable)
                if not codes:
                    raise InvalidInput(f"{where}: no code of {attr} has {op} in {vals}", parameter="filter")
                # 三调 suffixed codes (0201K, 1104A) count as their 4-digit base code
                parts.append(sql.SQL("({c} = ANY({v}) OR left({c}, 4) = ANY({v}))").format(
                    c=col, v=sql.Literal(codes)))
            else:
                raise InvalidInput(f"{where}: {attr}: unknown operator {op!r} (use a list, prefix, category "
                                   "or group)", parameter="filter")
        else:
            raise InvalidInput(f"{where}: {attr}: expected a list of codes or {{prefix|category|group: [...]}}",
                               parameter="filter")
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")


def _check_codes(values: list[str], known: dict | None, where: str, attr: str, layer: str) -> None:
    for v in values:
        if not CODE_RE.match(v):
            raise InvalidInput(f"{where}: {attr}: {v!r} is not a code", parameter="filter")
        if known is not None and v not in known:
            raise InvalidInput(f"{where}: {attr}: unknown code {v!r} for layer {layer!r}", parameter="filter")


def rules_dir(registry: Registry) -> Path:
    return Path(registry.root) / "rules"


def _load(path: Path, model: type[BaseModel]):
    if not path.exists():
        raise SpecError(f"{path}: rules file missing")
    raw = read_yaml(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"{path}: {problems}") from None


#: Parsed and validated rules by (file, modification time): parsing the YAML and validating
#: every filter took longer than a small site check itself; an edited file is re-read.
_RULES_CACHE: dict[tuple[str, int, str], list] = {}


def _cached_rules(path: Path, kind: str, load) -> list:
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        mtime = -1
    key = (str(path), mtime, kind)
    rules = _RULES_CACHE.get(key)
    if rules is None:
        rules = load()
        if len(_RULES_CACHE) > 64:  # edited files leave old entries behind
            _RULES_CACHE.clear()
        _RULES_CACHE[key] = rules
    return list(rules)


def load_site_rules(registry: Registry) -> list[SiteRule]:
    path = rules_dir(registry) / "site_check.yaml"
    return _cached_rules(path, "site", lambda: _load_site_rules(registry, path))


def _load_site_rules(registry: Registry, path: Path) -> list[SiteRule]:
    rules = _load(path, _SiteFile).rules
    for r in rules:  # validate filters now, not at the first request
        try:
            compile_filter(registry, r.layer, r.filter, "t", f"rule {r.id}")
        except InvalidInput as exc:
            raise SpecError(f"{path}: {exc.message}") from None
    return rules


def load_conflict_rules(registry: Registry) -> list[ConflictRule]:
    path = rules_dir(registry) / "conflicts.yaml"
    return _cached_rules(path, "conflicts", lambda: _load_conflict_rules(registry, path))


def _load_conflict_rules(registry: Registry, path: Path) -> list[ConflictRule]:
    rules = _load(path, _ConflictFile).rules
    for r in rules:
        for side in (r.a, r.b):
            try:
                compile_filter(registry, side.layer, side.filter, "t", f"rule {r.id}")
            except InvalidInput as exc:
                raise SpecError(f"{path}: {exc.message}") from None
    return rules


def conflict_id(rule_id: str, keys: list[str]) -> str:
    """Change-safe id of a conflict: the same rule and source features give the same id in
    every run and version, so conflicts can be tracked and annotated over time."""
    text = rule_id + "|" + "|".join(sorted(keys))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def worst(verdicts: list[str]) -> str:
    return max(verdicts, key=lambda v: VERDICT_ORDER[v], default="ok") if verdicts else "ok"

"""Attribute- and geometry-level desensitisation (安全脱敏) per openness class — the rules as data.

A layer spec declares, per openness class, what outside callers (no key, or an approved
request's key: :attr:`geobase.principal.Principal.is_outside`) get instead of the data::

    desensitise:
      open:
        - {attribute: qsdwmc, action: mask}                 # 示范村民委员会 -> 示**
        - {attribute: qsdwdm, action: mask, fixed: "******"}
        - {action: round, metres: 100}                      # coordinates on a 100 m grid
      conditional:
        - {attribute: cun, action: drop}
        - {action: township, attribute: zldwdm, digits: 9}  # no geometry; the township's code

Actions:
  ``drop``      the attribute is absent from every output;
  ``mask``      the attribute's value is replaced: its first ``keep_first`` and last ``keep_last``
                characters and ``stars`` asterisks (张三丰 -> 张**: a fixed number of stars, so
                the length is not revealed either; a value no longer than what is kept is all
                stars), or the ``fixed`` text; NULL stays NULL;
  ``round``     every coordinate is snapped to a grid of ``metres`` (north-south exactly, east-west
                at the latitude of the feature's one-degree band), the result made valid again;
                what collapses below the grid has no geometry;
  ``township``  generalise to the township (乡镇): the feature keeps no geometry at all and the
                code attribute keeps only its first ``digits`` characters (9: the township part of
                a 12-digit 统计用区划代码 / a 19-digit 坐落单位代码). This is what Chinese open-data
                portals publish for location-sensitive records — a table with the division the
                record belongs to, to be joined with the (open) division boundaries — rather
                than each record drawn as its whole township's polygon, which would multiply the
                township's geometry by its record count and draw a location that is false.

How it is enforced: :func:`geobase.security.desensitisation` gives an outside caller's
:class:`Desensitisation` of a layer; dropped and masked attributes are among the caller's hidden
attributes (:func:`geobase.security.hidden_attributes`), so every filter, sort, property
selection, queryable, analysis group-by or search that names one is refused exactly like an
unknown field (400 naming it) — a filter can never become an oracle of the clear value. The
outputs that show data read the desensitised values from this module's SQL and nowhere else:
items in every format and the change feed (:meth:`Desensitisation.source_sql` wraps their row
source, so bbox and CQL2 filters see only the desensitised geometry), vector tiles
(:meth:`Desensitisation.column_sql`, :meth:`Desensitisation.geometry_sql`) and full downloads.
A layer whose geometry is generalised for the caller is no input of analyses or searches
(:func:`geobase.security.visible_layers` with ``exact_geometry=True``): their results
(intersections, areas, locations) would give the clear geometry back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, model_validator

Action = Literal["drop", "mask", "round", "township"]
GEOMETRY_ACTIONS = ("round", "township")


class DesensitiseRule(BaseModel):
    """One desensitisation rule of an openness class (see the module docstring)."""

    # defer_build: its schema is built by its first use, not by every server start (issue #15)
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    action: Action = "drop"
    attribute: str | None = Field(default=None, description="drop/mask: the attribute; township: the code attribute")
    keep_first: int = Field(default=1, ge=0, le=20, description="mask: characters kept at the start")
    keep_last: int = Field(default=0, ge=0, le=20, description="mask: characters kept at the end")
    stars: int = Field(default=2, ge=1, le=20, description="mask: asterisks written in between")
    fixed: str | None = Field(default=None, max_length=100, description="mask: the whole value replaced by this")
    metres: float | None = Field(default=None, gt=0, le=100_000, description="round: the grid in metres")
    digits: int = Field(default=9, ge=6, le=19, description="township: characters of the code kept")

    @model_validator(mode="after")
    def _fields_of_action(self) -> DesensitiseRule:
        if self.action in ("drop", "mask", "township") and not self.attribute:
            raise ValueError(f"action {self.action!r} needs an attribute")
        if self.action == "round":
            if self.metres is None:
                raise ValueError("action 'round' needs metres (the grid size)")
            if self.attribute:
                raise ValueError("action 'round' applies to the geometry: no attribute")
        elif self.metres is not None:
            raise ValueError(f"metres: only for action 'round', not {self.action!r}")
        if self.action != "mask" and (self.fixed is not None or "keep_first" in self.model_fields_set
                                      or "keep_last" in self.model_fields_set or "stars" in self.model_fields_set):
            raise ValueError(f"keep_first/keep_last/stars/fixed: only for action 'mask', not {self.action!r}")
        if self.action != "township" and "digits" in self.model_fields_set:
            raise ValueError(f"digits: only for action 'township', not {self.action!r}")
        return self


def check_rules(openness: str, rules: list[DesensitiseRule], types: dict[str, str]) -> None:
    """The spec-load check of one class's rules against the layer's attributes (name -> type):
    known attributes, text for mask/township, one rule per attribute, one geometry rule."""
    seen: set[str] = set()
    geometry = [r for r in rules if r.action in GEOMETRY_ACTIONS]
    if len(geometry) > 1:
        raise ValueError(f"desensitise.{openness}: at most one geometry rule (round or township)")
    for r in rules:
        if r.attribute is None:
            continue
        if r.attribute not in types:
            raise ValueError(f"desensitise.{openness}: unknown attribute {r.attribute!r}")
        if r.action in ("mask", "township") and types[r.attribute] != "text":
            raise ValueError(f"desensitise.{openness}: {r.action} needs a text attribute, "
                             f"{r.attribute!r} is {types[r.attribute]}")
        if r.attribute in seen:
            raise ValueError(f"desensitise.{openness}: more than one rule for {r.attribute!r}")
        seen.add(r.attribute)


@dataclass(frozen=True)
class Desensitisation:
    """What one outside caller gets of one layer: the rules of the layer's openness class."""

    layer: str
    geometry_type: str | None
    dropped: frozenset[str]
    masked: tuple[tuple[str, DesensitiseRule], ...]
    geometry: DesensitiseRule | None

    @property
    def hidden(self) -> set[str]:
        """Attributes not readable in the clear: refused wherever a field is named."""
        return set(self.dropped) | {name for name, _ in self.masked}

    @property
    def shown_masked(self) -> list[str]:
        return [name for name, _ in self.masked]

    @property
    def exact_geometry(self) -> bool:
        """Is the geometry given as stored (no round/township rule)?"""
        return self.geometry is None

    @property
    def no_geometry(self) -> bool:
        return self.geometry is not None and self.geometry.action == "township"

    def column_sql(self, name: str, alias: str | None = None) -> sql.Composable:
        """The value of attribute ``name`` as this caller may read it."""
        col = sql.Identifier(alias, name) if alias else sql.Identifier(name)
        rule = dict(self.masked).get(name)
        if rule is None:
            return col
        return mask_sql(rule, col)

    def geometry_sql(self, srid: int = 4490, column: str = "geom", alias: str | None = None) -> sql.Composable:
        """The geometry as this caller may read it, in EPSG:4490 (stored ``geom``) or, for
        ``srid=3857``, Web Mercator (from the desensitised 4490 geometry: the rounding grid is
        in metres on the ground, not in Mercator units)."""
        col = sql.Identifier(alias, column) if alias else sql.Identifier(column)
        rule = self.geometry
        if rule is None:
            if srid == 3857:
                return sql.Identifier(alias, "geom_3857") if alias else sql.Identifier("geom_3857")
            return col
        if rule.action == "township":
            return sql.SQL("NULL::geometry")
        g = round_sql(col, float(rule.metres or 0), self.geometry_type)
        return sql.SQL("ST_Transform({}, 3857)").format(g) if srid == 3857 else g

    def source_sql(self, base: sql.Composable, rows: sql.Composable, columns: list[str],
                   extra: list[str]) -> sql.Composable:
        """A row source of the layer's columns as this caller may read them: ``base`` (a FROM
        item aliased ``t``: the layer table, the change feed's join) filtered by ``rows`` (the
        version condition), with ``columns`` (attributes and the stored measure) desensitised
        and ``extra`` (_key, _rid, division, the change column) as they are. Filters applied
        to it see only the desensitised values."""
        cols = [sql.Identifier(c) for c in extra]
        cols += [sql.SQL("{} AS {}").format(self.column_sql(c), sql.Identifier(c))
                 for c in columns if c not in self.dropped]
        cols.append(sql.SQL("{} AS geom").format(self.geometry_sql()))
        return sql.SQL("(SELECT {} FROM {} WHERE {}) AS t").format(sql.SQL(", ").join(cols), base, rows)


def mask_sql(rule: DesensitiseRule, col: sql.Composable) -> sql.Composable:
    """SQL of a masked text value (see the module docstring); NULL stays NULL."""
    if rule.action == "township":
        return sql.SQL("left({}, {})").format(col, sql.Literal(rule.digits))
    if rule.fixed is not None:
        return sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE {f}::text END").format(c=col, f=sql.Literal(rule.fixed))
    kf, kl, stars = rule.keep_first, rule.keep_last, "*" * rule.stars
    return sql.SQL("CASE WHEN {c} IS NULL THEN NULL WHEN char_length({c}) <= {k} THEN {s} "
                   "ELSE left({c}, {kf}) || {s} || right({c}, {kl}) END").format(
        c=col, k=sql.Literal(kf + kl), s=sql.Literal(stars), kf=sql.Literal(kf), kl=sql.Literal(kl))


_EXTRACT = {"MultiPoint": 1, "Point": 1, "MultiLineString": 2, "LineString": 2, "MultiPolygon": 3, "Polygon": 3}


def round_sql(col: sql.Composable, metres: float, geometry_type: str | None) -> sql.Composable:
    """The geometry (EPSG:4490 degrees) with every coordinate on a grid of ``metres``: north-south
    in degrees of latitude, east-west at the cosine of the middle of the feature's one-degree
    latitude band (so features of one band share the grid); made valid again and kept to the
    layer's geometry type (what collapses below the grid is NULL: no geometry)."""
    dy = metres / 110_574.0
    dx = sql.SQL("({m}::float8 / (111320.0 * cos(radians(floor((ST_YMin({c}) + ST_YMax({c})) / 2) + 0.5))))").format(
        m=sql.Literal(metres), c=col)
    snapped = sql.SQL("ST_SnapToGrid({c}, 0, 0, {dx}, {dy})").format(c=col, dx=dx, dy=sql.Literal(dy))
    kind = _EXTRACT.get(geometry_type or "", 0)
    if not kind:
        return snapped
    return sql.SQL("(SELECT CASE WHEN ST_IsEmpty(g) THEN NULL ELSE g END FROM "
                   "(SELECT ST_Multi(ST_CollectionExtract(ST_MakeValid({g}), {k})) AS g) AS snapped)").format(
        g=snapped, k=sql.Literal(kind))


def plan(layer: str, geometry_type: str | None, rules: list[DesensitiseRule]) -> Desensitisation | None:
    """The desensitisation the rules of one class make (None: no rules)."""
    if not rules:
        return None
    masked = tuple((r.attribute, r) for r in rules if r.action in ("mask", "township") and r.attribute)
    geometry = next((r for r in rules if r.action in GEOMETRY_ACTIONS), None)
    return Desensitisation(layer, geometry_type, frozenset(r.attribute for r in rules if r.action == "drop"
                                                           and r.attribute), masked, geometry)

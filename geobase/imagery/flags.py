"""Imagery flags: the rule set ``layers/rules/imagery_flags.yaml`` (declared as data) applied to
the parcels of a layer with a collection's growing-season scenes, e.g. farmland with a low
season NDVI -> possibly idle (疑似撂荒), farmland with a built-up signature -> possibly converted
(疑似非农化). Run as the analysis process ``imagery-flags``; with ``store`` the flagged parcels
become a new version of the derived layer ``parcel_flags`` (:mod:`geobase.imagery.derived`),
listed at ``/collections/parcel_flags/items`` under the layer's sharing rule.

A parcel's value of an index is the mean, over the season's scenes in which the parcel has at
least ``min_pixels`` valid pixels making at least ``min_valid_share`` of its pixels, of its pixel
mean in that scene (:func:`geobase.imagery.zonal.zonal_stats`: cell-centre rule, nodata left
out; equal to numpy on the same pixels). Rules are tried in order; the first whose every
condition holds flags the parcel; a condition on an index the parcel has no value of fails."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geobase.analysis.common import inputs_checked, layer_versions, qualified_layers
from geobase.analysis.rules import Title, compile_filter, rules_dir
from geobase.errors import InvalidInput, SpecError
from geobase.features.ids import FeatureRef
from geobase.imagery.bands import check_expression
from geobase.imagery.parcels import check_parcel_layer, scenes_of
from geobase.imagery.render import BandRequest
from geobase.imagery.zonal import zonal_stats
from geobase.principal import Principal
from geobase.security import hidden_attributes, layer_accesses, require_editor
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry, read_yaml
from geobase.storage import DIVISION, current_filter, table_ident
from geobase.vocab import NAME_PATTERN

FLAG_LAYER = "parcel_flags"
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    index: str
    stat: Literal["mean"] = "mean"
    op: Literal["<", "<=", ">", ">="]
    value: float


class FlagRule(_Strict):
    id: str = Field(pattern=NAME_PATTERN)
    flag: str = Field(pattern=NAME_PATTERN)
    title: Title
    parcels: dict[str, Any] = Field(default_factory=dict)
    when: list[Condition] = Field(min_length=1)


class Season(_Strict):
    from_: str = Field(alias="from", pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
    to: str = Field(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")


class FlagRules(_Strict):
    layer: str
    season: Season
    min_valid_share: float = Field(ge=0, le=1)
    min_pixels: int = Field(ge=1)
    indices: dict[str, str]
    rules: list[FlagRule] = Field(min_length=1)


def load_flag_rules(registry: Registry, path: Path | None = None) -> FlagRules:
    """The rule set, every index, condition and parcel filter checked (SpecError naming the file)."""
    path = path or rules_dir(registry) / "imagery_flags.yaml"
    try:
        rs = FlagRules.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise SpecError(f"{path}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                for e in exc.errors())) from None
    for expr in rs.indices.values():
        check_expression(expr, 99)
    for r in rs.rules:
        unknown = [c.index for c in r.when if c.index not in rs.indices]
        if unknown:
            raise SpecError(f"{path}: rule {r.id}: unknown indices {unknown} (declared: {sorted(rs.indices)})")
        compile_filter(registry, rs.layer, r.parcels, "s", f"{path.name}: rule {r.id}")
    return rs


def in_season(scene: dict, season: Season) -> bool:
    md = scene["datetime"].strftime("%m-%d")
    return season.from_ <= md <= season.to if season.from_ <= season.to else (md >= season.from_ or md <= season.to)


def season_values(rs: FlagRules, per_scene: dict[str, list[list[dict]]], scenes: list[dict], n: int) -> list[dict]:
    """Per parcel, per index: ``{mean, scenes: {scene id: stats}}`` (mean None when no scene
    qualifies)."""
    out = []
    for i in range(n):
        vals = {}
        for name, by_scene in per_scene.items():
            used = {s["id"]: st[i] for s, st in zip(scenes, by_scene)
                    if st[i]["count"] >= rs.min_pixels and (st[i]["valid_share"] or 0) >= rs.min_valid_share}
            means = [u["mean"] for u in used.values()]
            vals[name] = {"mean": sum(means) / len(means) if means else None, "scenes": used}
        out.append(vals)
    return out


def first_match(rs: FlagRules, member: dict[str, set[int]], n: int, vals: dict) -> FlagRule | None:
    """The first rule that looks at parcel ``n`` (its index in the candidates) and whose every
    condition holds."""
    for r in rs.rules:
        if n in member[r.id] and all(vals[c.index]["mean"] is not None and OPS[c.op](vals[c.index]["mean"], c.value)
                                       for c in r.when):
            return r
    return None


async def _candidates(conn: psycopg.AsyncConnection, registry: Registry, rs: FlagRules, spec: LayerSpec,
                      principal: Principal | None) -> tuple[list[tuple], dict[str, set[int]]]:
    """The parcels some rule looks at (key, WKB, class, county), and per rule the indexes (in
    that list) of the parcels it looks at: one query, each rule's filter a column. Indexes, not
    keys: a key is unique in its county only, and a rule may look at one county's parcel of a
    key and not at another's."""
    hidden = hidden_attributes(principal, spec) if principal is not None else set()
    filters = [compile_filter(registry, rs.layer, r.parcels, "s", f"rule {r.id}", hidden) for r in rs.rules]
    cls = sql.Identifier("s", spec.class_field) if spec.class_field else sql.SQL("NULL::text")
    cur = await conn.execute(sql.SQL(
        "SELECT s._key, ST_AsBinary(s.geom), {cls}, s.{div}, {each} FROM {t} s WHERE {cur} AND ({any}) "
        "ORDER BY s._key, s.{div}").format(div=sql.Identifier(DIVISION),
            cls=cls, each=sql.SQL(", ").join(filters), t=table_ident(spec), cur=current_filter("s"),
            any=sql.SQL(" OR ").join(filters)))
    rows = await cur.fetchall()
    member = {r.id: {n for n, row in enumerate(rows) if row[4 + i]} for i, r in enumerate(rs.rules)}
    return [row[:4] for row in rows], member


async def imagery_flags(conn: psycopg.AsyncConnection, settings: Settings, registry: Registry,
                        visible: list[LayerSpec], *, collection: str, when: str | None = None, store: bool = False,
                        principal: Principal | None = None, writer: Settings | None = None) -> dict:
    """The flagged parcels (key, flag, rule, index values with their per-scene statistics)."""
    import asyncio

    rs = load_flag_rules(registry)
    spec = check_parcel_layer({s.name: s for s in visible}, collection, rs.layer)
    if store:
        await _check_store(conn, principal, registry)
    scenes = [s for s in await scenes_of(conn, collection, when) if in_season(s, rs.season)]
    if not scenes:
        raise InvalidInput(f"no scene of the collection in the growing season {rs.season.from_}..{rs.season.to}",
                           parameter="datetime")
    inputs_checked()
    rows, member = await _candidates(conn, registry, rs, spec, principal)
    wkbs = [r[1] for r in rows]
    per_scene: dict[str, list[list[dict]]] = {}
    for name, expr in rs.indices.items():
        per_scene[name] = [await asyncio.to_thread(zonal_stats, settings.data_path / s["file"], wkbs,
                                                   BandRequest(expression=expr), "EPSG:4490") for s in scenes]
    values = season_values(rs, per_scene, scenes, len(rows))
    flags, parcels = [], []  # parcels: each flag's parcel's (key, county): its key is unique in its county only
    qualified = (await qualified_layers(conn, [spec]))[spec.name]  # "key": the Features API's id of the parcel
    for n, (r, vals) in enumerate(zip(rows, values)):
        rule = first_match(rs, member, n, vals)
        if rule is not None:
            parcels.append((r[0], r[3]))
            flags.append({"key": FeatureRef(r[0], r[3]).id(qualified), "flag": rule.flag, "rule": rule.id, "title": rule.title.model_dump(),
                          "class": r[2], "values": vals})
    used = [{"id": s["id"], "datetime": s["datetime"].isoformat()} for s in scenes]
    versions = await layer_versions(conn, [rs.layer])
    out = {"analysis": "imagery-flags", "collection": collection, "layer": rs.layer, "season": rs.season.model_dump(
        by_alias=True), "indices": rs.indices, "parcels_checked": len(rows), "flags": flags, "scenes": used,
        "versions": versions, "summary": {r.flag: sum(1 for f in flags if f["rule"] == r.id) for r in rs.rules}}
    if store:
        from geobase.imagery.flag_store import store_flags

        out["derived"] = await asyncio.to_thread(store_flags, writer or settings, registry, rs, spec, rows, flags, parcels, {
            "layer": rs.layer, "layer_version": versions.get(rs.layer, {}).get("version"), "collection": collection,
            "datetime": when, "scenes": used, "rules": rs.model_dump(by_alias=True)}, principal)
    return out


async def _check_store(conn: psycopg.AsyncConnection, principal: Principal | None, registry: Registry) -> None:
    if principal is None or FLAG_LAYER not in registry.layers:
        raise InvalidInput("store: the flag layer is not available here", parameter="store")
    access = next((a for a in await layer_accesses(conn) if a.name == FLAG_LAYER), None)
    if access is None:
        raise InvalidInput("store: the flag layer is not in the catalog", parameter="store")
    require_editor(principal, access)

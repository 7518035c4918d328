"""The flags of :mod:`geobase.imagery.flags` as rows of the derived layer ``parcel_flags``:
one row per flagged parcel (its geometry, county and area joined from the parcel layer by
:mod:`geobase.imagery.derived`), with the rule, the season means of NDVI/NDBI when the rule set
declares them under those names, the lowest valid-pixel share, the scenes used and every
per-scene statistic as JSON evidence. The version replaces the previous flags whole: a parcel no
longer flagged leaves the current version (its row stays in the history)."""

from __future__ import annotations

import json

from geobase.imagery.derived import Derived, write_derived
from geobase.principal import Principal
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry

FLAG_LAYER = "parcel_flags"


def _dates(scenes: list[dict], used: set[str]) -> tuple[str | None, str | None]:
    ds = sorted(s["datetime"] for s in scenes if s["id"] in used)
    return (ds[0], ds[-1]) if ds else (None, None)


def flag_row(flag: dict, source: str, collection: str, scenes: list[dict]) -> dict:
    vals = flag["values"]
    used = sorted({sid for v in vals.values() for sid in v["scenes"]})
    shares = [st["valid_share"] for v in vals.values() for st in v["scenes"].values()]
    first, last = _dates(scenes, set(used))
    return {"parcel": flag["key"], "source_layer": source, "flag": flag["flag"], "rule": flag["rule"],
            "title_zh": flag["title"]["zh"], "dlbm": flag["class"], "collection": collection,
            "scenes": ",".join(used), "first_date": first, "last_date": last,
            "ndvi_mean": (vals.get("ndvi") or {}).get("mean"), "ndbi_mean": (vals.get("ndbi") or {}).get("mean"),
            "valid_share": min(shares) if shares else None,
            "evidence": json.dumps(vals, ensure_ascii=False, sort_keys=True)}


def store_flags(settings: Settings, registry: Registry, rs, spec: LayerSpec, rows: list[tuple], flags: list[dict],
                parcels: list[tuple[str, str]], inputs: dict, principal: Principal) -> dict:
    """Write the flags as a new version of ``parcel_flags`` (or nothing for the same inputs);
    ``parcels``: each flag's parcel's (key, county), which name the parcel together (a flag's
    ``key`` is the parcel's feature id, county-qualified in a province)."""
    out_rows = [dict(flag_row(f, spec.name, inputs["collection"], inputs["scenes"]), parcel=k, division=d)
                for f, (k, d) in zip(flags, parcels, strict=True)]
    d = Derived(job="imagery-flags", spec=registry.layer(FLAG_LAYER), source=spec, rows=out_rows, key=["parcel"],
                inputs=inputs, report={"parcels_checked": len(rows), "flags": len(flags)})
    return write_derived(settings, d, user=principal.name or "job")

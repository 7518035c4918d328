"""The README's benchmark table, generated from the results files:
``python bench/table.py [--parcels N] [--results DIR]``.

Why generated: a table copied by hand drifts from what was measured (a ratio from one run beside
a spread from another, a target called met on one noisy round). This prints, for one scale, the
newest measurement of every figure with its baseline, ratio and spread exactly as the run wrote
them, and says whether the issue's target is met.

Which results: a ``make bench`` at one scale is often split into several runs (``--only
analysis``, then ``--only tiles``, ...), each writing ``results/<parcels>/<UTC start>.json``
(bench/common.py ``Context.save``; the last one also as ``results/latest-<parcels>.json``). The
table takes, for each figure name, its result from the newest run that has it, and prints that
run's date beside it (so figures of different runs are never presented as one measurement).

Columns (those of the README's table, plus the run): benchmark | ours | baseline (same run,
same data) | ratio (spread) | target | run (UTC). The spread is min–max of the per-round ratios
over the interleaved rounds; a figure measured once says so. A target is "met" only when every
round meets it; "median met" when the median does and some round does not; "not met" else."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Target:
    """A target of issue #15 on a figure: ``on`` the ratio ours/baseline ("ratio"), how many
    times better than the baseline we are ("speedup": baseline/ours for a time, ours/baseline
    for a throughput), or our own value ("ours"); ``op`` "<=" or ">=" ``value``."""

    pattern: str  # regular expression searched in the figure's name
    on: str
    op: str
    value: float

    def text(self) -> str:
        sign = "≤" if self.op == "<=" else "≥"
        return f"{sign} {self.value:g}" + {"ratio": "", "speedup": "× faster", "ours": " (ours)"}[self.on]

    def holds(self, v: float) -> bool:
        return v <= self.value if self.op == "<=" else v >= self.value


#: the targets issue #15 gives, by figure name (first match wins)
TARGETS: list[Target] = [
    Target(r"^analysis tabulate .*, cold, vs best hand-written SQL", "ratio", "<=", 0.5),
    Target(r"^analysis tabulate .*, cold, vs geopandas", "ratio", "<=", 0.05),
    Target(r"^ingest .* vs tuned ogr2ogr", "ratio", "<=", 0.8),
    Target(r"(?i)^ingest.*peak RSS", "ours", "<=", 1024),
    Target(r"^tiles cold z13-z16 \(", "speedup", ">=", 2),  # ours vs tipg on identical tiles
    Target(r"^tiles cold z13-z16 vs direct SQL \(", "ratio", "<=", 1.1),  # end to end vs the bare statement
    Target(r"(?i)cached tiles?.*p99", "ours", "<=", 20),
    Target(r"^tiles cached, 32 concurrent keep-alive clients$", "ours", ">=", 5000),
    Target(r"^catalog search p95 \(HTTP\)$", "ours", "<=", 100),  # issue #19
    Target(r"^province: largest server process RSS", "ours", "<=", 400),  # issue #16
    Target(r"^start: process start to first 200", "ours", "<=", 1.0),
    Target(r"(?i)^start:.*idle RSS", "ours", "<=", 150),
]


def _target_from_extra(r: dict) -> Target | None:
    """A target the benchmark wrote itself: ``extra.target`` ({on, op, value}) or
    ``extra.target_ms`` / ``target_s`` / ``target_mib`` (on our value), or "target ratio <= X"
    in the name."""
    extra = r.get("extra") or {}
    t = extra.get("target")
    if isinstance(t, dict) and {"on", "op", "value"} <= set(t):
        return Target("", t["on"], t["op"], float(t["value"]))
    for key in ("target_ms", "target_s", "target_mib"):
        if isinstance(extra.get(key), (int, float)):
            return Target("", "ours", "<=", float(extra[key]))
    m = re.search(r"target ratio (<=|>=) ([0-9.]+)", r["name"])
    if m:
        return Target("", "ratio", m.group(1), float(m.group(2)))
    return None


def target_for(r: dict) -> Target | None:
    """The target of a result (the issue's list first, then what the benchmark wrote)."""
    for t in TARGETS:
        if re.search(t.pattern, r["name"]):
            return t
    return _target_from_extra(r)


def load(parcels: int, results: Path = RESULTS) -> list[tuple[dict, str]]:
    """(result, run start) of every figure at this scale: the newest run's result of each name,
    in the order of first appearance in the newest run that has it (runs newest first)."""
    files = sorted((results / str(parcels)).glob("*.json"))
    latest = results / f"latest-{parcels}.json"
    docs = [json.loads(p.read_text()) for p in files]
    if latest.exists():
        docs.append(json.loads(latest.read_text()))  # a copy of one run; its start dedups it
    if not docs:
        raise FileNotFoundError(f"no results at {parcels:,} parcels in {results}")
    docs.sort(key=lambda d: d["started_utc"], reverse=True)
    seen: dict[str, tuple[dict, str]] = {}
    for d in docs:
        for r in d["results"]:
            seen.setdefault(r["name"], (r, d["started_utc"]))
    return list(seen.values())


def _num(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 0.1 or v == 0:
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return f"{v:.2g}"


def _ratio(v: float) -> str:
    """A ratio as the benchmarks print it (bench/common.py): two decimals, or two significant
    digits below 0.1 (a kept answer's 0.003 must not print as 0.00)."""
    return f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"


def _per_round_ratios(r: dict) -> list[float]:
    o, b = r.get("rounds_ours") or [], r.get("rounds_baseline") or []
    return [x / y for x, y in zip(o, b) if y]


def row(r: dict, started: str) -> list[str]:
    """The table's cells for one result."""
    unit = r.get("unit") or ""
    ours = f"{_num(r['ours'])} {unit}".strip()
    if r.get("rounds_ours") and len(r["rounds_ours"]) > 1:
        ours += f" (median of {len(r['rounds_ours'])}: {_num(min(r['rounds_ours']))}–{_num(max(r['rounds_ours']))})"
    baseline = ""
    if r.get("baseline") is not None:
        baseline = f"{r.get('baseline_name') or 'baseline'}: {_num(r['baseline'])} {unit}".strip()
    ratios = _per_round_ratios(r)
    ratio = ""
    if r.get("ratio") is not None:
        ratio = _ratio(r["ratio"])
        ratio += f" ({_ratio(min(ratios))}–{_ratio(max(ratios))}, {len(ratios)} rounds)" if len(ratios) > 1 \
            else " (single measurement)"
    return [r["name"], ours, baseline, ratio, _status(r, ratios), _date(started)]


def _status(r: dict, ratios: list[float]) -> str:
    """The target and whether it is met: by every round, by the median only, or not."""
    t = target_for(r)
    if t is None:
        return ""
    if t.on == "ratio":
        median, rounds = r.get("ratio"), ratios
    elif t.on == "speedup":
        flip = (lambda v: v) if r.get("higher_is_better") else (lambda v: 1 / v if v else float("inf"))
        median = flip(r["ratio"]) if r.get("ratio") is not None else None
        rounds = [flip(v) for v in ratios]
    else:
        median, rounds = r.get("ours"), r.get("rounds_ours") or []
    if median is None:
        return f"{t.text()} (not measured)"
    if not t.holds(median):
        return f"{t.text()} (not met)"
    if len(rounds) > 1 and not all(t.holds(v) for v in rounds):
        return f"{t.text()} (median met, not every round)"
    return f"{t.text()} (met{'' if len(rounds) > 1 else ', single measurement'})"


def _date(started: str) -> str:
    """20261206T192047Z -> 2026-12-06 19:20."""
    m = re.fullmatch(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)\d\dZ", started)
    return f"{m[1]}-{m[2]}-{m[3]} {m[4]}:{m[5]}" if m else started


HEADER = ["benchmark", "ours", "baseline (same run, same data)", "ratio (spread)", "target", "run (UTC)"]


def markdown(rows: list[list[str]]) -> str:
    """A markdown table (cells' "|" escaped)."""
    cell = lambda s: s.replace("|", "\\|")
    lines = ["| " + " | ".join(HEADER) + " |", "| " + " | ".join("---" for _ in HEADER) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parcels", type=int, default=1_000_000, help="the scale (default 1,000,000)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the results folder (default bench/results)")
    args = ap.parse_args(argv)
    try:
        got = load(args.parcels, args.results)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"Benchmarks at {args.parcels:,} parcels (newest run of each figure; ratio = ours / baseline, "
          "spread = min–max of the per-round ratios over interleaved rounds)\n")
    print(markdown([row(r, started) for r, started in got]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the benchmarks: ``python bench/run.py [--parcels N] [--only ingest,features,...]``.

``--quick`` runs every area end to end at 20,000 parcels (unless ``--parcels`` is given) with
short load phases: a check, in a few minutes, that the harness works; its figures are not the
README's. Results go to ``bench/results/<parcels>/<UTC start>.json`` and
``bench/results/latest-<parcels>.json`` (one file per scale and run, never merged).

The soak (bench/soak.py: 10 minutes with a database restart and a server kill) runs only when
asked for: ``--only soak``.

Each ``bench/bench_<area>.py`` defines ``run(ctx: Context)`` and reports figures against a named
baseline measured in the same run on the same data. Not part of the test command."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--parcels", type=int, default=None, help="land parcels of the scaled county (default 1,000,000;"
                    " 20,000 with --quick)")
    ap.add_argument("--quick", action="store_true", help="every area end to end in a few minutes (a harness check)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per ratio (at least 3)")
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--only", default="", help="comma-separated areas (e.g. ingest,features,tiles)")
    args = ap.parse_args()
    here = Path(__file__).resolve().parent
    areas = sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - set(areas) - {"soak"}
        if unknown:
            ap.error(f"unknown benchmark areas {sorted(unknown)}; known: {areas}")
        areas = [a for a in areas if a in wanted] + (["soak"] if "soak" in wanted else [])
    parcels = args.parcels or (20_000 if args.quick else 1_000_000)
    ctx = Context(parcels, args.seed, rounds=args.rounds, quick=args.quick)
    for area in areas:
        print(f"== {area} ==", flush=True)
        importlib.import_module("soak" if area == "soak" else f"bench_{area}").run(ctx)
    print(f"results written to {ctx.save()}")


if __name__ == "__main__":
    main()

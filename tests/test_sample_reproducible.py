"""The generator reproduces the committed sample county byte for byte.

sample_data/county/ is committed, and its manifest records the sha256 of every file.  If the
generator (or a library under it) drifts, the committed county no longer says what the generator
makes, and the facts the analysis tests check were planted by a generator nobody has: so
regenerate the county with the manifest's own parameters in a temporary directory and compare
every byte.  No database needed; about 15 s."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from geobase.sample_data.generate import generate

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "county"


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_generator_reproduces_the_committed_county(tmp_path: Path) -> None:
    committed = json.loads((SAMPLE / "manifest.json").read_text(encoding="utf-8"))
    params = committed["parameters"]
    made = generate(tmp_path, parcels=params["parcels"], seed=params["seed"])
    made.pop("_elapsed_s")
    # every committed file (the manifest included) is made again, and nothing else
    committed_files = sorted(p.name for p in SAMPLE.iterdir() if p.is_file())
    assert sorted(p.name for p in tmp_path.iterdir()) == committed_files
    assert sorted(committed["files"]) == sorted(set(committed_files) - {"manifest.json"})
    different = [name for name in committed_files if _sha256(tmp_path / name) != _sha256(SAMPLE / name)]
    assert different == []
    assert made == committed

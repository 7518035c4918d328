"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis),
against a live server on loopback over a private copy of the sample county: zero 5xx, and every response's
status, media type and body as the document says (issue 13 item 7: no undocumented status or
content type). Path parameters draw, most of the time, from the identifiers the server lists
(collections, tile matrix sets, processes), so operations get past their 404.

Bounded: few examples per operation and a total time budget (GEOBASE_FUZZ_SECONDS, default 60;
GEOBASE_FUZZ_EXAMPLES per operation, default 8). A larger run: e.g.
``GEOBASE_FUZZ_SECONDS=1200 GEOBASE_FUZZ_EXAMPLES=200 pytest tests/test_fuzz.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ARTIFACTS, LiveServer, create_database, drop_database, settings_for
from test_security_common import make_keys, unique_name

BUDGET_S = int(os.environ.get("GEOBASE_FUZZ_SECONDS", "60"))
EXAMPLES = int(os.environ.get("GEOBASE_FUZZ_EXAMPLES", "8"))
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def fuzz_target(pg_server, county_template):
    """A private copy of the loaded sample county (its data, rasters and sharing), so that the
    admin key's writes (departments, keys, sharing) touch no other test's database."""
    county, data_dir = county_template
    name = unique_name("gb_fuzz")
    url = create_database(pg_server, name, county)
    settings = settings_for(url, data_dir)
    tokens = make_keys(settings)
    # county-wide analyses are legitimately slow on a loaded machine: a generous statement
    # timeout, so that a 503 (which not_a_server_error counts) means a fault, not a busy CPU
    srv = LiveServer(settings, env={"GEOBASE_RATE_LIMIT_PER_S": "100000", "GEOBASE_RATE_LIMIT_BURST": "100000",
                                    "GEOBASE_RATE_LIMIT_PUBLIC_PER_S": "100000",
                                    "GEOBASE_RATE_LIMIT_PUBLIC_BURST": "100000",
                                    "GEOBASE_STATEMENT_TIMEOUT_MS": "90000"})
    yield srv, tokens
    srv.stop()
    drop_database(pg_server, name)


def _st() -> str:
    exe = Path(sys.executable).with_name("st")
    return str(exe) if exe.exists() else (shutil.which("st") or "st")


def _config(srv, token: str, path: Path) -> Path:
    """schemathesis.toml: dictionaries of the server's real identifiers for the path parameters."""
    import httpx

    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        collections = [x["id"] for x in c.get("/collections").json()["collections"]]
        vector = [x["id"] for x in c.get("/collections").json()["collections"] if x.get("kind") == "vector"]
        raster = [i for i in collections if i not in vector]
        tms = [t["id"] for t in c.get("/tileMatrixSets").json()["tileMatrixSets"]]
        processes = [p["id"] for p in c.get("/processes").json()["processes"]]
    dictionaries = {"collections": collections, "vector": vector, "raster": raster or collections, "tms": tms,
                    "processes": processes, "styles": ["hillshade", "elevation", "slope"]}
    bind = {"collectionId": "collections", "collection_id": "raster", "layers": "vector", "layer": "raster",
            "tileMatrixSetId": "tms", "process_id": "processes", "style": "styles"}
    lines = []
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", "values = [" + ", ".join(f'"{v}"' for v in values) + "]", ""]
    lines.append("[parameters]")
    lines += [f'"path.{p}" = {{ dictionary = "{d}", probability = 0.8 }}' for p, d in bind.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fuzz_openapi_no_server_errors_no_schema_violations(fuzz_target, tmp_path):
    srv, tokens = fuzz_target
    report = tmp_path / "fuzz-report"
    config = _config(srv, tokens["admin"], tmp_path / "schemathesis.toml")
    cmd = [_st(), "--config-file", str(config), "run", f"{srv.url}/api", "--checks", CHECKS,
           "--max-examples", str(EXAMPLES), "--max-time", str(BUDGET_S),
           # one worker: hypothesis reads lambda sources with ast.parse, and two threads doing that
           # at once crash CPython 3.11's parser ("AST constructor recursion depth mismatch"; seen
           # three runs in a row with Debian's 3.11.2 in the fresh-machine check)
           "--workers", "1", "--seed", "7",
           "--phases", "examples,coverage,fuzzing", "--request-timeout", "120", "--no-shrink",
           "--generation-deterministic",
           # an admin key reaches every code path; the admin CRUD itself is exercised by test_security
           "-H", f"Authorization: Bearer {tokens['admin']}",
           "--exclude-path-regex", r"^/admin/(keys/\{key_id\}|layers/)",
           "--report", "junit", "--report-dir", str(report), "--no-color"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUDGET_S + 240)
    out = proc.stdout + proc.stderr
    for _ in range(2):
        if proc.returncode == 0 or not _fuzzer_crashed_itself(out):
            break
        # the fuzzer, not the server: should hypothesis' lambda-source reflection still crash
        # (see --workers above), the same run again, which is then judged as it is
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUDGET_S + 240)
        out = proc.stdout + proc.stderr
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fuzz-output.txt").write_text(out)
    assert proc.returncode == 0, f"schemathesis found problems (full output in test-artifacts/fuzz-output.txt):\n" \
                                 f"{out[-6000:]}\n--- server log ---\n{srv.logs()[-3000:]}"


def _fuzzer_crashed_itself(out: str) -> bool:
    """Only errors raised inside hypothesis' lambda-source reflection, and no failed check."""
    return ("hypothesis/internal/lambda_sources.py" in out and "Failures:" not in out
            and "Network Error" not in out and "Server error" not in out)

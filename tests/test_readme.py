"""Every curl line of the README works as written on the state `make demo` leaves (issue 12.13):
the sample county plus the demo's ingest steps (the land-use change delivery as v2) on a test
database, a live server, and each line run by bash with `B` pointing at it. Each must answer
2xx with content, and a feature collection must hold features (an example returning nothing
teaches nothing)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from geobase.settings import Settings


def readme_curl_block() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### curl", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.fixture
def demo_db(new_db, county_template, changed_county_template) -> Settings:
    """A private copy of what `make demo` leaves: the sample county and the demo's ingest steps
    (the land-use change delivery as v2), cloned from the session's changed_county_template."""
    return new_db(template=changed_county_template).model_copy(update={"data_dir": county_template[1]})


def test_every_readme_curl_line_answers_with_data(demo_db, live_server, tmp_path):
    srv = live_server(demo_db)
    lines = readme_curl_block()
    assert lines[0].startswith("B=") and sum(line.startswith("curl") for line in lines) >= 12
    (tmp_path / "sample_data").symlink_to(REPO / "sample_data")  # relative paths as from the checkout
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GEOBASE_DATABASE_URL": demo_db.database_url, "GEOBASE_DATA_DIR": str(demo_db.data_dir)}
    prelude = [f"B={srv.url}"]
    checked = 0
    for line in lines[1:]:
        if not line.startswith("curl"):  # an assignment the next lines use (T1=..., KEY=...)
            res = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(prelude + [line, "echo ok"])],
                                 env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert res.returncode == 0 and res.stdout.strip() == "ok", (line, res.stderr)
            prelude.append(line)
            continue
        hdr = tmp_path / "headers.txt"
        hdr.unlink(missing_ok=True)
        # the line itself, with curl told to fail on HTTP errors and to write its headers
        wrapper = f'curl() {{ command curl -sS --fail-with-body -D {hdr} "$@"; }}'
        res = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(prelude + [wrapper, line])],
                             env=env, cwd=tmp_path, capture_output=True, timeout=300)
        assert res.returncode == 0, (line, res.stderr.decode(errors="replace"), res.stdout[:500])
        statuses = re.findall(r"^HTTP/\S+ (\d{3})", hdr.read_text(errors="replace"), flags=re.M)
        assert statuses and statuses[-1].startswith("2"), (line, statuses)
        out = re.search(r"(?:\s-o ([\w./-]+)\s|\s>\s*([\w./-]+)\s*$)", line.split("  #")[0])
        body = (tmp_path / (out.group(1) or out.group(2))).read_bytes() if out else res.stdout
        assert len(body) > 0, line
        ctype = re.findall(r"^content-type: (.*)$", hdr.read_text(errors="replace"), flags=re.M | re.I)[-1]
        if "json" in ctype:
            doc = json.loads(body)
            if isinstance(doc, dict) and "features" in doc:
                assert doc["features"], f"no features: {line}"
            if isinstance(doc, dict) and "collections" in doc:
                assert doc["collections"], line
        checked += 1
    assert checked == sum(line.startswith("curl") for line in lines)


def test_readme_time_travel_and_change_feed_show_the_change(demo_db, live_server):
    """The datetime and changes examples show the demo's second version, not the same thing twice."""
    srv = live_server(demo_db)
    with srv.client() as c:
        t1 = c.get("/collections/land_use").json()["extent"]["temporal"]["interval"][0][0]
        then = c.get("/collections/land_use/items", params={"datetime": t1, "limit": 1}).json()
        now = c.get("/collections/land_use/items", params={"limit": 1}).json()
        assert then["numberMatched"] + 1 == now["numberMatched"]  # the split parcel
        feed = c.get("/collections/land_use/changes?from=1&to=2&limit=100").json()
        kinds = {f["properties"].get("change") for f in feed["features"]}
        assert {"added", "changed"} <= kinds, kinds

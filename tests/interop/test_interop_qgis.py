"""QGIS 3.22 (Debian 12's python3-qgis, headless) reads every public vector layer through its
OAPIF provider with the spec's field types and the database's values (issue 12 item 1).

``make interop`` runs these (``-m interop``; ``scripts/setup.sh --interop`` installs QGIS).
QGIS 3.22 reads no schema: it types its fields from its first request (10 features), so this
is the test of the numbers written as JSON reals; a property null in all of those 10 it can only
make a text field (water_areas.grade in the sample), which the test pins down too. It sends no API key (its OAPIF provider has no way to
add a header), hence the public layers."""

from __future__ import annotations

import pytest
from interop.clients import LOADED_VECTOR_LAYERS, PUBLIC_VECTOR_LAYERS, db_rows, output_types, qgis_available, run_qgis, spec_of

pytestmark = pytest.mark.interop

#: QGIS field type names a spec type may become
QGIS_TYPES = {"text": {"String"}, "number": {"Real"}, "integer": {"Integer", "Integer64"}}
QGIS_SAMPLE = 10  # features of the first request QGIS 3.22's OAPIF provider types the fields from


@pytest.fixture(scope="module")
def qgis() -> None:
    assert qgis_available(), "QGIS is missing: run scripts/setup.sh --interop (Debian python3-qgis)"


@pytest.mark.parametrize("layer", [n for n in PUBLIC_VECTOR_LAYERS if n in LOADED_VECTOR_LAYERS])
def test_qgis_322_oapif_provider_types_and_values(layer, qgis, county_server):
    spec = spec_of(layer)
    types = {n: t for n, t in output_types(spec).items()
             if not (set(a.hidden_from) & {"public"} if (a := _attr(spec, n)) else False)}
    wanted = list(types)
    out = run_qgis(county_server.url, layer, values=wanted)
    assert out["valid"], out
    want = db_rows(county_server.settings.database_url, spec)
    # QGIS 3.22 types its fields from the first 10 features (it reads no schema); a property null
    # in all of them it can only make a text field (the values stay right, as text)
    sampled = sorted(want)[:QGIS_SAMPLE]
    untyped = {n for n in types if all(want[k][n] is None for k in sampled)}
    wrong = {n: (t, out["fields"].get(n)) for n, t in types.items()
             if out["fields"].get(n) not in (QGIS_TYPES[t] if n not in untyped else {"String"})}
    assert not wrong, f"QGIS 3.22: {layer}: field types (spec, QGIS): {wrong}"
    got = out["values"]
    assert set(got) == set(want)

    def expected(n: str, v):
        return str(v) if n in untyped and v is not None else v

    bad = [(k, n, v, want[k][n]) for k, vals in got.items() for n, v in zip(wanted, vals)
           if v != expected(n, want[k][n]) or (v is not None and type(v) is not type(expected(n, want[k][n])))]
    assert not bad, f"QGIS 3.22: {layer}: {len(bad)} values differ, e.g. {bad[:5]}"


def _attr(spec, name: str):
    try:
        return spec.attribute(name)
    except KeyError:
        return None

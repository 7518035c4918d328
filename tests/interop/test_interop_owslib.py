"""OWSLib against the real server: it lists the collections, picks the feature collections by
``itemType`` (the dem coverage is not one) and reads the items of each (issue 12 item 8)."""

from __future__ import annotations

from interop.clients import LOADED_VECTOR_LAYERS, VECTOR_LAYERS, db_rows, output_types, spec_of


def test_owslib_lists_collections_and_reads_every_feature_collection(county_server, admin_key):
    from owslib.ogcapi.features import Features

    w = Features(county_server.url, headers={"X-API-Key": admin_key})
    ids = {c["id"] for c in w.collections()["collections"]}
    assert "dem" in ids  # listed, as the coverage it is
    assert sorted(w.feature_collections()) == sorted(VECTOR_LAYERS)
    for layer in LOADED_VECTOR_LAYERS:  # the derived layers: tests/test_imagery_flags.py
        spec = spec_of(layer)
        want = db_rows(county_server.settings.database_url, spec)
        page = w.collection_items(layer, limit=50)
        assert page["features"], layer
        for feat in page["features"]:
            row = want[feat["id"]]
            for name in output_types(spec):
                got = feat["properties"][name]
                assert got == row[name] and type(got) is type(row[name]), (layer, feat["id"], name, got, row[name])

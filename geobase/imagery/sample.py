"""The sample county's imagery series (``imagery_<date>.tif`` beside the sample layers, described
in its manifest's ``imagery`` section) ingested as the STAC collection ``county_imagery`` by
``geobase demo``.

The demo's rule holds here too: it never overwrites what it did not load. A scene whose item id
is already in the collection is kept as it is, whoever loaded it; only missing scenes are
ingested (:func:`geobase.imagery.ingest.add_image`), so a second demo does nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from geobase.settings import Settings


def imagery_section(directory: Path) -> dict | None:
    manifest = directory / "manifest.json"
    if not manifest.exists():
        return None
    return json.loads(manifest.read_text(encoding="utf-8")).get("imagery")


def ingest_sample_imagery(settings: Settings, directory: Path, echo: Callable[..., None] = print) -> list[str]:
    """Ingest the series' missing scenes; returns the item ids ingested."""
    import psycopg

    from geobase.catalog import imagery as cat
    from geobase.db import database_url
    from geobase.imagery.ingest import add_image, item_id_for

    section = imagery_section(directory)
    if not section:
        echo("  imagery          skipped: the sample county has no imagery series")
        return []
    collection = section["collection"]
    bands = ",".join(f"{k}={v}" for k, v in section["bands"].items())
    done = []
    for scene in section["scenes"]:
        path = directory / scene["file"]
        iid = item_id_for(path)
        if not path.exists():
            echo(f"  imagery          {scene['file']} not in the sample county: skipped")
            continue
        with psycopg.connect(database_url(settings)) as conn:
            exists = cat.item_exists(conn, collection, iid)
        if exists:
            echo(f"  imagery          {collection}/{iid} already catalogued: kept")
            continue
        add_image(settings, path, collection, when=scene["datetime"], sensor=section.get("sensor"), bands=bands,
                  item_id=iid)
        echo(f"  imagery          {collection}/{iid}: {scene['datetime']} ingested as a COG + STAC Item")
        done.append(iid)
    return done

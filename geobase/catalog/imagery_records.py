"""Imagery scenes as records of the open catalog (OGC API - Records): one record per STAC Item,
so that one catalog search (``q=``, ``bbox=``, ``datetime=``, facets) finds scenes and datasets
together. Called by :func:`geobase.catalog.records.build_records` (one hook line).

A scene record carries the access facts of the layer whose sharing rule imagery follows
(:data:`geobase.catalog.imagery.IMAGERY_RULE_LAYER`, the DEM): its sharing, grade and openness,
so :func:`geobase.security.record_visible` (zones, grades, sharing) decides scene records
exactly as it decides that layer's record and the STAC API (:func:`geobase.security.require_imagery`).
Without that layer's record (not in the registry) there are no scene records: fail closed."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from geobase.catalog.imagery import IMAGERY_RULE_LAYER

#: part of the records' cache stamp: a new scene shows on the next catalog request
STAMP_PART = "(SELECT count(*) FROM catalog.imagery_items)"


def _record(row: dict, rule: dict) -> dict:
    item = row["item"]
    props = item.get("properties", {})
    c, i = row["collection"], row["id"]
    when = row["datetime"].isoformat()
    cloud = props.get("eo:cloud_cover")
    sensor = ", ".join(props.get("instruments") or [])
    desc = f"{c}/{i}: {when[:10]}" + (f", {sensor}" if sensor else "") + (f", cloud {cloud} %" if cloud is not None else "")
    return {
        "id": f"{c}.{i}", "type": "dataset", "kind": "imagery",
        "title": {"zh": f"影像 {c} {i} ({when[:10]})", "en": f"Imagery {c} {i} ({when[:10]})"},
        "abstract": {"zh": "遥感影像 " + desc, "en": "Imagery scene " + desc},
        "data_class": "status", "level": rule["level"], "themes": ["imagery"], "tags": ["imagery", "stac"],
        "keywords": [k for k in ("imagery", "遥感", "影像", "stac", c, i, sensor) if k],
        "department": rule["department"], "contact": rule["contact"], "licence": rule["licence"],
        "update_frequency": None, "bbox": list(item["bbox"]), "interval": [when, when],
        "lineage": [], "quality": None, "grade": rule["grade"], "openness": rule["openness"],
        "distributions": [
            {"format": "stac-item", "media_type": "application/geo+json", "href": f"/stac/collections/{c}/items/{i}",
             "title": "STAC Item"},
            {"format": "cog", "media_type": "image/tiff; application=geotiff; profile=cloud-optimized",
             "href": f"/imagery/{c}/items/{i}/data.tif", "title": "Cloud-Optimized GeoTIFF"}],
        "updated": when, "access": rule["access"],
    }


async def imagery_records(conn: psycopg.AsyncConnection, records: list[dict]) -> list[dict]:
    """A record per scene, with the access facts of the rule layer's record in ``records``."""
    rule = next((r for r in records if r["id"] == IMAGERY_RULE_LAYER), None)
    if rule is None:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT collection, id, datetime, item FROM catalog.imagery_items ORDER BY collection, id")
        return [_record(r, rule) for r in await cur.fetchall()]

"""Catalog search and the records' standard encodings: OGC API - Records Part 1 (GeoJSON
records), DCAT-AP (JSON-LD) and the CSV export (UTF-8 with a byte order mark, for Excel, like
the rest of the product's CSV).

Input is the plain records of :mod:`geobase.catalog.records`, already filtered to what the
caller may see (:func:`geobase.security.record_visible`). Search runs in memory over them:
the records are few (thousands), cached per catalog state, and filtering a list is faster than a
round trip per facet.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from dataclasses import dataclass, field

import orjson

from geobase.errors import InvalidInput
from geobase.opendata.classes import CLASSES, LEVELS
from geobase.opendata.grades import LABELS_ZH

RECORD_CORE = "http://www.opengis.net/spec/ogcapi-records-1/1.0/req/record-core"
#: facet name (query parameter) -> the record key it reads
FACETS: dict[str, str] = {"theme": "themes", "class": "data_class", "level": "level", "grade": "grade",
                          "openness": "openness", "department": "department", "tag": "tags", "kind": "kind"}


@dataclass
class Query:
    """A catalog search: free text, box, time, type and facet values (OR within, AND across)."""

    q: list[str] = field(default_factory=list)
    bbox: list[float] | None = None
    interval: tuple[dt.datetime | None, dt.datetime | None] | None = None
    types: list[str] = field(default_factory=list)
    facets: dict[str, list[str]] = field(default_factory=dict)


def _time(text: str, parameter: str) -> dt.datetime | None:
    if text in ("", ".."):
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{parameter}: {text[:60]!r} is not an RFC 3339 date-time", parameter=parameter) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def parse_query(q: str | None, bbox: str | None, datetime_: str | None, type_: str | None,
                facets: dict[str, str | None]) -> Query:
    """The query parameters, checked (InvalidInput naming the parameter)."""
    out = Query(q=[t.lower() for t in (q or "").replace(",", " ").split() if t][:20])
    if bbox:
        try:
            box = [float(v) for v in bbox.split(",")]
        except ValueError:
            raise InvalidInput("bbox: four numbers minx,miny,maxx,maxy", parameter="bbox") from None
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[0] > box[2] or box[1] > box[3]:
            raise InvalidInput("bbox: four numbers minx,miny,maxx,maxy with min <= max", parameter="bbox")
        out.bbox = box
    if datetime_:
        start, _, end = datetime_.partition("/")
        a = _time(start, "datetime")
        out.interval = (a, _time(end, "datetime") if _ else a)
    out.types = [t for t in (type_ or "").split(",") if t]
    out.facets = {k: [v for v in val.split(",") if v] for k, val in facets.items() if val}
    return out


def _text(r: dict) -> str:
    dept = r.get("department") or {}
    parts = [r["id"], r["title"]["zh"], r["title"]["en"], r["abstract"]["zh"], r["abstract"]["en"],
             dept.get("name_zh") or "", dept.get("name_en") or "", *r["keywords"], *r["tags"], *r["themes"]]
    return " ".join(p for p in parts if p).lower()


def _facet_values(r: dict, key: str) -> list[str]:
    v = r.get(key)
    if key == "department":
        return [(v or {}).get("code") or ""]
    return list(v) if isinstance(v, list) else [v] if v else []


def _in_time(r: dict, interval) -> bool:
    if not r.get("interval"):
        return False
    a, b = (_time(t, "datetime") if t else None for t in r["interval"])
    lo, hi = interval
    return (hi is None or a is None or a <= hi) and (lo is None or b is None or b >= lo)


def matches(r: dict, query: Query) -> bool:
    if query.q:
        text = r.get("_text")
        if text is None:   # kept in the (cached) record: built once per catalog state
            text = r["_text"] = _text(r)
        if not all(t in text for t in query.q):
            return False
    if query.bbox:
        b = r.get("bbox")
        if not b or b[0] > query.bbox[2] or b[2] < query.bbox[0] or b[1] > query.bbox[3] or b[3] < query.bbox[1]:
            return False
    if query.interval and not _in_time(r, query.interval):
        return False
    if query.types and r["type"] not in query.types:
        return False
    for name, wanted in query.facets.items():
        if not set(_facet_values(r, FACETS[name])) & set(wanted):
            return False
    return True


def search(records: list[dict], query: Query) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """The matching records and, over them, the count of each facet value: what
    :func:`matches` says record by record, through the list's index (bit sets per facet value,
    built once per list: :mod:`geobase.opendata.search_index`; a repeated query's answer is
    kept with the index)."""
    idx = index_of(records)
    mask, counts = idx.answer(query)
    return idx.hits(mask), counts


def index_of(records: list[dict]):
    """The search index of a record list (built on first use, kept with the list)."""
    from geobase.opendata.search_index import index_for

    return index_for(records, FACETS, _text, _facet_values)


def search_by_scan(records: list[dict], query: Query) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """:func:`search` record by record (the reference the index is tested against)."""
    hits = [r for r in records if matches(r, query)]
    facets: dict[str, dict[str, int]] = {name: {} for name in FACETS}
    for r in hits:
        for name, key in FACETS.items():
            for v in _facet_values(r, key):
                facets[name][v] = facets[name].get(v, 0) + 1
    return hits, facets


def _polygon(b: list[float] | None) -> dict | None:
    if not b:
        return None
    return {"type": "Polygon", "coordinates": [[[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]], [b[0], b[1]]]]}


def _href(root: str, href: str) -> str:
    return href if href.startswith(("http://", "https://")) else root + href


def record_geojson(r: dict, root: str, lang: str = "zh") -> dict:
    """One OGC API - Records record (a GeoJSON feature)."""
    dept = r.get("department") or {}
    other = "en" if lang == "zh" else "zh"
    self_url = f"{root}/collections/catalog/items/{r['id']}"
    links = [{"rel": "self", "type": "application/geo+json", "href": self_url},
             {"rel": "alternate", "type": "text/html", "href": f"{self_url}?f=html"},
             {"rel": "collection", "type": "application/json", "href": f"{root}/collections/catalog"}]
    links += [{"rel": "enclosure" if d["format"] not in ("ogcapi-features", "mvt") else "service",
               "type": d["media_type"], "title": d["title"], "href": _href(root, d["href"])} for d in r["distributions"]]
    return {
        "type": "Feature", "id": r["id"], "conformsTo": [RECORD_CORE], "geometry": _polygon(r.get("bbox")),
        "time": {"interval": r["interval"]} if r.get("interval") else None,
        "properties": {
            "type": r["type"], "title": r["title"][lang] or r["title"][other], "description": r["abstract"][lang],
            "title_zh": r["title"]["zh"], "title_en": r["title"]["en"],
            "keywords": r["keywords"], "language": {"code": lang},
            "themes": [{"scheme": "geobase:theme", "concepts": [{"id": t} for t in r["themes"]]},
                       {"scheme": "geobase:class", "concepts": [{"id": r["data_class"], "title": CLASSES[r["data_class"]]}]},
                       {"scheme": "geobase:level", "concepts": [{"id": r["level"], "title": LEVELS[r["level"]]}]}],
            "contacts": [{"organization": dept.get("name_zh") or dept.get("code"), "identifier": dept.get("code"),
                          "emails": [{"value": r["contact"]}] if r.get("contact") else [], "roles": ["owner"]}],
            "license": r.get("licence"), "updated": r.get("updated"), "updateFrequency": r.get("update_frequency"),
            "formats": [{"name": d["format"], "mediaType": d["media_type"]} for d in r["distributions"]],
            "tags": r["tags"], "dataClass": r["data_class"], "level": r["level"], "kind": r["kind"],
            "grade": r["grade"], "openness": r["openness"],
            "grade_zh": LABELS_ZH.get(r["grade"] or ""), "openness_zh": LABELS_ZH.get(r["openness"] or ""),
            "lineage": r["lineage"], "quality": r["quality"],
        },
        "links": links,
    }


#: encodings a record keeps (its server addresses x languages; a few, whatever Host headers come)
_KEPT_ENCODINGS = 8


def record_json(r: dict, root: str, lang: str = "zh") -> orjson.Fragment:
    """:func:`record_geojson` as JSON bytes, encoded once per record of a catalog state (the
    records are rebuilt when the state changes, so a kept encoding is never stale) and spliced
    as is into a search page (``orjson.Fragment``): a page of ten no longer builds and
    serialises ten records' links, themes and lineage per request."""
    kept = r.get("_json")
    if kept is None:
        kept = r["_json"] = {}
    got = kept.get((root, lang))
    if got is None:
        if len(kept) >= _KEPT_ENCODINGS:
            kept.clear()
        got = kept[(root, lang)] = orjson.Fragment(orjson.dumps(record_geojson(r, root, lang)))
    return got


DCAT_CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#", "dct": "http://purl.org/dc/terms/", "foaf": "http://xmlns.com/foaf/0.1/",
    "vcard": "http://www.w3.org/2006/vcard/ns#", "locn": "http://www.w3.org/ns/locn#",
    "xsd": "http://www.w3.org/2001/XMLSchema#", "geobase": "urn:geobase:",
}


def _lit(value: str, lang: str) -> dict:
    return {"@value": value, "@language": lang}


def dcat_catalog(records: list[dict], root: str) -> dict:
    """The catalog as DCAT (JSON-LD, explicit IRIs so any JSON-LD processor reads it)."""
    datasets = []
    for r in records:
        dept = r.get("department") or {}
        ds = {
            "@id": f"{root}/collections/catalog/items/{r['id']}", "@type": "dcat:Dataset",
            "dct:identifier": r["id"],
            "dct:title": [_lit(r["title"]["zh"], "zh"), _lit(r["title"]["en"], "en")],
            "dct:description": [_lit(r["abstract"]["zh"], "zh"), _lit(r["abstract"]["en"], "en")],
            "dcat:keyword": r["keywords"] + r["tags"], "dcat:theme": [{"@id": f"urn:geobase:theme:{t}"} for t in r["themes"]],
            "dct:publisher": {"@type": "foaf:Organization", "foaf:name": dept.get("name_zh") or dept.get("code") or ""},
            "dcat:contactPoint": {"@type": "vcard:Organization", "vcard:hasEmail": r.get("contact") or ""},
            "dct:accrualPeriodicity": r.get("update_frequency") or "",
            "dct:license": r.get("licence") or "",
            "geobase:grade": r["grade"], "geobase:openness": r["openness"],
            "geobase:dataClass": r["data_class"], "geobase:level": r["level"],
            "dcat:distribution": [{"@type": "dcat:Distribution", "dct:format": d["format"],
                                   "dcat:mediaType": d["media_type"], "dct:title": d["title"],
                                   ("dcat:downloadURL" if d["format"] not in ("ogcapi-features", "mvt") else "dcat:accessURL"):
                                       {"@id": _href(root, d["href"])}} for d in r["distributions"]],
        }
        if r.get("updated"):
            ds["dct:modified"] = {"@value": r["updated"], "@type": "xsd:dateTime"}
        if r.get("bbox"):
            b = r["bbox"]
            ds["dct:spatial"] = {"@type": "dct:Location", "dcat:bbox": {
                "@value": f"POLYGON(({b[0]} {b[1]},{b[2]} {b[1]},{b[2]} {b[3]},{b[0]} {b[3]},{b[0]} {b[1]}))",
                "@type": "http://www.opengis.net/ont/geosparql#wktLiteral"}}
        if r.get("interval"):
            ds["dct:temporal"] = {"@type": "dct:PeriodOfTime",
                                  **({"dcat:startDate": {"@value": r["interval"][0], "@type": "xsd:dateTime"}}
                                     if r["interval"][0] else {}),
                                  **({"dcat:endDate": {"@value": r["interval"][1], "@type": "xsd:dateTime"}}
                                     if r["interval"][1] else {})}
        datasets.append(ds)
    return {"@context": DCAT_CONTEXT, "@id": f"{root}/catalog", "@type": "dcat:Catalog",
            "dct:title": [_lit("自然资源数据资源目录", "zh"), _lit("Natural resources data catalog", "en")],
            "dcat:dataset": datasets}


CSV_HEADER = ["标识 id", "名称 title_zh", "title_en", "摘要 abstract", "数据分类 class", "层级 level", "主题 themes",
              "标签 tags", "关键词 keywords", "责任部门 department", "联系方式 contact", "许可 licence",
              "更新频率 update_frequency", "分级 grade", "开放类型 openness", "范围 bbox", "时间 interval",
              "更新时间 updated", "下载 downloads"]


def catalog_csv(records: list[dict], root: str) -> bytes:
    """The catalog as one CSV table (UTF-8 with BOM: Excel opens it in Chinese)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_HEADER)
    for r in records:
        dept = r.get("department") or {}
        w.writerow([r["id"], r["title"]["zh"], r["title"]["en"], r["abstract"]["zh"],
                    CLASSES[r["data_class"]], LEVELS[r["level"]], ";".join(r["themes"]), ";".join(r["tags"]),
                    ";".join(r["keywords"]), dept.get("name_zh") or dept.get("code") or "", r.get("contact") or "",
                    r.get("licence") or "", r.get("update_frequency") or "", LABELS_ZH.get(r["grade"] or "", ""),
                    LABELS_ZH.get(r["openness"] or "", ""), ",".join(str(v) for v in r["bbox"] or []),
                    "/".join(t or ".." for t in r["interval"] or []), r.get("updated") or "",
                    " ".join(_href(root, d["href"]) for d in r["distributions"])])
    return "\ufeff".encode() + buf.getvalue().encode()

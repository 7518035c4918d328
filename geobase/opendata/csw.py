"""CSW 2.0.2 over the catalog records, by pycsw: the protocol (GetCapabilities, DescribeRecord,
GetRecords with OGC filters and paging, GetRecordById, GetDomain) is pycsw's; this module gives
it a repository.

pycsw's own SQLAlchemy repository does not run on the SQLAlchemy 2 this project uses, so pycsw
gets a *custom repository* (its ``repository.source`` plug-in point): :class:`GeobaseRepository`,
an in-memory SQLite table with pycsw's core columns, filled by pycsw's own metadata parser from
one Dublin Core ``csw:Record`` per catalog record, queried with the SQL where-clauses pycsw's
filter parser writes (and pycsw's SQL functions for spatial and full-text predicates).

One table per set of records a caller may see (keyed by the records' ids and update times), so
a caller never finds in CSW what the catalog would not list to it; kept for the few views in use.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import threading
from urllib.parse import urlsplit

from lxml import etree

_LOCK = threading.Lock()   # pycsw keeps module-level state (spatial ranking): one request at a time
_TABLES: dict[str, _Table] = {}
_MAX_TABLES = 16
NS = {"csw": "http://www.opengis.net/cat/csw/2.0.2", "dc": "http://purl.org/dc/elements/1.1/",
      "dct": "http://purl.org/dc/terms/", "ows": "http://www.opengis.net/ows"}


class _Record:
    """A row as pycsw reads it: one attribute per column."""


def dc_record(r: dict, root: str) -> etree._Element:
    """One catalog record as a Dublin Core csw:Record (what pycsw parses into its columns)."""
    el = etree.Element(f"{{{NS['csw']}}}Record", nsmap={k: v for k, v in NS.items() if k != "ows"} | {"ows": NS["ows"]})

    def add(ns: str, tag: str, text: str | None, **attrib: str) -> None:
        if text:
            child = etree.SubElement(el, f"{{{NS[ns]}}}{tag}", attrib)
            child.text = text

    add("dc", "identifier", r["id"])
    add("dc", "title", r["title"]["zh"])
    add("dct", "alternative", r["title"]["en"])
    add("dc", "type", "dataset")
    for word in [*r["keywords"], *r["tags"], *r["themes"]]:
        add("dc", "subject", word)
    add("dct", "abstract", r["abstract"]["zh"])
    dept = r.get("department") or {}
    add("dc", "publisher", dept.get("name_zh") or dept.get("code"))
    add("dc", "creator", dept.get("name_zh") or dept.get("code"))
    add("dct", "modified", r.get("updated"))
    add("dc", "rights", r.get("licence"))
    add("dct", "accessRights", f"{r['openness']} / {r['grade']}")
    for d in r["distributions"]:
        href = d["href"] if d["href"].startswith("http") else root + d["href"]
        add("dct", "references", href, scheme=d["media_type"])
        add("dc", "format", d["media_type"])
    if r.get("bbox"):
        b = r["bbox"]
        box = etree.SubElement(el, f"{{{NS['ows']}}}BoundingBox", crs="urn:ogc:def:crs:EPSG::4326")
        etree.SubElement(box, f"{{{NS['ows']}}}LowerCorner").text = f"{b[1]} {b[0]}"
        etree.SubElement(box, f"{{{NS['ows']}}}UpperCorner").text = f"{b[3]} {b[2]}"
    return el


class _Table:
    """The records of one view in SQLite, with pycsw's columns and SQL functions."""

    def __init__(self, records: list[dict], root: str):
        _import_pycsw()
        from pycsw.core import config, metadata
        from pycsw.core.repository import create_custom_sql_functions

        context = config.StaticContext()
        context.set_model("csw")
        self.columns = sorted({v for v in context.md_core_model["mappings"].values() if isinstance(v, str)})
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        create_custom_sql_functions(self.conn)
        self.conn.execute("CREATE TABLE records (" + ", ".join(f'"{c}" TEXT' for c in self.columns) + ")")
        self.conn.execute("CREATE INDEX records_identifier ON records (identifier)")
        holder = type("Holder", (), {"dataset": _Record})()
        for r in records:
            for obj in metadata.parse_record(context, dc_record(r, root), holder):
                values = [getattr(obj, c, None) for c in self.columns]
                values = [v.decode() if isinstance(v, bytes) else v for v in values]
                self.conn.execute("INSERT INTO records VALUES (" + ",".join("?" * len(self.columns)) + ")", values)


class GeobaseRepository:
    """pycsw's repository interface over a :class:`_Table` (``repo_filter`` names the table)."""

    def __init__(self, context, repo_filter=None):
        self.context = context
        self.filter = None
        self.fts = False
        self.dbtype = "sqlite"
        self.dataset = _Record
        self.table = _TABLES[repo_filter]
        self.queryables: dict[str, dict] = {}
        for tname in context.model["typenames"]:
            for qname, qvalue in context.model["typenames"][tname]["queryables"].items():
                self.queryables.setdefault(qname, {}).update(qvalue)
        self.queryables["_all"] = {}
        for qbl in list(self.queryables):
            self.queryables["_all"].update(self.queryables[qbl])
        self.queryables["_all"].update(context.md_core_model["mappings"])

    def _column(self, name: str) -> str:
        if name not in self.table.columns:
            raise RuntimeError(f"unknown property {name!r}")
        return f'"{name}"'

    def _rows(self, sql: str, params=()) -> list[_Record]:
        cur = self.table.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            rec = _Record()
            for n, v in zip(names, row):
                setattr(rec, n, v)
            out.append(rec)
        return out

    def query_ids(self, ids):
        ids = list(ids)
        return self._rows(f"SELECT * FROM records WHERE identifier IN ({','.join('?' * len(ids))})", ids)

    def query_domain(self, domain, typenames, domainquerytype="list", count=False):
        col = self._column(domain)
        if domainquerytype == "range":
            return self.table.conn.execute(f"SELECT min({col}), max({col}) FROM records").fetchall()
        if count:
            return self.table.conn.execute(f"SELECT {col}, count({col}) FROM records GROUP BY {col}").fetchall()
        return self.table.conn.execute(f"SELECT DISTINCT {col} FROM records").fetchall()

    def query_insert(self, direction="max"):
        fn = "min" if direction == "min" else "max"
        return self.table.conn.execute(f"SELECT {fn}(insert_date) FROM records").fetchone()[0]

    def query_source(self, source):
        return self._rows("SELECT * FROM records WHERE source = ?", (source,))

    def query(self, constraint, sortby=None, typenames=None, maxrecords=10, startposition=0):
        where, params = "1=1", []
        if "where" in constraint:
            # pycsw's filter parser wrote it; for a custom repository (its "django" mode) with %s
            # placeholders for the values, which are never in the text itself
            where = constraint["where"].replace("%s", "?")
            params = list(constraint["values"])
        total = self.table.conn.execute(f"SELECT count(*) FROM records WHERE {where}", params).fetchone()[0]
        order = "identifier"
        if sortby is not None:
            order = self._column(sortby["propertyname"]) + (" DESC" if sortby.get("order") == "DESC" else "")
        rows = self._rows(f"SELECT * FROM records WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                          [*params, int(maxrecords), int(startposition)])
        return [str(total), rows]


def _config(url: str, key: str) -> dict:
    return {
        "server": {"home": "/tmp", "url": url, "mimetype": "application/xml; charset=UTF-8", "encoding": "UTF-8",
                   "language": "en-US", "maxrecords": "100", "pretty_print": "false", "domainquerytype": "list",
                   "domaincounts": "false"},
        "manager": {"transactions": "false", "allowed_ips": ""},
        "metadata:main": {
            "identification_title": "geobase 数据资源目录 (CSW)", "identification_abstract":
                "The open catalog of the natural resources one map", "identification_keywords": "catalog,geobase",
            "identification_keywords_type": "theme", "identification_fees": "None",
            "identification_accessconstraints": "None", "provider_name": "geobase", "provider_url": url,
            "contact_name": "", "contact_position": "", "contact_address": "", "contact_city": "",
            "contact_stateorprovince": "", "contact_postalcode": "", "contact_country": "", "contact_phone": "",
            "contact_fax": "", "contact_email": "", "contact_url": url, "contact_hours": "",
            "contact_instructions": "", "contact_role": "pointOfContact"},
        "repository": {"database": "unused", "table": "records", "source": f"{__name__}.GeobaseRepository",
                       "filter": key},
    }


def _import_pycsw() -> None:
    """Import pycsw although its distribution pins OWSLib<0.29 (the 2.6 line, the only one the
    index offers) while this project needs a newer OWSLib: ``pycsw/__init__`` asks pkg_resources
    for its own version, which re-checks that pin and fails. Answer that one question (and only
    while importing); pycsw's CSW 2.0.2 code runs with the newer OWSLib (tests/test_catalog.py)."""
    import sys

    if "pycsw" in sys.modules:
        return
    import pkg_resources

    real = pkg_resources.require

    def require(*requirements):
        if requirements == ("pycsw",):
            from importlib.metadata import version

            return [type("Dist", (), {"version": version("pycsw")})()]
        return real(*requirements)

    pkg_resources.require = require
    try:
        import pycsw  # noqa: F401
    finally:
        pkg_resources.require = real


class CswEndpoint:
    """Answers one CSW request over a set of records (the caller's view)."""

    def __init__(self) -> None:
        #: the records list of the last request (kept, so its identity cannot be reused) and its table
        self._last: tuple[list[dict], str, str] | None = None

    def handle(self, records: list[dict], url: str, method: str, query: str, body: bytes,
               content_type: str) -> tuple[int, dict[str, str], bytes]:
        _import_pycsw()
        from pycsw.server import Csw

        root = url.rsplit("/csw", 1)[0]
        last = self._last
        if last is not None and last[0] is records and last[1] == root:   # the same kept view: same table
            key = last[2]
        else:
            key = hashlib.sha256(("|".join(f"{r['id']}@{r['updated']}" for r in records) + root).encode()).hexdigest()
            self._last = (records, root, key)
        parts = urlsplit(url)
        environ = {"REQUEST_METHOD": method, "QUERY_STRING": query, "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": content_type, "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": parts.scheme,
                   "HTTP_HOST": parts.netloc, "SERVER_NAME": parts.hostname or "localhost",
                   "SERVER_PORT": str(parts.port or 80), "PATH_INFO": parts.path, "SCRIPT_NAME": ""}
        with _LOCK:
            if key not in _TABLES:
                if len(_TABLES) >= _MAX_TABLES:
                    _TABLES.clear()
                _TABLES[key] = _Table(records, root)
            csw = Csw(_config(url, key), environ, version="2.0.2")
            status, content = csw.dispatch_wsgi()
        code = int(str(status).split()[0])
        content = content if isinstance(content, bytes) else str(content).encode()
        return code, {"Content-Type": csw.contenttype}, content

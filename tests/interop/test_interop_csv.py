"""CSV downloads as Excel opens them (issue 12 item 14).

Excel decides the encoding of a CSV by its first bytes: a UTF-8 byte order mark means UTF-8,
anything else is read in the machine's ANSI code page (GBK, code page 936, on a Chinese
Windows). It then splits the text with its own CSV rules, which Python's ``csv.excel`` dialect
reproduces. The reader below does exactly that, and what it reads is compared with the
database."""

from __future__ import annotations

import codecs
import csv
import io

from interop.clients import db_rows, output_types, spec_of

ANSI_CODE_PAGE = "gbk"  # what Excel on a zh-CN Windows uses for a CSV without a BOM


def read_like_excel(data: bytes) -> list[list[str]]:
    if data.startswith(codecs.BOM_UTF8):
        text = data[len(codecs.BOM_UTF8):].decode("utf-8")
    else:
        text = data.decode(ANSI_CODE_PAGE, errors="replace")
    return list(csv.reader(io.StringIO(text, newline=""), dialect=csv.excel))


def _as_db(cell: str, typ: str):
    if cell == "":
        return None
    return {"number": float, "integer": int}.get(typ, str)(cell)


def test_csv_with_bom_opens_in_excel_with_the_databases_text(county_server):
    spec = spec_of("land_use")
    with county_server.client() as http:
        links = http.get("/collections/land_use").json()["links"]
        link = next(lk for lk in links if lk["href"].endswith("items?f=csv&bom=true"))
        assert link["rel"] == "items" and link["type"] == "text/csv" and "Excel" in link["title"]
        r = http.get(link["href"])
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        plain = http.get("/collections/land_use/items", params={"f": "csv"}).content
    assert r.content.startswith(codecs.BOM_UTF8)
    rows = read_like_excel(r.content)
    header, body = rows[0], rows[1:]
    types = output_types(spec)
    visible = [c for c in header if c in types]
    assert header[0] == "id" and "dlmc" in visible and "qsdwmc" not in visible  # masked for the public
    want = db_rows(county_server.settings.database_url, spec)
    got = {row[0]: {c: _as_db(row[header.index(c)], types[c]) for c in visible} for row in body}
    assert set(got) == set(want)
    bad = [(k, c, got[k][c], want[k][c]) for k in want for c in visible
           if got[k][c] != (want[k][c] if want[k][c] != "" else None)]
    assert not bad, bad[:5]
    assert any("地" in (v["dlmc"] or "") for v in got.values())
    # without the BOM, the same reader (as Excel) garbles the Chinese names: why the option exists
    assert not plain.startswith(codecs.BOM_UTF8)
    garbled = read_like_excel(plain)
    assert garbled[1][header.index("dlmc")] != body[0][header.index("dlmc")]


def test_bom_is_a_csv_option_only(county_server):
    with county_server.client() as http:
        r = http.get("/collections/land_use/items", params={"bom": "true"})
        assert r.status_code == 400 and r.json()["parameter"] == "bom"
        r = http.get("/collections/land_use/items", params={"f": "csv", "bom": "maybe"})
        assert r.status_code == 400 and r.json()["parameter"] == "bom"

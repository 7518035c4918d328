"""The shared answer of /items and /changes: ETag and 304, then a GeoJSON page (or its HTML
view) or a whole download (GeoJSON, CSV, GeoPackage, FlatGeobuf), streamed.

The handler resolves the collection and builds the query (:func:`geobase.features.build_query`)
on a connection it gives back; everything here takes connections of its own, one at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson
from fastapi import Request
from fastapi.responses import Response

from geobase import audit, formats
from geobase.api.deps import Collection, base_url, caller_cache_headers, not_modified
from geobase.api.negotiation import GEOJSON
from geobase.api.pages import page_url, render, script_json
from geobase.api.streaming import ClosingStreamingResponse, streamed
from geobase.db import database_url
from geobase.errors import ServiceUnavailable
from geobase.crs import CRS84
from geobase.features import FeatureQuery, encode_cursor, etag_for
from geobase.geoparquet import parquet_body
from geobase.security import Principal

#: representations that are whole files (attachments), never paged
DOWNLOADS = frozenset({"csv", "gpkg", "fgb", "parquet"})
_HEAD = b'{"type":"FeatureCollection","features":['


@dataclass
class ItemsAnswer:
    """One /items or /changes request being answered."""

    request: Request
    principal: Principal
    collection: Collection
    path: str
    bom: bool = False  # CSV with a UTF-8 byte order mark (``bom=true``)

    async def respond(self, q: FeatureQuery, fmt: str, download: bool, want_count: bool,
                      extra_etag: tuple = ()) -> Response:
        """304 when the caller holds this representation; else the page or the download."""
        c = self.collection
        gz = formats.accepts_gzip(self.request.headers.get("accept-encoding"))
        etag = etag_for(c.spec.name, q.version, c.state.current_version,
                        sorted(self.request.query_params.multi_items()), sorted(c.hidden), fmt, gz, *extra_etag)
        headers = caller_cache_headers(self.principal, etag)
        headers["Content-Crs"] = f"<{q.out_crs.uri}>"
        if not_modified(self.request, etag):
            return Response(status_code=304, headers=headers)
        if fmt in DOWNLOADS or download:
            return await self._download(q, fmt, headers)
        return await self._page(q, fmt, headers, await self._number_matched(q, want_count))

    # --------------------------------------------------------------------------------------
    # a page
    # --------------------------------------------------------------------------------------
    async def _number_matched(self, q: FeatureQuery, want_count: bool) -> int | None:
        """Counted when asked; known without counting for the whole current layer."""
        settings = self.request.app.state.settings
        if want_count:
            try:
                async with self.request.app.state.pool.connection(timeout=settings.pool_timeout_s) as conn:
                    return await q.count(conn)
            except formats.CLIENT_ERRORS as exc:
                raise formats.client_error(exc) from None
        if not q.has_spatial_or_filter and q.source is None and q.cursor_values is None:
            info = self.collection.state.versions.get(q.version or -1)
            return info["rows_total"] if info else 0
        return None

    async def _page(self, q: FeatureQuery, fmt: str, headers: dict, number_matched: int | None) -> Response:
        settings = self.request.app.state.settings
        stream = await formats.RowStream(self.request.app.state.pool, q.page_sql(),
                                         timeout_ms=settings.statement_timeout_ms,
                                         pool_timeout=settings.pool_timeout_s, fast_start=q.limit is None).open()
        page = _Page(self, q, stream)
        if fmt == "html":
            feats = [orjson.loads(t) async for t in page.rows()]
            fc = orjson.dumps({"type": "FeatureCollection", "features": feats}).decode()
            return render("items.html", spec=self.collection.spec, features=feats, links=page.links(),
                          root=base_url(self.request), features_json=script_json(fc),
                          number_matched=number_matched, version=q.version)

        def tail() -> bytes:
            audit.note(count=page.n)
            doc = {"numberReturned": page.n, "links": page.links(),
                   "timeStamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            if number_matched is not None:
                doc["numberMatched"] = number_matched
            if q.version is not None:
                doc["version"] = q.version
            return b"]," + orjson.dumps(doc)[1:]

        return streamed(self.request, formats.geojson_body(_HEAD, page.rows(), tail), GEOJSON, headers)

    # --------------------------------------------------------------------------------------
    # a download
    # --------------------------------------------------------------------------------------
    async def _download(self, q: FeatureQuery, fmt: str, headers: dict) -> Response:
        """The whole result as an attachment, one of ``export_concurrency`` at a time (503
        after the pool timeout): the slot is held until the body ends or the client leaves."""
        settings = self.request.app.state.settings
        sem: asyncio.Semaphore = self.request.app.state.export_semaphore
        try:
            await asyncio.wait_for(sem.acquire(), timeout=settings.pool_timeout_s)
        except TimeoutError:
            raise ServiceUnavailable("too many downloads at once; retry shortly") from None
        release = _once(sem.release)
        ext = formats.EXTENSIONS.get(fmt, "geojson")
        stamp = f"v{q.version}" if q.version is not None else "empty"
        headers["Content-Disposition"] = f'attachment; filename="{self.collection.spec.name}_{stamp}.{ext}"'
        try:
            if fmt in ("json", "geojson"):
                return await self._geojson_download(q, headers, release)
            if fmt == "csv":
                inner = formats.csv_body(self.request.app.state.pool, q.rows_sql("wkt"),
                                         timeout_ms=settings.analysis_statement_timeout_ms,
                                         pool_timeout=settings.pool_timeout_s, bom=self.bom)
                return streamed(self.request, _releasing(inner, release), formats.MEDIA["csv"], headers)
            if fmt == "parquet":
                return await self._parquet_download(q, headers, release)
            return await self._file_download(q, fmt, ext, headers, release)
        except BaseException:
            release()
            raise

    async def _geojson_download(self, q: FeatureQuery, headers: dict, release: Callable[[], None]) -> Response:
        settings = self.request.app.state.settings
        stream = await formats.RowStream(self.request.app.state.pool, q.page_sql(),
                                         timeout_ms=settings.analysis_statement_timeout_ms,
                                         pool_timeout=settings.pool_timeout_s).open()
        nkeys = len(q.sort)
        count = {"n": 0}

        async def rows() -> AsyncIterator[str]:
            batches = stream.batches()
            try:
                async for batch in batches:
                    count["n"] += len(batch)
                    for row in batch:
                        yield row[nkeys]
            finally:
                try:
                    await batches.aclose()
                    await stream.close()
                finally:
                    release()

        def tail() -> bytes:
            audit.note(count=count["n"])
            return b'],"numberReturned":' + str(count["n"]).encode() + b"}"

        return streamed(self.request, formats.geojson_body(_HEAD, rows(), tail), GEOJSON, headers)

    async def _parquet_download(self, q: FeatureQuery, headers: dict, release: Callable[[], None]) -> Response:
        """GeoParquet, streamed row group by row group as the cursor is read."""
        settings = self.request.app.state.settings
        stream = await formats.RowStream(self.request.app.state.pool, q.rows_sql("wkb"),
                                         timeout_ms=settings.analysis_statement_timeout_ms,
                                         pool_timeout=settings.pool_timeout_s).open()
        body = parquet_body(stream.batches(), q.export_columns(), not q.skip_geometry, crs_srid(q.out_crs))
        return ClosingStreamingResponse(_releasing(body, release), media_type=formats.MEDIA["parquet"],
                                        headers=headers)

    async def _file_download(self, q: FeatureQuery, fmt: str, ext: str, headers: dict,
                             release: Callable[[], None]) -> Response:
        """GeoPackage / FlatGeobuf: GDAL writes a temporary file (in a worker thread), which is
        then streamed and deleted."""
        settings = self.request.app.state.settings
        spec = self.collection.spec
        driver = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}[fmt]
        path = formats.temp_path(settings.data_path / "exports", ext)
        try:
            await asyncio.to_thread(
                formats.write_file, database_url(settings), q.rows_sql("wkb"), q.export_columns(),
                not q.skip_geometry, driver, path, spec.name, q.out_crs.srid,
                settings.analysis_statement_timeout_ms, spec.geometry)
        except formats.CLIENT_ERRORS as exc:
            path.unlink(missing_ok=True)
            raise formats.client_error(exc) from None
        except BaseException:  # timeout, cancelled request: no file is left behind
            path.unlink(missing_ok=True)
            raise
        headers["Content-Length"] = str(path.stat().st_size)
        return ClosingStreamingResponse(_releasing(formats.file_body(path), release),
                                        media_type=formats.MEDIA[fmt], headers=headers)


class _Page:
    """The rows of one page (read forward, or backward for a ``prev`` cursor and then
    reversed) and the paging links they make."""

    def __init__(self, answer: ItemsAnswer, q: FeatureQuery, stream: formats.RowStream):
        self.answer, self.q, self.stream = answer, q, stream
        self.nkeys = len(q.sort)
        self.forward = q.cursor_dir == "n"
        self.n = 0
        self.more = False
        self.first: list | None = None
        self.last: list | None = None

    async def rows(self) -> AsyncIterator[str]:
        q, nkeys = self.q, self.nkeys
        buffered: list[tuple] = []
        batches = self.stream.batches()
        try:
            async for batch in batches:
                for row in batch:
                    if q.limit is not None and self.n >= q.limit:
                        self.more = True
                        break
                    self.n += 1
                    if self.forward:
                        if self.first is None:
                            self.first = list(row[:nkeys])
                        self.last = list(row[:nkeys])
                        yield row[nkeys]
                    else:
                        buffered.append(row)
                if self.more:
                    break
        finally:
            await batches.aclose()
            await self.stream.close()
        if not self.forward:
            buffered.reverse()
            if buffered:
                self.first, self.last = list(buffered[0][:nkeys]), list(buffered[-1][:nkeys])
            for row in buffered:
                yield row[nkeys]

    def links(self) -> list[dict]:
        request, path, q = self.answer.request, self.answer.path, self.q
        out = [
            {"rel": "self", "type": GEOJSON, "title": "This page", "href": page_url(request, path, f="json")},
            {"rel": "alternate", "type": "text/html", "title": "This page as HTML",
             "href": page_url(request, path, f="html")},
            {"rel": "collection", "type": "application/json", "title": "The collection",
             "href": f"{base_url(request)}/collections/{self.answer.collection.spec.name}"},
        ]
        has_next = self.more if self.forward else (self.last is not None)
        has_prev = (q.cursor_values is not None and self.first is not None) if self.forward else self.more
        if has_next and self.last is not None:
            out.append({"rel": "next", "type": GEOJSON, "title": "Next page", "href": page_url(
                request, path, cursor=encode_cursor(q.version, "n", q.sort_sig, self.last))})
        if has_prev:
            out.append({"rel": "prev", "type": GEOJSON, "title": "Previous page", "href": page_url(
                request, path, cursor=encode_cursor(q.version, "p", q.sort_sig, self.first))})
        return out


def crs_srid(crs) -> int | None:
    """The SRID a file's CRS metadata names; None for OGC:CRS84 (GeoParquet's default)."""
    return None if crs.uri == CRS84 else crs.srid


def _once(release: Callable[[], None]) -> Callable[[], None]:
    """``release`` made safe to call more than once (the body's end and an error may both)."""
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            release()

    return once


async def _releasing(inner: AsyncIterator[bytes], release: Callable[[], None]) -> AsyncIterator[bytes]:
    """``inner``'s chunks; when it ends or the client leaves, close it and release the slot."""
    try:
        async for chunk in inner:
            yield chunk
    finally:
        try:
            await inner.aclose()
        finally:
            release()

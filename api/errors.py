"""Typed errors -> HTTP responses, in one place. Bodies follow the OGC API exception shape
(``code``, ``description``) plus the offending ``parameter`` when there is one."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from geobase.db.shards import shard_unavailable
from geobase.errors import GeobaseError, InvalidInput, ServiceUnavailable
from geobase.pool import retry_on_primary

log = logging.getLogger("geobase.api")


def _utf8_safe(text: str) -> str:
    """Messages echo the caller's input; a lone surrogate in it (from a JSON ``\\ud800``
    escape) cannot be encoded as UTF-8 and would turn a 400 into a 500."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(code: str, description: str, parameter: str | None = None, **extra) -> dict:
    body = {"code": code, "description": _utf8_safe(str(description))}
    if parameter:
        body["parameter"] = parameter
    body.update(extra)
    return body


def _response(exc: GeobaseError) -> JSONResponse:
    headers = {}
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return JSONResponse(
        error_body(exc.code, exc.message, exc.parameter, **({"details": exc.details} if exc.details else {})),
        status_code=exc.status_code,
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GeobaseError)
    async def _geobase(request: Request, exc: GeobaseError):
        return _response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(p) for p in first.get("loc", []) if p not in ("query", "body", "path", "header")]
        param = ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        return JSONResponse(
            error_body("InvalidParameterValue", f"{param}: {msg}" if param else msg, param),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "NotFound", 405: "MethodNotAllowed", 406: "NotAcceptable"}.get(exc.status_code, "HTTPError")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(PoolTimeout)
    async def _pool(request: Request, exc: PoolTimeout):
        return _response(ServiceUnavailable("the server is busy: no database connection free, retry shortly"))

    @app.exception_handler(psycopg.DataError)
    async def _bad_value(request: Request, exc: psycopg.DataError):
        # a value the database refused (out of range, NUL byte, bad date): the client's input
        log.info("data error on %s: %s", request.url.path, exc)
        return _response(InvalidInput(f"a parameter value is not acceptable: {str(exc).splitlines()[0][:200]}"))

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError):
        return _response(InvalidInput("the request is nested too deeply"))

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def _timeout(request: Request, exc: psycopg.errors.QueryCanceled):
        return _response(ServiceUnavailable("the query ran past the statement timeout; narrow it (bbox, limit, filter)"))

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(request: Request, exc: psycopg.OperationalError):
        shard = shard_unavailable(exc)  # the coordinator answered: one of its shards did not
        if shard is not None:
            log.warning("shard unavailable on %s: %s", request.url.path, exc)
            return _response(shard)
        if retry_on_primary(exc):  # a replica's failure: withheld, and the primary answers the read instead
            log.info("read failed on a replica, retried on the primary: %s", exc)
            return _response(ServiceUnavailable("a read replica failed the read, retry shortly", retry_after=1))
        log.warning("database unavailable: %s", exc)
        check = getattr(request.app.state, "connection_check", None)
        if check is not None:  # pooled connections older than this failure get checked again
            check.failed()
        return _response(ServiceUnavailable("the database is unavailable, retry shortly", retry_after=5))

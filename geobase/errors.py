"""Typed errors. Services raise these; the API maps them to HTTP once (api/errors.py) and the
CLI prints them as a one-line message with a distinct exit code."""

from __future__ import annotations


class GeobaseError(Exception):
    """Base of every error a user can act on."""

    status_code = 500
    code = "ServerError"
    exit_code = 1

    def __init__(self, message: str, *, parameter: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.details = details or {}


class InvalidInput(GeobaseError):
    """The caller sent something we refuse (bad parameter, bad file, bad spec)."""

    status_code = 400
    code = "InvalidParameterValue"
    exit_code = 2


class NotFound(GeobaseError):
    status_code = 404
    code = "NotFound"
    exit_code = 3


class Unauthorized(GeobaseError):
    status_code = 401
    code = "Unauthorized"
    exit_code = 4


class Forbidden(GeobaseError):
    status_code = 403
    code = "Forbidden"
    exit_code = 4


class Conflict(GeobaseError):
    status_code = 409
    code = "Conflict"
    exit_code = 5


class PreconditionFailed(GeobaseError):
    """A write's ``If-Match`` names a state the feature no longer has (someone else changed it):
    nothing was changed, the caller reloads and decides again (no lost update)."""

    status_code = 412
    code = "PreconditionFailed"
    exit_code = 5


class PreconditionRequired(GeobaseError):
    """A write that could overwrite someone else's change came without ``If-Match``."""

    status_code = 428
    code = "PreconditionRequired"
    exit_code = 2


class CheckFailed(GeobaseError):
    """An edit breaks a rule the layer's data must keep (a required field, a code list, a valid
    geometry, a coverage without gaps or overlaps): ``details`` names the check and where."""

    status_code = 422
    code = "CheckFailed"
    exit_code = 2

    def __init__(self, check: str, message: str, *, field: str | None = None, feature: str | None = None):
        details = {"check": check, **({"field": field} if field else {}), **({"feature": feature} if feature else {})}
        super().__init__(message, parameter=field, details=details)
        self.check = check


class PayloadTooLarge(GeobaseError):
    status_code = 413
    code = "PayloadTooLarge"
    exit_code = 2


class NotAcceptable(GeobaseError):
    """No representation the client's Accept admits is offered (and it chose none with f=)."""

    status_code = 406
    code = "NotAcceptable"
    exit_code = 2


class TooManyRequests(GeobaseError):
    status_code = 429
    code = "TooManyRequests"
    exit_code = 6

    def __init__(self, message: str, *, retry_after: int = 1, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServiceUnavailable(GeobaseError):
    """Database down, pool exhausted, statement timeout: retry later."""

    status_code = 503
    code = "ServiceUnavailable"
    exit_code = 7

    def __init__(self, message: str, *, retry_after: int = 2, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ShardUnavailable(ServiceUnavailable):
    """A query needed a county placed on a shard (geobase/db/shards.py) that does not answer;
    ``details.shard`` names it. Queries of other counties do not touch it and keep working."""

    code = "ShardUnavailable"

    def __init__(self, message: str, *, shard: str | None = None, retry_after: int = 5, **kw):
        super().__init__(message, retry_after=retry_after, details={"shard": shard} if shard else None, **kw)
        self.shard = shard


class SpecError(InvalidInput):
    """A layer spec or rules file is malformed; the message names the file and the key."""

    code = "InvalidLayerSpec"


class SetupError(GeobaseError):
    """The machine lacks something (PostgreSQL, PostGIS); the message says what to install."""

    code = "SetupError"
    exit_code = 8


class ConfigError(GeobaseError):
    """A setting (a ``GEOBASE_*`` environment variable) has a value geobase refuses; the message
    names the variable. Raised when the settings are made, so nothing starts on it."""

    code = "ConfigError"
    exit_code = 9


class UnsupportedMediaType(GeobaseError):
    """A request body in a media type the endpoint does not read."""

    status_code = 415
    code = "UnsupportedMediaType"
    exit_code = 2

"""One settings object for the whole service (environment variables prefixed ``GEOBASE_``).

Every knob lives here so that the CLI, the HTTP app, the tests and the benchmarks agree on
where the database is, where files go and what the limits are. The knobs are grouped by concern
(:data:`CONCERNS`: one class each, with its checks next to its fields); :class:`Settings`
composes them, so each keeps its flat name (``settings.pool_max_size``) and its environment
variable (``GEOBASE_POOL_MAX_SIZE``).

Values are checked when the settings are made (:func:`load_settings`, :func:`get_settings`) and
again by the app factory (:func:`check_settings`): a typo in ``GEOBASE_ANALYSIS_ROLE``, a negative
limit or a URL that is not one stops the start with :class:`~geobase.errors.ConfigError` naming
the variable, instead of a 500 on the first request that reads it.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from geobase.errors import ConfigError
from geobase.settings_services import MapSettings, PrintSettings, TileSettings, WebhookSettings
from geobase.vocab import ROLES

#: URL schemes of a PostgreSQL server that both psycopg and SQLAlchemy/Alembic accept
PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
#: uvicorn's log levels
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _check_pg_url(value: str | None) -> str | None:
    """A PostgreSQL URL, or unset ('' too). The value is never echoed: it may hold a password."""
    if value and urlsplit(value).scheme not in PG_SCHEMES:
        raise ValueError("not a PostgreSQL URL (postgresql://user:password@host:port/database)")
    return value


class DatabaseSettings(BaseModel):
    """Where the database is, how the server connects and how long a statement may run."""

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/PostGIS URL of an external server. Unset: geobase runs its own local cluster.",
    )
    app_database_url: str | None = Field(
        default=None,
        description="URL the HTTP server connects with: a login role in geobase_app (least privilege). "
        "Unset: the role geobase_web on the same server (made by the migrations; the local cluster "
        "needs no password; an external server needs GEOBASE_APP_DATABASE_URL with its password).",
    )
    pg_port: int = Field(ge=1, le=65535, default=55432, description="Port of the local PostgreSQL cluster (loopback only).")
    pg_bindir: Path | None = Field(
        default=None, description="Directory of pg_ctl/initdb; found automatically on Debian/Ubuntu."
    )
    pg_user: str = Field(default="geobase", description="Superuser/owner role of the local cluster.")
    pg_database: str = Field(default="geobase", description="Database name in the local cluster.")
    pool_min_size: int = Field(ge=0, default=1, description="Minimum database connections in the pool.")
    pool_max_size: int = Field(ge=1, default=10, description="Maximum database connections in the pool.")
    pool_timeout_s: float = Field(
        gt=0, default=5.0, description="Seconds to wait for a free connection before answering 503."
    )
    statement_timeout_ms: int = Field(
        ge=0, default=30_000, description="Statement timeout for ordinary requests (ms)."
    )
    replica_max_lag_ms: int = Field(ge=0, default=5_000, description="A read replica further behind the primary "
                                    "than this (ms) leaves the read rotation until it catches up (reads go to the primary).")
    replica_wait_ms: int = Field(ge=0, default=500, description="How long a read after the caller's own write waits "
                                 "for a replica to replay that write before it is served by the primary instead (ms).")
    replica_check_s: float = Field(gt=0, default=1.0, description="Seconds between health checks of the read replicas.")
    replica_lock_timeout_ms: int = Field(ge=0, default=1_000, description="How long a read on a replica may wait for "
                                         "a lock (on a standby only WAL replay takes a conflicting one) before the "
                                         "primary serves it instead (ms; 0: no bound).")
    read_your_writes_s: int = Field(ge=0, default=300, description="Seconds after a write during which the caller's "
                                    "reads see it (the geobase_lsn cookie's lifetime).")

    _urls = field_validator("database_url", "app_database_url")(_check_pg_url)

    @model_validator(mode="after")
    def _pool_sizes(self):
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(f"GEOBASE_POOL_MIN_SIZE ({self.pool_min_size}) exceeds GEOBASE_POOL_MAX_SIZE "
                             f"({self.pool_max_size})")
        return self


class PathSettings(BaseModel):
    """Where files are: the data directory, layer specs, the vendored web libraries."""

    data_dir: Path = Field(
        default=Path(".geobase"),
        description="Working directory for the local cluster, rasters (COGs), tile cache and uploads. "
        "A relative path is taken from the project directory (the checkout; installed elsewhere: "
        "$XDG_DATA_HOME/geobase), not from where a command runs.",
    )
    layers_dir: Path | None = Field(
        default=None, description="Directory of layer specs; default: the specs shipped in layers/."
    )
    vendor_dir: Path | None = Field(
        default=None, description="Directory holding node_modules/maplibre-gl and swagger-ui-dist (default: the repo's .vendor)."
    )


class ServerSettings(BaseModel):
    """The HTTP server: where it listens, how it is reached, who is believed, how it logs."""

    host: str = Field(default="127.0.0.1", description="Interface the HTTP server listens on.")
    port: int = Field(ge=1, le=65535, default=8000, description="Port the HTTP server listens on.")
    public_url: str | None = Field(
        default=None, description="External base URL when behind a reverse proxy (used in links)."
    )
    log_level: str = Field(default="info", description="Log level of the server.")
    key_cache_s: float = Field(
        ge=0, default=5.0, description="Seconds an API-key lookup is cached; a revocation is effective within this."
    )
    network_zone: str = Field(
        default="government",
        description="The network zone this deployment runs in: classified (涉密内网), government (政务外网) or "
        "internet (互联网). Datasets whose grade x openness the zone does not allow are invisible everywhere "
        "(geobase/opendata/grades.py ZONE_TABLE).",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses/CIDRs of reverse proxies whose X-Forwarded-For/-Proto are believed "
        "(the client is the right-most untrusted address); none by default: the peer is the client.",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty: name the interface to listen on (e.g. 127.0.0.1)")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{value[:200]!r} is not an http(s) URL (e.g. https://onemap.example.gov.cn)")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.strip().lower() not in LOG_LEVELS:
            raise ValueError(f"{value[:40]!r} is not a log level: use {', '.join(LOG_LEVELS)}")
        return value.strip().lower()

    @field_validator("network_zone")
    @classmethod
    def _network_zone(cls, value: str) -> str:
        from geobase.opendata.grades import ZONES

        if value not in ZONES:
            raise ValueError(f"{value[:40]!r} is not a network zone: use {', '.join(ZONES)}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        for item in value.split(","):
            if item.strip():
                try:
                    ipaddress.ip_network(item.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{item.strip()[:100]!r} is not an IP address or CIDR network") from None
        return value


class LimitSettings(BaseModel):
    """What one caller may ask at once: page sizes, body size, request rates, concurrency."""

    default_limit: int = Field(ge=1, default=100, description="Default page size of /items.")
    max_limit: int = Field(ge=1, default=10_000, description="Largest accepted `limit` of /items.")
    max_body_bytes: int = Field(
        ge=1, default=10 * 1024**2, description="Largest accepted request body except uploads (bytes) -> 413."
    )
    rate_limit_per_s: float = Field(ge=0, default=100.0, description="Sustained requests/s per API key (429 beyond).")
    rate_limit_burst: int = Field(
        ge=1, default=1000, description="Burst size of the per-key token bucket (a map view fetches ~100 tiles at once).")
    rate_limit_public_per_s: float = Field(
        ge=0, default=50.0, description="Sustained requests/s per client IP without a key (429 beyond)."
    )
    rate_limit_public_burst: int = Field(ge=1, default=500, description="Burst size of the per-IP public bucket.")
    tile_concurrency: int = Field(ge=1, default=8, description="Tiles rendered at once; more wait, then 503.")
    export_concurrency: int = Field(ge=1, default=2, description="Downloads/exports at once; more wait, then 503.")

    @model_validator(mode="after")
    def _page_sizes(self):
        if self.default_limit > self.max_limit:
            raise ValueError(f"GEOBASE_DEFAULT_LIMIT ({self.default_limit}) exceeds GEOBASE_MAX_LIMIT "
                             f"({self.max_limit})")
        return self


class UploadSettings(BaseModel):
    """Uploads: the steward's ingest and everyone else's files (geobase/uploads.py)."""

    max_upload_bytes: int = Field(ge=1, default=2 * 1024**3, description="Largest accepted ingest upload (bytes).")
    public_upload_max_bytes: int = Field(
        ge=1, default=5 * 1024**2, description="Largest upload of every route but the steward's ingest, e.g. the public "
        "site check of a file (bytes) -> 413.")
    public_upload_max_unpacked_bytes: int = Field(
        ge=1, default=50 * 1024**2, description="Largest total unpacked size of such an upload's zip (bytes) -> 400.")
    upload_max_unpacked_bytes: int = Field(
        ge=1, default=50 * 1024**3, description="Largest total unpacked size of an ingest zip (bytes) -> 400.")
    upload_max_members: int = Field(ge=1, default=20_000, description="Most members of an uploaded zip -> 400.")
    upload_max_ratio: int = Field(ge=1, default=200, description="Largest compression ratio of a zip member of >= 1 MiB "
                                  "(a zip bomb expands 1000:1 and more) -> 400.")


class AnalysisSettings(BaseModel):
    """Analyses: who may run them, how many at once, how long, how large an input."""

    analysis_role: str = Field(
        default="", description="Role needed to run analyses: '' = anyone incl. the public (web map), or "
        "viewer/analyst/editor/steward/admin.")
    analysis_concurrency: int = Field(
        ge=1, default=4, description="Synchronous analyses at once (each holds a pooled connection); more wait, then 503.")
    analysis_statement_timeout_ms: int = Field(
        ge=0, default=120_000, description="Statement timeout for analyses and exports (ms)."
    )
    analysis_max_vertices: int = Field(
        ge=4, default=200_000, description="Largest vertex count of an input geometry of an analysis (site, AOI)."
    )
    analysis_max_area_km2: float = Field(
        gt=0, default=5_000.0, description="Largest area (km², ellipsoidal) of an input geometry of an analysis."
    )
    analysis_sliver_m2: float = Field(
        ge=0, default=1.0, description="Overlay pieces smaller than this (m²) are dropped as slivers; their total is reported."
    )

    @field_validator("analysis_role")
    @classmethod
    def _analysis_role(cls, value: str) -> str:
        if value and value not in ROLES:
            raise ValueError(f"{value[:40]!r} is not a role: use {', '.join(ROLES)}, or leave it empty for anyone")
        return value


class JobSettings(BaseModel):
    """Analysis jobs: how many run and wait, overall and per caller, and for how long."""

    jobs_max_running: int = Field(
        ge=1, default=3, description="Analysis jobs running at once, all callers (each holds a pooled connection); more queue.")
    jobs_max_running_per_caller: int = Field(
        ge=1, default=1, description="Analysis jobs of one caller (key, or anonymous IP) running at once; more queue.")
    jobs_max_queued: int = Field(ge=0, default=20, description="Analysis jobs waiting in the queue (all callers); more: 503.")
    jobs_max_queued_per_caller: int = Field(
        ge=0, default=3, description="Analysis jobs of one caller waiting in the queue; more: 429 with Retry-After.")
    job_statement_timeout_ms: int = Field(ge=0, default=600_000, description="Statement timeout of an analysis job (ms).")
    job_max_seconds: float = Field(gt=0, default=1800.0, description="Wall-clock limit of an analysis job (s); then failed.")
    indicator_poll_s: float = Field(
        ge=0, default=2.0, description="How often the server looks for new layer versions to recompute the indicators "
        "for (s, a job per batch); 0: never (then `geobase indicators recompute`).")


#: every concern's settings class, in the order ``geobase config`` lists them
CONCERNS: dict[str, type[BaseModel]] = {
    "database": DatabaseSettings, "paths": PathSettings, "server": ServerSettings, "limits": LimitSettings,
    "uploads": UploadSettings, "analysis": AnalysisSettings, "jobs": JobSettings, "tiles": TileSettings,
    "print": PrintSettings, "map": MapSettings, "webhooks": WebhookSettings,
}


class Settings(WebhookSettings, MapSettings, PrintSettings, TileSettings, JobSettings, AnalysisSettings, UploadSettings,
               LimitSettings, ServerSettings, PathSettings, DatabaseSettings, BaseSettings):
    """Runtime configuration, documented in the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="GEOBASE_", env_file=".env", extra="ignore")

    @property
    def data_path(self) -> Path:
        """Absolute data directory (created on demand).

        Relative to :func:`project_home`, never to the current directory: `geobase db stop` run
        from another directory must find the cluster the server uses, not look at (or create) a
        second one there."""
        p = self.data_dir.expanduser()
        if not p.is_absolute():
            p = project_home() / p
        return p.resolve()

    @property
    def uses_local_cluster(self) -> bool:
        return not self.database_url

    def concern(self, name: str) -> BaseModel:
        """The settings of one concern (a key of :data:`CONCERNS`), e.g. ``settings.concern("limits")``."""
        cls = CONCERNS[name]
        return cls.model_construct(**{k: getattr(self, k) for k in cls.model_fields})


def env_name(field: str) -> str:
    """The environment variable of a setting: ``GEOBASE_<FIELD>``."""
    return f"GEOBASE_{field.upper()}"


def _config_error(exc: ValidationError) -> ConfigError:
    """One message naming each refused variable (never echoing a database URL: it may hold a password)."""
    problems = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["loc"]:
            name = str(err["loc"][0])
            shown = "" if name.endswith("database_url") or "input" not in err or "not a" in msg \
                else f" (got {str(err['input'])[:100]!r})"
            problems.append(f"{env_name(name)}: {msg}{shown}")
        else:
            problems.append(msg)
    return ConfigError("invalid settings: " + "; ".join(problems), parameter=(
        env_name(str(exc.errors()[0]["loc"][0])) if exc.errors() and exc.errors()[0]["loc"] else None))


def load_settings(**values) -> Settings:
    """Settings from the environment (and ``.env``), ``values`` overriding; ConfigError naming
    every bad variable instead of pydantic's ValidationError."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise _config_error(exc) from None


def check_settings(settings: Settings) -> Settings:
    """``settings`` checked again (a ``model_copy(update=...)`` is not validated by pydantic):
    the app factory calls this, so no server starts on a bad value. Returns it unchanged."""
    try:
        Settings.model_validate(settings.model_dump())
    except ValidationError as exc:
        raise _config_error(exc) from None
    return settings


def project_home() -> Path:
    """Where relative paths of the settings live: the source checkout geobase runs from (the
    directory holding pyproject.toml next to the ``geobase`` package, as after
    ``pip install -e .``), else ``$XDG_DATA_HOME/geobase`` (default ``~/.local/share/geobase``)."""
    import os

    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "geobase" / "settings.py").is_file():
        return checkout
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "geobase"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env.
    Raises ConfigError naming the variable when a value is refused."""
    return load_settings()

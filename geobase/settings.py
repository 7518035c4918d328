"""One settings object for the whole service (environment variables prefixed ``GEOBASE_``).

Every knob lives here so that the CLI, the HTTP app, the tests and the benchmarks agree on
where the database is, where files go and what the limits are.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration, documented in the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="GEOBASE_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/PostGIS URL of an external server. Unset: geobase runs its own local cluster.",
    )
    data_dir: Path = Field(
        default=Path(".geobase"),
        description="Working directory for the local cluster, rasters (COGs), tile cache and uploads.",
    )
    pg_port: int = Field(default=55432, description="Port of the local PostgreSQL cluster (loopback only).")
    pg_bindir: Path | None = Field(
        default=None, description="Directory of pg_ctl/initdb; found automatically on Debian/Ubuntu."
    )
    pg_user: str = Field(default="geobase", description="Superuser/owner role of the local cluster.")
    pg_database: str = Field(default="geobase", description="Database name in the local cluster.")
    layers_dir: Path | None = Field(
        default=None, description="Directory of layer specs; default: the specs shipped in layers/."
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server listens on.")
    port: int = Field(default=8000, description="Port the HTTP server listens on.")
    public_url: str | None = Field(
        default=None, description="External base URL when behind a reverse proxy (used in links)."
    )
    pool_min_size: int = Field(default=1, description="Minimum database connections in the pool.")
    pool_max_size: int = Field(default=10, description="Maximum database connections in the pool.")
    pool_timeout_s: float = Field(
        default=5.0, description="Seconds to wait for a free connection before answering 503."
    )
    statement_timeout_ms: int = Field(
        default=30_000, description="Statement timeout for ordinary requests (ms)."
    )
    default_limit: int = Field(default=100, description="Default page size of /items.")
    max_limit: int = Field(default=10_000, description="Largest accepted `limit` of /items.")
    max_upload_bytes: int = Field(default=2 * 1024**3, description="Largest accepted upload (bytes).")
    log_level: str = Field(default="info", description="Log level of the server.")

    @property
    def data_path(self) -> Path:
        """Absolute data directory (created on demand)."""
        return self.data_dir.expanduser().resolve()

    @property
    def uses_local_cluster(self) -> bool:
        return not self.database_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()

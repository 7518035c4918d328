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
    app_database_url: str | None = Field(
        default=None,
        description="URL the HTTP server connects with: a login role in geobase_app (least privilege). "
        "Unset: the role geobase_web on the same server (made by the migrations; the local cluster "
        "needs no password; an external server needs GEOBASE_APP_DATABASE_URL with its password).",
    )
    data_dir: Path = Field(
        default=Path(".geobase"),
        description="Working directory for the local cluster, rasters (COGs), tile cache and uploads. "
        "A relative path is taken from the project directory (the checkout; installed elsewhere: "
        "$XDG_DATA_HOME/geobase), not from where a command runs.",
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
    max_upload_bytes: int = Field(default=2 * 1024**3, description="Largest accepted ingest upload (bytes).")
    # --- uploads and jobs of anyone (geobase/uploads.py, api/analysis.py) ---
    public_upload_max_bytes: int = Field(
        default=5 * 1024**2, description="Largest upload of every route but the steward's ingest, e.g. the public "
        "site check of a file (bytes) -> 413.")
    public_upload_max_unpacked_bytes: int = Field(
        default=50 * 1024**2, description="Largest total unpacked size of such an upload's zip (bytes) -> 400.")
    upload_max_unpacked_bytes: int = Field(
        default=50 * 1024**3, description="Largest total unpacked size of an ingest zip (bytes) -> 400.")
    upload_max_members: int = Field(default=20_000, description="Most members of an uploaded zip -> 400.")
    upload_max_ratio: int = Field(default=200, description="Largest compression ratio of a zip member of >= 1 MiB "
                                  "(a zip bomb expands 1000:1 and more) -> 400.")
    analysis_concurrency: int = Field(
        default=4, description="Synchronous analyses at once (each holds a pooled connection); more wait, then 503.")
    jobs_max_running: int = Field(
        default=3, description="Analysis jobs running at once, all callers (each holds a pooled connection); more queue.")
    jobs_max_running_per_caller: int = Field(
        default=1, description="Analysis jobs of one caller (key, or anonymous IP) running at once; more queue.")
    jobs_max_queued: int = Field(default=20, description="Analysis jobs waiting in the queue (all callers); more: 503.")
    jobs_max_queued_per_caller: int = Field(
        default=3, description="Analysis jobs of one caller waiting in the queue; more: 429 with Retry-After.")
    job_statement_timeout_ms: int = Field(default=600_000, description="Statement timeout of an analysis job (ms).")
    job_max_seconds: float = Field(default=1800.0, description="Wall-clock limit of an analysis job (s); then failed.")
    log_level: str = Field(default="info", description="Log level of the server.")
    # --- access control, audit and limits (geobase/security.py, keys.py, audit.py, limits.py) ---
    key_cache_s: float = Field(
        default=5.0, description="Seconds an API-key lookup is cached; a revocation is effective within this."
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses/CIDRs of reverse proxies whose X-Forwarded-For/-Proto are believed "
        "(the client is the right-most untrusted address); none by default: the peer is the client.",
    )
    max_body_bytes: int = Field(
        default=10 * 1024**2, description="Largest accepted request body except uploads (bytes) -> 413."
    )
    rate_limit_per_s: float = Field(default=100.0, description="Sustained requests/s per API key (429 beyond).")
    rate_limit_burst: int = Field(
        default=1000, description="Burst size of the per-key token bucket (a map view fetches ~100 tiles at once).")
    rate_limit_public_per_s: float = Field(
        default=50.0, description="Sustained requests/s per client IP without a key (429 beyond)."
    )
    rate_limit_public_burst: int = Field(default=500, description="Burst size of the per-IP public bucket.")
    tile_concurrency: int = Field(default=8, description="Tiles rendered at once; more wait, then 503.")
    export_concurrency: int = Field(default=2, description="Downloads/exports at once; more wait, then 503.")
    analysis_statement_timeout_ms: int = Field(
        default=120_000, description="Statement timeout for analyses and exports (ms)."
    )
    tile_statement_timeout_ms: int = Field(default=15_000, description="Statement timeout for one tile (ms).")
    analysis_role: str = Field(
        default="", description="Role needed to run analyses: '' = anyone incl. the public (web map), or "
        "viewer/analyst/steward/admin.")
    tile_cache_max_bytes: int = Field(
        default=2 * 1024**3, description="Size bound of the tile cache under data_dir/tiles (bytes, LRU); 0 disables it."
    )
    vendor_dir: Path | None = Field(
        default=None, description="Directory holding node_modules/maplibre-gl and swagger-ui-dist (default: the repo's .vendor)."
    )
    analysis_max_vertices: int = Field(
        default=200_000, description="Largest vertex count of an input geometry of an analysis (site, AOI)."
    )
    analysis_max_area_km2: float = Field(
        default=5_000.0, description="Largest area (km², ellipsoidal) of an input geometry of an analysis."
    )
    analysis_sliver_m2: float = Field(
        default=1.0, description="Overlay pieces smaller than this (m²) are dropped as slivers; their total is reported."
    )

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
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()

"""The settings groups of the services built on the data (tiles, map sheets and WMTS, the web
map, webhooks), composed into the one :class:`geobase.settings.Settings` like the groups in
:mod:`geobase.settings` itself; split off so that each module stays small."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator


class TileSettings(BaseModel):
    """Tiles: how long one may take to render and how much the cache may hold."""

    tile_statement_timeout_ms: int = Field(ge=0, default=15_000, description="Statement timeout for one tile (ms).")
    tile_cache_max_bytes: int = Field(
        ge=0, default=2 * 1024**3, description="Size bound of the tile cache under data_dir/tiles (bytes, LRU); 0 disables it."
    )
    tile_fast_path: bool = Field(default=True, description="Answer XYZ vector tiles before FastAPI, cached ones "
                                 "and misses (same access checks, audit and answers; false: every tile through the routers).")
    tile_states_max_age_ms: int = Field(
        ge=0, le=60_000, default=0, description="How old the layer states (sharing, grades, versions) a cached tile "
        "is answered from may be (ms): 0, every cached tile waits for a catalog read that started after it arrived "
        "(a sharing change or an ingest holds from the very next request); N, a read started at most N ms earlier "
        "serves it (a change holds within N ms, no database wait per tile).")


class PrintSettings(BaseModel):
    """Map sheets and WMTS picture tiles (matplotlib): how big a sheet one request may ask for."""

    print_max_dpi: int = Field(ge=72, le=1200, default=300, description="Largest `dpi` of a map sheet (POST /maps/print); "
                               "more: 400 naming dpi.")
    print_max_features: int = Field(ge=1, default=200_000, description="Most features one map sheet or WMTS tile "
                                    "draws; more: 400 naming extent (a sheet) or tileMatrix (a tile).")


class MapSettings(BaseModel):
    """The web map: an optional external basemap under our own layers (off by default, so the
    map works on an offline intranet and every request of the page goes to this server)."""

    map_basemap_url: str | None = Field(
        default=None, description="XYZ tile URL template of an external raster basemap drawn under every layer, "
        "e.g. a Tianditu template with its key (tk=...); must be http(s) with {z}, {x} and {y}. Unset: none.")

    @field_validator("map_basemap_url")
    @classmethod
    def _basemap_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("not an http(s) URL template (e.g. https://t0.tianditu.gov.cn/...&TILEMATRIX={z}&"
                             "TILEROW={y}&TILECOL={x}&tk=KEY)")
        missing = [p for p in ("{z}", "{x}", "{y}") if p not in value]
        if missing:
            raise ValueError(f"not a tile URL template: {', '.join(missing)} missing")  # "not a": the key is not echoed
        return value


class WebhookSettings(BaseModel):
    """Signed webhooks (geobase/webhooks.py): how hard the delivery worker tries before a
    delivery goes to the dead-letter list."""

    webhook_max_attempts: int = Field(ge=1, le=100, default=8,
                                      description="Failed attempts after which a webhook delivery is dead-lettered.")
    webhook_backoff_s: float = Field(gt=0, le=3600, default=10.0, description="Seconds before the first retry of a "
                                     "webhook delivery; doubled after each failure (capped at 1 h).")
    webhook_timeout_s: float = Field(gt=0, le=300, default=10.0, description="Timeout of one webhook POST (s).")
    webhook_poll_s: float = Field(gt=0, le=60, default=0.5, description="How often the delivery worker looks "
                                  "for due webhook deliveries when idle (s).")
    webhook_allow_private: bool | None = Field(
        default=None, description="May webhook URLs reach private, loopback, link-local or other non-global addresses "
        "(checked at registration and again at each delivery, against the address actually connected to)? Default: "
        "no in the internet zone, yes in the government and classified zones (GEOBASE_NETWORK_ZONE).")

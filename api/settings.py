"""API settings (pydantic-settings), built by callers and passed in explicitly."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tessera_stac.catalog.constants import EMBEDDING_COLLECTION_PREFIX


class ApiSettings(BaseSettings):
    """How the STAC API is served. Reads ``TESSERA_STAC_API_*`` from the environment."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", env_prefix="TESSERA_STAC_API_"
    )

    host: str = Field(default="127.0.0.1")
    port: int = Field(default=8080)
    workers: int = Field(default=1)
    title: str = Field(default="TESSERA embeddings and CoRE Stack watersheds")
    description: str = Field(
        default=(
            "Annual TESSERA Earth-observation embeddings (128-d, 10 m, int8 codes with per-pixel "
            "float32 scales) as Cloud-Optimized GeoTIFFs, next to CoRE Stack micro-watershed "
            "layers and per-watershed embedding summaries."
        )
    )
    cors_origins: str = Field(default="*", description="Comma-separated allowed origins.")
    enable_transactions: bool = Field(default=False, description="Enable write routes.")
    write_token: str | None = Field(default=None, description="Bearer token for write routes.")
    data_dir: Path | None = Field(
        default=None, description="Published files served under /data with HTTP Range."
    )
    browser_dir: Path | None = Field(default=None, description="Built STAC Browser to serve.")
    root_path: str = Field(default="", description="Path prefix when served behind a proxy.")
    db_min_conn: int = Field(default=1, description="Connections opened at start-up.")
    db_max_conn: int = Field(default=10, description="Pool size per worker.")
    db_connect_timeout: float = Field(
        default=3.0, description="Seconds to wait for a database connection before a 503."
    )
    db_command_timeout: float = Field(
        default=30.0,
        description="Seconds the client waits for a database command (a backstop: 504).",
    )
    db_statement_timeout: float = Field(
        default=10.0,
        description="Seconds PostgreSQL lets one statement run (statement_timeout) before a 504.",
    )
    embedding_collections: str = Field(
        default=f"{EMBEDDING_COLLECTION_PREFIX}*",
        description="Collection ids (comma-separated, * wildcard) the embedding routes read.",
    )
    gdal_cache_mb: int = Field(
        default=128,
        ge=8,
        description="GDAL's block cache in MB for this process (GDAL's own default is 5% of "
        "RAM, which is what a busy worker grows to); applied when the app is built, before "
        "the first read, unless GDAL_CACHEMAX is already set.",
    )
    reader_cache_size: int = Field(
        default=64, description="Open COG dataset handles kept per worker (LRU)."
    )
    zonal_max_pixels: int = Field(
        default=4_000_000,
        description="Most pixels one /embeddings/area request may read, summed over its tiles "
        "(checked before reading: 413).",
    )
    zonal_block_pixels: int = Field(
        default=2_000_000,
        description="Pixels of one piece of an /embeddings/area polygon (a tile is cut into "
        "pieces of about this many pixels); each piece is streamed block row by block row, "
        "so memory per request is about one block row of a tile whatever this value.",
    )
    zonal_max_tiles: int = Field(
        default=400, description="Most tiles one /embeddings/area request may meet (413)."
    )
    max_points: int = Field(
        default=10_000, description="Most points in one /embeddings/positions batch (413)."
    )
    max_limit: int = Field(
        default=1000, description="Largest page size: a larger limit is capped to it."
    )
    max_body_bytes: int = Field(
        default=2_000_000, description="Largest request body in bytes (413)."
    )
    max_filter_chars: int = Field(
        default=8_192, description="Longest filter (CQL2 text or JSON), in characters (400)."
    )
    max_filter_depth: int = Field(
        default=10,
        description="Deepest filter nesting: parentheses, NOT and function calls in CQL2 text, "
        "op levels in CQL2 JSON (400).",
    )
    max_json_depth: int = Field(
        default=64,
        description="Deepest nesting of objects/arrays in a JSON body or parameter (400).",
    )
    # heads (api/classify.py, api/watershed_classes.py)
    classify_max_labels: int = Field(
        default=5_000, ge=4, description="Most labels in one POST /classify (413)."
    )
    classify_max_classes: int = Field(
        default=32, ge=2, le=254, description="Most classes in one POST /classify (400)."
    )
    classify_max_temp_models: int = Field(
        default=100,
        ge=1,
        description="Temporary models kept in the database (the oldest are dropped first).",
    )
    classify_temp_model_seconds: float = Field(
        default=86_400.0, gt=0, description="Age after which a temporary model expires."
    )
    classify_max_model_bytes: int = Field(
        default=32_000_000,
        ge=1_000,
        description="Largest published model JSON the tiler loads (413); parsed heads are "
        "cached per worker (16).",
    )

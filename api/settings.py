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
        default=128, description="Open COG dataset handles kept per worker (LRU)."
    )
    block_cache_mb: int = Field(
        default=256,
        ge=0,
        le=65536,
        description="Decompressed blocks of local COGs kept per worker, in MB (LRU; 0: none). "
        "A repeated read of the same area (points, map tiles) skips the decompression.",
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
    features_max_items: int = Field(
        default=10_000,
        ge=1,
        description="Most features one /features items page may return (tipg refuses a larger "
        "limit with 422; max_limit caps the limit parameter before that).",
    )
    features_max_tile_features: int = Field(
        default=10_000, ge=1, description="Most features in one /features vector tile."
    )
    features_catalog_ttl: float = Field(
        default=60.0,
        ge=0,
        description="Seconds tipg's list of watershed tables is kept before it is read again "
        "(a load shows up in /features within this time, without a restart).",
    )
    max_query_chars: int = Field(
        default=8_192,
        ge=256,
        description="Longest query string in characters (414 URI Too Long).",
    )
    tile_max_output_pixels: int = Field(
        default=1024 * 1024,
        ge=256 * 256,
        description="Most output pixels of one raster request (tile, preview, bbox, feature, "
        "statistics: width x height, or max_size squared), checked before reading (413).",
    )
    tile_max_read_values: int = Field(
        default=129 * 512 * 512,
        ge=129 * 256 * 256,
        description="Most values (output pixels x bands x items) one raster request may read "
        "and hold, counted before reading (413): the full 129 bands of an embedding item fit "
        "at 512 x 512 (a retina tile), three bands at 1024 x 1024 or more.",
    )
    tile_max_bands: int = Field(
        default=129, ge=1, description="Most bands one raster request reads per item (413)."
    )
    tile_max_items: int = Field(
        default=16,
        ge=1,
        description="Most items one mosaic tile may read (413 below the zoom where a tile "
        "meets more 0.1° cells; pgSTAC's items_limit is capped to it).",
    )
    max_expression_chars: int = Field(
        default=512, ge=16, description="Longest band-math expression in characters (413)."
    )
    heavy_concurrency: int = Field(
        default=2,
        ge=1,
        description="Raster-reading requests (tiles, previews, statistics, areas, points, "
        "change) run at once per worker; others wait (see heavy_queue_seconds).",
    )
    heavy_queue_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait for a raster-reading slot before a 503 with Retry-After (a "
        "web map asks for 12-20 tiles at once: they queue, holding no pixels, rather than fail).",
    )
    heavy_request_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Longest a raster-reading request may run before it answers; past it the "
        "client gets a 503 with Retry-After and the work ends in the background, still holding "
        "its slot (so a slow request never holds a client forever).",
    )
    tile_kernel: bool = Field(
        default=True,
        description="Map tiles of local COGs read through the reader kernel (the touched blocks "
        "decoded directly, resampled by index to GDAL's exact pixels); off: GDAL's warped "
        "reads. Remote COGs and requests the kernel does not reproduce always use GDAL.",
    )
    tile_dataset_cache_size: int = Field(
        default=32,
        ge=0,
        description="Open handles of local COGs the map-tile readers keep idle per worker "
        "between requests (LRU; each used by one reader at a time; a file rewritten or "
        "replaced is opened anew).",
    )
    tile_header_cache_size: int = Field(
        default=256,
        ge=0,
        description="Headers of local COGs (per-band descriptions, scales, statistics) the "
        "map-tile kernel keeps per worker (LRU; a file rewritten in place is read anew).",
    )
    tile_plan_cache_size: int = Field(
        default=8,
        ge=0,
        description="Map-tile warp plans (the source pixel of each output pixel, ~1.1 MB for "
        "a 256 px tile) kept per worker (LRU): an item's codes and scales share one.",
    )
    tile_vector_cache_size: int = Field(
        default=256,
        ge=0,
        description="Query vectors of similarity layers (the embedding at lon/lat) kept per "
        "worker (LRU; read anew when the Item is looked up again or its files change).",
    )
    tile_cache_mb: int = Field(
        default=32, ge=0, description="Finished map tiles kept per worker, in MB (0: none)."
    )
    tile_cache_seconds: float = Field(
        default=60.0, ge=0, description="How long a finished map tile is served from the cache."
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

    def memory_bound_mb(self) -> int:
        """The declared bound of one worker's resident memory in MB: the process at rest
        (~450 MB with GDAL, numpy, pyproj, the tiler), GDAL's block cache, the kernel's block
        cache, the tile cache, the kernel's kept tile plans, and ``heavy_concurrency`` requests
        each holding at most ``tile_max_read_values`` values (int8 read + mask, then float32
        vectors and their temporaries: 16 bytes a value)."""
        per_request = self.tile_max_read_values * 16 / 2**20
        plans = self.tile_plan_cache_size * 1.2  # a 256 px plan: rows, cols, inside
        return int(
            450
            + self.gdal_cache_mb
            + self.block_cache_mb
            + self.tile_cache_mb
            + plans
            + self.heavy_concurrency * per_request
        )

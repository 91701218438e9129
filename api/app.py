"""The STAC API: stac-fastapi-pgstac built through its app factory, then extended.

``create_app(api_settings, dsn)`` builds the FastAPI app with everything passed in;
``create_app_from_env()`` is the zero-argument factory for ``uvicorn --factory``.

What we add to stac-fastapi-pgstac (never patched, only configured and extended):

* a pool with short connect/command timeouts and 503 JSON while the database is down
  (``api.db``, ``api.errors``), ``/healthz``;
* a landing page that lists the collections, the full Query operators and stricter Fields
  semantics (``api.client``);
* write routes only with ``enable_transactions`` and a bearer token (``api.auth``);
* our extension schema at its identifier path; published files under ``/data`` with Range
  (``api.files``); embedding access routes (``api.embeddings``); the watershed router; the
  watershed tables as OGC API Features and vector tiles under ``/features`` (tipg,
  ``api.features``) and, when configured, the STAC Browser.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from brotli_asgi import BrotliMiddleware, BrotliResponder
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from stac_fastapi.extensions.query import QueryConformanceClasses
from stac_fastapi.pgstac.app import instantiate_api
from stac_fastapi.pgstac.config import PostgresSettings, Settings
from stac_fastapi.pgstac.extensions.filter import FiltersClient
from stac_fastapi.pgstac.models.extensions import Extensions
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import (
    DEFAULT_EXCLUDED_CONTENT_TYPES,
    GZipResponder,
    IdentityResponder,
)
from starlette.types import Message, Receive, Scope, Send

from tessera_stac.api import db, features, tiles
from tessera_stac.api.auth import BearerTokenMiddleware
from tessera_stac.api.bounds import BoundsMiddleware, header_qualities
from tessera_stac.api.budget import HeavyRequestLimiter
from tessera_stac.api.client import FullQueryExtension, StrictFieldsExtension, TesseraClient
from tessera_stac.api.compat import TextFilterSearchExtension
from tessera_stac.api.docs import serve_docs_locally
from tessera_stac.api.errors import NO_ANSWER, add_error_handlers
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.errors import ConfigurationError
from tessera_stac.catalog.reader import set_block_cache

EMBEDDING_SCHEMA_PATH = "/embedding/v1.0.0/schema.json"

#: Headers browsers may read cross-origin (geotiff.js needs the range ones).
EXPOSE_HEADERS = ["Content-Range", "Accept-Ranges", "Content-Length", "ETag"]


def postgres_settings_from_dsn(dsn: str, min_conn: int = 1, max_conn: int = 10) -> PostgresSettings:
    """Translate a libpq URL into stac-fastapi-pgstac's PostgresSettings."""
    parts = urlsplit(dsn)
    return PostgresSettings(
        pguser=unquote(parts.username or "postgres"),
        pgpassword=unquote(parts.password or ""),
        pghost=parts.hostname or "127.0.0.1",
        pgport=parts.port or 5432,
        pgdatabase=parts.path.lstrip("/") or "postgres",
        db_min_conn_size=min_conn,
        db_max_conn_size=max_conn,
    )


def embedding_schema() -> tuple[Path, str]:
    """Our extension's schema file and the path of its identifier URL."""
    try:
        from tessera_stac.catalog import embedding

        path = Path(embedding.schema_path())
        uri_path = urlsplit(embedding.SCHEMA_URI).path or EMBEDDING_SCHEMA_PATH
        return path, uri_path
    except (ImportError, AttributeError):
        packaged = resources.files("tessera_stac.schemas") / "json-schema/schema.json"
        return Path(str(packaged)), EMBEDDING_SCHEMA_PATH


def stac_settings(api_settings: ApiSettings) -> Settings:
    """stac-fastapi-pgstac's settings from ours (CORS, transactions, title)."""
    methods = ["GET", "HEAD", "POST", "OPTIONS"]
    if api_settings.enable_transactions:
        methods += ["PUT", "PATCH", "DELETE"]
    return Settings(
        stac_fastapi_title=api_settings.title,
        stac_fastapi_description=api_settings.description,
        stac_fastapi_landing_id="tessera-stac",
        stac_fastapi_version=_version(),
        cors_origins=[o.strip() for o in api_settings.cors_origins.split(",") if o.strip()],
        cors_methods=methods,
        cors_headers=["Content-Type", "Authorization", "Range", "If-Range"],
        enable_transactions_extensions=api_settings.enable_transactions,
        root_path=api_settings.root_path,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tessera-stac")
    except PackageNotFoundError:
        return "0.0.0"


#: Media types sent as they are: float32 arrays gain ~7 % from brotli for ~9 ms a 0.5 MB answer.
UNCOMPRESSED_TYPES = ("application/vnd.apache.arrow.stream",)


class _PassThroughResponder(BrotliResponder):
    """brotli_asgi's responder, passing bodies of ``UNCOMPRESSED_TYPES`` through untouched
    (it already does so for a response that set its own ``Content-Encoding``)."""

    async def send_with_brotli(self, message: Message) -> None:
        await super().send_with_brotli(message)
        if message["type"] == "http.response.start":
            kind = dict(message.get("headers", [])).get(b"content-type", b"").decode("latin-1")
            if kind.split(";")[0].strip() in UNCOMPRESSED_TYPES:
                self.content_encoding_set = True


#: ZSTD level of answers: a 1.76 MB JSON batch of points in ~9 ms to 577 kB, where brotli
#: (quality 4) takes ~23 ms to 530 kB; a 2 MB window, inside what browsers accept (8 MB)
ZSTD_LEVEL = 3
#: bodies from this size are compressed in a worker thread (zstandard releases the GIL)
ZSTD_THREAD_BYTES = 128 * 1024


class _ZstdResponder(IdentityResponder):
    """Starlette's compressing responder with ZSTD (``Content-Encoding: zstd``, RFC 8878):
    one frame per answer, streamed answers flushed block by block."""

    content_encoding = "zstd"

    def __init__(self, app: Any, minimum_size: int, exclude: tuple[str, ...]) -> None:
        super().__init__(app, minimum_size, exclude_content_types=exclude)
        self._stream: Any = None

    async def apply_compression(self, body: bytes, *, more_body: bool) -> bytes:
        import zstandard

        if self._stream is None:
            self._stream = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        stream = self._stream
        end = zstandard.COMPRESSOBJ_FLUSH_BLOCK if more_body else zstandard.COMPRESSOBJ_FLUSH_FINISH

        def compress() -> bytes:
            return bytes(stream.compress(body) + stream.flush(end))

        if len(body) >= ZSTD_THREAD_BYTES:
            import anyio.to_thread

            return await anyio.to_thread.run_sync(compress)
        return compress()


class Compression(BrotliMiddleware):
    """stac-fastapi's brotli middleware, with ZSTD first when the client accepts it (as fast
    browsers, httpx and urllib3 do: several times cheaper than brotli for the same size) and
    gzip when neither is accepted; ``UNCOMPRESSED_TYPES`` are always sent as they are."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_handler_excluded(scope):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers", [])).get(b"accept-encoding", b"")
        accepted = header_qualities(header.decode("latin-1"), 16)
        exclude = DEFAULT_EXCLUDED_CONTENT_TYPES + UNCOMPRESSED_TYPES
        if accepted.get("zstd", 0) > 0:
            responder: Any = _ZstdResponder(self.app, self.minimum_size, exclude)
        elif accepted.get("br", 0) > 0:
            responder = _PassThroughResponder(
                self.app, self.quality, self.mode, self.lgwin, self.lgblock, self.minimum_size
            )
        elif self.gzip_fallback and accepted.get("gzip", 0) > 0:
            responder = GZipResponder(self.app, self.minimum_size, exclude_content_types=exclude)
        else:
            responder = self.app
        await responder(scope, receive, send)


def _tune_middlewares(app: FastAPI) -> None:
    """Expose range headers to browsers; never compress the byte ranges of ``/data`` nor the
    media types of ``UNCOMPRESSED_TYPES``."""
    tuned = []
    for middleware in app.user_middleware:
        cls: Any = middleware.cls
        kwargs: dict[str, Any] = dict(middleware.kwargs)
        args: tuple[Any, ...] = tuple(middleware.args)
        if cls is CORSMiddleware:
            kwargs["expose_headers"] = EXPOSE_HEADERS
            middleware = Middleware(cls, *args, **kwargs)
        elif cls is BrotliMiddleware:
            kwargs["excluded_handlers"] = [r"^/data/"]
            middleware = Middleware(Compression, *args, **kwargs)
        tuned.append(middleware)
    app.user_middleware[:] = tuned


def _extras_router(schema_file: Path, schema_path: str) -> APIRouter:
    router = APIRouter()

    paths = {schema_path, EMBEDDING_SCHEMA_PATH}
    for path in sorted(paths):

        @router.get(path, include_in_schema=path == EMBEDDING_SCHEMA_PATH, tags=["Extensions"])
        def extension_schema() -> FileResponse:
            """The TESSERA embedding STAC extension's JSON schema (its identifier URL)."""
            if not schema_file.is_file():
                raise HTTPException(404, detail="the embedding extension schema is not installed")
            return FileResponse(schema_file, media_type="application/schema+json")

    @router.get("/healthz", tags=["Health"], summary="Is the database reachable?")
    async def healthz(request: Request) -> JSONResponse:
        """200 with the pgSTAC version when the database answers, else 503."""
        try:
            async with request.app.state.get_connection(request, "r") as conn:
                version = await conn.fetchval("SELECT pgstac.get_version()")
        except NO_ANSWER as exc:
            return JSONResponse(
                status_code=503,
                content={
                    "status": "unavailable",
                    "database": {"reachable": False, "error": type(exc).__name__},
                },
            )
        return JSONResponse(
            {"status": "ok", "database": {"reachable": True, "pgstac_version": version}}
        )

    return router


def create_app(api_settings: ApiSettings, dsn: str) -> FastAPI:
    """Build the API for the pgSTAC database at ``dsn``.

    Raises:
        ConfigurationError: transactions enabled without a write token.
    """
    if api_settings.enable_transactions and not (api_settings.write_token or "").strip():
        raise ConfigurationError(
            "TESSERA_STAC_API_ENABLE_TRANSACTIONS needs a non-blank TESSERA_STAC_API_WRITE_TOKEN"
        )
    settings = stac_settings(api_settings)
    # GDAL sizes its block cache once, at the first read: bound it before any (a worker's RSS
    # otherwise grows towards 5% of the machine's RAM under area and tile reads)
    os.environ.setdefault("GDAL_CACHEMAX", str(api_settings.gdal_cache_mb))
    set_block_cache(api_settings.block_cache_mb * 2**20)  # the kernel's own, for local COGs

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.connect(app, dsn, api_settings)
        await tiles.open_pool(app, dsn, api_settings.db_max_conn)
        await features.open_pool(app.state.features_app, dsn, api_settings)
        from starlette.concurrency import run_in_threadpool

        from tessera_stac.api.embeddings import warm_up

        await run_in_threadpool(warm_up)  # imports and PROJ now, not in the first request
        await run_in_threadpool(tiles.warm_up)
        if app.state.readpool.get_size() > 0:  # the database answered the warm-up above
            await run_in_threadpool(tiles.warm_pool, app, api_settings.db_connect_timeout)
        warm_routes(app)
        # what start-up built lives as long as the process: out of the collector's way, so the
        # first requests do not pay for full collections walking it
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await features.close_pool(app.state.features_app)
            await tiles.close_pool(app)
            await db.close(app)
            _close_readers(app)

    api = instantiate_api(
        client=TesseraClient,
        extensions=Extensions(
            settings=settings,
            search_map={
                "query": FullQueryExtension(),
                "fields": StrictFieldsExtension(),
                "filter": TextFilterSearchExtension(client=FiltersClient()),
            },
            item_collection_map={
                "query": FullQueryExtension(conformance_classes=[QueryConformanceClasses.ITEMS])
            },
        ),
        lifespan=lifespan,
        settings=settings,
    )
    app: FastAPI = api.app
    schema_file, schema_path = embedding_schema()
    app.state.embedding_schema_path = schema_path
    app.state.api_settings = api_settings
    _tune_middlewares(app)
    # innermost of the middlewares: its refusals still get CORS headers
    app.user_middleware.append(Middleware(BoundsMiddleware, settings=api_settings))
    # after the bounds: a refused request never takes a slot of the heavy-request limiter
    app.user_middleware.append(Middleware(HeavyRequestLimiter, settings=api_settings))
    add_error_handlers(app)
    app.include_router(_extras_router(schema_file, schema_path))
    serve_docs_locally(app)
    _mount_extensions(app, api_settings)
    if api_settings.enable_transactions and api_settings.write_token:
        app.add_middleware(
            BearerTokenMiddleware,
            token=api_settings.write_token,
            root_path=api_settings.root_path,
        )
    return app


def _mount_extensions(app: FastAPI, api_settings: ApiSettings) -> None:
    from tessera_stac.api import classify, embeddings, watershed_classes
    from tessera_stac.api.change import router as change_router
    from tessera_stac.api.watersheds import router as watersheds_router

    app.include_router(embeddings.router)
    tiles.mount_tiles(app, api_settings.data_dir, api_settings.root_path, api_settings)
    app.include_router(watersheds_router)
    app.include_router(change_router)
    app.include_router(classify.router)
    app.include_router(watershed_classes.router)
    features.mount_features(app, api_settings)
    if api_settings.data_dir is not None:
        from tessera_stac.api.files import files_router

        app.include_router(files_router(api_settings.data_dir))
    if api_settings.browser_dir is not None:
        from tessera_stac.api.browser import mount_browser

        mount_browser(app, api_settings.browser_dir)


def warm_routes(app: Any) -> int:
    """Match a path no route serves against every route of ``app`` (and of the apps mounted
    in it): FastAPI builds each included router's routes (their dependants, a pydantic
    adapter per parameter) on the first request that walks past them, which made a fresh
    server's first map tile ~0.25 s slower than the next (titiler's routers are many). Returns
    how many routes were walked."""
    from starlette.routing import Mount

    scope = {
        "type": "http", "path": "/.tessera-stac-warm-up", "raw_path": b"/.tessera-stac-warm-up",
        "method": "GET", "root_path": "", "headers": [], "query_string": b"", "path_params": {},
    }  # fmt: skip
    walked = 0
    for route in getattr(getattr(app, "router", None), "routes", []):
        route.matches(dict(scope))
        walked += 1
        if isinstance(route, Mount) and hasattr(route.app, "router"):
            walked += warm_routes(route.app)
    return walked


def _close_readers(app: FastAPI) -> None:
    readers: Any = getattr(app.state, "readers", None)
    if readers is not None:
        readers.close()


def create_app_from_env() -> FastAPI:
    """Zero-argument factory for ``uvicorn --factory``: settings from the environment."""
    from tessera_stac.catalog.pgstac.cluster import resolve_dsn
    from tessera_stac.catalog.settings import DatabaseSettings

    return create_app(ApiSettings(), resolve_dsn(DatabaseSettings()))

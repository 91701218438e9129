"""The watershed tables as OGC API Features and vector tiles: tipg, mounted in the API process.

Everything is under ``/features`` (one origin and port with the STAC API, behind the same
middlewares: CORS, request bounds, compression, auth):

* ``/features/collections``: one collection per table of the schema
  :data:`~tessera_stac.catalog.constants.FEATURES_SCHEMA` that ``tessera-stac load`` writes
  (``tessera_features.mws``, ``.mws_embeddings``, ``.mws_change``) and nothing else of the
  database;
* ``/features/collections/{id}/items``: GeoJSON features with CQL2 filters
  (``filter=uid='14_51019'``, ``filter-lang=cql2-text``), ``bbox``, ``sortby``, ``properties``;
  ``limit`` is capped by ``max_limit`` (the bounds middleware), and tipg refuses more than
  ``features_max_items`` (422);
* ``/features/collections/{id}/tiles/WebMercatorQuad/{z}/{x}/{y}``: Mapbox vector tiles of
  the same rows and filters (at most ``features_max_tile_features`` features a tile).

GDAL's OAPIF driver (QGIS) reads ``/features`` as it is. The tables come from tipg's own
catalog query, refreshed when older than ``features_catalog_ttl`` seconds (a later load shows
up without a restart). The pool is asyncpg on the API's DSN, opened without waiting for the
database (a database outage is a 503, as on the rest of the API).
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera_stac.api.db import dsn_parts
from tessera_stac.api.errors import CONNECT_ERRORS, error_body
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.constants import (
    FEATURE_TABLE_SOURCES,
    FEATURES_SCHEMA,
    GEOJSON_MEDIA_TYPE,
    MVT_MEDIA_TYPE,
    MWS_CHANGE_TABLE,
    MWS_CLASSES_TABLE,
    MWS_EMBEDDINGS_TABLE,
    MWS_TABLE,
)

PREFIX = "/features"
TMS = "WebMercatorQuad"
#: the tables served (tipg's collection id is ``{schema}.{table}``)
SERVED_TABLES = (MWS_TABLE, MWS_EMBEDDINGS_TABLE, MWS_CHANGE_TABLE, MWS_CLASSES_TABLE)


def collection_id(table: str) -> str:
    """tipg's collection id of one of our tables."""
    return f"{FEATURES_SCHEMA}.{table}"


def _configure_tipg(settings: ApiSettings) -> None:
    """tipg reads its limits from module-level settings: set ours before any request."""
    from tipg import collections as tipg_collections
    from tipg import factory as tipg_factory

    tipg_collections.features_settings.max_features_per_query = settings.features_max_items
    tipg_collections.features_settings.default_features_limit = min(10, settings.features_max_items)
    tipg_collections.mvt_settings.max_features_per_tile = settings.features_max_tile_features
    tipg_factory.mvt_settings.max_features_per_tile = settings.features_max_tile_features


async def open_pool(app: FastAPI, dsn: str, settings: ApiSettings) -> None:
    """tipg's asyncpg pool (search_path and tipg's catalog functions set per connection)."""
    from tipg.database import connection_factory

    app.state.pool = await asyncpg.create_pool(
        **dsn_parts(dsn),
        min_size=0,
        max_size=max(2, settings.db_max_conn // 2),
        max_inactive_connection_lifetime=300,
        timeout=settings.db_connect_timeout,
        command_timeout=settings.db_command_timeout,
        init=connection_factory([FEATURES_SCHEMA], "pg_temp"),
        server_settings={
            "application_name": "tessera-features",
            "statement_timeout": str(max(1, round(settings.db_statement_timeout * 1000))),
        },
    )
    app.state.catalog_refreshed = 0.0


async def close_pool(app: FastAPI) -> None:
    """Close tipg's pool."""
    pool = getattr(app.state, "pool", None)
    if pool is not None:
        await pool.close()
        app.state.pool = None


async def refresh_catalog(app: FastAPI, settings: ApiSettings) -> None:
    """tipg's table catalog of our schema (only our tables, only spatial ones)."""
    from tipg.collections import register_collection_catalog
    from tipg.settings import DatabaseSettings

    await register_collection_catalog(
        app,
        db_settings=DatabaseSettings(
            schemas=[FEATURES_SCHEMA],
            tables=[collection_id(t) for t in SERVED_TABLES],
            functions=[],
            exclude_function_schemas=["public", FEATURES_SCHEMA],
            only_spatial_tables=True,
        ),
    )
    app.state.catalog_refreshed = time.monotonic()


class CatalogMiddleware:
    """Refresh tipg's catalog when missing or older than the TTL; 503 while the database is
    down (a pure ASGI middleware of the features app)."""

    def __init__(self, app: ASGIApp, *, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        features: Any = scope["app"]
        state = features.state
        try:
            stale = time.monotonic() - state.catalog_refreshed > self.settings.features_catalog_ttl
            if not getattr(state, "collection_catalog", None) or stale:
                await refresh_catalog(features, self.settings)
            await self.app(scope, receive, send)
        except CONNECT_ERRORS as exc:
            response = JSONResponse(
                error_body(
                    "DatabaseUnavailable",
                    f"the database is unavailable ({type(exc).__name__}); retry",
                ),
                status_code=503,
                headers={"Retry-After": "5"},
            )
            await response(scope, receive, send)


def features_app(settings: ApiSettings) -> FastAPI:
    """The tipg application mounted at :data:`PREFIX` (its links carry the prefix)."""
    from tipg.errors import DEFAULT_STATUS_CODES, add_exception_handlers
    from tipg.factory import Endpoints

    _configure_tipg(settings)
    app = FastAPI(
        title="Micro-watersheds: OGC API Features and vector tiles",
        openapi_url="/api",
        docs_url="/api.html",
    )
    endpoints = Endpoints(
        title="Micro-watersheds (CoRE Stack) with their TESSERA indicators",
        router_prefix=PREFIX,
        with_tiles_viewer=False,
    )
    app.include_router(endpoints.router)
    add_exception_handlers(app, DEFAULT_STATUS_CODES)
    app.add_middleware(CatalogMiddleware, settings=settings)
    app.state.pool = None
    app.state.catalog_refreshed = 0.0
    return app


def mount_features(app: FastAPI, settings: ApiSettings) -> FastAPI:
    """Mount the features app on ``app`` at :data:`PREFIX`; return it (its pool is opened by
    :func:`open_pool` in the API's lifespan)."""
    sub = features_app(settings)
    app.mount(PREFIX, sub, name="features")
    # first in the route list: a features request is not matched against the hundreds of
    # STAC and tile routes before it (Starlette tries routes in order)
    app.router.routes.insert(0, app.router.routes.pop())
    app.state.features_app = sub
    return sub


# ------------------------------------------------------------------------- STAC links
def table_of_item(item: dict[str, Any]) -> str | None:
    """The feature table a STAC item's rows are loaded into (by its collection)."""
    collection = item.get("collection")
    for table, source in FEATURE_TABLE_SOURCES.items():
        if source == collection:
            return table
    if (item.get("properties") or {}).get("corestack:layer") == "mws":
        return MWS_TABLE
    return None


def feature_links(item: dict[str, Any], base: str) -> list[dict[str, Any]]:
    """Links of a watershed item to its rows as OGC API Features and vector tiles."""
    table = table_of_item(item)
    if table is None:
        return []
    from urllib.parse import quote

    root = f"{base.rstrip('/')}{PREFIX}/collections/{collection_id(table)}"
    cql = quote(f"item='{item.get('id')}'", safe="")
    title = f"{item.get('id')}: watersheds as features ({FEATURES_SCHEMA}.{table})"
    return [
        {
            "rel": "alternate",
            "href": f"{root}/items?filter-lang=cql2-text&filter={cql}",
            "type": GEOJSON_MEDIA_TYPE,
            "title": f"{title}, OGC API Features",
        },
        {
            "rel": "related",
            "href": root,
            "type": "application/json",
            "title": "OGC API Features collection of every block (e.g. for QGIS)",
        },
        {  # not rel xyz/tilejson (web-map-links): map viewers would draw them as images
            "rel": "related",
            "href": f"{root}/tiles/{TMS}/{{z}}/{{x}}/{{y}}?filter-lang=cql2-text&filter={cql}",
            "type": MVT_MEDIA_TYPE,
            "title": f"{title}, vector tiles",
        },
        {
            "rel": "related",
            "href": f"{root}/tiles/{TMS}/tilejson.json",
            "type": "application/json",
            "title": "TileJSON of the vector tiles (all blocks)",
        },
    ]


def collection_feature_links(collection: dict[str, Any], base: str) -> list[dict[str, Any]]:
    """Links of a watershed STAC collection to its feature collection and vector tiles."""
    table = next((t for t, c in FEATURE_TABLE_SOURCES.items() if c == collection.get("id")), None)
    if table is None:
        return []
    root = f"{base.rstrip('/')}{PREFIX}/collections/{collection_id(table)}"
    return [
        {
            "rel": "related",
            "href": root,
            "type": "application/json",
            "title": "OGC API Features collection (e.g. for QGIS)",
        },
        {
            "rel": "alternate",
            "href": f"{root}/items",
            "type": GEOJSON_MEDIA_TYPE,
            "title": "Every watershed as OGC API Features (paged)",
        },
        {  # not rel xyz/tilejson (web-map-links): map viewers would draw them as images
            "rel": "related",
            "href": f"{root}/tiles/{TMS}/{{z}}/{{x}}/{{y}}",
            "type": MVT_MEDIA_TYPE,
            "title": "Vector tiles",
        },
        {
            "rel": "related",
            "href": f"{root}/tiles/{TMS}/tilejson.json",
            "type": "application/json",
            "title": "TileJSON of the vector tiles",
        },
    ]


def add_feature_links(obj: dict[str, Any], request: Request) -> dict[str, Any]:
    """``obj`` (an Item or a Collection) with its feature/vector-tile links appended."""
    from stac_fastapi.types.requests import get_base_url

    base = get_base_url(request)
    links = (
        feature_links(obj, base)
        if obj.get("type") == "Feature"
        else (collection_feature_links(obj, base))
    )
    obj.setdefault("links", []).extend(links)
    return obj

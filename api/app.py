"""The STAC API: stac-fastapi-pgstac built through its app factory, then extended.

``create_app(api_settings, dsn)`` builds the FastAPI app with everything passed in;
``create_app_from_env()`` is the zero-argument factory for ``uvicorn --factory``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import unquote, urlsplit

from fastapi import FastAPI
from stac_fastapi.pgstac.app import instantiate_api
from stac_fastapi.pgstac.config import PostgresSettings, Settings
from stac_fastapi.pgstac.db import close_db_connection, connect_to_db

from tessera_stac.api.settings import ApiSettings


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


def create_app(api_settings: ApiSettings, dsn: str) -> FastAPI:
    """Build the API for the pgSTAC database at ``dsn``."""
    pg = postgres_settings_from_dsn(dsn, api_settings.db_min_conn, api_settings.db_max_conn)
    stac_settings = Settings(
        stac_fastapi_title=api_settings.title,
        stac_fastapi_description=api_settings.description,
        cors_origins=[o.strip() for o in api_settings.cors_origins.split(",") if o.strip()],
        enable_transactions_extensions=api_settings.enable_transactions,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await connect_to_db(app, postgres_settings=pg)
        yield
        await close_db_connection(app)

    api = instantiate_api(settings=stac_settings, lifespan=lifespan)
    return api.app


def create_app_from_env() -> FastAPI:
    """Zero-argument factory for ``uvicorn --factory``: settings from the environment."""
    from tessera_stac.catalog.localdb import resolve_dsn
    from tessera_stac.catalog.settings import DatabaseSettings

    return create_app(ApiSettings(), resolve_dsn(DatabaseSettings()))

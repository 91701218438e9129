"""The asyncpg pools behind the API, with short timeouts so a dead database answers fast.

stac-fastapi-pgstac's own pool has no connect or command timeout: while the database is down a
request would wait for the OS's TCP timeout. Ours connects with a short timeout, starts even
when the database is down (``min_size=0``, warmed up when possible) and, when a connection
breaks, expires the pool's connections so the next request opens fresh ones (see
``tessera_stac.api.errors``): the service recovers by itself when the database is back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import asyncpg
from fastapi import FastAPI, Request
from stac_fastapi.pgstac.db import con_init, translate_pgstac_errors

from tessera_stac.api.compat import SEARCH_CONTEXT
from tessera_stac.api.errors import CONNECT_ERRORS, DatabaseTimeout, DatabaseUnavailable
from tessera_stac.api.settings import ApiSettings


def dsn_parts(dsn: str) -> dict[str, Any]:
    """Split a libpq URL into asyncpg ``connect`` keyword arguments."""
    parts = urlsplit(dsn)
    return {
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "database": parts.path.lstrip("/") or "postgres",
    }


async def create_pool(dsn: str, settings: ApiSettings) -> asyncpg.Pool:
    """An asyncpg pool for pgSTAC that does not need the database to be up yet."""
    return await asyncpg.create_pool(
        **dsn_parts(dsn),
        min_size=0,
        max_size=settings.db_max_conn,
        max_inactive_connection_lifetime=300,
        timeout=settings.db_connect_timeout,
        command_timeout=settings.db_command_timeout,
        init=con_init,
        server_settings={
            "search_path": "pgstac,public",
            "application_name": "tessera-stac",
            # numberMatched in search results: exact when cheap, else estimated (api.compat)
            "pgstac.context": SEARCH_CONTEXT,
            "statement_timeout": str(max(1, round(settings.db_statement_timeout * 1000))),
        },
    )


#: a search shaped like the embeddings routes' (collections, intersects, datetime) that finds
#: nothing: run once on each connection opened at start-up, so PostgreSQL plans and compiles
#: pgSTAC's PL/pgSQL search functions in that backend now, not in the first request (a fresh
#: backend's first search took 0.1-0.27 s for 40 items, a later one 0.08-0.13 s)
WARM_UP_SEARCH = json.dumps(
    {
        "collections": ["tessera-stac-warm-up"],
        "intersects": {"type": "MultiPoint", "coordinates": [[0.05, 0.05]]},
        "datetime": "2024-01-01T00:00:00Z/2024-12-31T23:59:59Z",
        "limit": 1,
    }
)


async def warm_up(pool: asyncpg.Pool, count: int) -> None:
    """Open ``count`` connections now when the database is reachable (ignored when not), and
    run :data:`WARM_UP_SEARCH` on each (errors ignored: a read-only or older pgSTAC)."""
    conns = []
    try:
        for _ in range(count):
            conns.append(await pool.acquire())
        for conn in conns:
            with suppress(asyncpg.PostgresError):
                await conn.fetchval("SELECT pgstac.search($1::text::jsonb)", WARM_UP_SEARCH)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pass
    finally:
        for conn in conns:
            await pool.release(conn)


async def connect(app: FastAPI, dsn: str, settings: ApiSettings) -> None:
    """Create the read (and, with transactions, write) pools on ``app.state``."""
    app.state.readpool = await create_pool(dsn, settings)
    if settings.enable_transactions:
        app.state.writepool = await create_pool(dsn, settings)
    app.state.acquire_timeout = settings.db_connect_timeout + 1
    app.state.get_connection = get_connection
    await warm_up(app.state.readpool, settings.db_min_conn)


async def close(app: FastAPI) -> None:
    """Close the pools."""
    for name in ("readpool", "writepool"):
        pool = getattr(app.state, name, None)
        if pool is not None:
            await pool.close()


@asynccontextmanager
async def get_connection(
    request: Request, readwrite: Literal["r", "w"] = "r"
) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection, acquired with a timeout (stac-fastapi-pgstac's getter contract).

    Failures are told apart here, where their origin is known: no connection (refused, reset,
    connect timeout) is ``DatabaseUnavailable``; every connection busy is the same without
    expiring the pool; a command past the client timeout is ``DatabaseTimeout``; a connection
    left in a broken state is terminated (never handed to the next request).
    """
    state = request.app.state
    pool: asyncpg.Pool = state.writepool if readwrite == "w" else state.readpool
    try:
        conn = await pool.acquire(timeout=state.acquire_timeout)
    except TimeoutError as exc:
        busy = pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0
        raise DatabaseUnavailable(exc, broken=not busy) from exc
    except CONNECT_ERRORS as exc:
        raise DatabaseUnavailable(exc) from exc
    try:
        with translate_pgstac_errors():
            yield conn
    except TimeoutError as exc:
        raise DatabaseTimeout(str(exc)) from exc
    except (OSError, asyncpg.exceptions.InternalClientError) as exc:
        conn.terminate()
        raise DatabaseUnavailable(exc) from exc
    finally:
        await pool.release(conn)

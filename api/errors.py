"""Errors as JSON with the right status, in one place.

A database that is down, restarting or too slow answers ``503 Service Unavailable`` (with
``Retry-After``) instead of a 500 or a hang, and its broken connections are expired so the pool
reconnects once it is back. Anything unexpected is a JSON 500 without a traceback.
"""

from __future__ import annotations

import logging

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

#: Exceptions that mean "the database cannot be reached right now".
UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    asyncpg.exceptions.QueryCanceledError,  # command timeout
)


def error_body(code: str, description: str) -> dict[str, str]:
    """The STAC API error shape: ``{"code": ..., "description": ...}``."""
    return {"code": code, "description": description}


async def _expire_pools(request: Request) -> None:
    for name in ("readpool", "writepool"):
        pool = getattr(request.app.state, name, None)
        if pool is not None:
            await pool.expire_connections()


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 JSON for database outages; expire pooled connections so they are reopened."""
    await _expire_pools(request)
    logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return JSONResponse(
        status_code=503,
        content=error_body(
            "ServiceUnavailable", f"the database is unavailable ({type(exc).__name__}); retry"
        ),
        headers={"Retry-After": "5"},
    )


async def database_refused(request: Request, exc: Exception) -> JSONResponse:
    """A query pgSTAC refused: 400 when the request was bad (data error, pgSTAC's own
    RAISE), else 500; JSON either way, logged."""
    bad_request = isinstance(
        exc, asyncpg.exceptions.DataError | asyncpg.exceptions.RaiseError
    ) or type(exc).__name__ in ("InvalidParameterValueError",)
    if bad_request:
        return JSONResponse(
            status_code=400, content=error_body("BadRequest", f"the query was refused: {exc}")
        )
    logger.error("database error on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        status_code=500, content=error_body("DatabaseError", f"the database failed: {exc}")
    )


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """500 JSON for a bug (logged with its traceback, not sent)."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        status_code=500, content=error_body("InternalServerError", "internal server error")
    )


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette/FastAPI HTTP errors (404 of unknown routes, 405...) as STAC JSON errors."""
    assert isinstance(exc, StarletteHTTPException)
    codes = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
    }
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(
        status_code=exc.status_code,
        content=error_body(codes.get(exc.status_code, "HTTPError"), detail),
        headers=getattr(exc, "headers", None),
    )


def add_error_handlers(app: FastAPI) -> None:
    """Install the handlers (after stac-fastapi's, which map its own errors)."""
    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, database_unavailable)
    app.add_exception_handler(asyncpg.PostgresError, database_refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)

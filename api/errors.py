"""Errors as JSON with the right status, in one place: every error is ``{"code", "description"}``.

* A database that cannot be reached (refused, restarting, broken connection) answers
  ``503 Service Unavailable`` with ``Retry-After``; only then are the pool's connections
  expired so it reconnects once the database is back. A pool that is merely busy (every
  connection in use) is a 503 too, without expiring anything.
* A statement that runs past ``db_statement_timeout`` (or the client's command timeout) is a
  ``504 Gateway Timeout``; the connection stays in the pool.
* A query the database refuses because of the input (data errors, syntax of a free-text ``q``,
  a query too complex) is a 400; request validation errors are 400 and never echo the input.
* Anything else is a JSON 500 without a traceback (logged).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

#: Exceptions that mean "the database cannot be reached right now" (from asyncpg alone; an
#: OSError or TimeoutError counts only when it comes from the pool, see ``api.db``).
UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection left mid-operation
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
)


class DatabaseUnavailable(Exception):  # noqa: N818 (reads as the status it maps to)
    """The database cannot be reached (``broken``: the pool's connections are suspect)."""

    def __init__(self, cause: BaseException, broken: bool = True) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.broken = broken


class DatabaseTimeout(Exception):  # noqa: N818
    """A statement ran past its time limit."""


#: What getting a connection raises when the database cannot be reached.
CONNECT_ERRORS: tuple[type[Exception], ...] = (OSError, *UNAVAILABLE)
#: Everything that means "no answer from the database" (for ``/healthz``).
NO_ANSWER: tuple[type[Exception], ...] = (*UNAVAILABLE, DatabaseUnavailable, DatabaseTimeout)


def error_body(code: str, description: str) -> dict[str, str]:
    """The STAC API error shape: ``{"code": ..., "description": ...}``."""
    return {"code": code, "description": description}


async def _expire_pools(request: Request) -> None:
    for name in ("readpool", "writepool"):
        pool = getattr(request.app.state, name, None)
        if pool is not None:
            await pool.expire_connections()


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 JSON for database outages; expire pooled connections (only when they may be
    broken) so they are reopened."""
    cause = exc.cause if isinstance(exc, DatabaseUnavailable) else exc
    broken = exc.broken if isinstance(exc, DatabaseUnavailable) else True
    if broken:
        await _expire_pools(request)
        description = f"the database is unavailable ({type(cause).__name__}); retry"
    else:
        description = "the database is busy (every connection is in use); retry"
    logger.warning("database unavailable: %s: %s", type(cause).__name__, cause)
    return JSONResponse(
        status_code=503,
        content=error_body("ServiceUnavailable", description),
        headers={"Retry-After": "5"},
    )


async def database_timeout(request: Request, exc: Exception) -> JSONResponse:
    """504 JSON for a statement that ran too long (the connection stays pooled)."""
    logger.warning("database timeout on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        status_code=504,
        content=error_body(
            "GatewayTimeout", "the database did not answer in time (statement timeout)"
        ),
    )


async def database_refused(request: Request, exc: Exception) -> JSONResponse:
    """A query pgSTAC refused: 400 when the request was bad (data error, pgSTAC's own
    RAISE), else 500; JSON either way, logged."""
    bad_request = isinstance(
        exc,
        asyncpg.exceptions.DataError
        | asyncpg.exceptions.RaiseError
        | asyncpg.exceptions.ProgramLimitExceededError  # too complex, stack depth
        | asyncpg.exceptions.PostgresSyntaxError,  # e.g. a free-text q of "("
    ) or type(exc).__name__ in ("InvalidParameterValueError",)
    if bad_request:
        logger.info("query refused on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            status_code=400,
            content=error_body(
                "BadRequest", f"the database refused the query as invalid ({type(exc).__name__})"
            ),
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


def _safe(value: Any) -> Any:
    """``value`` made JSON-safe: non-finite floats and anything odd become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """400 JSON for invalid parameters/bodies; says where and why, never echoes the input."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [_safe(part) for part in err.get("loc", ())],
            "msg": _safe(err.get("msg", "")),
            "type": _safe(err.get("type", "")),
        }
        for err in exc.errors()[:20]
    ]
    description = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return JSONResponse(
        status_code=400,
        content={**error_body("BadRequest", f"invalid request: {description}"), "errors": errors},
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
        413: "PayloadTooLarge",
        422: "UnprocessableEntity",
    }
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(
        status_code=exc.status_code,
        content=error_body(codes.get(exc.status_code, "HTTPError"), detail),
        headers=getattr(exc, "headers", None),
    )


async def bound_error(request: Request, exc: Exception) -> JSONResponse:
    """A request past one of the API's bounds or budgets (``api.bounds``, ``api.budget``)."""
    from tessera_stac.api.bounds import BoundError

    assert isinstance(exc, BoundError)
    return JSONResponse(status_code=exc.status, content=error_body(exc.code, exc.description))


def add_error_handlers(app: FastAPI) -> None:
    """Install the handlers (after stac-fastapi's, which map its own errors)."""
    from tessera_stac.api.bounds import BoundError

    app.add_exception_handler(BoundError, bound_error)
    for exc_type in (*UNAVAILABLE, DatabaseUnavailable):
        app.add_exception_handler(exc_type, database_unavailable)
    for exc_type in (DatabaseTimeout, asyncpg.exceptions.QueryCanceledError):
        app.add_exception_handler(exc_type, database_timeout)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(asyncpg.PostgresError, database_refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)

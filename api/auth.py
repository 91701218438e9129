"""Write routes behind a bearer token.

The API is read-only unless ``enable_transactions`` is set; then every write (POST, PUT, PATCH,
DELETE under ``/collections``) needs ``Authorization: Bearer <write_token>``. Reads, ``POST
/search`` and the embedding routes stay open. A pure ASGI middleware: no cost for reads.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from tessera_stac.api.bounds import send_error

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_write(method: str, path: str) -> bool:
    """True for the transaction routes: a write method on ``/collections[/...]``."""
    return method in WRITE_METHODS and (path == "/collections" or path.startswith("/collections/"))


class BearerTokenMiddleware:
    """Refuse writes without the right bearer token (401, JSON, ``WWW-Authenticate``)."""

    def __init__(self, app: ASGIApp, token: str, root_path: str = "") -> None:
        self.app = app
        self.expected = token.strip().encode()
        self.root_path = root_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if self.root_path and path.startswith(self.root_path):
                path = path[len(self.root_path) :]
            if is_write(scope["method"], path):
                given = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(bearer_token(given), self.expected):
                    await _unauthorized(send, bool(given))
                    return
        await self.app(scope, receive, send)


def bearer_token(header: bytes) -> bytes:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme is
    case-insensitive, RFC 6750/7235), or ``b""``."""
    scheme, _, token = header.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


async def _unauthorized(send: Send, had_token: bool) -> None:
    description = "invalid bearer token" if had_token else "write routes need a bearer token"
    challenge = {"WWW-Authenticate": 'Bearer realm="tessera-stac"'}
    await send_error(send, 401, "Unauthorized", description, challenge)

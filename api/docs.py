"""``/api.html`` (Swagger UI) from the API's own files, not a CDN: it works offline.

stac-fastapi lets FastAPI serve Swagger UI from jsDelivr; on a machine without internet that
page is blank. The same page is served here with Swagger UI's script, stylesheet and icon
from the files packaged by ``fastapi-offline`` (a copy of ``swagger-ui-dist`` 5), mounted at
:data:`STATIC_PATH`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

STATIC_PATH = "/api-docs-static"


def swagger_ui_files() -> Path:
    """The folder holding ``swagger-ui-bundle.js``, ``swagger-ui.css`` and ``favicon.png``."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def serve_docs_locally(app: FastAPI) -> None:
    """Replace the CDN-based docs page of ``app`` with one using local files."""
    docs_url, openapi_url = app.docs_url, app.openapi_url
    if not docs_url or not openapi_url:
        return
    app.router.routes[:] = [
        r for r in app.router.routes if not (isinstance(r, Route) and r.path == docs_url)
    ]
    app.mount(STATIC_PATH, StaticFiles(directory=swagger_ui_files()), name="api-docs-static")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_PATH}/favicon.png",
        )

    # the name FastAPI gives its own page: the landing page links it by that name
    app.add_route(docs_url, swagger_ui, include_in_schema=False, name="swagger_ui_html")

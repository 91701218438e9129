"""Serving a built STAC Browser beside the API, under ``/browser/``.

The browser is built once at set-up time (``browser/build.sh``) with ``pathPrefix=/browser/``,
history-mode routing, and the runtime configuration script ``/browser/config.js`` enabled.
This module serves that build:

* ``/browser/config.js`` is generated per request, so ``catalogUrl`` is this API's own root
  (``request.base_url``) whatever host, port or ``root_path`` it is served on; STAC Browser
  requires it to equal the landing page's ``self`` link, which stac-fastapi builds the same way;
* the build's files are served as static files (hashed bundles cached for long);
* any other path under ``/browser/`` gets ``index.html`` (the single-page app's router shows the
  right page), except under the build's asset folders, where a missing file is a real 404.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from tessera_stac.catalog.errors import ConfigurationError

PREFIX = "/browser"
#: Folders of the webpack build: a missing file there is a 404, not the app's index page.
ASSET_DIRS = ("js/", "css/", "img/", "fonts/", "media/")
#: Build-time options STAC Browser cannot change at runtime (documented as build-only).
BUILD_ONLY = ("pathPrefix", "historyMode")


def browser_config(catalog_url: str, title: str) -> dict[str, object]:
    """The runtime STAC Browser options for a catalog at ``catalog_url``.

    Args:
        catalog_url: The API's root URL (its landing page), ending in ``/``.
        title: The title STAC Browser shows until the landing page is loaded.

    Returns:
        A JSON-serialisable dict for ``window.STAC_BROWSER_CONFIG``.
    """
    return {
        "catalogUrl": catalog_url,
        "catalogTitle": title,
        # browse only this API (and what it links to on the same origin)
        "allowExternalAccess": False,
        "displayPreview": True,
        "displayOverview": True,
        "showThumbnailsAsAssets": False,
        "detectLocaleFromBrowser": False,
        "locale": "en",
        "cardViewMode": "cards",
        "itemsPerPage": 12,
    }


def tile_renderer_js(base_url: str, pca_collections: list[str] | None = None) -> str:
    """STAC Browser's ``buildTileUrlTemplate``: assets are drawn by the API's tiler (never by
    geotiff.js, which cannot decode the ZSTD COGs), with each asset's layer parameters.

    On a collection page (no ``/items/`` in the path), the embedding items of a collection
    with a stored PCA projection (``pca_collections``) are drawn in PCA colours whichever of
    their embedding assets STAC Browser picks, so the collection's map is the PCA mosaic
    (the same colours in every item); an item page keeps each asset's own layer."""
    from urllib.parse import urlencode

    from tessera_stac.api.tiles import asset_tile_query, layer_query

    queries = json.dumps(asset_tile_query(), sort_keys=True)
    pca = json.dumps(sorted(pca_collections or []))
    pca_query = json.dumps(urlencode(layer_query("pca")))
    return (
        "window.STAC_BROWSER_CONFIG.useTileLayerAsFallback = false;\n"
        "window.STAC_BROWSER_CONFIG.buildTileUrlTemplate = function (asset) {\n"
        "  var item = asset.getContext ? asset.getContext() : null;\n"
        "  var key = asset.getKey ? asset.getKey() : null;\n"
        "  if (!item || !item.id || !item.collection || !key) { return null; }\n"
        f"  var queries = {queries};\n"
        "  var query = queries[key] || ('assets=' + encodeURIComponent(key));\n"
        f"  var pca = {pca};\n"
        "  var onCollection = window.location.pathname.indexOf('/items/') < 0;\n"
        "  if (onCollection && pca.indexOf(item.collection) >= 0 && queries[key]) {\n"
        f"    query = {pca_query};\n"
        "  }\n"
        f"  return {json.dumps(base_url.rstrip('/'))} + '/tiles/collections/' +\n"
        "    encodeURIComponent(item.collection) + '/items/' + encodeURIComponent(item.id) +\n"
        "    '/tiles/WebMercatorQuad/{z}/{x}/{y}.png?' + query;\n"
        "};\n"
    )


async def _pca_collections(request: Request) -> list[str]:
    """Ids of the collections with a stored PCA projection (none while the database is down)."""
    from tessera_stac.api.errors import NO_ANSWER
    from tessera_stac.catalog.constants import PROJECTION_FIELD

    try:
        async with request.app.state.get_connection(request, "r") as conn:
            rows = await conn.fetch(
                "SELECT id FROM pgstac.collections WHERE content ? $1", PROJECTION_FIELD
            )
    except NO_ANSWER:
        return []
    return sorted(str(row["id"]) for row in rows)


def _static_file(root: Path, relative: str) -> Path | None:
    """The file ``relative`` under ``root``, or None if missing or escaping ``root``."""
    if not relative or relative.endswith("/"):
        return None
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def mount_browser(app: FastAPI, directory: Path, title: str | None = None) -> None:
    """Serve the STAC Browser build in ``directory`` under ``/browser/``.

    Args:
        app: The API application to add the routes to.
        directory: A STAC Browser build made by ``browser/build.sh`` (holds ``index.html``).
        title: Title shown while loading; defaults to the app's title.

    Raises:
        ConfigurationError: ``directory`` holds no STAC Browser build.
    """
    root = Path(directory).resolve()
    index = root / "index.html"
    if not index.is_file():
        raise ConfigurationError(
            f"no STAC Browser build in {root} (index.html missing): run `make browser` "
            "or unset TESSERA_STAC_API_BROWSER_DIR"
        )
    shown_title = title or app.title or "STAC Browser"

    async def redirect_to_slash(request: Request) -> Response:
        return RedirectResponse(str(request.url_for("stac_browser_index")), status_code=307)

    async def config_js(request: Request) -> Response:
        config = browser_config(str(request.base_url), shown_title)
        body = f"window.STAC_BROWSER_CONFIG = {json.dumps(config, indent=2)};\n"
        body += tile_renderer_js(str(request.base_url), await _pca_collections(request))
        return Response(
            body,
            media_type="application/javascript",
            headers={"Cache-Control": "no-cache"},
        )

    async def serve(request: Request) -> Response:
        relative = request.path_params.get("path", "")
        found = _static_file(root, relative)
        if found is not None:
            hashed = relative.startswith(ASSET_DIRS)
            cache = "public, max-age=31536000, immutable" if hashed else "no-cache"
            return FileResponse(found, headers={"Cache-Control": cache})
        if relative.startswith(ASSET_DIRS):
            return Response(f"not found: {PREFIX}/{relative}", status_code=404)
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.add_api_route(PREFIX, redirect_to_slash, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        f"{PREFIX}/config.js", config_js, methods=["GET", "HEAD"], include_in_schema=False
    )
    app.add_api_route(
        f"{PREFIX}/",
        serve,
        methods=["GET", "HEAD"],
        include_in_schema=False,
        name="stac_browser_index",
    )
    app.add_api_route(
        f"{PREFIX}/{{path:path}}", serve, methods=["GET", "HEAD"], include_in_schema=False
    )

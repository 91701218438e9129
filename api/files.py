"""Published files under ``/data/...`` with HTTP Range, for a local deployment.

GDAL's ``/vsicurl/``, rasterio and browsers (geotiff.js) read COGs by byte ranges: Starlette's
``FileResponse`` answers ``Range`` with ``206`` + ``Content-Range`` (``416`` when unsatisfiable)
and always sends ``Accept-Ranges: bytes``. Paths are confined to the data folder.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

MEDIA_TYPES = {
    ".tif": "image/tiff; application=geotiff",
    ".tiff": "image/tiff; application=geotiff",
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".parquet": "application/vnd.apache.parquet",
    ".png": "image/png",
    ".ndjson": "application/x-ndjson",
}

#: Longest path under ``/data`` looked up (PATH_MAX); longer ones are 404 without a lookup.
MAX_PATH_CHARS = 4096


def resolve_data_path(data_dir: Path, relative: str) -> Path | None:
    """The file ``relative`` under ``data_dir``, or None when absent, outside it or not a
    possible path (NUL byte, name too long...: a 404, never an error of the server)."""
    if len(relative) > MAX_PATH_CHARS or "\x00" in relative:
        return None
    root = data_dir.resolve()
    try:
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
    except (OSError, RuntimeError, ValueError):
        return None
    return path


def files_router(data_dir: Path) -> APIRouter:
    """Routes ``GET``/``HEAD /data/{path}`` serving ``data_dir``."""
    router = APIRouter(tags=["Data"])

    @router.api_route("/data/{path:path}", methods=["HEAD"], include_in_schema=False)
    def data_file_head(path: str, request: Request) -> FileResponse:
        return data_file(path, request)

    @router.get(
        "/data/{path:path}",
        summary="A published file (COG, item JSON, preview...) with HTTP Range support",
        response_class=FileResponse,
        responses={
            200: {"description": "The whole file"},
            206: {"description": "The requested byte range (Content-Range)"},
            404: {"description": "No such file"},
            416: {"description": "Range not satisfiable"},
        },
    )
    def data_file(path: str, request: Request) -> FileResponse:
        found = resolve_data_path(data_dir, path)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no published file at /data/{path}")
        media = MEDIA_TYPES.get(found.suffix.lower()) or mimetypes.guess_type(found.name)[0]
        return FileResponse(found, media_type=media or "application/octet-stream")

    return router

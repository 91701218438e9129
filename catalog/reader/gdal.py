"""Opening COGs: the one set of GDAL options, href -> GDAL path, and cached dataset handles.

Every place that opens a published COG (the API's point and zonal routes, the join, the Python
reader) goes through :func:`rasterio_env` with :data:`GDAL_READ_OPTIONS`, so a remote open
costs at most 3 HTTP requests: the header range, and the first tiles (no directory listing, no
``.aux.xml``/``.ovr``/``.msk`` sidecar probes, no HEAD). Users of rasterio/GDAL outside this
package can apply the same dict (``rasterio.Env(**GDAL_READ_OPTIONS)``, or ``--config`` flags
for the GDAL command line); README "Reading the COGs with rasterio/GDAL" lists them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from tessera_stac.catalog.errors import InputError

#: GDAL configuration for reading COGs locally, over HTTP(S) and from S3.
GDAL_READ_OPTIONS: dict[str, str] = {
    # no directory listing of the COG's "folder" (an S3 LIST or an HTML index over HTTP)
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # only our COGs are opened over /vsicurl/: never probe for .aux.xml, .ovr, .msk sidecars
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
    "GDAL_PAM_ENABLED": "NO",
    # no HEAD request before the first range GET (the GET tells the size)
    "CPL_VSIL_CURL_USE_HEAD": "NO",
    # one request for neighbouring blocks (a row of blocks is one range)
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2",
    # the first GET brings the whole header (IFDs + tile offsets of a ~1100 px tile: < 64 KiB)
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    # keep fetched ranges in memory (64 MiB) so a second read of the same block is free
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": "67108864",
    # decode the blocks of one read in parallel (GDAL >= 3.6)
    "GDAL_NUM_THREADS": "ALL_CPUS",
}

_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def gdal_path(href: str) -> str:
    """The GDAL path of an href: ``/vsicurl/`` for http(s), ``/vsis3/`` for s3, else as is."""
    parts = urlsplit(href)
    if parts.scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    if parts.scheme == "s3":
        return f"/vsis3/{parts.netloc}{parts.path}"
    if parts.scheme == "file":
        return unquote(parts.path)
    return href


def rasterio_env(gdal_env: dict[str, str] | None = None) -> Any:
    """``rasterio.Env`` with :data:`GDAL_READ_OPTIONS` plus ``gdal_env`` (which wins).

    AWS credentials in ``gdal_env`` go through an ``AWSSession`` (rasterio refuses them as
    plain options).
    """
    import rasterio
    from rasterio.session import AWSSession

    extra = dict(gdal_env or {})
    options = {**GDAL_READ_OPTIONS}
    options.update({k: v for k, v in extra.items() if k not in _CREDENTIAL_KEYS})
    if not any(k in extra for k in _CREDENTIAL_KEYS):
        return rasterio.Env(**options)
    session = AWSSession(
        aws_access_key_id=extra.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=extra.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=extra.get("AWS_SESSION_TOKEN"),
        region_name=extra.get("AWS_REGION"),
        endpoint_url=extra.get("AWS_S3_ENDPOINT"),
        aws_unsigned=extra.get("AWS_NO_SIGN_REQUEST", "").upper() == "YES",
    )
    return rasterio.Env(session=session, **options)


def open_raster(path: str, href: str | None = None) -> Any:
    """``rasterio.open(path)`` (inside a :func:`rasterio_env`); InputError when unreadable."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"cannot open {href or path}: {exc}") from exc


class DatasetCache:
    """LRU cache of open rasterio datasets, one lock per handle (handles are not thread-safe).

    Args:
        size: how many handles to keep open.
        path_for: href -> GDAL path (default :func:`gdal_path`; a server maps its own URLs to
            local files here).
        gdal_env: extra GDAL options (S3 endpoint, credentials) over :data:`GDAL_READ_OPTIONS`.
        direct: local GeoTIFFs the kernel reads itself (tiled, pixel-interleaved, simple
            georeferencing) are not opened with GDAL: their header (tifffile, kept in the
            kernel's bounded LRU of open files) gives a
            :class:`~tessera_stac.catalog.reader.tiff.LocalRaster` with GDAL's georeferencing.
    """

    def __init__(
        self,
        size: int,
        path_for: Callable[[str], str] = gdal_path,
        gdal_env: dict[str, str] | None = None,
        direct: bool = True,
    ) -> None:
        self.size = max(1, size)
        self.direct = direct
        self.path_for = path_for
        self.gdal_env = dict(gdal_env or {})
        self._lock = threading.Lock()
        self._open: OrderedDict[str, tuple[Any, threading.Lock]] = OrderedDict()

    @contextmanager
    def dataset(self, href: str) -> Iterator[Any]:
        """Yield the open dataset for ``href`` while holding its lock.

        Raises:
            InputError: the file cannot be opened.
        """
        if self.direct:
            from tessera_stac.catalog.reader.tiff import local_raster

            local = local_raster(self.path_for(href))
            if local is not None:  # no handle to lock: the kernel reads it with pread
                yield local
                return
        with self._lock:
            entry = self._open.get(href)
            if entry is not None:
                self._open.move_to_end(href)
        if entry is None:
            with rasterio_env(self.gdal_env):
                ds = open_raster(self.path_for(href), href)
            with self._lock:
                if href in self._open:
                    ds.close()
                else:
                    self._open[href] = (ds, threading.Lock())
                entry = self._open[href]
                while len(self._open) > self.size:
                    _, (old, old_lock) = self._open.popitem(last=False)
                    with old_lock:
                        old.close()
        ds, lock = entry
        with lock, rasterio_env(self.gdal_env):
            yield ds

    def close(self) -> None:
        """Close every cached handle."""
        with self._lock:
            while self._open:
                _, (ds, lock) = self._open.popitem()
                with lock:
                    ds.close()

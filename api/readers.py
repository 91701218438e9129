"""Reading dequantised embeddings from published COGs, with cached dataset handles.

Synchronous (rasterio); the routes call it in a thread pool. An item's ``embeddings`` asset holds
int8 codes (nodata -128, pixel-interleaved, 128 bands), its ``scales`` asset one float32 scale
per pixel (NaN = invalid); the vector is ``q.astype(float32) * s`` (DESIGN §1).

Hrefs are opened as GDAL paths: local paths as they are, ``s3://`` as ``/vsis3/``, http(s) as
``/vsicurl/`` - except URLs of this API's own ``/data`` route when it serves a local folder,
which are read from that folder directly (no HTTP round trip to ourselves).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from tessera_stac.catalog.model import GridCell

#: GDAL options for reading COGs over HTTP/S3 (no directory listing, cached, merged ranges).
GDAL_READ_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
    "CPL_VSIL_CURL_USE_HEAD": "NO",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2",
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": "67108864",
}
EMBEDDINGS_ASSET = "embeddings"
SCALES_ASSET = "scales"
CODE_NODATA = -128


class ReadError(Exception):
    """A point or area cannot be answered; ``status`` is the HTTP status to give."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description


@dataclass(frozen=True)
class Pixel:
    """The pixel a point falls in: row/col in the asset's grid, its CRS and centre."""

    row: int
    col: int
    crs: str
    x: float
    y: float


@dataclass(frozen=True)
class PointValue:
    """A dequantised vector and where it was read."""

    pixel: Pixel
    scale: float
    vector: np.ndarray  # float32, (dims,)


class DatasetCache:
    """LRU cache of open rasterio datasets, one lock per handle (handles are not thread-safe)."""

    def __init__(self, size: int, data_dir: Path | None, data_prefix: str = "/data/") -> None:
        self.size = max(1, size)
        self.data_dir = data_dir
        self.data_prefix = data_prefix
        self._lock = threading.Lock()
        self._open: OrderedDict[str, tuple[Any, threading.Lock]] = OrderedDict()

    def gdal_path(self, href: str) -> str:
        """The path GDAL opens for ``href``."""
        parts = urlsplit(href)
        if parts.scheme in ("http", "https"):
            if self.data_dir is not None and parts.path.startswith(self.data_prefix):
                local = self.data_dir / unquote(parts.path[len(self.data_prefix) :])
                if local.is_file():
                    return str(local)
            return "/vsicurl/" + href
        if parts.scheme == "s3":
            return f"/vsis3/{parts.netloc}{parts.path}"
        if parts.scheme == "file":
            return unquote(parts.path)
        return href

    @contextmanager
    def dataset(self, href: str) -> Iterator[Any]:
        """Yield the open dataset for ``href`` while holding its lock."""
        import rasterio

        with self._lock:
            entry = self._open.get(href)
            if entry is not None:
                self._open.move_to_end(href)
        if entry is None:
            try:
                with rasterio.Env(**GDAL_READ_OPTIONS):
                    ds = rasterio.open(self.gdal_path(href))
            except rasterio.errors.RasterioIOError as exc:
                raise ReadError(502, "AssetUnreadable", f"cannot open {href}: {exc}") from exc
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
        with lock, rasterio.Env(**GDAL_READ_OPTIONS):
            yield ds

    def close(self) -> None:
        """Close every cached handle."""
        with self._lock:
            while self._open:
                _, (ds, lock) = self._open.popitem()
                with lock:
                    ds.close()


def asset_href(item: dict[str, Any], key: str) -> str:
    """The href of asset ``key`` of ``item``; ReadError 502 when the item lacks it."""
    asset = (item.get("assets") or {}).get(key)
    if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
        raise ReadError(502, "AssetMissing", f"item {item.get('id')!r} has no {key!r} asset")
    return str(asset["href"])


def scale_asset_key(item: dict[str, Any]) -> str:
    """The key of the per-pixel scale asset (``scales`` unless the metadata names another)."""
    assets = item.get("assets") or {}
    if SCALES_ASSET in assets:
        return SCALES_ASSET

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    sources = [
        v for k, v in (item.get("properties") or {}).items() if k.startswith("embedding:")
    ] + [v for k, v in (assets.get(EMBEDDINGS_ASSET) or {}).items() if k.startswith("embedding:")]
    for text in strings(sources):
        if text in assets and text != EMBEDDINGS_ASSET:
            return text
    return SCALES_ASSET


def _transformer(crs: Any) -> Any:
    from pyproj import Transformer

    key = crs.to_string()
    cached = _TRANSFORMERS.get(key)
    if cached is None:
        cached = Transformer.from_crs("EPSG:4326", key, always_xy=True)
        _TRANSFORMERS[key] = cached
    return cached


_TRANSFORMERS: dict[str, Any] = {}


def crs_code(crs: Any) -> str:
    """``EPSG:xxxx`` when the CRS has a code, else its WKT/PROJ string."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def valid_mask(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Valid pixels: a finite scale in (0, 1) and no nodata code (DESIGN §1)."""
    with np.errstate(invalid="ignore"):
        good_scale = np.isfinite(scales) & (scales > 0) & (scales < 1.0)
    return np.asarray(good_scale & ~(codes == CODE_NODATA).any(axis=0))


def read_point(cache: DatasetCache, item: dict[str, Any], lon: float, lat: float) -> PointValue:
    """The dequantised vector of ``item`` at (lon, lat).

    Raises:
        ReadError: 404 outside the raster, 422 on an invalid (nodata/water) pixel.
    """
    from rasterio.windows import Window

    emb_href = asset_href(item, EMBEDDINGS_ASSET)
    scale_href = asset_href(item, scale_asset_key(item))
    with cache.dataset(emb_href) as ds:
        x, y = _transformer(ds.crs).transform(lon, lat)
        row, col = ds.index(x, y, op=math.floor)
        if not (0 <= row < ds.height and 0 <= col < ds.width):
            raise ReadError(404, "OutsideCoverage", "the point is outside the item's raster")
        codes = ds.read(window=Window(col, row, 1, 1))[:, 0, 0]
        cx, cy = ds.xy(row, col)
        pixel = Pixel(int(row), int(col), crs_code(ds.crs), float(cx), float(cy))
    with cache.dataset(scale_href) as sds:
        scale = sds.read(1, window=Window(col, row, 1, 1))[0, 0]
    scale = np.float32(scale)
    if not valid_mask(codes[:, None, None], np.array([[scale]]))[0, 0]:
        reason = "scale is NaN" if not np.isfinite(scale) else "nodata code or scale out of range"
        raise ReadError(
            422,
            "InvalidPixel",
            f"pixel row {row}, col {col} of {item['id']} holds no valid embedding (water, "
            f"unprocessed or invalid: {reason})",
        )
    vector = codes.astype(np.float32) * scale
    return PointValue(pixel, float(scale), vector)


@dataclass
class AreaSum:
    """Running sums of a zonal statistic over several tiles."""

    count: int = 0
    valid: int = 0
    total: np.ndarray | None = None  # float64 sum of valid vectors


def _pixel_lonlat(ds: Any, window: Any) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 lon/lat of the centres of the pixels of ``window``."""
    from pyproj import Transformer

    rows, cols = np.mgrid[0 : int(window.height), 0 : int(window.width)]
    transform = ds.window_transform(window)
    xs = transform.c + (cols + 0.5) * transform.a + (rows + 0.5) * transform.b
    ys = transform.f + (cols + 0.5) * transform.d + (rows + 0.5) * transform.e
    back = Transformer.from_crs(ds.crs.to_string(), "EPSG:4326", always_xy=True)
    lons, lats = back.transform(xs, ys)
    return np.asarray(lons), np.asarray(lats)


def read_area(
    cache: DatasetCache, item: dict[str, Any], geometry: dict[str, Any], max_pixels: int
) -> tuple[AreaSum, dict[str, Any]]:
    """Sums over the pixels of ``item`` whose centre is in ``geometry`` and in its own cell.

    Centres are tested in WGS84 against the polygon as given (the CoRE Stack/GEE rule), and a
    pixel counts only for the tile whose 0.1° cell holds its centre (no double counting where
    neighbouring UTM rasters overlap).
    """
    from rasterio.warp import transform_geom
    from rasterio.windows import Window, from_bounds
    from shapely import contains_xy
    from shapely.geometry import shape

    emb_href = asset_href(item, EMBEDDINGS_ASSET)
    scale_href = asset_href(item, scale_asset_key(item))
    bbox = item.get("bbox") or [0, 0, 0, 0]
    cell = GridCell.containing((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    out = AreaSum()
    with cache.dataset(emb_href) as ds:
        local = transform_geom("EPSG:4326", ds.crs, geometry)
        minx, miny, maxx, maxy = shape(local).bounds
        pad = 3 * abs(ds.transform.a)  # edges bulge slightly between projections
        window = from_bounds(minx - pad, miny - pad, maxx + pad, maxy + pad, ds.transform)
        window = window.round_offsets().round_lengths()
        try:
            window = window.intersection(Window(0, 0, ds.width, ds.height))
        except Exception:  # rasterio raises WindowError when they do not meet
            return out, {"row_off": 0, "col_off": 0, "height": 0, "width": 0}
        if window.width <= 0 or window.height <= 0:
            return out, {"row_off": 0, "col_off": 0, "height": 0, "width": 0}
        if window.width * window.height > max_pixels:
            raise ReadError(
                422, "AreaTooLarge", f"the geometry covers more than {max_pixels} pixels"
            )
        codes = ds.read(window=window)
        lons, lats = _pixel_lonlat(ds, window)
        west, south, east, north = cell.bounds
        inside = (lons >= west) & (lons < east) & (lats >= south) & (lats < north)
        inside &= contains_xy(shape(geometry), lons, lats)
        info = {
            "row_off": int(window.row_off),
            "col_off": int(window.col_off),
            "height": int(window.height),
            "width": int(window.width),
            "crs": crs_code(ds.crs),
        }
    with cache.dataset(scale_href) as sds:
        scales = sds.read(1, window=window).astype(np.float32)
    valid = inside & valid_mask(codes, scales)
    out.count = int(inside.sum())
    out.valid = int(valid.sum())
    if out.valid:
        vectors = codes[:, valid].astype(np.float32) * scales[valid]
        out.total = vectors.astype(np.float64).sum(axis=1)
    return out, info

"""Reading dequantised embeddings from published COGs, with cached dataset handles.

Synchronous (rasterio); the routes call it in a thread pool. What to read and how to
dequantise comes from the item's metadata through the catalog's metadata-only reader
(``tessera_stac.catalog.reader``: the codes asset, its ``embedding:quantization`` recipe, the
scale asset, nodata rules, ``dequantize``); for TESSERA that is int8 codes x the per-pixel
float32 scale, ``q.astype(float32) * s`` (DESIGN §1). This module adds what a server needs on
top: dataset handles kept open across requests (LRU, one lock each) and our ``/data`` URLs
read from the local folder.

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
    scale: float | None  # the pixel's scale (per-pixel recipes), else None
    vector: np.ndarray  # float32, (dims,)
    asset: str  # key of the codes asset read
    scale_asset: str | None
    href: str


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


@dataclass(frozen=True)
class Recipe:
    """How to read one item: codes asset, scale asset (per-pixel methods) and the recipe."""

    codes_key: str
    scale_key: str | None
    quantization: Any  # tessera_stac.catalog.embedding.Quantization


_RECIPES: dict[tuple[str, str, str], Recipe] = {}


def recipe(item: dict[str, Any]) -> Recipe:
    """The item's codes asset and dequantisation recipe, from its metadata alone.

    Memoised per (collection, id, assets) so a hot point route does not re-parse the item.

    Raises:
        ReadError: 502 when the item does not describe its embeddings well enough.
    """
    import json

    key = (
        str(item.get("collection")),
        str(item.get("id")),
        json.dumps(item.get("assets"), sort_keys=True, default=str),
    )
    found = _RECIPES.get(key)
    if found is None:
        found = _parse_recipe(item)
        if len(_RECIPES) > 4096:
            _RECIPES.clear()
        _RECIPES[key] = found
    return found


def _parse_recipe(item: dict[str, Any]) -> Recipe:
    import pystac

    from tessera_stac.catalog.embedding import QuantizationMethod
    from tessera_stac.catalog.errors import InputError
    from tessera_stac.catalog.reader import quantization_of, select_codes_asset

    try:
        parsed = pystac.Item.from_dict(item, preserve_dict=False)
        key = select_codes_asset(parsed)
        quantization = quantization_of(parsed, key)
    except (InputError, KeyError, ValueError, TypeError) as exc:
        raise ReadError(502, "NotAnEmbeddingItem", f"item {item.get('id')!r}: {exc}") from exc
    scale_key = None
    if quantization.method is QuantizationMethod.PER_PIXEL_SCALE:
        scale_key = quantization.scale_asset or SCALES_ASSET
    return Recipe(key, scale_key, quantization)


def scale_asset_key(item: dict[str, Any]) -> str | None:
    """The key of the per-pixel scale asset named by the item's recipe (None if not used)."""
    return recipe(item).scale_key


def _dequantize(rec: Recipe, codes_bhw: np.ndarray, scales: np.ndarray | None) -> Any:
    """(values (h, w, dims), valid (h, w)) with the catalog reader's ``dequantize``."""
    from tessera_stac.catalog.reader import dequantize

    return dequantize(np.moveaxis(codes_bhw, 0, -1), rec.quantization, scales)


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


def read_point(cache: DatasetCache, item: dict[str, Any], lon: float, lat: float) -> PointValue:
    """The dequantised vector of ``item`` at (lon, lat).

    Raises:
        ReadError: 404 outside the raster, 422 on an invalid (nodata/water) pixel.
    """
    from rasterio.windows import Window

    rec = recipe(item)
    scale = None
    with cache.dataset(asset_href(item, rec.codes_key)) as ds:
        x, y = _transformer(ds.crs).transform(lon, lat)
        row, col = ds.index(x, y, op=math.floor)
        if not (0 <= row < ds.height and 0 <= col < ds.width):
            raise ReadError(404, "OutsideCoverage", "the point is outside the item's raster")
        window = Window(col, row, 1, 1)
        codes = ds.read(window=window)
        cx, cy = ds.xy(row, col)
        pixel = Pixel(int(row), int(col), crs_code(ds.crs), float(cx), float(cy))
    scales = None
    if rec.scale_key is not None:
        band = rec.quantization.scale_band or 1
        with cache.dataset(asset_href(item, rec.scale_key)) as sds:
            scales = sds.read(band, window=window)
        scale = float(scales[0, 0])
    values, valid = _dequantize(rec, codes, scales)
    if not valid[0, 0]:
        reason = "nodata code" if scale is None or np.isfinite(scale) else "scale is NaN"
        if scale is not None and np.isfinite(scale) and not (codes == CODE_NODATA).any():
            reason = f"scale {scale} outside the valid range"
        raise ReadError(
            422,
            "InvalidPixel",
            f"pixel row {row}, col {col} of {item['id']} holds no valid embedding (water, "
            f"unprocessed or invalid: {reason})",
        )
    vector = np.asarray(values[0, 0], dtype=np.float32)
    return PointValue(
        pixel, scale, vector, rec.codes_key, rec.scale_key, asset_href(item, rec.codes_key)
    )


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

    rec = recipe(item)
    bbox = item.get("bbox") or [0, 0, 0, 0]
    cell = GridCell.containing((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    out = AreaSum()
    with cache.dataset(asset_href(item, rec.codes_key)) as ds:
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
            "asset": rec.codes_key,
            "href": asset_href(item, rec.codes_key),
        }
    scales = None
    if rec.scale_key is not None:
        with cache.dataset(asset_href(item, rec.scale_key)) as sds:
            scales = sds.read(rec.quantization.scale_band or 1, window=window)
    values, ok = _dequantize(rec, codes, scales)
    valid = inside & ok
    out.count = int(inside.sum())
    out.valid = int(valid.sum())
    if out.valid:
        out.total = values[valid].astype(np.float64).sum(axis=0)
    return out, info

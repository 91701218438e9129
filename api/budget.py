"""Request budgets: what one request may make the server read, allocate and wait for, known
before the work starts (issue "One request must never take the service down").

Three layers, each cheap and each checked before any large allocation:

* :func:`check_tile_request`, a dependency in front of every map-tile route (item and mosaic):
  validates the tile parameters a careless client gets wrong (zoom and indices outside the
  tile matrix, band indices outside the asset, expressions, ``rescale``, ``colormap``), then
  counts the request's cost from the Item's (or Collection's) metadata: output pixels x bands
  read x items, refusing past the settings with a 413 that names the limit and its setting;
* :class:`BudgetReader`, the rio-tiler ``Reader`` every tile route reads COGs with: computes
  the output size of each read exactly as rio-tiler will (``output_size`` on the warped
  window) and refuses one that would exceed the per-read budget (the backstop: no parameter
  combination the dependency did not foresee reaches ``numpy.empty``);
* :class:`BudgetReader` also reads map tiles of local COGs through the reader kernel
  (:func:`~tessera_stac.api.kernel_tiles.kernel_tile`): the same pixels as GDAL's warped
  read, from the touched blocks only;
* :class:`HeavyRequestLimiter`, an ASGI middleware: requests that read rasters are admitted
  ``heavy_concurrency`` at a time per worker, queue at most ``heavy_queue_seconds``, then get
  ``503`` + ``Retry-After``; one that has not begun its answer after ``heavy_request_seconds``
  gets the same 503 (its work ends in the background, still holding its slot). Everything
  else (search, items, collections, TileJSON, cached tiles) never waits behind them.
  Finished tiles are kept in a small bounded cache; once a worker has had no raster request
  for a second, the freed heap is handed back to the system (``malloc_trim``).

Every refusal is the API's error shape ``{"code", "description"}`` and names the setting.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import morecantile
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from rio_tiler.utils import get_vrt_transform
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera_stac.api.bounds import BoundError, send_error
from tessera_stac.api.caches import DatasetPool, KeptTileGeometry, LruCache
from tessera_stac.api.kernel_tiles import TILE_READS, kernel_tile
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.profile import EMBEDDINGS, SCALES

#: Bands of our own assets when an asset does not list them (the per-read check is exact).
KNOWN_BANDS = {EMBEDDINGS.asset_key: EMBEDDINGS.count, SCALES.asset_key: SCALES.count}
#: Bands assumed for an asset that declares none (the per-read check still counts exactly).
UNKNOWN_ASSET_BANDS = 4
DEFAULT_TILESIZE = 256
_VARIABLE = re.compile(r"\bb(\d+)\b")
_ENV = {
    "max_output_pixels": "TESSERA_STAC_API_TILE_MAX_OUTPUT_PIXELS",
    "max_read_values": "TESSERA_STAC_API_TILE_MAX_READ_VALUES",
    "max_bands": "TESSERA_STAC_API_TILE_MAX_BANDS",
    "max_items": "TESSERA_STAC_API_TILE_MAX_ITEMS",
    "max_expression_chars": "TESSERA_STAC_API_MAX_EXPRESSION_CHARS",
    "heavy": "TESSERA_STAC_API_HEAVY_CONCURRENCY",
    "heavy_seconds": "TESSERA_STAC_API_HEAVY_REQUEST_SECONDS",
}


def too_much(what: str, value: int | float, limit: int | float, setting: str) -> BoundError:
    """413 naming the limit and the setting that raises it."""
    return BoundError(
        413,
        "RequestTooLarge",
        f"{what}: {value:,} is over the limit of {limit:,} ({_ENV.get(setting, setting)})",
    )


def bad(description: str) -> BoundError:
    """400 for a parameter no request may carry."""
    return BoundError(400, "BadRequest", description)


def check(value: int, limit: int, setting: str, what: str) -> None:
    """Refuse (413) when ``value`` is over ``limit``; ``setting`` names the knob."""
    if value > limit:
        raise too_much(what, value, limit, setting)


# ------------------------------------------------------------------------ the cost model
@dataclass(frozen=True)
class Cost:
    """What a raster request reads: ``items`` x ``bands`` x ``pixels`` (output pixels)."""

    pixels: int
    bands: int
    items: int = 1

    @property
    def values(self) -> int:
        """Band-pixels read and held in memory (before any algorithm)."""
        return self.pixels * self.bands * self.items

    def check(self, settings: ApiSettings) -> None:
        """Refuse past the tile budgets (output pixels, bands, items, values)."""
        check(self.pixels, settings.tile_max_output_pixels, "max_output_pixels", "output pixels")
        check(self.bands, settings.tile_max_bands, "max_bands", "bands read per item")
        check(self.items, settings.tile_max_items, "max_items", "items read")
        check(self.values, settings.tile_max_read_values, "max_read_values", "values read")


def asset_band_count(asset: dict[str, Any], key: str) -> int:
    """Bands of an asset from its STAC metadata (``bands``, ``raster:bands``, ``eo:bands``)."""
    for field in ("bands", "raster:bands", "eo:bands"):
        value = asset.get(field)
        if isinstance(value, list) and value:
            return len(value)
    return KNOWN_BANDS.get(key, UNKNOWN_ASSET_BANDS)


def _positive_int(name: str, raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"{name} must be an integer, got {raw[:40]!r}") from None
    if value <= 0:
        raise bad(f"{name} must be positive, got {value}")
    return value


def selected_bands(query: Any, assets_meta: dict[str, dict[str, Any]]) -> int:
    """Bands a request reads per item: each ``assets`` entry (``key|bidx=...``) or ``bidx``.

    Band indices outside an asset are a 400 here, not a 500 in the reader."""
    entries = query.getlist("assets")
    if not entries:
        return 0
    global_bidx = [b for raw in query.getlist("bidx") for b in raw.split(",") if b]
    total = 0
    for entry in entries:
        key, _, options = entry.partition("|")
        meta = assets_meta.get(key)
        if meta is None:
            raise BoundError(404, "NotFound", f"no asset {key[:80]!r} here")
        count = asset_band_count(meta, key)
        indexes: list[str] = list(global_bidx)
        for option in filter(None, options.split("|")):
            name, _, value = option.partition("=")
            if name == "bidx":
                indexes = [b for b in value.split(",") if b]
        if indexes:
            for raw in indexes:
                try:
                    index = int(raw)
                except ValueError:
                    raise bad(f"band index {raw[:20]!r} is not an integer") from None
                if not 1 <= index <= count:
                    raise bad(f"band index {index} is outside asset {key!r} (1..{count})")
            total += len(indexes)
        else:
            total += count
    return total


def check_expression(expression: str | None, bands: int, settings: ApiSettings) -> None:
    """An expression is short and names only bands that are read."""
    if not expression:
        return
    check(
        len(expression), settings.max_expression_chars, "max_expression_chars", "expression length"
    )
    for raw in _VARIABLE.findall(expression):
        if not 1 <= int(raw) <= max(bands, 1):
            raise bad(f"expression names b{raw}, but the request reads {bands} band(s)")


def check_rendering(query: Any, settings: ApiSettings) -> None:
    """``rescale`` pairs of finite numbers, a bounded ``colormap``."""
    rescales = query.getlist("rescale")
    if len(rescales) > settings.tile_max_bands:
        raise too_much("rescale ranges", len(rescales), settings.tile_max_bands, "max_bands")
    for value in rescales:
        parts = value.strip("[]").split(",")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise bad(f"rescale {value[:40]!r} is not two numbers 'min,max'") from None
        if len(numbers) != 2 or not all(math.isfinite(n) for n in numbers):
            raise bad(f"rescale {value[:40]!r} is not two finite numbers 'min,max'")


def check_lonlat(lon: Any, lat: Any) -> None:
    """A point on Earth: finite lon in [-180, 180], lat in [-90, 90] (400 otherwise)."""
    try:
        x, y = float(lon), float(lat)
    except (TypeError, ValueError):
        raise bad("lon and lat must be numbers") from None
    if not (math.isfinite(x) and math.isfinite(y) and abs(x) <= 180 and abs(y) <= 90):
        raise bad("lon/lat must be finite, within ±180 / ±90")


def check_zoom_params(query: Any, tms_names: Iterable[str] = ()) -> None:
    """``minzoom``/``maxzoom`` and WMTS ``zooms`` (``tms::min,max``) within 0..30 (400)."""
    values = [("minzoom", v) for v in query.getlist("minzoom")]
    values += [("maxzoom", v) for v in query.getlist("maxzoom")]
    for entry in query.getlist("zooms"):
        _, _, pair = entry.rpartition("::")
        values += [("zooms", v) for v in pair.split(",")]
    for name, raw in values:
        try:
            zoom = int(raw)
        except ValueError:
            raise bad(f"{name} must be an integer zoom, got {raw[:20]!r}") from None
        if not 0 <= zoom <= 30:
            raise bad(f"{name} {zoom} is outside 0..30")


@functools.lru_cache(maxsize=32)
def tile_matrix_set(name: str) -> morecantile.TileMatrixSet:
    """morecantile's tile matrix set ``name``, built once (``morecantile.tms.get`` deep-copies
    its definition on every call, ~4 ms; the budget only reads it). Bounded; the definitions
    are morecantile's constants, so nothing here can go stale."""
    return morecantile.tms.get(name)


class KeptTileMatrixSets(morecantile.defaults.TileMatrixSets):
    """morecantile's registry of tile matrix sets for titiler's factories, handing out the
    instance :func:`tile_matrix_set` keeps instead of a deep copy per request (~1 ms each on
    every map tile). Nothing in titiler or rio-tiler changes a tile matrix set."""

    def get(self, identifier: str) -> morecantile.TileMatrixSet:
        """The kept tile matrix set ``identifier`` (``InvalidIdentifier`` when unknown)."""
        if identifier not in self.tilematrixsets:
            return super().get(identifier)  # morecantile's error
        return tile_matrix_set(identifier)


#: the tile matrix sets every tile route serves (morecantile's defaults)
SUPPORTED_TMS = KeptTileMatrixSets(dict(morecantile.tms.tilematrixsets))


def tile_of(
    path_params: dict[str, Any], query: Any, settings: ApiSettings
) -> tuple[morecantile.TileMatrixSet, int, int]:
    """(tms, z, output edge) of a tile route; 400 for a tile outside the matrix."""
    name = str(path_params.get("tileMatrixSetId") or "WebMercatorQuad")
    try:
        tms = tile_matrix_set(name)
    except Exception:  # morecantile's InvalidIdentifier
        raise BoundError(404, "NotFound", f"no tile matrix set {name[:60]!r}") from None
    try:
        z, x, y = (int(path_params[k]) for k in ("z", "x", "y"))
    except (KeyError, ValueError):
        raise bad("z, x and y must be integers") from None
    if not tms.minzoom <= z <= tms.maxzoom:
        raise bad(f"zoom {z} is outside the tile matrix set {name} ({tms.minzoom}..{tms.maxzoom})")
    matrix = tms.matrix(z)
    if not (0 <= x < matrix.matrixWidth and 0 <= y < matrix.matrixHeight):
        raise bad(f"tile {z}/{x}/{y} is outside the tile matrix set {name}")
    scale = int(path_params.get("scale") or 1)
    if not 1 <= scale <= 4:
        raise bad(f"scale @{scale}x must be 1 to 4")
    edge = _positive_int("tilesize", query.get("tilesize")) or DEFAULT_TILESIZE * scale
    if edge * edge > settings.tile_max_output_pixels:
        raise too_much(
            "tile pixels (tilesize squared)",
            edge * edge,
            settings.tile_max_output_pixels,
            "max_output_pixels",
        )
    buffer = query.get("buffer")
    if buffer:
        try:
            extra = float(buffer)
        except ValueError:
            raise bad("buffer must be a number") from None
        if not (math.isfinite(extra) and 0 <= extra <= 64):
            raise bad("buffer must be between 0 and 64")
        edge += int(2 * extra)
    return tms, z, edge


def cells_over(bounds: tuple[float, float, float, float]) -> int:
    """Most 0.1° cells (one Item each per year) a lon/lat box can meet."""
    west, south, east, north = bounds
    columns = math.floor(east * 10) - math.floor(west * 10) + 1
    rows = math.floor(north * 10) - math.floor(south * 10) + 1
    return max(1, columns) * max(1, rows)


def _sizes(query: Any, path_params: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    width = _positive_int("width", path_params.get("width") or query.get("width"))
    height = _positive_int("height", path_params.get("height") or query.get("height"))
    max_size = _positive_int("max_size", query.get("max_size"))
    return width, height, max_size


def output_pixels(
    width: int | None,
    height: int | None,
    max_size: int | None,
    native: tuple[float, float],
) -> int:
    """Output pixels as rio-tiler sizes them (``output_size``): ``width`` x ``height``, the
    native window (``native`` = (height, width)) shrunk to ``max_size``, or one given side
    with the window's aspect."""
    nat_h, nat_w = max(native[0], 1.0), max(native[1], 1.0)
    if width and height:
        return width * height
    if width:
        return width * max(1, math.ceil(width * nat_h / nat_w))
    if height:
        return height * max(1, math.ceil(height * nat_w / nat_h))
    if max_size:
        ratio = min(1.0, max_size / max(nat_h, nat_w)) if max(nat_h, nat_w) > max_size else 1.0
        return max(1, math.ceil(nat_h * ratio)) * max(1, math.ceil(nat_w * ratio))
    return max(1, math.ceil(nat_h)) * max(1, math.ceil(nat_w))


def native_size(
    item: dict[str, Any], bounds: tuple[float, float, float, float] | None
) -> tuple[float, float]:
    """(rows, columns) an Item's native grid spans over ``bounds`` (lon/lat; the Item's own
    extent when None): what rio-tiler reads when a request gives no output size."""
    props = item.get("properties") or {}
    shape = props.get("proj:shape")
    bbox = item.get("bbox") or [0, 0, 1, 1]
    rows, cols = (float(shape[0]), float(shape[1])) if shape else (1100.0, 1100.0)
    if bounds is None:
        return rows, cols
    dlon = max(float(bbox[2]) - float(bbox[0]), 1e-9)
    dlat = max(float(bbox[3]) - float(bbox[1]), 1e-9)
    return (
        rows * abs(bounds[3] - bounds[1]) / dlat,
        cols * abs(bounds[2] - bounds[0]) / dlon,
    )


def geometry_bounds(body: Any) -> tuple[float, float, float, float] | None:
    """lon/lat bounds of a GeoJSON Feature, FeatureCollection or geometry (None: not one)."""
    coords: list[float] = []
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.get(k) for k in ("geometry", "features", "coordinates") if k in node)
            stack.extend(node.get("geometries") or [])
        elif isinstance(node, list):
            if len(node) >= 2 and all(isinstance(v, int | float) for v in node[:2]):
                coords.extend(float(v) for v in node[:2])
            else:
                stack.extend(node)
    if not coords:
        return None
    xs, ys = coords[0::2], coords[1::2]
    if not all(math.isfinite(v) for v in coords):
        raise bad("geometry coordinates must be finite")
    return min(xs), min(ys), max(xs), max(ys)


# ------------------------------------------------------------------------ the per-read guard
class BudgetReader(KeptTileGeometry, Reader):
    """rio-tiler's ``Reader``, refusing any single read past the per-read budget before it
    allocates (``max_values``: band-pixels; set per app by :func:`budget_reader`)."""

    max_values: int = 0
    max_pixels: int = 0
    #: read map tiles of local COGs through the reader kernel (:func:`kernel_tile`)
    kernel: bool = False
    #: the kernel's per-file headers and per-tile plans (set per app by :func:`budget_reader`)
    headers: LruCache = LruCache(0)
    plans: LruCache = LruCache(0)
    #: idle open datasets of local files, reused across requests (kernel on)
    datasets: DatasetPool = DatasetPool(0)

    def __attrs_post_init__(self) -> None:
        """rio-tiler's set-up, on a dataset from :attr:`datasets` when the kernel reads local
        files (returned to the pool when the reader closes)."""
        if self.dataset is None and self.kernel and isinstance(self.input, str):
            found = self.datasets.checkout(self.input)
            if found is not None:
                self.dataset = found[0]
                self._ctx_stack.callback(self.datasets.checkin, *found)
        super().__attrs_post_init__()

    def _src(self) -> Any:
        assert self.dataset is not None, "the reader opened its dataset"
        return self.dataset

    def _guard(self, pixels: int, indexes: Any, expression: str | None = None) -> None:
        if isinstance(indexes, int):
            bands = 1
        elif indexes:
            bands = len(indexes)
        elif expression:
            bands = len(set(_VARIABLE.findall(expression))) or self._src().count
        else:
            bands = self._src().count
        if self.max_pixels and pixels > self.max_pixels:
            raise too_much(
                "output pixels of one read", pixels, self.max_pixels, "max_output_pixels"
            )
        if self.max_values and pixels * bands > self.max_values:
            raise too_much("values of one read", pixels * bands, self.max_values, "max_read_values")

    def _part_pixels(self, bbox: Any, kwargs: dict[str, Any]) -> int:
        height, width = kwargs.get("height"), kwargs.get("width")
        if height and width:  # tiles (rio-tiler's tile() reads a part of tilesize x tilesize)
            return int(height) * int(width)
        from rasterio.warp import transform_bounds

        dst_crs = kwargs.get("dst_crs") or self._src().crs
        bounds_crs = kwargs.get("bounds_crs") or tile_matrix_set("WebMercatorQuad").rasterio_crs
        if bounds_crs != dst_crs:
            bbox = transform_bounds(bounds_crs, dst_crs, *bbox, densify_pts=21)
        _, vrt_width, vrt_height = get_vrt_transform(self._src(), bbox, dst_crs=dst_crs)
        return output_pixels(width, height, kwargs.get("max_size"), (vrt_height, vrt_width))

    def part(self, bbox: Any, *args: Any, **kwargs: Any) -> ImageData:
        """``Reader.part``, sized first."""
        self._guard(
            self._part_pixels(bbox, kwargs), kwargs.get("indexes"), kwargs.get("expression")
        )
        return super().part(bbox, *args, **kwargs)

    def preview(self, *args: Any, **kwargs: Any) -> ImageData:
        """``Reader.preview``, sized first (``max_size`` defaults to 1024 as in rio-tiler)."""
        max_size = kwargs.get("max_size", 1024)
        pixels = output_pixels(
            kwargs.get("width"),
            kwargs.get("height"),
            max_size,
            (self._src().height, self._src().width),
        )
        self._guard(pixels, kwargs.get("indexes"), kwargs.get("expression"))
        return super().preview(*args, **kwargs)

    def read(self, *args: Any, **kwargs: Any) -> ImageData:
        """``Reader.read``, sized first."""
        window = kwargs.get("window")
        native = (self._src().height, self._src().width)
        if window is not None and hasattr(window, "height"):
            native = (window.height, window.width)
        pixels = output_pixels(
            kwargs.get("width"), kwargs.get("height"), kwargs.get("max_size"), native
        )
        self._guard(pixels, kwargs.get("indexes"), kwargs.get("expression"))
        return super().read(*args, **kwargs)

    def tile(
        self,
        tile_x: int,
        tile_y: int,
        tile_z: int,
        tilesize: int | None = None,
        indexes: Any = None,
        expression: str | None = None,
        buffer: float | None = None,
        **kwargs: Any,
    ) -> ImageData:
        """``Reader.tile``, sized first; through the reader kernel when it can (``kernel``)."""
        kwargs.update(tilesize=tilesize, indexes=indexes, expression=expression, buffer=buffer)
        edge = int(tilesize or DEFAULT_TILESIZE) + 2 * int(buffer or 0)
        self._guard(edge * edge, indexes, expression)
        if self.kernel and self.tile_exists(tile_x, tile_y, tile_z):
            img = kernel_tile(self, tile_x, tile_y, tile_z, kwargs)
            if img is not None:
                TILE_READS.count("kernel")
                return img
        TILE_READS.count("gdal")
        return super().tile(tile_x, tile_y, tile_z, **kwargs)


def budget_reader(settings: ApiSettings) -> type[BudgetReader]:
    """A :class:`BudgetReader` with this app's per-read limits and tile path."""
    return type(
        "AppBudgetReader",
        (BudgetReader,),
        {
            "max_values": settings.tile_max_read_values,
            "max_pixels": settings.tile_max_output_pixels,
            "kernel": settings.tile_kernel,
            "headers": LruCache(settings.tile_header_cache_size),
            "plans": LruCache(settings.tile_plan_cache_size),
            "datasets": DatasetPool(settings.tile_dataset_cache_size),
        },
    )


# ------------------------------------------------------------------- heavy-request limiter
#: Path fragments of routes that read rasters or compute per request.
HEAVY_PREFIXES = ("/tiles/", "/embeddings/", "/change", "/classify")
#: Tile routes that only describe (no pixels read).
LIGHT_SUFFIXES = ("tilejson.json", "WMTSCapabilities.xml", "/info", "/info.geojson", "/assets")


def is_heavy(path: str) -> bool:
    """A request that reads rasters (admitted by the limiter)."""
    if not path.startswith(HEAVY_PREFIXES):
        return False
    return not path.endswith(LIGHT_SUFFIXES)


_TILE_PATH = re.compile(r"/tiles/[^/]+/\d+/\d+/\d+(\.\w+)?$")


def refuse_before_queueing(scope: Scope, settings: ApiSettings) -> None:
    """The budgets a request's query string alone breaks (``width`` x ``height``,
    ``tilesize``, ``rescale``, zooms, expression length): raised before the request waits for
    a slot, so an oversized request is refused at once even when every slot is busy. The
    route dependency still checks the whole cost afterwards."""
    from starlette.datastructures import QueryParams

    raw = scope.get("query_string", b"")
    if not raw:
        return
    query = QueryParams(raw.decode("latin-1"))
    check_rendering(query, settings)
    check_zoom_params(query)
    for expression in query.getlist("expression"):
        check(len(expression), settings.max_expression_chars, "max_expression_chars",
              "expression length")  # fmt: skip
    width = _positive_int("width", query.get("width"))
    height = _positive_int("height", query.get("height"))
    if width and height:
        check(width * height, settings.tile_max_output_pixels, "max_output_pixels",
              "output pixels")  # fmt: skip
    edge = _positive_int("tilesize", query.get("tilesize"))
    if edge and _TILE_PATH.search(scope["path"]):
        check(edge * edge, settings.tile_max_output_pixels, "max_output_pixels",
              "tile pixels (tilesize squared)")  # fmt: skip


def is_cacheable(scope: Scope) -> bool:
    """A GET of a map tile (``.../tiles/{tms}/{z}/{x}/{y}[.{format}]``): same URL, same bytes."""
    return scope["method"] == "GET" and _TILE_PATH.search(scope["path"]) is not None


class TileCache:
    """Finished tiles by URL, bounded in bytes and age (per worker, thread-safe)."""

    def __init__(self, max_bytes: int, max_age: float, max_entry: int = 1 << 20) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_entry = max_entry
        self._entries: OrderedDict[bytes, tuple[float, list[tuple[bytes, bytes]], bytes]] = (
            OrderedDict()
        )
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            if time.monotonic() - hit[0] > self.max_age:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return hit[1], hit[2]

    def put(self, key: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if len(body) > self.max_entry or self.max_bytes <= 0:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (time.monotonic(), headers, body)
            self._size += len(body)
            while self._size > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        _, _, body = self._entries.pop(key)
        self._size -= len(body)


@functools.cache
def _libc(name: str, *argtypes: Any) -> Any:
    """The C library's function ``name`` with its argument types, or None (not glibc).
    Looked up once: ``find_library`` runs ``ldconfig`` in a subprocess."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    return function


def release_free_memory() -> bool:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``): the arrays of a
    finished burst of raster requests stay with the allocator's per-thread arenas otherwise,
    and a worker's resident memory creeps up from one burst to the next. False where the C
    library has no ``malloc_trim`` (not glibc)."""
    import ctypes

    trim = _libc("malloc_trim", ctypes.c_size_t)
    if trim is None:
        return False
    trim(0)
    return True


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: arrays up to this size come from the heap, not from a fresh ``mmap`` each (glibc's cap)
HEAP_MMAP_THRESHOLD = 32 * 2**20
#: freed memory at the top of a heap kept for the next request (the idle trim returns it)
HEAP_TRIM_THRESHOLD = 256 * 2**20


def keep_freed_heap() -> bool:
    """Let the allocator keep a raster request's freed arrays for the next request instead of
    handing them back at once (glibc's ``mallopt``). By default glibc ``mmap``s many of a
    tile's 8-32 MB arrays afresh and trims the thread arenas' heaps as they are freed, so every
    request faults its pages in again: ~5,000 page faults and ~8 ms of a ~55 ms map tile
    (bench/results/kernel_tiles.md). The freed memory stays with the worker while requests
    keep coming and is handed back once it is idle (:func:`release_free_memory`). Once per
    process; False where the C library has no ``mallopt`` (not glibc)."""
    import ctypes

    mallopt = _libc("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)
    ok &= mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD)
    return bool(ok)


class HeavyRequestLimiter:
    """Admit raster-reading requests ``heavy_concurrency`` at a time (per worker process);
    a request that waits longer than ``heavy_queue_seconds`` gets 503 + ``Retry-After``.
    Cheap requests pass straight through; cached tiles are answered without admission."""

    #: seconds without a raster request after which freed heap memory is handed back to the
    #: system (:func:`release_free_memory`); a burst's arrays are freed to the allocator's
    #: per-thread arenas, which otherwise keep them and grow from one burst to the next
    idle_trim_seconds = 1.0

    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings
        self._slots: asyncio.Semaphore | None = None
        self.cache = TileCache(settings.tile_cache_mb * 1024 * 1024, settings.tile_cache_seconds)
        self._running = 0
        self._idle_since = 0.0
        #: how many times the heap was trimmed (tests check it)
        self.trims = 0
        #: the allocator keeps freed arrays between requests (:func:`keep_freed_heap`)
        self.keeps_heap = keep_freed_heap()

    def _trim(self) -> None:
        """Hand freed memory back (in a thread: it walks the heap) once the worker has been
        idle ``idle_trim_seconds``; a request arriving meanwhile puts it off."""
        idle = time.monotonic() - self._idle_since
        if self._running == 0 and idle >= self.idle_trim_seconds - 0.01:
            self.trims += 1
            asyncio.get_running_loop().run_in_executor(None, release_free_memory)

    def _release(self, slots: asyncio.Semaphore) -> None:
        slots.release()
        self._running -= 1
        if self._running == 0 and self.idle_trim_seconds >= 0:
            self._idle_since = time.monotonic()
            asyncio.get_running_loop().call_later(self.idle_trim_seconds, self._trim)

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.heavy_concurrency)
        return self._slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_heavy(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = b""
        if is_cacheable(scope):
            key = scope["path"].encode() + b"?" + scope.get("query_string", b"")
            hit = self.cache.get(key)
            if hit is not None:
                headers, body = hit
                # a copy: outer middlewares (compression) rewrite the headers they are sent
                start = {"type": "http.response.start", "status": 200, "headers": list(headers)}
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
        try:
            refuse_before_queueing(scope, self.settings)
        except BoundError as refused:
            await send_error(send, refused.status, refused.code, refused.description)
            return
        slots = self._semaphore()
        try:
            await asyncio.wait_for(slots.acquire(), timeout=self.settings.heavy_queue_seconds)
        except TimeoutError:
            retry = 5
            await send_error(
                send,
                503,
                "ServiceBusy",
                f"{self.settings.heavy_concurrency} raster requests are running in this worker "
                f"and this one waited {self.settings.heavy_queue_seconds:g} s "
                f"({_ENV['heavy']}); retry later",
                {"Retry-After": str(retry)},
            )
            return
        self._running += 1
        inner = _recording(send, self.cache, key) if key else send
        if await self._run_within_deadline(scope, receive, inner, slots):
            await send_error(
                send,
                503,
                "ServiceBusy",
                f"this request ran longer than {self.settings.heavy_request_seconds:g} s "
                f"({_ENV['heavy_seconds']}): the server is busy; retry later",
                {"Retry-After": "10"},
            )

    async def _run_within_deadline(
        self, scope: Scope, receive: Receive, send: Send, slots: asyncio.Semaphore
    ) -> bool:
        """Run the request holding a slot. True when it has not started its response after
        ``heavy_request_seconds``: it is then abandoned (whatever it sends later is dropped)
        and keeps its slot until its work ends, so the memory bound still holds; the caller
        answers 503. The slot is always released exactly once."""
        state = {"started": False, "abandoned": False}

        async def guarded(message: Message) -> None:
            if state["abandoned"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        def release_when_done(task: asyncio.Future[Any]) -> None:
            self._release(slots)
            if not task.cancelled():
                task.exception()  # retrieved: an abandoned request's error is not news

        task = asyncio.ensure_future(self.app(scope, receive, guarded))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.settings.heavy_request_seconds)
        except BaseException:  # this request was cancelled (the client went away)
            task.add_done_callback(release_when_done)
            task.cancel()
            raise
        if not done and not state["started"]:
            state["abandoned"] = True
            task.add_done_callback(release_when_done)
            return True
        try:
            await task  # finished, or streaming its response: let it end
        finally:
            self._release(slots)
        return False


def _recording(send: Send, cache: TileCache, key: bytes) -> Send:
    """``send`` that keeps a 200 response's bytes for the tile cache."""
    state: dict[str, Any] = {"status": 0, "headers": [], "chunks": []}

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            state["status"] = message["status"]
            state["headers"] = list(message.get("headers", []))
        elif message["type"] == "http.response.body" and state["status"] == 200:
            state["chunks"].append(message.get("body", b""))
            if not message.get("more_body", False):
                cache.put(key, state["headers"], b"".join(state["chunks"]))
        await send(message)

    return wrapped

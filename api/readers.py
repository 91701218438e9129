"""The routes' side of reading embeddings: HTTP statuses, and our own ``/data`` URLs.

Pixel selection and dequantisation are the catalog's reader kernel
(:mod:`tessera_stac.catalog.reader`); this module only adds what a server needs: dataset handles
kept open across requests (the kernel's ``DatasetCache``), URLs of this API's own ``/data`` route
read from the local folder (no HTTP round trip to ourselves), and kernel results turned into
answers or :class:`ReadError` with the HTTP status to give. Synchronous (rasterio); the routes
call it with :func:`in_read_pool`.

The first request for a tile pays for reading its COGs' headers and making the projection
transformer; the first request a process serves also pays for imports and pydantic's serialisers
(bench/results/positions_cold_profile.txt). Local COGs the kernel reads itself are not opened
with GDAL at all: ``DatasetCache`` hands out the kernel's
:class:`~tessera_stac.catalog.reader.tiff.LocalRaster` (the first IFD read with ``pread``, GDAL's
georeferencing from the GeoTIFF tags); recipes are built from the item dicts without pystac's
deep copies. Hence:

* reads run in a small *persistent* pool of threads (:data:`READ_THREADS`), so what the kernel
  keeps per thread (pyproj transformers, decode buffers) is made once per thread for the life of
  the process, not once per thread of the server's large, churning pool;
* :func:`warm_up` (called when the app starts) imports what the read path imports lazily and
  initialises PROJ in every read thread;
* open dataset handles and parsed TIFF headers are kept across requests (``DatasetCache`` and the
  kernel's LRU of :class:`~tessera_stac.catalog.reader.tiff.TiffBlocks`), both bounded;
* the database connections opened at start-up run one empty pgSTAC search
  (:data:`tessera_stac.api.db.WARM_UP_SEARCH`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import numpy as np

from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.reader import (
    DatasetCache,
    ItemRecipe,
    ZonalSums,
    crs_code,
    gdal_path,
    iter_polygon_pixels,
    polygon_sums,
    polygon_window,
    read_points,
)

#: threads reading embeddings for the routes (one item each at a time; each item's blocks are
#: decoded by the kernel's own decode threads)
READ_THREADS = 4
_T = TypeVar("_T")
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def read_pool() -> ThreadPoolExecutor:
    """The process's persistent pool of read threads (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="tessera-read")
        return _pool


async def in_read_pool(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in a read thread, awaited."""
    return await asyncio.get_running_loop().run_in_executor(read_pool(), fn, *args)


def _warm_thread(barrier: threading.Barrier) -> None:
    from tessera_stac.catalog.reader.blocks import transformer

    barrier.wait(timeout=30)  # every read thread takes one (the pool would reuse a free one)
    transformer("EPSG:4326", "EPSG:32643")  # PROJ's context and database, in this thread


def warm_up() -> None:
    """Import what the read path imports on first use and initialise PROJ in every read thread
    (~0.5 s once per process instead of on the first request)."""
    import json
    from importlib.resources import files

    import tifffile  # noqa: F401

    from tessera_stac.catalog.reader import tiff

    tiff.warm_up()  # the decode threads, their buffers, imagecodecs' codecs

    # a recipe parsed once: pystac imports much of itself on the first Item.from_dict
    example = files("tessera_stac.schemas").joinpath("examples", "item.json").read_text()
    with contextlib.suppress(InputError):
        ItemRecipe.of(json.loads(example))

    barrier = threading.Barrier(READ_THREADS)
    jobs = [read_pool().submit(_warm_thread, barrier) for _ in range(READ_THREADS)]
    for job in jobs:
        with contextlib.suppress(threading.BrokenBarrierError):  # a thread was slow to start
            job.result(timeout=60)


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


def local_paths(data_dir: Path | None, data_prefix: str = "/data/") -> Callable[[str], str]:
    """href -> GDAL path, reading URLs of our own ``/data`` route from ``data_dir``."""

    def path_for(href: str) -> str:
        parts = urlsplit(href)
        own = parts.scheme in ("http", "https") and parts.path.startswith(data_prefix)
        if data_dir is not None and own:
            local = data_dir / unquote(parts.path[len(data_prefix) :])
            if local.is_file():
                return str(local)
        return gdal_path(href)

    return path_for


def dataset_cache(size: int, data_dir: Path | None, data_prefix: str = "/data/") -> DatasetCache:
    """The server's cache of open COG handles."""
    return DatasetCache(size, local_paths(data_dir, data_prefix))


def recipe(item: dict[str, Any]) -> ItemRecipe:
    """The item's recipe; ReadError 502 when it does not describe its embeddings."""
    try:
        return ItemRecipe.of(item)
    except InputError as exc:
        raise ReadError(502, "NotAnEmbeddingItem", f"item {item.get('id')!r}: {exc}") from exc


@contextmanager
def opened(cache: DatasetCache, rec: ItemRecipe) -> Iterator[tuple[Any, Any]]:
    """(codes, scales or None) datasets of one item, locked (codes before scales, always)."""
    with ExitStack() as stack:
        try:
            codes = stack.enter_context(cache.dataset(rec.codes_href))
            scales = None
            if rec.scale_href is not None:
                scales = stack.enter_context(cache.dataset(rec.scale_href))
            yield codes, scales  # a block that cannot be read or decoded is the same 502
        except InputError as exc:
            raise ReadError(502, "AssetUnreadable", str(exc)) from exc


def _invalid(item_id: str, row: int, col: int, scale: float | None, nodata: bool) -> ReadError:
    reason = "nodata code" if scale is None or np.isfinite(scale) else "scale is NaN"
    if scale is not None and np.isfinite(scale) and not nodata:
        reason = f"scale {scale} outside the valid range"
    return ReadError(
        422,
        "InvalidPixel",
        f"pixel row {row}, col {col} of {item_id} holds no valid embedding (water, "
        f"unprocessed or invalid: {reason})",
    )


def read_many(
    cache: DatasetCache, item: dict[str, Any], lons: list[float], lats: list[float]
) -> list[PointValue | ReadError]:
    """The values of ``item`` at many points (each touched block read once), in order.

    Per point: a :class:`PointValue`, or a ReadError (404 outside the raster, 422 on an invalid
    pixel: nodata, water, bad scale).
    """
    rec = recipe(item)
    with opened(cache, rec) as (codes, scales):
        batch = read_points(codes, scales, rec.quantization, lons, lats, rec.scale_band)
    out: list[PointValue | ReadError] = []
    for i in range(len(lons)):
        row, col = int(batch.rows[i]), int(batch.cols[i])
        scale = float(batch.scales[i]) if rec.scale_key is not None else None
        if not batch.inside[i]:
            out.append(ReadError(404, "OutsideCoverage", "the point is outside the item's raster"))
        elif not batch.valid[i]:
            out.append(_invalid(str(item["id"]), row, col, scale, bool(batch.nodata[i])))
        else:
            pixel = Pixel(row, col, batch.crs, float(batch.x[i]), float(batch.y[i]))
            vector = np.asarray(batch.vectors[i], dtype=np.float32)
            out.append(
                PointValue(pixel, scale, vector, rec.codes_key, rec.scale_key, rec.codes_href)
            )
    return out


def read_point(cache: DatasetCache, item: dict[str, Any], lon: float, lat: float) -> PointValue:
    """The dequantised vector of ``item`` at (lon, lat).

    Raises:
        ReadError: 404 outside the raster, 422 on an invalid (nodata/water) pixel.
    """
    found = read_many(cache, item, [lon], [lat])[0]
    if isinstance(found, ReadError):
        raise found
    return found


def read_area(
    cache: DatasetCache, item: dict[str, Any], geometry: dict[str, Any], max_pixels: int
) -> tuple[ZonalSums, dict[str, Any]]:
    """Sums over the pixels of ``item`` whose centre is in ``geometry`` and in its own cell.

    Centres are tested in WGS84 against the polygon as given (the CoRE Stack/GEE rule), and a
    pixel counts only for the tile whose 0.1° cell holds its centre (no double counting where
    neighbouring UTM rasters overlap). Streamed block row by block row (bounded memory).

    Raises:
        ReadError: 422 when the geometry's window in this item exceeds ``max_pixels``.
    """
    rec = recipe(item)
    bbox = item.get("bbox") or [0, 0, 0, 0]
    cell = GridCell.containing((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    empty = {"row_off": 0, "col_off": 0, "height": 0, "width": 0}
    with opened(cache, rec) as (codes, scales):
        window = polygon_window(codes, geometry)
        if window is None:
            return ZonalSums(), empty
        r0, r1, c0, c1 = window
        if (r1 - r0) * (c1 - c0) > max_pixels:
            raise ReadError(
                422, "AreaTooLarge", f"the geometry covers more than {max_pixels} pixels"
            )
        pixels = iter_polygon_pixels(
            codes, scales, rec.quantization, geometry, cell, window, rec.scale_band
        )
        sums = polygon_sums(pixels, rec.quantization)
        info = {
            "row_off": r0,
            "col_off": c0,
            "height": r1 - r0,
            "width": c1 - c0,
            "crs": crs_code(codes.crs),
            "asset": rec.codes_key,
            "href": rec.codes_href,
        }
    return sums, info

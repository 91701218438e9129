"""Map tiles of local COGs read through the reader kernel (issue "map tiles at the reader
kernel's speed").

:func:`kernel_tile` is rio-tiler's ``Reader.tile`` for the requests it can reproduce: GDAL's
choice of overview and source pixel for every output pixel
(:func:`~tessera_stac.catalog.reader.warp.plan_warp`), only the touched blocks decoded, and an
ImageData with rio-tiler's bands, names, mask and bounds. Any other request, file or argument
returns None and the caller reads through GDAL. The per-file headers and per-tile plans are
kept in the reader's bounded caches (:mod:`tessera_stac.api.caches`).
:data:`TILE_READS` counts which path read each asset tile.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import morecantile
from rio_tiler.io import Reader
from rio_tiler.models import ImageData

from tessera_stac.api.caches import LruCache, file_version
from tessera_stac.catalog.reader.tiff import blocks_of
from tessera_stac.catalog.reader.warp import plan_warp, read_planned


class ReadCounter:
    """How many asset tiles each path read (per process; tests and benches check it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {"kernel": 0, "gdal": 0}

    def count(self, path: str) -> None:
        with self._lock:
            self.counts[path] = self.counts.get(path, 0) + 1

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts."""
        with self._lock:
            return dict(self.counts)


TILE_READS = ReadCounter()

#: ``tile()`` keyword arguments the kernel reproduces, with the values it accepts (a
#: predicate); any other argument or value is read through GDAL
_KERNEL_KWARGS: dict[str, Any] = {
    "tilesize": lambda v: v is None or (isinstance(v, int) and v > 0),
    "indexes": lambda v: True,
    "expression": lambda v: True,
    "buffer": lambda v: not v,
    "padding": lambda v: not v,
    "nodata": lambda v: v is None,
    "unscale": lambda v: not v,
    "resampling_method": lambda v: v in (None, "nearest"),
    "reproject_method": lambda v: v in (None, "nearest"),
    "post_process": lambda v: v is None,
    "vrt_options": lambda v: not v,
    "out_dtype": lambda v: v is None,
}


def _plain_nodata_dataset(ds: Any) -> bool:
    """Nodata marks invalid pixels, nothing else does (no alpha, no mask band, no GCPs)."""
    from rasterio.enums import ColorInterp, MaskFlags

    if ds.nodata is None or ds.gcps[0] or ColorInterp.alpha in ds.colorinterp:
        return False
    return all(flags == [MaskFlags.nodata] for flags in ds.mask_flag_enums)


@dataclass(frozen=True)
class KernelHeader:
    """What :func:`kernel_tile` takes from a file's GDAL metadata besides its grid: whether
    nodata alone marks invalid pixels, each band's description, scale, offset and
    ``STATISTICS_MINIMUM``/``MAXIMUM`` (None when a band has none)."""

    plain_nodata: bool
    descriptions: tuple[str | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    statistics: tuple[tuple[float, float] | None, ...]

    @classmethod
    def of(cls, ds: Any) -> KernelHeader:
        """Read from an open dataset (one ``tags`` call per band: done once per file)."""
        stats: list[tuple[float, float] | None] = []
        for ix in range(1, ds.count + 1):
            tags = ds.tags(ix)
            if "STATISTICS_MINIMUM" in tags and "STATISTICS_MAXIMUM" in tags:
                stats.append((float(tags["STATISTICS_MINIMUM"]), float(tags["STATISTICS_MAXIMUM"])))
            else:
                stats.append(None)
        return cls(
            _plain_nodata_dataset(ds),
            tuple(ds.descriptions),
            tuple(ds.scales),
            tuple(ds.offsets),
            tuple(stats),
        )


def kernel_header(cache: LruCache, ds: Any) -> KernelHeader:
    """The :class:`KernelHeader` of ``ds``, kept in ``cache`` under the file's
    :func:`file_version`: a file rewritten or replaced (a republish) is read anew."""
    key = file_version(str(ds.name))
    if key is None:
        return KernelHeader.of(ds)
    header: KernelHeader | None = cache.get(key)
    if header is None:
        header = KernelHeader.of(ds)
        cache.put(key, header)
    return header


def _typed(value: float, dtype: Any) -> Any:
    """``value`` as a scalar of an integer ``dtype`` when it is one of its values (comparing
    int8 codes with a Python float converts all of them to float64 first: ~8x slower), else
    ``value`` itself (no integer equals it, as before)."""
    import numpy as np

    if dtype.kind in "iu" and value.is_integer():
        info = np.iinfo(dtype)
        if info.min <= value <= info.max:
            return dtype.type(int(value))
    return value


def _cache(reader: Reader, name: str) -> LruCache:
    """The reader's bounded cache ``name`` (a ``BudgetReader``'s), or one that keeps nothing."""
    cache = getattr(reader, name, None)
    return cache if isinstance(cache, LruCache) else LruCache(0)


def kernel_tile(
    reader: Reader, tile_x: int, tile_y: int, tile_z: int, kwargs: dict[str, Any]
) -> ImageData | None:
    """rio-tiler's ``Reader.tile`` of a local COG, read through the reader kernel: GDAL's
    pixel choice reproduced by :func:`~tessera_stac.catalog.reader.warp.plan_warp` (same
    overview, same source pixel per output pixel), the touched blocks of that image decoded
    directly, and an ImageData with rio-tiler's bands, names, mask and bounds. None when the
    request or the file is one it does not reproduce (the caller reads through GDAL)."""
    import numpy as np
    from rasterio.coords import BoundingBox
    from rasterio.transform import array_bounds
    from rio_tiler.expression import parse_expression
    from rio_tiler.utils import get_vrt_transform

    ds = reader.dataset
    if reader.options or any(
        k not in _KERNEL_KWARGS or not _KERNEL_KWARGS[k](v) for k, v in kwargs.items()
    ):
        return None
    dst_crs = reader.tms.rasterio_crs
    if ds is None:
        return None
    src_crs = ds.crs
    if src_crs is None or src_crs == dst_crs:
        return None
    blocks = blocks_of(ds)
    if blocks is None:
        return None
    headers = _cache(reader, "headers")
    header = kernel_header(headers, ds)
    if not header.plain_nodata:
        return None
    expression = kwargs.get("expression")
    indexes = kwargs.get("indexes")
    if expression:
        indexes = parse_expression(expression)
    if isinstance(indexes, int):
        indexes = (indexes,)
    indexes = tuple(indexes) if indexes else tuple(range(1, ds.count + 1))
    if not all(1 <= i <= ds.count for i in indexes):
        return None  # GDAL's error, from GDAL
    every = tuple(range(1, ds.count + 1))
    if len(indexes) == ds.count and indexes != every:
        return None  # all bands in another order: GDAL's choice of path unproven
    matrix = reader.tms.matrix(tile_z)
    size = kwargs.get("tilesize")
    width, height = size or matrix.tileWidth, size or matrix.tileHeight
    left, bottom, right, top = reader.tms.xy_bounds(morecantile.Tile(x=tile_x, y=tile_y, z=tile_z))
    bounds = (left, bottom, right, top)
    src_transform = tuple(ds.transform)[:6]
    # the plan is a function of these alone (the file's grid and images, the tile's grid):
    # the codes and the scales of an item share it, and a rewritten file has other levels
    # or another grid (and another TiffBlocks), so a kept plan is never stale
    key = (src_crs, src_transform, ds.width, ds.height, blocks.levels, dst_crs, bounds,
           width, height, indexes == every)  # fmt: skip
    plans = _cache(reader, "plans")
    planned = plans.get(key)
    if planned is None:
        vrt_transform, vrt_width, vrt_height = get_vrt_transform(
            ds, bounds, height, width, dst_crs=dst_crs
        )
        plan = plan_warp(
            src_crs,
            src_transform,
            blocks.levels,
            dst_crs,
            tuple(vrt_transform)[:6],
            (vrt_width, vrt_height),
            (width, height),
            all_bands=indexes == every,
        )
        planned = (vrt_transform, vrt_width, vrt_height, plan)
        plans.put(key, planned)
    vrt_transform, vrt_width, vrt_height, plan = planned
    if plan is None:
        return None
    source = blocks if plan.level == 0 else blocks_of(ds, plan.level)
    if source is None:
        return None
    nodata = float(ds.nodata)
    bands = None if indexes == every else np.asarray(indexes) - 1
    data = read_planned(source, plan, nodata, bands, band_first=True)
    mask = np.isnan(data) if math.isnan(nodata) else data == _typed(nodata, data.dtype)
    descriptions, scales, offsets = header.descriptions, header.scales, header.offsets
    stats = [s for s in (header.statistics[ix - 1] for ix in indexes) if s is not None]
    img = ImageData(
        np.ma.MaskedArray(data, mask=mask),
        bounds=BoundingBox(*array_bounds(vrt_height, vrt_width, vrt_transform)),
        crs=dst_crs,
        band_names=[f"b{ix}" for ix in indexes],
        band_descriptions=[descriptions[ix - 1] or f"b{ix}" for ix in indexes],
        dataset_statistics=stats if len(stats) == len(indexes) else None,
        metadata={},
        nodata=ds.nodata,
        scales=[scales[ix - 1] for ix in indexes],
        offsets=[offsets[ix - 1] for ix in indexes],
    )
    img.assets = [reader.input]
    return img.apply_expression(expression) if expression else img

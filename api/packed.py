"""Embedding tiles kept as their two parts: the int8 codes and the float32 scale, unstacked
(issue "map tiles at the reader kernel's speed").

A map tile of ``assets=embeddings&assets=scales`` has 129 bands. rio-tiler stacks the assets of
an item into one masked array (``ImageData.create_from_list``: the int8 codes become float32),
the year's mosaic picks pixels on those stacks item after item (``FirstMethod``: a masked
``where`` over 129 float bands), and our algorithms then take the stack apart again to
dequantise. A profile of those tiles had that bookkeeping cost several times the kernel's read.

:class:`PackedImage` is the same 129-band ImageData kept as its two parts (the asset images as
read, masks and all): the algorithms (:func:`tessera_stac.api.tiles.dequantised`) dequantise
straight from the int8 codes, and :func:`mosaic_tile` picks the mosaic's pixels part by part
(int8 and float32, the same rule). Anything else that reads ``.array`` (a raw ``.npy`` of the
129 bands, an expression, statistics) gets the stack built on first use, exactly as rio-tiler
builds it, so every other input behaves as before.

The readers (:func:`tile_parts` for map tiles, :func:`part_parts` for an item's ``/bbox`` and
``/feature`` areas, whose float stack was the largest allocation of a wide read) pack only a
read of exactly two assets without expression or ``asset_as_band`` whose images are a
128-band int8 image and a 1-band float32 image of one size; every other read is rio-tiler's
own. The mosaic packs only under rio-tiler's default
pixel selection (``FirstMethod``); any other method, or any item that did not pack, goes
through rio-tiler's ``mosaic_reader`` rule on the built stacks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rio_tiler import tasks
from rio_tiler.constants import MAX_THREADS
from rio_tiler.errors import EmptyMosaicError, TileOutsideBounds
from rio_tiler.models import ImageData
from rio_tiler.mosaic.methods.base import MosaicMethodBase
from rio_tiler.mosaic.methods.defaults import FirstMethod
from rio_tiler.mosaic.reader import mosaic_reader
from rio_tiler.utils import _chunks, inherit_rasterio_env, resize_array

from tessera_stac.catalog.constants import EMBEDDING_DIM

#: a 1-pixel stand-in handed to ImageData's constructor (the parts are the data)
_STAND_IN = np.ma.MaskedArray(
    np.zeros((1, 1, 1), dtype=np.float32), mask=np.zeros((1, 1, 1), dtype=bool)
)


class PackedImage(ImageData):
    """A 129-band ImageData held as the codes image's masked array (128 bands, int8) and the
    scale's (1 band, float32); ``.array`` is the stack ``ImageData.create_from_list`` (or the
    mosaic) would have made, built on first use. Assigning ``.array`` makes it a plain image."""

    def __init__(
        self,
        codes_part: np.ma.MaskedArray,
        scale_part: np.ma.MaskedArray,
        picked: bool = False,
        **fields: Any,
    ) -> None:
        super().__init__(_STAND_IN, **fields)
        self._parts: tuple[np.ma.MaskedArray, np.ma.MaskedArray] | None = (codes_part, scale_part)
        self._stack: np.ma.MaskedArray | None = None
        #: the parts are a mosaic's picks (stacked as the mosaic leaves them)
        self._picked = picked

    @property
    def array(self) -> np.ma.MaskedArray:
        """The 129-band stack (built from the parts on first use)."""
        if self._stack is None and getattr(self, "_parts", None) is not None:
            assert self._parts is not None
            self._stack = stack(*self._parts, picked=self._picked)
        assert self._stack is not None
        return self._stack

    @array.setter
    def array(self, value: np.ma.MaskedArray) -> None:
        self._stack = value
        self._parts = None

    @property
    def parts(self) -> tuple[np.ma.MaskedArray, np.ma.MaskedArray] | None:
        """(codes (128, h, w) int8, scales (1, h, w) float32) masked arrays, or None once
        ``.array`` was replaced."""
        return self._parts

    @property
    def count(self) -> int:
        """Bands (129)."""
        if self._parts is None:
            return int(self.array.shape[0])
        return int(self._parts[0].shape[0] + self._parts[1].shape[0])

    @property
    def height(self) -> int:
        """Rows."""
        shape = self._parts[0].shape if self._parts is not None else self.array.shape
        return int(shape[1])

    @property
    def width(self) -> int:
        """Columns."""
        shape = self._parts[0].shape if self._parts is not None else self.array.shape
        return int(shape[2])


def stack(
    codes: np.ma.MaskedArray, scales: np.ma.MaskedArray, picked: bool = False
) -> np.ma.MaskedArray:
    """The parts as rio-tiler stacks them: ``ImageData.create_from_list``, or (``picked``)
    as ``FirstMethod`` leaves a mosaic of several items (``np.ma.where``'s new array)."""
    from rio_tiler.models import masked_and_3d

    if picked:
        data = np.concatenate([np.ma.getdata(codes), np.ma.getdata(scales)])
        mask = np.concatenate([np.ma.getmaskarray(codes), np.ma.getmaskarray(scales)])
        return masked_and_3d(np.ma.MaskedArray(data, mask=mask))
    return masked_and_3d(np.ma.concatenate([codes, scales]))


def packable(parts: Sequence[ImageData]) -> bool:
    """Two images, 128 int8 bands then 1 float32 band, of one size, nothing else attached."""
    if len(parts) != 2 or any(type(p) is not ImageData for p in parts):
        return False
    codes, scales = parts
    return (
        codes.array.dtype == np.int8
        and codes.array.shape[0] == EMBEDDING_DIM
        and scales.array.dtype == np.float32
        and scales.array.shape[0] == 1
        and codes.array.shape[1:] == scales.array.shape[1:]
        and all(p.cutline_mask is None and p.alpha_mask is None for p in parts)
    )


def pack(parts: Sequence[ImageData]) -> ImageData:
    """``ImageData.create_from_list(parts)``, as a :class:`PackedImage` when the parts are
    codes + scale (:func:`packable`)."""
    if not packable(parts):
        return ImageData.create_from_list(parts)
    import itertools

    band_names = [n for p in parts for n in (p.band_names or [])]
    stats = list(
        itertools.chain.from_iterable(p.dataset_statistics for p in parts if p.dataset_statistics)
    )
    metadata = dict(itertools.chain.from_iterable(p.metadata.items() for p in parts if p.metadata))
    return PackedImage(
        parts[0].array,
        parts[1].array,
        assets=list(dict.fromkeys(itertools.chain.from_iterable(p.assets or [] for p in parts))),
        crs=next((p.crs for p in parts if p.crs), None),
        bounds=next((p.bounds for p in parts if p.bounds), None),
        band_names=band_names,
        band_descriptions=[n for p in parts for n in (p.band_descriptions or [])],
        dataset_statistics=stats if len(stats) == len(band_names) else None,
        scales=[s for p in parts for s in p.scales],
        offsets=[o for p in parts for o in p.offsets],
        metadata=metadata,
    )


def packed_parts(img: ImageData) -> tuple[np.ma.MaskedArray, np.ma.MaskedArray] | None:
    """(codes, scales) masked arrays of a :class:`PackedImage` still packed, else None."""
    return img.parts if isinstance(img, PackedImage) else None


def mask_pixels(img: ImageData, outside: np.ndarray) -> None:
    """Mask the pixels ``outside`` (h, w) in every band (the parts when packed)."""
    parts = packed_parts(img)
    if parts is None:
        img.array.mask = np.ma.getmaskarray(img.array) | outside[None]
        return
    for part in parts:
        mask = part.mask
        if isinstance(mask, np.ndarray) and mask.shape == part.shape:
            # in place: assigning a mask copies it through MaskedArray.__setmask__ (slow)
            np.logical_or(mask, outside, out=mask)
        else:
            part.mask = np.ma.getmaskarray(part) | outside


# --------------------------------------------------------------------------- readers
def kernel_reads(asset_reader: Any, urls: Sequence[str]) -> bool:
    """The reader kernel reads every one of ``urls``: local files (not ``/vsi...``, not URLs)
    read by an asset reader with the kernel on. Such reads are run one after another, not in
    rio-tiler's per-asset (or per-item) threads: the kernel decodes blocks in its own pool, and
    more Python threads around it only wait for each other (the GIL) and for a new pool per
    request (bench/results/kernel_tiles.md). Remote files keep rio-tiler's threads."""
    if not getattr(asset_reader, "kernel", False):
        return False
    return all(url.startswith("/") and not url.startswith("/vsi") for url in urls)


def tile_parts(
    reader: Any,
    tile_x: int,
    tile_y: int,
    tile_z: int,
    assets: Any = None,
    expression: str | None = None,
    asset_as_band: bool = False,
    **kwargs: Any,
) -> ImageData | None:
    """rio-tiler 9's ``MultiBaseReader.tile`` of ``reader`` (a STAC reader) with the assets'
    images packed (:func:`pack`) instead of stacked; None when the request is not two assets
    without expression or ``asset_as_band`` (the caller then reads through rio-tiler)."""
    if not _two_plain_assets(assets, expression, asset_as_band, kwargs):
        return None
    if not reader.tile_exists(tile_x, tile_y, tile_z):
        raise TileOutsideBounds(f"Tile(x={tile_x}, y={tile_y}, z={tile_z}) is outside bounds")
    return _read_parts(reader, "tile", (tile_x, tile_y, tile_z), assets, kwargs)


def part_parts(
    reader: Any,
    bbox: Any,
    assets: Any = None,
    expression: str | None = None,
    asset_as_band: bool = False,
    **kwargs: Any,
) -> ImageData | None:
    """rio-tiler 9's ``MultiBaseReader.part`` (a bbox or feature read) of ``reader``, packed as
    :func:`tile_parts`: the 129-band float32 stack of a large area (the biggest allocation of
    a ``/bbox`` request: 4 bytes a value, plus its mask) is never made unless asked for."""
    if not _two_plain_assets(assets, expression, asset_as_band, kwargs):
        return None
    return _read_parts(reader, "part", (bbox,), assets, kwargs)


def _two_plain_assets(
    assets: Any, expression: str | None, asset_as_band: bool, kwargs: dict[str, Any]
) -> bool:
    from rio_tiler.utils import cast_to_sequence

    if expression or asset_as_band or kwargs.get("asset_indexes"):
        return False
    return len(cast_to_sequence(assets) or []) == 2


def _read_parts(
    reader: Any, method: str, args: tuple[Any, ...], assets: Any, kwargs: dict[str, Any]
) -> ImageData:
    """Each asset's ``method(*args)`` (rio-tiler's per-asset reader, statistics, metadata and
    band descriptions, as ``MultiBaseReader`` does), then :func:`pack`."""
    from rio_tiler.utils import cast_to_sequence

    assets = cast_to_sequence(assets)
    infos = {asset: reader._get_asset_info(asset) for asset in assets}

    @inherit_rasterio_env
    def _reader(asset: Any, *args: Any, **options: Any) -> ImageData:
        asset_info = infos[asset]
        asset_name = asset_info["name"]
        asset_reader = reader._get_reader(asset_info)
        reader_options = {**reader.reader_options, **asset_info["reader_options"]}
        method_options = {**asset_info["method_options"], **options}
        with (
            reader.ctx(**asset_info.get("env", {})),
            asset_reader(asset_info["url"], tms=reader.tms, **reader_options) as src,
        ):
            data = getattr(src, method)(*args, **method_options)
            reader._update_statistics(
                data,
                indexes=method_options.get("indexes"),
                statistics=asset_info.get("dataset_statistics"),
            )
            metadata = data.metadata or {}
            if m := asset_info.get("metadata"):
                metadata.update(m)
            data.metadata = {asset_name: metadata}
            data.band_descriptions = [f"{asset_name}_{n}" for n in data.band_descriptions]
            return data

    threads = kwargs.pop("threads", MAX_THREADS)
    if kernel_reads(reader.reader, [info["url"] for info in infos.values()]):
        threads = 1
    allowed = kwargs.pop("allowed_exceptions", None)
    task_list = tasks.create_tasks(_reader, assets, threads, *args, **kwargs)
    img = pack([data for data, _ in tasks.filter_tasks(task_list, allowed_exceptions=allowed)])
    img.band_names = [f"b{ix + 1}" for ix in range(img.count)]
    return img


# --------------------------------------------------------------------------- mosaic
class _PackedFirst:
    """``FirstMethod`` on packed items: each part picks, band by band, the first unmasked
    value (the same rule on the same values as on the float stacks)."""

    def __init__(self) -> None:
        self.parts: list[np.ma.MaskedArray] | None = None

    def feed(self, parts: tuple[np.ma.MaskedArray, np.ma.MaskedArray]) -> None:
        if self.parts is None:
            self.parts = list(parts)
            return
        out = []
        for current, new in zip(self.parts, parts, strict=True):
            cm, nm = np.ma.getmaskarray(current), np.ma.getmaskarray(new)
            take = cm & ~nm  # np.ma.where(take, new, current), its mask cm & nm
            data = np.ma.getdata(current).copy()
            np.copyto(data, np.ma.getdata(new), where=take)
            np.logical_and(cm, nm, out=take)
            out.append(np.ma.MaskedArray(data, mask=take))
        self.parts = out

    @property
    def is_done(self) -> bool:
        assert self.parts is not None
        return not any(np.ma.getmaskarray(p).any() for p in self.parts)

    def stack(self, picked: bool) -> np.ma.MaskedArray:
        """The mosaic's float stack (as ``FirstMethod`` leaves it)."""
        assert self.parts is not None
        return stack(self.parts[0], self.parts[1], picked)


def _first_method(pixel_selection: Any) -> bool:
    selection = pixel_selection
    if isinstance(selection, type):
        return selection is FirstMethod
    return type(selection) is FirstMethod and selection.mosaic is None


def mosaic_tile(
    mosaic_assets: Sequence[Any],
    reader: Callable[..., ImageData],
    *args: Any,
    pixel_selection: type[MosaicMethodBase] | MosaicMethodBase = FirstMethod,
    chunk_size: int | None = None,
    threads: int = MAX_THREADS,
    allowed_exceptions: tuple[type[Exception], ...] = (TileOutsideBounds,),
    **kwargs: Any,
) -> tuple[ImageData, list[Any]]:
    """rio-tiler's ``mosaic_reader`` (same arguments, same result) keeping packed items packed
    under ``FirstMethod``; any other pixel selection is rio-tiler's own."""
    if not _first_method(pixel_selection):
        return mosaic_reader(
            mosaic_assets,
            reader,
            *args,
            pixel_selection=pixel_selection,
            chunk_size=chunk_size,
            threads=threads,
            allowed_exceptions=allowed_exceptions,
            **kwargs,
        )
    if not chunk_size:
        chunk_size = threads if threads > 1 else len(mosaic_assets)
    packed: _PackedFirst | None = _PackedFirst()
    method = FirstMethod()
    assets_used: list[Any] = []
    first: ImageData | None = None

    def result() -> tuple[ImageData, list[Any]]:
        assert first is not None
        fields: dict[str, Any] = {
            "assets": assets_used,
            "crs": first.crs,
            "bounds": first.bounds,
            "band_names": first.band_names,
            "band_descriptions": first.band_descriptions,
            "metadata": {
                "mosaic_method": "FirstMethod",
                "mosaic_assets_count": len(mosaic_assets),
                "mosaic_assets_used": len(assets_used),
            },
        }
        if packed is not None and packed.parts is not None:
            count = first.count
            codes, scales = packed.parts
            # one item: FirstMethod keeps its stack; more: np.ma.where's fresh masked array
            img = PackedImage(
                codes,
                scales,
                picked=len(assets_used) > 1,
                scales=[1.0] * count,
                offsets=[0.0] * count,
                **fields,
            )
            return img, assets_used
        if method.data is None:
            raise EmptyMosaicError("Method returned an empty array")
        return ImageData(method.data, **fields), assets_used

    for chunk in _chunks(mosaic_assets, chunk_size):
        task_list = tasks.create_tasks(reader, chunk, threads, *args, **kwargs)
        for img, asset in tasks.filter_tasks(task_list, allowed_exceptions=allowed_exceptions):
            if first is None:
                first = img
                method.cutline_mask = img.cutline_mask
                method.width, method.height, method.count = img.width, img.height, img.count
            assert img.count == method.count, "Assets HAVE TO have the same number of bands"
            same_size = img.width == method.width and img.height == method.height
            parts = packed_parts(img)
            if packed is not None and (
                parts is None or not same_size or img.cutline_mask is not None
            ):
                if packed.parts is not None:  # hand over what was picked so far
                    method.mosaic = packed.stack(len(assets_used) > 1)
                packed = None
            if packed is not None and parts is not None:
                packed.feed(parts)
                done = packed.is_done
            else:
                if not same_size:
                    warnings.warn(
                        "Cannot concatenate images with different sizes. Will resize using "
                        "first asset's width/height.",
                        UserWarning,
                        stacklevel=2,
                    )
                    h, w = method.height, method.width
                    method.feed(
                        np.ma.MaskedArray(
                            resize_array(img.array.data, h, w),
                            mask=resize_array(img.array.mask * 1, h, w).astype("bool"),
                        )
                    )
                else:
                    method.feed(img.array)
                done = method.is_done and method.data is not None
            assets_used.append(asset)
            if done:
                return result()
    if first is None:
        raise EmptyMosaicError("Method returned an empty array")
    return result()

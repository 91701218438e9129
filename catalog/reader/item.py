"""Items: which assets to read and how to dequantise them, and the per-Item reader.

Nothing here knows TESSERA: the codes asset, the dequantisation recipe, nodata rules and the
scale asset all come from the Item's ``embedding:`` fields (see ``schemas/README.md``), so the
same reader handles TESSERA's per-pixel scales, AlphaEarth's signed square, linear codes and
plain floats.

Stable API (the STAC API's point and zonal routes call it):

* ``EmbeddingReader(item, asset_key=None, gdal_env=None)``
* ``reader.read(window=None) -> (values, valid)``: ``values`` float32 ``(rows, cols, dims)``
  with NaN where invalid, ``valid`` bool ``(rows, cols)``.
* ``reader.read_point(lon, lat) -> PointSample`` (lon/lat in EPSG:4326).
* ``reader.read_points([(lon, lat), ...]) -> list[PointSample]`` (files opened once).
* ``reader.profile() -> GridInfo`` (CRS, transform, shape of the codes asset).
* ``dequantize(codes, quantization, scales=None)``: the recipe on arrays already in memory.

Hrefs are resolved against the Item's self href: local paths as they are, ``http(s)://`` via
GDAL's ``/vsicurl/``, ``s3://`` via ``/vsis3/``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pystac

from tessera_stac.catalog.embedding import (
    DIMENSIONS_PROP,
    EMBEDDINGS_ROLE,
    QUANTIZATION_PROP,
    Quantization,
    QuantizationMethod,
)
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.hrefs import resolve_href  # the one resolver
from tessera_stac.catalog.reader.gdal import gdal_path, open_raster, rasterio_env

FloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]
WindowLike = Any  # rasterio Window or ((row_start, row_stop), (col_start, col_stop))


@dataclass(frozen=True)
class GridInfo:
    """Georeferencing of the codes asset, as its file says."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    dimensions: int


@dataclass(frozen=True)
class PointSample:
    """The embedding at one point.

    Attributes:
        vector: float32 ``(dims,)``, or None when the point is outside the raster or invalid.
        valid: True when the pixel holds a valid embedding.
        row: pixel row in the codes asset (may lie outside the raster).
        col: pixel column.
        inside: True when the point falls inside the raster.
        x: easting/x in the asset CRS.
        y: northing/y in the asset CRS.
        hrefs: the resolved hrefs read (``codes``, and ``scales`` when used).
    """

    vector: npt.NDArray[np.float32] | None
    valid: bool
    row: int
    col: int
    inside: bool
    x: float
    y: float
    hrefs: dict[str, str] = field(default_factory=dict)


def _as_item(item: pystac.Item | dict[str, Any], self_href: str | None) -> pystac.Item:
    obj = pystac.Item.from_dict(item) if isinstance(item, dict) else item
    if self_href:
        obj.set_self_href(self_href)
    return obj


def select_codes_asset(item: pystac.Item, asset_key: str | None = None) -> str:
    """Key of the asset holding embedding codes (role ``embeddings``, or the one with a recipe).

    Raises:
        InputError: when no asset, or more than one, qualifies.
    """
    if asset_key is not None:
        if asset_key not in item.assets:
            raise InputError(f"item {item.id}: no asset {asset_key!r}")
        return asset_key
    by_role = [k for k, a in item.assets.items() if EMBEDDINGS_ROLE in (a.roles or [])]
    with_recipe = [k for k, a in item.assets.items() if QUANTIZATION_PROP in a.extra_fields]
    for candidates in (by_role, with_recipe):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise InputError(
                f"item {item.id}: several embedding assets {sorted(candidates)}: pass asset_key"
            )
    raise InputError(
        f"item {item.id}: no asset with role {EMBEDDINGS_ROLE!r} or {QUANTIZATION_PROP}"
    )


def quantization_of(item: pystac.Item, asset_key: str) -> Quantization:
    """The recipe of an asset: its own ``embedding:quantization``, else the Item's."""
    raw = item.assets[asset_key].extra_fields.get(QUANTIZATION_PROP)
    if raw is None:
        raw = item.properties.get(QUANTIZATION_PROP)
    if raw is None:
        raise InputError(
            f"item {item.id}: asset {asset_key!r} has no {QUANTIZATION_PROP} "
            "(nor do the item's properties): cannot dequantise"
        )
    if not isinstance(raw, dict):
        raise InputError(f"item {item.id}: {QUANTIZATION_PROP} is not an object")
    return Quantization.from_dict(raw)


@dataclass(frozen=True)
class ItemRecipe:
    """What to read for one Item and how: codes asset, scale asset, recipe, resolved hrefs.

    Attributes:
        item_id: the Item id.
        collection: its collection id.
        codes_key: key of the codes asset.
        codes_href: its resolved href.
        quantization: the dequantisation recipe.
        scale_key: key of the scale asset (per-pixel recipes), else None.
        scale_href: its resolved href, else None.
        scale_band: band of the scale asset (1-based).
        bbox: the Item's bbox, when it has one.
    """

    item_id: str
    collection: str | None
    codes_key: str
    codes_href: str
    quantization: Quantization
    scale_key: str | None = None
    scale_href: str | None = None
    scale_band: int = 1
    bbox: tuple[float, ...] | None = None

    @classmethod
    def of(
        cls,
        item: pystac.Item | dict[str, Any],
        asset_key: str | None = None,
        self_href: str | None = None,
    ) -> ItemRecipe:
        """The recipe of an Item, from its metadata alone (memoised for dicts).

        Raises:
            InputError: the Item does not describe its embeddings well enough.
        """
        if not isinstance(item, dict):
            return cls._parse(_as_item(item, self_href), asset_key)
        key = (
            str(item.get("collection")),
            str(item.get("id")),
            asset_key,
            self_href,
            json.dumps(item.get("assets"), sort_keys=True, default=str),
        )
        found = _RECIPES.get(key)
        if found is None:
            view = _ItemView.of(item, self_href)
            if view is not None:  # the same fields, without pystac's deep copies
                found = cls._parse(view, asset_key)  # type: ignore[arg-type]
            else:
                try:
                    parsed = _as_item(item, self_href)
                except (KeyError, ValueError, TypeError) as exc:
                    raise InputError(f"item {item.get('id')!r}: not a STAC Item ({exc})") from exc
                found = cls._parse(parsed, asset_key)
            if len(_RECIPES) > 4096:
                _RECIPES.clear()
            _RECIPES[key] = found
        return found

    @classmethod
    def _parse(cls, item: pystac.Item, asset_key: str | None) -> ItemRecipe:
        codes_key = select_codes_asset(item, asset_key)
        q = quantization_of(item, codes_key)
        base = item.get_self_href()
        scale_key = scale_href = None
        if q.method is QuantizationMethod.PER_PIXEL_SCALE:
            scale_key = q.scale_asset or "scales"
            if scale_key not in item.assets:
                raise InputError(
                    f"item {item.id}: scale asset {scale_key!r} named by {QUANTIZATION_PROP} "
                    "is missing"
                )
            scale_href = resolve_href(item.assets[scale_key].href, base)
        return cls(
            item_id=item.id,
            collection=item.collection_id,
            codes_key=codes_key,
            codes_href=resolve_href(item.assets[codes_key].href, base),
            quantization=q,
            scale_key=scale_key,
            scale_href=scale_href,
            scale_band=q.scale_band or 1,
            bbox=tuple(item.bbox) if item.bbox else None,
        )

    @property
    def hrefs(self) -> dict[str, str]:
        """``{"codes": href}`` plus ``"scales"`` when the recipe uses a scale asset."""
        out = {"codes": self.codes_href}
        if self.scale_href is not None:
            out["scales"] = self.scale_href
        return out


_RECIPES: dict[tuple[Any, ...], ItemRecipe] = {}


@dataclass(frozen=True)
class _AssetView:
    href: str
    roles: list[str] | None
    extra_fields: dict[str, Any]


@dataclass(frozen=True)
class _ItemView:
    """The fields of a STAC Item dict :meth:`ItemRecipe._parse` reads, as ``pystac.Item``
    gives them (``Item.from_dict`` deep-copies the whole dict: ~15 ms for a pgSTAC item, most
    of a cold points request's recipe time). Only for dicts pystac would take as they are:
    anything unusual goes through pystac (:meth:`of` returns None)."""

    id: str
    collection_id: str | None
    bbox: list[float] | None
    properties: dict[str, Any]
    assets: dict[str, _AssetView]
    self_href: str | None

    def get_self_href(self) -> str | None:
        return self.self_href

    @classmethod
    def of(cls, d: dict[str, Any], self_href: str | None) -> _ItemView | None:
        from pystac.utils import make_absolute_href, str_to_datetime

        props, assets, links = d.get("properties"), d.get("assets"), d.get("links", [])
        version = d.get("stac_version")
        if (
            d.get("type") != "Feature"
            or not isinstance(d.get("id"), str)
            or not isinstance(version, str)
            or not version.startswith("1.")  # no migration to make
            or not isinstance(props, dict)
            or not isinstance(assets, dict)
            or not isinstance(links, list)
            or not isinstance(d.get("collection"), str | None)
        ):
            return None
        try:
            if props.get("datetime") is not None:
                str_to_datetime(props["datetime"])  # pystac refuses an Item it cannot parse
            elif "start_datetime" not in props or "end_datetime" not in props:
                return None
            views = {}
            for key, a in assets.items():
                if not isinstance(a, dict) or not isinstance(a.get("href"), str):
                    return None
                extra = {
                    k: v
                    for k, v in a.items()
                    if k not in ("href", "type", "title", "description", "roles")
                }
                views[key] = _AssetView(a["href"], a.get("roles"), extra)
            base = self_href
            if base is None:
                own = [x for x in links if isinstance(x, dict) and x.get("rel") == "self"]
                if own:
                    base = own[0]["href"]
            if base is not None:
                base = make_absolute_href(base)  # as pystac's self link holds it
        except (KeyError, ValueError, TypeError, AttributeError):
            return None
        return cls(d["id"], d.get("collection"), d.get("bbox"), props, views, base)


# ------------------------------------------------------------------------ dequantise
def is_value(values: npt.NDArray[Any], target: float | int) -> BoolArray:
    if isinstance(target, float) and math.isnan(target):
        if np.issubdtype(values.dtype, np.floating):
            return np.isnan(values)
        return np.zeros(values.shape, dtype=bool)
    return np.asarray(values == target)


def _param(value: float | tuple[float, ...] | None, dims: int, dtype: Any, name: str) -> Any:
    if value is None:
        raise InputError(f"{QUANTIZATION_PROP}: linear needs {name!r}")
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim == 1 and arr.shape[0] != dims:
        raise InputError(
            f"{QUANTIZATION_PROP}: {name} has {arr.shape[0]} values for {dims} dimensions"
        )
    return arr


def scale_validity(scales: FloatArray, q: Quantization) -> BoolArray:
    """Valid-scale mask: finite, not ``scale_nodata``, inside the open ``scale_valid_range``."""
    ok = np.isfinite(scales)
    if q.scale_nodata is not None:
        ok &= ~is_value(scales, q.scale_nodata)
    if q.scale_valid_range is not None:
        lo, hi = q.scale_valid_range
        ok &= (scales > lo) & (scales < hi)
    return np.asarray(ok)


def codes_validity(codes: npt.NDArray[Any], q: Quantization) -> BoolArray:
    """Pixels whose codes hold no ``nodata`` value in any dimension (``(rows, cols)``)."""
    valid: BoolArray = np.ones(codes.shape[:2], dtype=bool)
    if q.nodata is not None:
        valid &= ~is_value(codes, q.nodata).any(axis=-1)
    return valid


def dequantize(
    codes: npt.NDArray[Any], q: Quantization, scales: FloatArray | None = None
) -> tuple[FloatArray, BoolArray]:
    """Apply a recipe to codes shaped ``(rows, cols, dims)``.

    Args:
        codes: the stored codes, last axis = dimensions.
        q: the recipe.
        scales: ``(rows, cols)`` per-pixel scales (method ``per-pixel-scale`` only).

    Returns:
        ``(values, valid)``: values in ``q.dtype`` with NaN where invalid, and the mask.
    """
    dtype = np.dtype(q.dtype)
    valid = codes_validity(codes, q)
    if q.method is QuantizationMethod.NONE:
        values = codes.astype(dtype)
    elif q.method is QuantizationMethod.LINEAR:
        dims = codes.shape[-1]
        scale = _param(q.scale, dims, dtype, "scale")
        offset = _param(q.offset, dims, dtype, "offset")
        values = codes.astype(dtype) * scale + offset
    elif q.method is QuantizationMethod.PER_PIXEL_SCALE:
        if scales is None:
            raise InputError(f"{QUANTIZATION_PROP}: per-pixel-scale needs the scales array")
        s = scales.astype(dtype, copy=False)
        valid &= scale_validity(s, q)
        values = codes.astype(dtype) * s[..., None]
    elif q.method is QuantizationMethod.SIGNED_SQUARE:
        if q.divisor is None or q.exponent is None:
            raise InputError(f"{QUANTIZATION_PROP}: signed-square needs divisor and exponent")
        c = codes.astype(dtype)
        values = np.sign(c) * np.power(np.abs(c) / dtype.type(q.divisor), dtype.type(q.exponent))
    else:  # pragma: no cover - the enum is closed
        raise InputError(f"{QUANTIZATION_PROP}: unknown method {q.method}")
    values = np.asarray(values, dtype=dtype)
    values[~valid] = np.nan
    return values, valid


# ---------------------------------------------------------------------------- reader
class EmbeddingReader:
    """Read dequantised windows and points of one Item, from its metadata alone.

    Args:
        item: the Item (pystac or dict).
        asset_key: the codes asset; default the one with role ``embeddings``.
        gdal_env: GDAL configuration (e.g. ``StorageSettings.gdal_env()``) for the reads.
        self_href: the Item's own href, when it is not set on ``item`` (relative asset hrefs
            resolve against it).

    Use it as a context manager to keep the files open across reads (one reader per thread
    then: open datasets are not shared safely between threads). Without ``with`` every call
    opens and closes its files, which is thread-safe.
    """

    def __init__(
        self,
        item: pystac.Item | dict[str, Any],
        asset_key: str | None = None,
        gdal_env: dict[str, str] | None = None,
        self_href: str | None = None,
    ) -> None:
        self.item = _as_item(item, self_href)
        self.recipe = ItemRecipe.of(self.item, asset_key)
        self.asset_key = self.recipe.codes_key
        self.quantization = self.recipe.quantization
        self.gdal_env = dict(gdal_env or {})
        self.hrefs = self.recipe.hrefs
        self._stack: contextlib.ExitStack | None = None
        self._open_ds: dict[str, Any] = {}

    # ------------------------------------------------------------------ files
    def __enter__(self) -> EmbeddingReader:

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(rasterio_env(self.gdal_env))
        for name, href in self.hrefs.items():
            self._open_ds[name] = self._stack.enter_context(self._open_one(href))
        self._check_grids()
        return self

    def __exit__(self, *exc: object) -> None:
        self._open_ds.clear()
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    @staticmethod
    def _open_one(href: str) -> Any:
        return open_raster(gdal_path(href), href)

    @contextlib.contextmanager
    def _datasets(self) -> Iterator[dict[str, Any]]:
        if self._open_ds:
            yield self._open_ds
            return
        with self:
            yield self._open_ds

    def _check_grids(self) -> None:
        codes = self._open_ds["codes"]
        dims = self.item.properties.get(DIMENSIONS_PROP)
        asset_dims = self.item.assets[self.asset_key].extra_fields.get(DIMENSIONS_PROP, dims)
        if asset_dims is not None and int(asset_dims) != codes.count:
            raise InputError(
                f"{self.hrefs['codes']}: {codes.count} bands, but the item says "
                f"{DIMENSIONS_PROP} = {asset_dims}"
            )
        scales = self._open_ds.get("scales")
        if scales is not None and (
            scales.shape != codes.shape or not scales.transform.almost_equals(codes.transform)
        ):
            raise InputError(
                f"{self.hrefs['scales']}: grid {scales.shape} differs from the codes' {codes.shape}"
            )

    def profile(self) -> GridInfo:
        """CRS, transform, shape and dimensions of the codes asset (read from the file)."""
        with self._datasets() as ds:
            codes = ds["codes"]
            return GridInfo(
                crs=codes.crs.to_string(),
                transform=tuple(codes.transform)[:6],
                shape=(codes.height, codes.width),
                dimensions=codes.count,
            )

    # ------------------------------------------------------------------ reads
    def read(self, window: WindowLike | None = None) -> tuple[FloatArray, BoolArray]:
        """Dequantised values of a window (default: the whole raster).

        Args:
            window: a rasterio ``Window`` or ``((row_start, row_stop), (col_start, col_stop))``
                in pixels of the codes asset. Parts outside the raster come back invalid
                (NaN), so the result always has the requested shape.

        Returns:
            ``(values, valid)``: float ``(rows, cols, dims)`` (NaN where invalid) and a bool
            ``(rows, cols)`` mask.
        """
        with self._datasets() as ds:
            codes_ds = ds["codes"]
            if window is None:
                (r0, r1), (c0, c1) = (0, codes_ds.height), (0, codes_ds.width)
            elif isinstance(window, tuple):
                (r0, r1), (c0, c1) = window
            else:
                (r0, r1), (c0, c1) = window.toranges()
            r0, r1, c0, c1 = (int(v) for v in (r0, r1, c0, c1))
            if r1 < r0 or c1 < c0:
                raise InputError(f"empty or inverted window rows {r0}:{r1}, cols {c0}:{c1}")
            ir0, ir1 = max(r0, 0), min(r1, codes_ds.height)
            ic0, ic1 = max(c0, 0), min(c1, codes_ds.width)
            values = np.full((r1 - r0, c1 - c0, codes_ds.count), np.nan, self.quantization.dtype)
            valid = np.zeros((r1 - r0, c1 - c0), dtype=bool)
            if ir1 <= ir0 or ic1 <= ic0:
                return values, valid
            part = self._read_inside(ds, ((ir0, ir1), (ic0, ic1)))
        values[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0] = part[0]
        valid[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0] = part[1]
        return values, valid

    def _read_inside(
        self, ds: dict[str, Any], ranges: tuple[tuple[int, int], tuple[int, int]]
    ) -> tuple[FloatArray, BoolArray]:
        codes, scales = self._read_raw(ds, ranges)
        return dequantize(codes, self.quantization, scales)

    def _read_raw(
        self, ds: dict[str, Any], ranges: tuple[tuple[int, int], tuple[int, int]]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
        """The stored codes of a window inside the raster, and its scales band if any."""
        from tessera_stac.catalog.reader.tiff import read_window

        (r0, r1), (c0, c1) = ranges
        codes = read_window(ds["codes"], r0, r1, c0, c1)
        scales = None
        if "scales" in ds:
            band = self.quantization.scale_band or 1
            scales = read_window(ds["scales"], r0, r1, c0, c1)[..., band - 1]
        return codes, scales

    def read_scaled_codes(
        self, window: tuple[tuple[int, int], tuple[int, int]]
    ) -> tuple[npt.NDArray[Any], FloatArray, BoolArray]:
        """The raw codes of a window inside the raster, their per-pixel scales and the valid
        mask, without making the float vectors: ``(codes (rows, cols, dims), scales (rows,
        cols) in the recipe's dtype, valid)``. ``codes[p] * scales[p]`` in that dtype is
        exactly :meth:`read`'s vector on every valid pixel.

        Raises:
            InputError: the recipe is not per-pixel-scale, or the window is not inside.
        """
        q = self.quantization
        if q.method is not QuantizationMethod.PER_PIXEL_SCALE:
            raise InputError(f"{QUANTIZATION_PROP}: {q.method.value} has no per-pixel scales")
        with self._datasets() as ds:
            (r0, r1), (c0, c1) = window
            codes_ds = ds["codes"]
            if not (0 <= r0 <= r1 <= codes_ds.height and 0 <= c0 <= c1 <= codes_ds.width):
                raise InputError(f"window rows {r0}:{r1}, cols {c0}:{c1} is not inside the raster")
            codes, raw = self._read_raw(ds, window)
        if raw is None:
            raise InputError(f"{QUANTIZATION_PROP}: per-pixel-scale needs the scales array")
        scales = np.asarray(raw.astype(np.dtype(q.dtype), copy=False))
        return codes, scales, codes_validity(codes, q) & scale_validity(scales, q)

    def read_point(self, lon: float, lat: float) -> PointSample:
        """The embedding at a WGS84 point (transformed to the asset CRS).

        Returns a :class:`PointSample`; ``vector`` is None outside the raster or on an
        invalid pixel.
        """
        return self.read_points([(lon, lat)])[0]

    def read_points(self, points: list[tuple[float, float]]) -> list[PointSample]:
        """:meth:`read_point` for many WGS84 points: files opened once, each block read once."""
        from tessera_stac.catalog.reader.blocks import read_points

        if not points:
            return []
        lons, lats = zip(*points, strict=True)
        with self._datasets() as ds:
            batch = read_points(
                ds["codes"],
                ds.get("scales"),
                self.quantization,
                lons,
                lats,
                self.recipe.scale_band,
            )
            xs, ys = self._point_xy(ds["codes"], lons, lats)
        out = []
        for i in range(len(points)):
            ok = bool(batch.valid[i])
            out.append(
                PointSample(
                    batch.vectors[i].astype(np.float32) if ok else None,
                    ok,
                    int(batch.rows[i]),
                    int(batch.cols[i]),
                    bool(batch.inside[i]),
                    float(xs[i]),
                    float(ys[i]),
                    dict(self.hrefs),
                )
            )
        return out

    @staticmethod
    def _point_xy(codes: Any, lons: Any, lats: Any) -> tuple[Any, Any]:
        """The points in the asset CRS (PointSample reports them, not the pixel centre)."""
        from tessera_stac.catalog.reader.blocks import transformer

        return transformer("EPSG:4326", codes.crs.to_string()).transform(
            np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64)
        )

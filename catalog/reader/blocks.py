"""The reader kernel: pixel selection + dequantisation, block by block.

Everything that reads embedding pixels calls these functions on open rasterio datasets (codes
and, for per-pixel recipes, scales):

* :func:`read_points`: a batch of lon/lat points of one item. Points are grouped by the COG's
  internal blocks; each touched block is read and decompressed once (:mod:`.tiff`: only the
  touched blocks of a local COG, in parallel; through GDAL each run of touched blocks in a
  block row), and every point in it is answered from it.
* :func:`iter_polygon_pixels`: the pixels of one item whose centre lies in a WGS84 polygon and
  in the item's own 0.1° cell (DESIGN §5), strip by strip: codes, scales and validity of just
  those pixels.
* :func:`polygon_sums`: count, valid count and float64 sum of the dequantised vectors of those
  pixels (zonal statistics).
* :func:`valid_codes`, :func:`sum_dequantized`, :func:`owned_by_cell`, :func:`pixel_centres`:
  the pieces, for callers with their own pixel selection (the join's label rasters).

Memory per call is bounded by one strip (block height x window width x dimensions), whatever the
number of points or the size of the polygon.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera_stac.catalog.embedding import Quantization, QuantizationMethod
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.reader.item import dequantize, is_value, scale_validity
from tessera_stac.catalog.reader.tiff import read_ahead, read_pixels, read_window

Ranges = tuple[int, int, int, int]  # row0, row1, col0, col1 (half open)
#: pixels converted to float64 at once: 128 x 2048 x 8 B = 2 MB stays in cache (6x faster
#: than 16 MB chunks, measured on 1 M pixels)
CHUNK_PIXELS = 2048

_local = threading.local()


def transformer(src: str, dst: str) -> Any:
    """A cached (per thread) always-xy pyproj Transformer."""
    from pyproj import Transformer

    cache: dict[tuple[str, str], Any] = _local.__dict__.setdefault("transformers", {})
    found = cache.get((src, dst))
    if found is None:
        found = cache[(src, dst)] = Transformer.from_crs(src, dst, always_xy=True)
    return found


def crs_code(crs: Any) -> str:
    """``EPSG:xxxx`` when the CRS has a code, else its WKT/PROJ string."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


# ------------------------------------------------------------------------- pixel pieces
def pixel_centres(
    transform: Any, rows: npt.NDArray[Any], cols: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """x, y of the centres of pixels (rows, cols) under an affine ``transform``."""
    a, b, c, d, e, f = tuple(transform)[:6]
    r = np.asarray(rows, dtype=np.float64) + 0.5
    k = np.asarray(cols, dtype=np.float64) + 0.5
    return c + k * a + r * b, f + k * d + r * e


def to_pixel(
    transform: Any, xs: npt.ArrayLike, ys: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Fractional (col, row) of points (x, y) under an affine ``transform``."""
    ia, ib, ic, id_, ie, if_ = tuple(~transform)[:6]
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    return ia * x + ib * y + ic, id_ * x + ie * y + if_


def owned_by_cell(
    lons: npt.NDArray[Any], lats: npt.NDArray[Any], cell: GridCell
) -> npt.NDArray[np.bool_]:
    """True where (lon, lat) lies in ``cell`` (the rule of :meth:`GridCell.containing`)."""
    ix = round((cell.lon - 0.05) * 10)
    iy = round((cell.lat - 0.05) * 10)
    owned: npt.NDArray[np.bool_] = (np.floor(np.asarray(lons) * 10) == ix) & (
        np.floor(np.asarray(lats) * 10) == iy
    )
    return owned


#: lattice step (pixels) of :func:`lattice_mask`, and the margin (degrees) by which a square's
#: lon/lat box is widened (over 16 pixels lon/lat are affine in x, y to ~1e-9°)
LATTICE_STEP = 16
LATTICE_MARGIN = 1e-6

#: ``classify(boxes) -> (all_in, all_out)`` for lon/lat boxes ``(west, south, east, north)``
Classify = Any
#: ``exact(lons, lats) -> bool array``
Exact = Any


def lattice_mask(
    transform: Any, crs: str, ranges: Ranges, classify: Classify, exact: Exact
) -> npt.NDArray[np.bool_]:
    """A per-pixel lon/lat predicate over the pixel centres of ``ranges`` ``(r0, r1, c0, c1)``,
    as a ``(rows, cols)`` mask, without transforming every pixel.

    Pixel centres are transformed on a lattice every :data:`LATTICE_STEP` pixels. Each lattice
    square gets the lon/lat box of its corners widened by :data:`LATTICE_MARGIN`, which holds
    every pixel centre of the square; ``classify`` decides squares whose box lies wholly in or
    wholly out, and only the others are transformed and tested pixel by pixel with ``exact``.
    The result equals ``exact`` on every pixel (tests check it).
    """
    r0, r1, c0, c1 = ranges
    h, w = r1 - r0, c1 - c0
    out = np.zeros((max(h, 0), max(w, 0)), dtype=bool)
    if h <= 0 or w <= 0:
        return out
    step = LATTICE_STEP
    # lattice rows/cols: every step and the last one, at least two (squares share corners)
    lr = np.r_[np.arange(0, h - 1, step), h - 1] if h > 1 else np.array([0, 0])
    lc = np.r_[np.arange(0, w - 1, step), w - 1] if w > 1 else np.array([0, 0])
    gr, gc = np.meshgrid(lr + r0, lc + c0, indexing="ij")
    back = transformer(crs, "EPSG:4326")
    lon, lat = (np.asarray(v) for v in back.transform(*pixel_centres(transform, gr, gc)))

    def corners(a: npt.NDArray[Any], fn: Any) -> npt.NDArray[Any]:
        result: npt.NDArray[Any] = fn.reduce([a[:-1, :-1], a[:-1, 1:], a[1:, :-1], a[1:, 1:]])
        return result

    m = LATTICE_MARGIN
    boxes = (
        corners(lon, np.minimum) - m,
        corners(lat, np.minimum) - m,
        corners(lon, np.maximum) + m,
        corners(lat, np.maximum) + m,
    )
    all_in, all_out = classify(boxes)
    exact_r: list[npt.NDArray[np.int64]] = []
    exact_c: list[npt.NDArray[np.int64]] = []
    for i, j in zip(*np.nonzero(~(all_in | all_out)), strict=True):
        rr, cc = np.mgrid[lr[i] : lr[i + 1] + 1, lc[j] : lc[j + 1] + 1]
        exact_r.append(rr.ravel())
        exact_c.append(cc.ravel())
    for i, j in zip(*np.nonzero(all_in), strict=True):
        out[lr[i] : lr[i + 1] + 1, lc[j] : lc[j + 1] + 1] = True
    if exact_r:
        rows = np.concatenate(exact_r)
        cols = np.concatenate(exact_c)
        lons, lats = back.transform(*pixel_centres(transform, rows + r0, cols + c0))
        out[rows, cols] = exact(np.asarray(lons), np.asarray(lats))
    return out


def owned_window(transform: Any, crs: str, cell: GridCell, ranges: Ranges) -> npt.NDArray[np.bool_]:
    """:func:`owned_by_cell` of every pixel centre of ``ranges``, by :func:`lattice_mask`."""
    west, south, east, north = cell.lon - 0.05, cell.lat - 0.05, cell.lon + 0.05, cell.lat + 0.05

    def classify(b: Any) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        bw, bs, be, bn = b
        inside = (bw > west) & (be < east) & (bs > south) & (bn < north)
        outside = (be < west) | (bw > east) | (bn < south) | (bs > north)
        return inside, outside

    return lattice_mask(
        transform, crs, ranges, classify, lambda lo, la: owned_by_cell(lo, la, cell)
    )


def polygon_mask(transform: Any, crs: str, shp: Any, ranges: Ranges) -> npt.NDArray[np.bool_]:
    """``shapely.contains_xy(shp, lon, lat)`` of every pixel centre of ``ranges`` (``shp`` a
    prepared WGS84 geometry), by :func:`lattice_mask`."""
    import shapely

    def classify(b: Any) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        squares = shapely.box(*b)
        inside: npt.NDArray[np.bool_] = shapely.contains_properly(shp, squares)
        outside: npt.NDArray[np.bool_] = shapely.disjoint(shp, squares)
        return inside, outside

    return lattice_mask(
        transform, crs, ranges, classify, lambda lo, la: shapely.contains_xy(shp, lo, la)
    )


def valid_codes(
    codes: npt.NDArray[Any], scales: npt.NDArray[Any] | None, q: Quantization
) -> npt.NDArray[np.bool_]:
    """Validity of pixels given as ``codes`` (k, dims) and ``scales`` (k,), by the recipe."""
    ok: npt.NDArray[np.bool_] = np.ones(codes.shape[0], dtype=bool)
    if q.nodata is not None:
        kind = codes.dtype.kind
        if kind in "iu" and codes.shape[-1] and q.nodata == np.iinfo(codes.dtype).min:
            ok &= codes.min(axis=-1) != q.nodata  # the type's minimum: one reduction, no mask
        else:
            ok &= ~is_value(codes, q.nodata).any(axis=-1)
    if q.method is QuantizationMethod.PER_PIXEL_SCALE and scales is not None:
        with np.errstate(invalid="ignore"):
            ok &= scale_validity(np.asarray(scales, dtype=np.float64), q)
    return ok


def dequantize_pixels(
    codes: npt.NDArray[Any], scales: npt.NDArray[Any] | None, q: Quantization
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """:func:`dequantize` of pixels given as ``codes`` (k, dims) and ``scales`` (k,)."""
    values, valid = dequantize(
        codes[:, None, :], q, None if scales is None else np.asarray(scales)[:, None]
    )
    return values[:, 0, :], valid[:, 0]


def sum_dequantized(
    codes: npt.NDArray[Any], scales: npt.NDArray[Any] | None, q: Quantization
) -> npt.NDArray[np.float64]:
    """Float64 sum of the dequantised vectors of (valid) pixels ``codes`` (k, dims).

    For per-pixel scales, ``q * s`` of an int8 code and a float32 scale is exact in float64, so
    one matrix-vector product per chunk gives the exact sum.
    """
    dims = codes.shape[1]
    total = np.zeros(dims, dtype=np.float64)
    for start in range(0, codes.shape[0], CHUNK_PIXELS):
        part = codes[start : start + CHUNK_PIXELS]
        if q.method is QuantizationMethod.PER_PIXEL_SCALE and scales is not None:
            s = np.asarray(scales[start : start + CHUNK_PIXELS], dtype=np.float64)
            total += part.T.astype(np.float64) @ s
        else:
            values, _ = dequantize_pixels(part, None, q)
            total += values.astype(np.float64).sum(axis=0)
    return total


# ------------------------------------------------------------------------------ windows
def block_shape(ds: Any) -> tuple[int, int]:
    """(rows, cols) of the dataset's internal blocks."""
    h, w = ds.block_shapes[0]
    return int(h), int(w)


# ------------------------------------------------------------------------------- points
@dataclass(frozen=True)
class PointBatch:
    """The pixels under a batch of points of one item (arrays of length n, in input order).

    Attributes:
        rows, cols: pixel indices in the codes asset (may lie outside the raster).
        inside: the point falls inside the raster.
        valid: the pixel holds a valid embedding.
        vectors: float ``(n, dims)`` dequantised values, NaN where not valid.
        scales: the pixel's scale (per-pixel recipes), NaN otherwise or outside.
        nodata: some code of the pixel equals the recipe's nodata.
        x, y: centre of the pixel in the asset CRS.
        crs: the asset CRS (``EPSG:xxxx``).
        blocks: how many reads it took (decoded blocks; through GDAL, block runs).
    """

    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    inside: npt.NDArray[np.bool_]
    valid: npt.NDArray[np.bool_]
    vectors: npt.NDArray[Any]
    scales: npt.NDArray[np.float64]
    nodata: npt.NDArray[np.bool_]
    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    crs: str
    blocks: int


def read_points(
    codes_ds: Any,
    scales_ds: Any | None,
    q: Quantization,
    lons: npt.ArrayLike,
    lats: npt.ArrayLike,
    scale_band: int = 1,
) -> PointBatch:
    """The dequantised vectors of one item at WGS84 points, each touched block decoded once.

    Args:
        codes_ds: open dataset of the codes asset.
        scales_ds: open dataset of the scale asset (per-pixel recipes), else None.
        q: the recipe.
        lons, lats: WGS84 coordinates.
        scale_band: band of the scale asset.
    """
    lon = np.atleast_1d(np.asarray(lons, dtype=np.float64))
    lat = np.atleast_1d(np.asarray(lats, dtype=np.float64))
    n = lon.shape[0]
    crs = crs_code(codes_ds.crs)
    xs, ys = transformer("EPSG:4326", codes_ds.crs.to_string()).transform(lon, lat)
    cf, rf = to_pixel(codes_ds.transform, xs, ys)
    cols = np.floor(cf).astype(np.int64)
    rows = np.floor(rf).astype(np.int64)
    inside = (rows >= 0) & (rows < codes_ds.height) & (cols >= 0) & (cols < codes_ds.width)
    codes = np.zeros((n, codes_ds.count), dtype=codes_ds.dtypes[0])
    scales = np.full(n, np.nan, dtype=np.float64)
    idx = np.flatnonzero(inside)
    codes[idx], reads = read_pixels(codes_ds, rows[idx], cols[idx])
    if scales_ds is not None:
        scales[idx] = read_pixels(scales_ds, rows[idx], cols[idx])[0][:, scale_band - 1]
    values, valid = dequantize_pixels(codes, scales if scales_ds is not None else None, q)
    valid &= inside
    values[~valid] = np.nan
    nodata = np.zeros(n, dtype=bool)
    if q.nodata is not None:
        nodata = is_value(codes, q.nodata).any(axis=-1) & inside
    cx, cy = pixel_centres(codes_ds.transform, rows, cols)
    return PointBatch(rows, cols, inside, valid, values, scales, nodata, cx, cy, crs, reads)


# ------------------------------------------------------------------------------ polygons
def polygon_window(ds: Any, geometry: dict[str, Any]) -> Ranges | None:
    """Pixel window ``(r0, r1, c0, c1)`` of ``ds`` holding a WGS84 geometry (None if apart)."""
    from rasterio.warp import transform_geom
    from shapely.geometry import shape

    local = transform_geom("EPSG:4326", ds.crs, geometry)
    minx, miny, maxx, maxy = shape(local).bounds
    pad = 3 * abs(ds.transform.a)  # edges bulge slightly between projections
    xs = np.array([minx - pad, minx - pad, maxx + pad, maxx + pad])
    ys = np.array([miny - pad, maxy + pad, miny - pad, maxy + pad])
    cs, rs = to_pixel(ds.transform, xs, ys)
    r0, r1 = max(0, math.floor(min(rs))), min(ds.height, math.ceil(max(rs)))
    c0, c1 = max(0, math.floor(min(cs))), min(ds.width, math.ceil(max(cs)))
    if r1 <= r0 or c1 <= c0:
        return None
    return r0, r1, c0, c1


@dataclass(frozen=True)
class PolygonPixels:
    """Pixels of one strip whose centre is in the polygon and the item's cell.

    Attributes:
        rows, cols: their indices in the codes asset.
        codes: ``(k, dims)`` stored codes.
        scales: ``(k,)`` scales (per-pixel recipes) or None.
        valid: ``(k,)`` validity by the recipe.
    """

    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    codes: npt.NDArray[Any]
    scales: npt.NDArray[Any] | None
    valid: npt.NDArray[np.bool_]


def iter_polygon_pixels(
    codes_ds: Any,
    scales_ds: Any | None,
    q: Quantization,
    geometry: dict[str, Any],
    cell: GridCell | None,
    window: Ranges | None = None,
    scale_band: int = 1,
) -> Iterator[PolygonPixels]:
    """The pixels whose centre lies in ``geometry`` (WGS84, tested as given, the CoRE Stack /
    GEE rule) and, when ``cell`` is given, in that 0.1° cell, one strip at a time."""
    from shapely import prepare
    from shapely.geometry import shape

    ranges = window if window is not None else polygon_window(codes_ds, geometry)
    if ranges is None:
        return
    shp = shape(geometry)
    prepare(shp)
    crs = codes_ds.crs.to_string()
    row0, row1, col0, col1 = ranges
    step = block_shape(codes_ds)[0]

    def strip(r0: int, r1: int) -> PolygonPixels | None:
        inside = polygon_mask(codes_ds.transform, crs, shp, (r0, r1, col0, col1))
        if cell is not None and inside.any():
            inside &= owned_window(codes_ds.transform, crs, cell, (r0, r1, col0, col1))
        sel_r, sel_c = np.nonzero(inside)
        if len(sel_r) == 0:
            return None  # nothing of the polygon here: the strip is not read
        c0, c1 = col0 + int(sel_c.min()), col0 + int(sel_c.max()) + 1
        sel_c = sel_c - (c0 - col0)
        codes = read_window(codes_ds, r0, r1, c0, c1)
        scales = None
        if scales_ds is not None:
            scales = read_window(scales_ds, r0, r1, c0, c1)[..., scale_band - 1]
        picked = codes[sel_r, sel_c]
        picked_s = None if scales is None else scales[sel_r, sel_c]
        return PolygonPixels(
            (sel_r + r0).astype(np.int64),
            (sel_c + c0).astype(np.int64),
            picked,
            picked_s,
            valid_codes(picked, picked_s, q),
        )

    # strips of whole block rows, each selected and read one step ahead of its consumer
    starts = range(row0 - row0 % step, row1, step)
    jobs = (partial(strip, max(s, row0), min(s + step, row1)) for s in starts)
    for pixels in read_ahead(jobs):
        if pixels is not None:
            yield pixels


@dataclass
class ZonalSums:
    """Count, valid count and float64 sum of dequantised vectors over some pixels."""

    count: int = 0
    valid: int = 0
    total: npt.NDArray[np.float64] | None = None


def polygon_sums(pixels: Iterable[PolygonPixels], q: Quantization) -> ZonalSums:
    """Zonal sums over the strips of :func:`iter_polygon_pixels` (streamed: one strip held).

    Example: ``polygon_sums(iter_polygon_pixels(codes, scales, q, geometry, cell), q)``.
    """
    out = ZonalSums()
    for px in pixels:
        out.count += len(px.rows)
        good = px.valid
        n = int(good.sum())
        if n:
            out.valid += n
            part = sum_dequantized(
                px.codes[good], None if px.scales is None else px.scales[good], q
            )
            out.total = part if out.total is None else out.total + part
    return out

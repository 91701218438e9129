"""Map tiles by index: the pixels GDAL's warped read of an output grid would pick, computed
here, then read from the touched blocks of a local COG (:mod:`.tiff`).

rio-tiler reads a web-map tile of a UTM COG through a ``WarpedVRT`` (nearest, error threshold
0.125 px) and ``read(out_shape=...)``. What GDAL (3.10) then does, and what :func:`plan_warp`
reproduces (checked pixel for pixel against GDAL on a COG whose pixels hold their own row and
column, ``tests/catalog/test_reader_warp.py``):

* the output grid is the tile itself (``width`` x ``height`` over the VRT's bounds), even when
  the VRT is larger: a downsampling read of all bands is warped directly at the buffer's
  resolution; a read of some bands is warped on the VRT's (implicit overview's) grid and the
  buffer takes the nearest of those pixels (``floor((i + 0.5) * n / size)``);
* its source is the full resolution, or, when the VRT is larger than the buffer, the overview
  GDAL's ``GDALBandGetBestOverviewLevel2`` picks for the VRT's implicit overviews: the coarsest
  whose decimation is at most 1.2 x the requested one (nearest's oversampling threshold);
* each output pixel centre goes to source pixel coordinates through GDAL's approximate
  transformer: per output row, exact at the first, middle and last pixel; linear between the
  ends when the middle is within 0.125 source px of the line, else each half again;
* nearest takes ``floor(coordinate + 1e-10)``; a coordinate outside the image is nodata.

A request whose overview choice sits within :data:`AMBIGUOUS` of GDAL's threshold, or whose
warped rows are longer than :data:`GDAL_BLOCK` (GDAL would warp them in pieces), is not
planned (``None``): the caller reads it through GDAL instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

#: rasterio's WarpedVRT error threshold (source pixels) for the approximate transformer
APPROX_ERROR = 0.125
#: GDAL's overview oversampling threshold for nearest-neighbour reads
OVERSAMPLING = 1.2
#: GDAL's nudge before truncating a source coordinate to a pixel index
NUDGE = 1e-10
#: relative distance to the overview threshold under which the choice is left to GDAL
AMBIGUOUS = 0.02
#: width of a warped VRT's blocks (rasterio's WarpedVRT): longer rows are warped in pieces
GDAL_BLOCK = 512

IntArray = npt.NDArray[np.intp]
Transform = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class WarpPlan:
    """Which source pixel each output pixel takes.

    Attributes:
        level: 0 for the full resolution, ``k`` for the ``k``-th overview.
        rows, cols: ``(height, width)`` pixel indices in that image (meaningful where inside).
        inside: ``(height, width)`` True where the output pixel has a source pixel.
    """

    level: int
    rows: IntArray
    cols: IntArray
    inside: npt.NDArray[np.bool_]

    def window(self) -> tuple[int, int, int, int] | None:
        """``(r0, r1, c0, c1)`` of the source pixels read (None: none)."""
        if not self.inside.any():
            return None
        rows, cols = self.rows[self.inside], self.cols[self.inside]
        return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


@lru_cache(maxsize=64)
def _transformer(dst_crs: str, src_crs: str) -> Any:
    """pyproj's transformer between two CRSs (built once: ~5 ms each)."""
    from pyproj import Transformer

    return Transformer.from_crs(dst_crs, src_crs, always_xy=True)


def choose_level(
    vrt_size: tuple[int, int], out_size: tuple[int, int], levels: tuple[tuple[int, int], ...]
) -> int | None:
    """The image GDAL reads a ``vrt_size`` (width, height) warped VRT from into an
    ``out_size`` buffer: 0, an overview index, or None when the choice is too close to call.

    ``levels`` are the file's images as ``(height, width)``, full resolution first."""
    (vw, vh), (w, h) = vrt_size, out_size
    if vw <= w and vh <= h:
        return 0
    if vw < w or vh < h:  # down one way, up the other: not a tile read
        return None
    desired = min(vw / w, vh / h) * OVERSAMPLING
    full_w = levels[0][1]
    best, best_res = 0, 1.0
    for k, (_, ow) in enumerate(levels[1:], start=1):
        ratio = full_w / ow
        dw, dh = int(vw / ratio + 0.5), int(vh / ratio + 0.5)
        if dw < 1 or dh < 1:
            continue
        res = min(vw / dw, vh / dh)
        if abs(res - desired) <= AMBIGUOUS * desired:
            return None
        if res <= desired and res > best_res:
            best, best_res = k, res
    return best


def _approx_rows(
    exact: Any, n: int, rows: IntArray, out_u: npt.NDArray[np.float64], out_v: Any
) -> None:
    """GDAL's approximate transformer along output rows ``rows`` (``n`` pixels each):
    ``exact(col, rows) -> (u, v)`` source coordinates of pixel centre ``col`` of each row."""
    ua, va = exact(0, rows)
    ub, vb = exact(n - 1, rows)
    _segment(exact, rows, 0, n - 1, (ua, va), (ub, vb), out_u, out_v)


def _segment(
    exact: Any,
    rows: IntArray,
    a: int,
    b: int,
    start: tuple[Any, Any],
    end: tuple[Any, Any],
    out_u: npt.NDArray[np.float64],
    out_v: npt.NDArray[np.float64],
) -> None:
    points = b - a + 1
    cols = np.arange(a, b + 1)
    if points <= 5:  # GDAL transforms short runs exactly
        for c in cols.tolist():
            out_u[rows, c], out_v[rows, c] = exact(c, rows)
        return
    middle = a + (points - 1) // 2
    um, vm = exact(middle, rows)
    (ua, va), (ub, vb) = start, end
    du, dv = (ub - ua) / (b - a), (vb - va) / (b - a)
    error = np.abs(ua + du * (middle - a) - um) + np.abs(va + dv * (middle - a) - vm)
    ok = error <= APPROX_ERROR
    if ok.any():
        t = (cols - a).astype(np.float64)[None, :]
        sel = rows[ok]
        out_u[sel[:, None], cols[None, :]] = ua[ok, None] + du[ok, None] * t
        out_v[sel[:, None], cols[None, :]] = va[ok, None] + dv[ok, None] * t
    if not ok.all():
        bad = ~ok
        mid = (um[bad], vm[bad])
        _segment(exact, rows[bad], a, middle, (ua[bad], va[bad]), mid, out_u, out_v)
        _segment(exact, rows[bad], middle, b, mid, (ub[bad], vb[bad]), out_u, out_v)


def plan_warp(
    src_crs: Any,
    src_transform: Transform,
    levels: tuple[tuple[int, int], ...],
    dst_crs: Any,
    vrt_transform: Transform,
    vrt_size: tuple[int, int],
    out_size: tuple[int, int],
    all_bands: bool = True,
) -> WarpPlan | None:
    """The source pixel of every output pixel of a warped read (see the module docstring).

    Args:
        src_crs, src_transform: the COG's CRS and full-resolution geotransform (GDAL order
            as ``affine.Affine`` gives it: a, b, c, d, e, f).
        levels: ``(height, width)`` of the COG's images, full resolution first.
        dst_crs: the output CRS.
        vrt_transform, vrt_size: the warped VRT's grid (rio-tiler's ``get_vrt_transform``),
            ``(width, height)``.
        out_size: ``(width, height)`` of the buffer read.
        all_bands: the read asks for every band of the file (GDAL warps a downsampling read
            of all bands at the buffer's resolution, and a read of some bands on the VRT's
            overview grid, then picks the nearest of those pixels).

    Returns:
        The plan, or None when GDAL's choice of overview is too close to call.
    """
    from affine import Affine

    level = choose_level(vrt_size, out_size, levels)
    if level is None:
        return None
    (vw, vh), (w, h) = vrt_size, out_size
    lh, lw = levels[level]
    full_h, full_w = levels[0]
    if all_bands or (vw <= w and vh <= h):
        gw, gh = w, h  # warped straight into the buffer's grid
    elif level == 0:
        gw, gh = vw, vh  # the VRT itself, then every n-th pixel
    else:  # the VRT's implicit overview (the source overview's decimation), then nearest
        ratio = full_w / lw
        gw, gh = int(vw / ratio + 0.5), int(vh / ratio + 0.5)
    if gw > GDAL_BLOCK:
        return None  # warped in pieces (blocks, memory chunks): rows cut where we do not know
    grid = Affine(*vrt_transform) @ Affine.scale(vw / gw, vh / gh)
    src = Affine(*src_transform)
    if src.b or src.d or grid.b or grid.d:
        return None
    pick_cols = np.floor((np.arange(w) + 0.5) * gw / w + NUDGE).astype(np.intp)
    pick_rows = np.floor((np.arange(h) + 0.5) * gh / h + NUDGE).astype(np.intp)
    # source pixel coordinates of this level: full-resolution pixels scaled (GDAL's overview
    # geotransform is the full one with pixels W/w and H/h times larger)
    sx, sy = lw / full_w, lh / full_h
    to_src = _transformer(str(dst_crs), str(src_crs))
    ys = grid.f + (np.arange(gh) + 0.5) * grid.e

    def exact(col: int, rows: IntArray) -> tuple[Any, Any]:
        x = np.full(len(rows), grid.c + (col + 0.5) * grid.a)
        gx, gy = to_src.transform(x, ys[rows], errcheck=False)
        u = (np.asarray(gx) - src.c) / src.a * sx
        v = (np.asarray(gy) - src.f) / src.e * sy
        return u, v

    rows_needed = np.unique(pick_rows)
    u = np.empty((gh, gw))
    v = np.empty((gh, gw))
    _approx_rows(exact, gw, rows_needed, u, v)
    u = u[pick_rows][:, pick_cols]
    v = v[pick_rows][:, pick_cols]
    finite = np.isfinite(u) & np.isfinite(v)
    u = np.where(finite, u, -1.0)
    v = np.where(finite, v, -1.0)
    inside = (u >= 0) & (v >= 0)
    cols = np.floor(u + NUDGE).astype(np.intp)
    rows = np.floor(v + NUDGE).astype(np.intp)
    inside &= (cols < lw) & (rows < lh)
    return WarpPlan(level, rows, cols, inside)


def read_planned(
    blocks: Any,
    plan: WarpPlan,
    fill: float,
    bands: npt.NDArray[np.intp] | None = None,
    band_first: bool = False,
) -> npt.NDArray[Any]:
    """``(height, width, bands)`` (or ``(bands, height, width)`` when ``band_first``) of
    ``plan`` from ``blocks`` (a :class:`.tiff.TiffBlocks` of the plan's level): only the
    touched blocks are decoded; ``fill`` outside. ``bands``: 0-based band indices to keep
    (all when None)."""
    h, w = plan.inside.shape
    count = blocks.bands if bands is None else len(bands)
    shape = (count, h, w) if band_first else (h, w, count)
    out = np.empty(shape, dtype=blocks.dtype)
    window = plan.window()
    if window is None:
        out.fill(fill)
        return out
    r0, r1, c0, c1 = window
    # the window in the file's own (pixel-interleaved) order, each output pixel's 128-byte row
    # gathered whole; a band-first result is that gather transposed in slices on the decode
    # threads (numpy copies without the GIL): ~3x less than transposing every decoded block
    # into a band-first window and then gathering band by band (bench/results/kernel_tiles.md)
    data = blocks.read(r0, r1, c0, c1, bands)
    sel = plan.inside
    flat = (np.where(sel, plan.rows - r0, 0) * (c1 - c0) + np.where(sel, plan.cols - c0, 0)).ravel()
    gathered = out if not band_first else np.empty((h, w, count), dtype=blocks.dtype)
    np.take(data.reshape(-1, count), flat, axis=0, out=gathered.reshape(-1, count))
    if not sel.all():
        gathered[~sel] = fill
    if band_first:
        _transpose_into(out.reshape(count, -1), gathered.reshape(-1, count))
    return out


#: pixels per slice of :func:`_transpose_into` (a slice of 128 bands is ~1 MB of int8)
_TRANSPOSE_SLICE = 8192


def _transpose_into(out: npt.NDArray[Any], rows: npt.NDArray[Any]) -> None:
    """``out[:] = rows.T`` (``rows``: (pixels, bands)), slice by slice on the decode threads."""
    from tessera_stac.catalog.reader.tiff import _executor

    n = rows.shape[0]
    if n <= _TRANSPOSE_SLICE:
        np.copyto(out, rows.T)
        return

    def one(start: int) -> None:
        stop = min(n, start + _TRANSPOSE_SLICE)
        np.copyto(out[:, start:stop], rows[start:stop].T)

    for _ in _executor().map(one, range(0, n, _TRANSPOSE_SLICE)):
        pass

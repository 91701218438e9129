"""Validity masks, consistent overviews and the COG writer of the embedding product.

One :class:`~tessera_stac.catalog.profile.CogProfile` drives each file. The write avoids any
full-resolution copy through GDAL: the numpy arrays are exposed to GDAL as ``MEM`` datasets
(zero-copy, pixel-interleaved), wrapped in a VRT that declares our own overview arrays
(``<Overview>`` elements), and copied once with GDAL's COG driver
(``OVERVIEWS=FORCE_USE_EXISTING``) - one compression pass, no resampling by GDAL.

Overviews are real embeddings: each overview pixel is the mean of the *dequantised* vectors of
the valid full-resolution pixels it covers, requantised like the producer does
(``scale = max|x| / 127``, ``q = round(x / scale)``). Codes carrying different scales are never
averaged. A pixel with no valid child is nodata (-128 / NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from tessera_stac.catalog.constants import CODE_NODATA
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.profile import CogProfile
from tessera_stac.publisher.embeddings.georef import TileGeoref

ROWS_PER_STRIP = 128  # rows processed at once: bounds the float32 working memory


# ---------------------------------------------------------------------------- validity
@dataclass(frozen=True)
class Validity:
    """The valid-pixel mask of a tile and why the others are invalid.

    Attributes:
        valid: (H, W) bool.
        water: pixels with landmask == 0.
        nonfinite: land pixels whose scale is NaN or ±inf.
        zero: land pixels whose scale is 0 (unprocessed, zero-filled).
        negative: land pixels whose scale is < 0 (e.g. the -161685 sentinel).
        huge: land pixels whose scale is >= 1 (e.g. the 3.4e38 sentinel).
        bad_code: otherwise valid land pixels holding the reserved code -128.
    """

    valid: np.ndarray
    water: int
    nonfinite: int
    zero: int
    negative: int
    huge: int
    bad_code: int

    @property
    def n_valid(self) -> int:
        """Valid pixels."""
        return int(np.count_nonzero(self.valid))

    @property
    def n_invalid(self) -> int:
        """Invalid pixels (water, bad scales, bad codes)."""
        return int(self.valid.size) - self.n_valid

    @property
    def sanitised(self) -> int:
        """Land pixels masked because their values were unusable."""
        return self.nonfinite + self.zero + self.negative + self.huge + self.bad_code

    def as_dict(self) -> dict[str, int]:
        """Counts for the run report."""
        return {
            "valid": self.n_valid,
            "invalid": self.n_invalid,
            "sanitised": self.sanitised,
            "water": self.water,
            "scale_nonfinite": self.nonfinite,
            "scale_zero": self.zero,
            "scale_negative": self.negative,
            "scale_huge": self.huge,
            "code_minus_128": self.bad_code,
        }


def validity(codes: np.ndarray, scales: np.ndarray, landmask: np.ndarray | None) -> Validity:
    """Valid pixels: ``isfinite(s) & 0 < s < 1 & landmask != 0`` and no reserved code -128.

    The producer's codes lie in [-127, 127]; a -128 would read as nodata, so such a pixel is
    masked (and counted) rather than published with a changed value.
    """
    land = np.ones(scales.shape, dtype=bool) if landmask is None else np.asarray(landmask) != 0
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(scales)
        zero = finite & (scales == 0)
        negative = finite & (scales < 0)
        huge = finite & (scales >= 1)
    scale_ok = finite & ~zero & ~negative & ~huge
    code_ok = np.empty(scales.shape, dtype=bool)
    for r0 in range(0, scales.shape[0], ROWS_PER_STRIP):
        r1 = r0 + ROWS_PER_STRIP
        code_ok[r0:r1] = np.asarray(codes[r0:r1]).min(axis=2) != CODE_NODATA
    valid = land & scale_ok & code_ok
    return Validity(
        valid=valid,
        water=int(np.count_nonzero(~land)),
        nonfinite=int(np.count_nonzero(land & ~finite)),
        zero=int(np.count_nonzero(land & zero)),
        negative=int(np.count_nonzero(land & negative)),
        huge=int(np.count_nonzero(land & huge)),
        bad_code=int(np.count_nonzero(land & scale_ok & ~code_ok)),
    )


def masked_codes(codes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of the codes with -128 on every invalid pixel."""
    out = np.array(codes, dtype=np.int8, order="C")
    out[~valid] = CODE_NODATA
    return out


def masked_scales(scales: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The scales (float32, C-contiguous) with NaN on every invalid pixel."""
    return np.ascontiguousarray(np.where(valid, scales, np.float32(np.nan)), dtype=np.float32)


# ---------------------------------------------------------------------------- overviews
@dataclass(frozen=True)
class Overview:
    """One overview level: codes and scales that dequantise to the mean embedding."""

    factor: int
    codes: np.ndarray  # (h, w, 128) int8, -128 nodata
    scales: np.ndarray  # (h, w) float32, NaN nodata
    count: np.ndarray  # (h, w) valid full-resolution pixels averaged


def _pair_sum(a: np.ndarray) -> np.ndarray:
    """Sum 2x2 blocks over the first two axes (an odd last row/column is kept alone)."""
    h, w = a.shape[:2]
    rows = a[0 : h - 1 : 2] + a[1:h:2]
    if h % 2:
        rows = np.concatenate([rows, a[h - 1 : h]], axis=0)
    out = rows[:, 0 : w - 1 : 2] + rows[:, 1:w:2]
    if w % 2:
        out = np.concatenate([out, rows[:, w - 1 : w]], axis=1)
    return out


def requantise(sums: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantise mean vectors ``sums / count`` like the producer: ``(codes, scales)``.

    ``scale = max|mean| / 127`` and ``code = round(mean / scale)``; as the count cancels,
    ``code = round(sums * 127 / max|sums|)``. ``sums`` is overwritten. Pixels with
    ``count == 0`` are nodata; an all-zero mean gets codes 0 and scale 1/127.
    """
    has = count > 0
    peak = np.maximum(sums.max(axis=-1), -sums.min(axis=-1))
    nonzero = has & (peak > 0)
    factor = np.divide(np.float32(127), peak, out=np.zeros_like(peak), where=nonzero)
    sums *= factor[..., None]
    np.rint(sums, out=sums)
    np.clip(sums, -127, 127, out=sums)
    codes = sums.astype(np.int8)
    codes[~has] = CODE_NODATA
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (peak / (np.float32(127) * count)).astype(np.float32)
    scale[has & ~nonzero] = np.float32(1 / 127)
    scale[~has] = np.float32(np.nan)
    return codes, scale


def _level1_sums(
    codes: np.ndarray, scales: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sums of dequantised valid vectors over 2x2 blocks, and valid counts (strip by strip)."""
    height, width, bands = codes.shape
    s_eff = np.where(valid, scales, np.float32(0)).astype(np.float32)
    sums = np.empty((math.ceil(height / 2), math.ceil(width / 2), bands), np.float32)
    work = np.empty((ROWS_PER_STRIP, width, bands), np.float32)
    half = width // 2
    for r0 in range(0, height, ROWS_PER_STRIP):  # ROWS_PER_STRIP is even
        r1 = min(r0 + ROWS_PER_STRIP, height)
        n = r1 - r0
        x = work[:n]
        x[...] = codes[r0:r1]
        x *= s_eff[r0:r1, :, None]
        rows = x[0 : n - 1 : 2]
        rows += x[1:n:2]
        if n % 2:
            rows = np.concatenate([rows, x[n - 1 : n]], axis=0)
        target = sums[r0 // 2 : r0 // 2 + rows.shape[0]]
        np.add(rows[:, 0 : 2 * half : 2], rows[:, 1 : 2 * half : 2], out=target[:, :half])
        if width % 2:
            target[:, half] = rows[:, width - 1]
    return sums, _pair_sum(valid.astype(np.int32))


def build_overviews(
    codes: np.ndarray, scales: np.ndarray, valid: np.ndarray, factors: Sequence[int]
) -> list[Overview]:
    """Overviews at ``factors`` (powers of two: 2, 4, 8...), averaged in float space.

    Sizes follow GDAL: ``ceil(size / factor)`` per axis. Each level is the exact mean over the
    valid full-resolution pixels of its block (sums and counts are carried down the pyramid).
    """
    if not factors:
        return []
    if any(f < 2 or f & (f - 1) for f in factors):
        raise ValueError(f"overview factors must be powers of two >= 2: {factors}")
    sums, count = _level1_sums(codes, scales, valid)
    levels: list[Overview] = []
    factor, last = 2, max(factors)
    while True:
        following = (_pair_sum(sums), _pair_sum(count)) if factor < last else None
        if factor in factors:
            q, s = requantise(sums, count)
            levels.append(Overview(factor, q, s, count))
        if following is None:
            return levels
        (sums, count), factor = following, factor * 2


# -------------------------------------------------------------------------------- writer
def _mem_uri(array: np.ndarray) -> str:
    """GDAL MEM dataset over a C-contiguous (H, W, bands) or (H, W) numpy buffer (zero-copy)."""
    if not array.flags.c_contiguous:
        raise ValueError("array must be C-contiguous")
    a3 = array if array.ndim == 3 else array[..., None]
    height, width, bands = a3.shape
    item = a3.dtype.itemsize
    gdal_type = {"int8": "Int8", "float32": "Float32", "uint8": "Byte"}[a3.dtype.name]
    pointer = array.__array_interface__["data"][0]
    return (
        f"MEM:::DATAPOINTER={pointer},PIXELS={width},LINES={height},BANDS={bands},"
        f"DATATYPE={gdal_type},PIXELOFFSET={bands * item},LINEOFFSET={width * bands * item},"
        f"BANDOFFSET={item}"
    )


def _vrt_xml(
    base: np.ndarray,
    overviews: Sequence[np.ndarray],
    profile: CogProfile,
    georef: TileGeoref,
    tags: Mapping[str, str],
) -> str:
    """A VRT over the base array with our overview arrays declared per band."""
    gdal_type = {"int8": "Int8", "float32": "Float32"}[profile.dtype]
    nodata = (
        "nan"
        if isinstance(profile.nodata, float) and math.isnan(profile.nodata)
        else str(profile.nodata)
    )
    base_uri = escape(_mem_uri(base))
    ov_uris = [escape(_mem_uri(o)) for o in overviews]
    gt = georef.transform
    parts = [
        f'<VRTDataset rasterXSize="{georef.width}" rasterYSize="{georef.height}">',
        f"<SRS>EPSG:{georef.epsg}</SRS>",
        f"<GeoTransform>{gt[2]!r},{gt[0]!r},{gt[1]!r},{gt[5]!r},{gt[3]!r},{gt[4]!r}</GeoTransform>",
        "<Metadata>",
        *(f'<MDI key="{escape(k)}">{escape(v)}</MDI>' for k, v in tags.items()),
        "</Metadata>",
    ]
    for band in range(1, profile.count + 1):
        parts.append(f'<VRTRasterBand dataType="{gdal_type}" band="{band}">')
        parts.append(f"<NoDataValue>{nodata}</NoDataValue>")
        parts.append(f"<Description>{escape(profile.band_names[band - 1])}</Description>")
        parts.append(
            f"<SimpleSource><SourceFilename>{base_uri}</SourceFilename>"
            f"<SourceBand>{band}</SourceBand></SimpleSource>"
        )
        for uri in ov_uris:
            parts.append(
                f"<Overview><SourceFilename>{uri}</SourceFilename>"
                f"<SourceBand>{band}</SourceBand></Overview>"
            )
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)


def cog_options(profile: CogProfile, threads: int = 1) -> dict[str, Any]:
    """GDAL COG-driver creation options for a profile."""
    opts: dict[str, Any] = {
        "BLOCKSIZE": profile.blocksize,
        "COMPRESS": profile.compress,
        "PREDICTOR": {1: "NO", 2: "STANDARD", 3: "FLOATING_POINT"}[profile.predictor],
        "BIGTIFF": "IF_SAFER",
        "OVERVIEWS": "FORCE_USE_EXISTING" if profile.overview_levels else "NONE",
        "NUM_THREADS": threads,
    }
    if profile.level is not None:
        opts["LEVEL"] = profile.level
    return opts


def write_cog(
    path: Path,
    profile: CogProfile,
    base: np.ndarray,
    overviews: Sequence[np.ndarray],
    georef: TileGeoref,
    tags: Mapping[str, str],
    threads: int = 1,
    cache_mb: int = 128,
) -> None:
    """Write ``base`` (+ its overview arrays, largest first) as a COG following ``profile``.

    Args:
        path: output file (local).
        profile: dtype, nodata, band names, block size, compression.
        base: (H, W, count) or (H, W) array on ``georef``'s grid, nodata already applied.
        overviews: arrays of the overview levels, in ``profile.overview_levels`` order.
        georef: CRS / transform / shape written unchanged.
        tags: dataset metadata (model version, year, tile...).
        threads: GDAL compression threads (1 when tiles run in parallel processes).
        cache_mb: GDAL block cache for this write (bounds worker memory).
    """
    import rasterio
    from rasterio.shutil import copy

    if base.shape[:2] != georef.shape:
        raise ValueError(f"array {base.shape[:2]} is not the grid {georef.shape}")
    if len(overviews) != len(profile.overview_levels):
        raise ValueError("one overview array per profile overview level is needed")
    arrays = [np.ascontiguousarray(a) for a in (base, *overviews)]
    xml = _vrt_xml(arrays[0], arrays[1:], profile, georef, tags)
    with rasterio.Env(GDAL_MEM_ENABLE_OPEN="YES", GDAL_CACHEMAX=cache_mb):
        copy(xml, str(path), driver="COG", **cog_options(profile, threads))
    del arrays  # the buffers had to stay alive until GDAL finished


def verify_cog(path: Path, profile: CogProfile, georef: TileGeoref) -> None:
    """Check a written COG before it is published: layout, grid, bands and COG validity.

    Raises:
        InputError: naming the file and what is wrong.
    """
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    problems: list[str] = []
    with rasterio.open(path) as ds:
        if ds.count != profile.count or ds.dtypes[0] != profile.dtype:
            problems.append(f"{ds.count} x {ds.dtypes[0]} bands, expected {profile.count}")
        if ds.crs is None or ds.crs.to_epsg() != georef.epsg:
            problems.append(f"CRS {ds.crs}, expected EPSG:{georef.epsg}")
        if tuple(ds.transform)[:6] != georef.transform or ds.shape != georef.shape:
            problems.append(f"grid {ds.shape} {tuple(ds.transform)[:6]} differs from the source")
        if ds.overviews(1) != list(profile.overview_levels):
            problems.append(f"overviews {ds.overviews(1)}, expected {profile.overview_levels}")
        if profile.count > 1 and (ds.interleaving is None or ds.interleaving.name != "pixel"):
            problems.append("not pixel-interleaved")
    valid, errors, _warnings = cog_validate(str(path), strict=True, quiet=True)
    if not valid:
        problems.extend(errors)
    if problems:
        raise InputError(f"{path.name}: written file failed verification: {'; '.join(problems)}")

"""The one source of truth for what the published files are.

The COG writer, the STAC item builder and the tests all read these profiles: change a block
size or a compression here and every part follows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from tessera_stac.catalog.constants import BAND_NAMES, CODE_NODATA, PNG_MEDIA_TYPE
from tessera_stac.catalog.constants import EMBEDDING_DIM as EMBEDDING_DIM  # re-exported


@dataclass(frozen=True)
class CogProfile:
    """A Cloud-Optimized GeoTIFF layout: dtype, nodata, bands, tiling, compression, overviews.

    Attributes:
        asset_key: STAC asset key the file is published under.
        filename: object name within a tile's folder.
        dtype: numpy / GDAL dtype name.
        count: number of bands.
        nodata: nodata value (``"nan"`` for float NaN).
        blocksize: internal tile size in pixels (square).
        compress: GDAL compression name (lossless).
        predictor: GDAL predictor (1 none, 2 horizontal, 3 floating point).
        level: compression level (``ZLEVEL``/``ZSTD_LEVEL``), None for the codec default.
        interleave: ``PIXEL`` so one read returns whole vectors.
        overview_levels: decimation factors of the overviews.
        band_names: one name per band.
        media_type: IANA media type of the file.
        roles: STAC asset roles.
    """

    asset_key: str
    filename: str
    dtype: str
    count: int
    nodata: float | int
    blocksize: int
    compress: str
    predictor: int
    level: int | None
    interleave: str
    overview_levels: tuple[int, ...]
    band_names: tuple[str, ...]
    media_type: str = "image/tiff; application=geotiff; profile=cloud-optimized"
    roles: tuple[str, ...] = ("data",)
    description: str = ""
    extra_creation_options: dict[str, str] = field(default_factory=dict)

    def creation_options(self) -> dict[str, Any]:
        """GDAL GTiff creation options for this profile (used for the COG write)."""
        opts: dict[str, Any] = {
            "TILED": "YES",
            "BLOCKXSIZE": self.blocksize,
            "BLOCKYSIZE": self.blocksize,
            "COMPRESS": self.compress,
            "PREDICTOR": self.predictor,
            "INTERLEAVE": self.interleave,
            "BIGTIFF": "IF_SAFER",
        }
        if self.level is not None:
            key = {"ZSTD": "ZSTD_LEVEL", "DEFLATE": "ZLEVEL", "LZMA": "LZMA_PRESET"}.get(
                self.compress.upper()
            )
            if key:
                opts[key] = self.level
        opts.update(self.extra_creation_options)
        return opts


#: both COGs: square internal tiles, lossless ZSTD, pixel-interleaved, overviews 2, 4, 8
_tessera_cog = functools.partial(
    CogProfile, blocksize=64, compress="ZSTD", interleave="PIXEL", overview_levels=(2, 4, 8)
)

# Block size measured in bench/results/blocksize.md (bench/bench_blocksize.py, the reader
# kernel on the same 4 real-size tiles at 64 and 128 px): 64 px blocks (512 KB of vectors)
# answer batches of points 1.3-1.9x faster, 256 px windows 1.6x, small zonal reads 1.4x; whole
# tiles, large zonal reads and map tiles (rio-tiler) within 6 %; a remote one-pixel read fetches
# a quarter of the bytes; the files are the same size (+0.3 %). bench/results/publish.md: 128 px
# read a point ~4x faster than 256 and ~19x faster than 512. Horizontal differencing
# (predictor 2) shrinks the int8 codes by ~25 %; with it ZSTD levels 1..9 give the same size,
# level 1 is fastest.
EMBEDDINGS = _tessera_cog(
    asset_key="embeddings",
    filename="embeddings.tif",
    dtype="int8",
    count=EMBEDDING_DIM,
    nodata=CODE_NODATA,
    predictor=2,
    level=1,
    band_names=BAND_NAMES,
    roles=("data", "embeddings"),
    description="TESSERA embedding codes: int8, 128 bands; multiply by the per-pixel scale",
)

SCALES = _tessera_cog(
    asset_key="scales",
    filename="scales.tif",
    dtype="float32",
    count=1,
    nodata=float("nan"),
    predictor=3,
    level=9,
    band_names=("scale",),
    roles=("data", "scales"),
    description="Per-pixel float32 scale of the embedding codes; NaN where the pixel is invalid",
)

PREVIEW_KEY = "preview"
PREVIEW_FILENAME = "preview.png"
PREVIEW_MEDIA_TYPE = PNG_MEDIA_TYPE

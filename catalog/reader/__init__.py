"""The one reader kernel: dequantised embeddings of any STAC Item, from its metadata alone.

Nothing here knows TESSERA: the codes asset, the dequantisation recipe, nodata rules and the
scale asset all come from the Item's ``embedding:`` fields (see ``schemas/README.md``), so the
same reader handles TESSERA's per-pixel scales, AlphaEarth's signed square, linear codes and
plain floats. The API's point and zonal routes, the MWS join, the demo and Python users all read
through it.

* :mod:`.item`: :class:`ItemRecipe` (codes asset, scale asset, recipe, hrefs of an Item),
  :func:`dequantize`, and :class:`EmbeddingReader` (one Item: ``read(window)``,
  ``read_point``, ``read_points``, ``profile``).
* :mod:`.blocks`: the block-wise kernel on open datasets: :func:`read_points` (a batch of
  points, each touched block read once), :func:`iter_polygon_pixels`,
  :func:`polygon_sums` (streamed, bounded memory), :func:`dequantize_pixels` (vectors of
  the pixels a strip yields).
* :mod:`.tiff`: the touched blocks of a local COG fetched and decoded directly (tifffile +
  imagecodecs, a small thread pool), pixel-interleaved; :func:`read_window` and
  :func:`read_pixels` fall back to GDAL for remote files (same values).
* :mod:`.gdal`: :data:`GDAL_READ_OPTIONS` (applied wherever a COG is opened), hrefs as GDAL
  paths, :class:`DatasetCache` (open handles kept across reads).
"""

from tessera_stac.catalog.hrefs import resolve_href
from tessera_stac.catalog.reader.blocks import (
    PointBatch,
    PolygonPixels,
    ZonalSums,
    crs_code,
    dequantize_pixels,
    iter_polygon_pixels,
    lattice_mask,
    owned_by_cell,
    owned_window,
    pixel_centres,
    polygon_mask,
    polygon_sums,
    polygon_window,
    read_points,
    sum_dequantized,
    valid_codes,
)
from tessera_stac.catalog.reader.gdal import (
    GDAL_READ_OPTIONS,
    DatasetCache,
    gdal_path,
    open_raster,
    rasterio_env,
)
from tessera_stac.catalog.reader.item import (
    EmbeddingReader,
    GridInfo,
    ItemRecipe,
    PointSample,
    dequantize,
    quantization_of,
    scale_validity,
    select_codes_asset,
)
from tessera_stac.catalog.reader.tiff import (
    TiffBlocks,
    read_ahead,
    read_pixels,
    read_window,
    set_block_cache,
)

__all__ = [
    "GDAL_READ_OPTIONS",
    "DatasetCache",
    "EmbeddingReader",
    "GridInfo",
    "ItemRecipe",
    "PointBatch",
    "PointSample",
    "PolygonPixels",
    "TiffBlocks",
    "ZonalSums",
    "crs_code",
    "dequantize",
    "dequantize_pixels",
    "gdal_path",
    "iter_polygon_pixels",
    "lattice_mask",
    "open_raster",
    "owned_by_cell",
    "owned_window",
    "pixel_centres",
    "polygon_mask",
    "polygon_sums",
    "polygon_window",
    "quantization_of",
    "rasterio_env",
    "read_ahead",
    "read_pixels",
    "read_points",
    "read_window",
    "resolve_href",
    "scale_validity",
    "select_codes_asset",
    "set_block_cache",
    "sum_dequantized",
    "valid_codes",
]

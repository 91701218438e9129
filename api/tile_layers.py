"""More map-tile layers of the embeddings: similarity to a watershed, change between two years.

Hooked into ``api.tiles`` (its ``ALGORITHMS`` and ``post_process``), on the same assets
(``assets=embeddings&assets=scales``) and endpoints as ``pca`` and ``similarity``:

* ``algorithm=similarity&algorithm_params={"uid": "14_51019"}``: the query vector is the
  watershed's mean vector of the year (the join's table, loaded by ``tessera-stac load`` into
  ``tessera_features.mws_vectors``); ``"item"`` picks the join item when the uid is in several
  blocks (409 otherwise), ``"year"`` another year than the tile's;
* ``algorithm=change&algorithm_params={"year": 2023}``: per pixel, the cosine distance between
  the tile's year and the other year (``catalog.change.cosine_distance``, the definition the
  change COGs and tables use), over the pixels valid in both; a float band (0..2), drawn with
  e.g. ``rescale=0,1&colormap_name=magma``. The other year is read for the same output pixels
  (rio-tiler ``part`` on the same bounds, size and nearest resampling as the tile, each pixel
  from the item of its own 0.1° cell: both years of a cell share one grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from titiler.core.algorithm.base import BaseAlgorithm

from tessera_stac.catalog.change import cosine_distance
from tessera_stac.catalog.constants import (
    EMBEDDING_DIM,
    FEATURES_SCHEMA,
    MWS_VECTORS_TABLE,
)
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.profile import EMBEDDINGS, SCALES

#: the most 0.1° cells one change tile may read the other year of, when the app's settings
#: do not say (``tile_max_items``; the tile budget refuses larger mosaic tiles before this)
MAX_CHANGE_CELLS = 16
Resolver = Callable[[str], "tuple[str, str] | None"]


# ----------------------------------------------------------------- similarity by uid
def param_year(params: dict[str, Any]) -> int | None:
    """``year`` of algorithm_params when given (400 when not a year in 1900-2200)."""
    if params.get("year") in (None, ""):
        return None
    try:
        year = int(params["year"])
    except (TypeError, ValueError) as exc:
        raise HTTPException(400, f"year must be an integer, got {params['year']!r}") from exc
    if not 1900 <= year <= 2200:
        raise HTTPException(400, f"year {year} is out of range (1900-2200)")
    return year


def uid_vector(pool: Any, uid: str, year: int, item: str | None) -> list[float]:
    """The mean vector of watershed ``uid`` in ``year`` (404 unknown or without a valid pixel,
    409 in several blocks without ``item``)."""
    if len(uid) > 200:
        raise HTTPException(400, "uid is longer than 200 characters")
    sql = (
        f"SELECT item, mean FROM {FEATURES_SCHEMA}.{MWS_VECTORS_TABLE} "
        "WHERE uid = %s AND year = %s" + (" AND item = %s" if item else "")
    )
    args: tuple[Any, ...] = (uid, year, item) if item else (uid, year)
    from psycopg.errors import UndefinedTable

    try:
        with pool.connection() as conn:
            rows = conn.execute(sql, args).fetchall()
    except UndefinedTable:  # the table is created by the first load with watersheds
        rows = []
    if not rows:
        raise HTTPException(404, f"no watershed with uid {uid!r} loaded for {year}")
    if len(rows) > 1:
        names = ", ".join(sorted(str(r[0]) for r in rows))
        raise HTTPException(409, f"uid {uid!r} is in several blocks ({names}); pass item")
    mean = rows[0][1]
    if mean is None:
        raise HTTPException(404, f"watershed {uid!r} has no valid pixel in {year}: no vector")
    return [float(v) for v in mean]


# --------------------------------------------------------------------------- change
def other_year(params: dict[str, Any], this_year: int) -> int:
    """The other year of a change layer (400 when missing, not a year, or the same)."""
    year = param_year(params)
    if year is None:
        raise HTTPException(400, 'change needs algorithm_params {"year": <other year>}')
    if year == this_year:
        raise HTTPException(400, f"change needs another year than the tile's ({this_year})")
    return year


def _cells(
    bounds: tuple[float, float, float, float], crs: Any, limit: int = MAX_CHANGE_CELLS
) -> list[GridCell]:
    from rasterio.warp import transform_bounds

    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    xs = range(math.floor(west * 10), math.floor(east * 10) + 1)
    ys = range(math.floor(south * 10), math.floor(north * 10) + 1)
    if len(xs) * len(ys) > limit:
        raise HTTPException(
            413,
            f"a change tile may cover at most {limit} 0.1° cells (tile_max_items) "
            f"(this one covers {len(xs) * len(ys)}): zoom in",
        )
    return [GridCell(round(x / 10 + 0.05, 2), round(y / 10 + 0.05, 2)) for x in xs for y in ys]


def _read_other(
    img: ImageData, hrefs: tuple[str, str], reader: type[Reader] = Reader
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes (h, w, dims), scales (h, w), masked (h, w)) of another item, on ``img``'s grid."""
    assert img.bounds is not None, "a tile always has bounds"
    out = []
    for href in hrefs:
        with reader(href) as src:
            part = src.part(
                img.bounds,
                dst_crs=img.crs,
                bounds_crs=img.crs,
                width=img.width,
                height=img.height,
                max_size=None,
                resampling_method="nearest",
                reproject_method="nearest",
            )
        out.append(part)
    codes = np.moveaxis(np.ma.getdata(out[0].array), 0, -1)
    scales = np.ma.getdata(out[1].array)[0]
    masked = np.ma.getmaskarray(out[0].array).any(axis=0) | np.ma.getmaskarray(out[1].array)[0]
    return codes, scales, masked


class EmbeddingChange(BaseAlgorithm):
    """Cosine distance per pixel between the tile's year and another year."""

    title: str = "Change between two years"
    description: str = "1 - cos(a, b) of each pixel's dequantised vectors (float, 0..2)."
    input_nbands: int = EMBEDDING_DIM + 1
    output_nbands: int = 1
    output_dtype: str = "float32"
    #: the other year's (embeddings, scales) GDAL paths of a cell name, or None
    resolve: Callable[[str], Any]
    #: the tile is a mosaic of cells (each pixel from its own cell) or one item
    item_cell: str | None = None
    #: rio-tiler reader of the other year (the app's budget reader: each read bounded)
    reader: Any = Reader
    max_cells: int = MAX_CHANGE_CELLS

    def __call__(self, img: ImageData) -> ImageData:
        """Read the other year on the same pixels (its int8 codes and scales, per cell), then
        the distance a band of rows at a time (:func:`api.tiles.dequantised_rows`): both years'
        float vectors and their float64 products exist for 32 rows, not the whole tile (each
        pixel gets the same arithmetic, so the same bits; tests compare)."""
        from tessera_stac.api.tiles import _check_bands, _image, cell_mask, dequantised_rows
        from tessera_stac.catalog.reader import dequantize
        from tessera_stac.catalog.stac import embeddings_quantization

        _check_bands(img)  # before reading the other year
        assert img.bounds is not None, "a tile always has bounds"
        cells = (
            [GridCell.parse(self.item_cell)]
            if self.item_cell
            else _cells(tuple(img.bounds), img.crs, self.max_cells)
        )
        others = []  # per cell of the other year: codes, scales, pixels it answers
        for cell in cells:
            hrefs = self.resolve(cell.name)
            if hrefs is None:
                continue
            codes, scales, masked = _read_other(img, hrefs, self.reader)
            inside = (
                np.ones(masked.shape, dtype=bool)
                if self.item_cell
                else ~cell_mask(img, cell.bounds)
            )
            others.append((codes, scales, ~masked & inside))
        recipe = embeddings_quantization()
        out = np.empty((img.height, img.width), dtype=np.float32)
        valid_out = np.empty((img.height, img.width), dtype=bool)
        for rows, values, valid in dequantised_rows(img):
            other = np.full(values.shape, np.nan, dtype=np.float32)
            other_valid = np.zeros(valid.shape, dtype=bool)
            for codes, scales, usable in others:
                band = codes[rows]
                band = np.where(np.isfinite(band), band, EMBEDDINGS.nodata)
                vals, ok = dequantize(band, recipe, scales[rows])
                ok &= usable[rows]
                other[ok] = vals[ok]
                other_valid |= ok
            dist, both = cosine_distance(values, other, valid & other_valid)
            out[rows] = np.where(both, dist, 0)  # float64 -> float32 as .astype would
            valid_out[rows] = both
        return _image(img, out[None], valid_out, ["cosine_distance"])


def change_resolver(
    request: Request, collection_id: str, year: int, gdal_path: Callable[[str], str]
) -> Callable[[str], tuple[str, str] | None]:
    """Cell name -> the other year's (embeddings, scales) GDAL paths, from pgSTAC."""
    from tessera_stac.api.tiles import stac_item

    def resolve(cell: str) -> tuple[str, str] | None:
        try:
            item = stac_item(request, collection_id, f"{cell}_{year}")
        except HTTPException:
            return None
        except Exception as exc:  # titiler-pgstac: item not found
            if "not found" in str(exc).lower() or "No item" in str(exc):
                return None
            raise
        assets = item.assets
        if EMBEDDINGS.asset_key not in assets or SCALES.asset_key not in assets:
            return None
        return (
            gdal_path(assets[EMBEDDINGS.asset_key].href),
            gdal_path(assets[SCALES.asset_key].href),
        )

    return resolve


def change_algorithm(
    request: Request, collection_id: str, params: dict[str, Any], this_year: int
) -> EmbeddingChange:
    """The change layer of a tile request (an Item's, or a year's mosaic)."""
    year = other_year(params, this_year)
    gdal_path: Callable[[str], str] = getattr(request.app.state, "tile_gdal_path", str)
    resolve = change_resolver(request, collection_id, year, gdal_path)
    item_id = request.path_params.get("item_id")
    cell = None
    if item_id:
        cell = str(item_id).rsplit("_", 1)[0]
        try:
            GridCell.parse(cell)
        except ValueError as exc:
            raise HTTPException(400, f"item {item_id!r} is not a grid cell's embeddings") from exc
        if resolve(cell) is None:
            raise HTTPException(404, f"no published tile for {cell} in {year}")
    from tessera_stac.api import budget

    settings = request.app.state.api_settings
    return EmbeddingChange(
        resolve=resolve,
        item_cell=cell,
        reader=budget.budget_reader(settings),
        max_cells=settings.tile_max_items,
    )


ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"change": EmbeddingChange}

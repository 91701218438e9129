"""Map tiles of the embeddings, from pgSTAC, in the API process (titiler-pgstac / titiler-core).

Everything is under ``/tiles`` (one origin, one port with the STAC API):

* ``/tiles/collections/{collection}/items/{item}/...``: one Item (titiler-pgstac's STAC item
  factory): ``tiles/{tms}/{z}/{x}/{y}[.{format}]``, ``{tms}/tilejson.json``,
  ``WMTSCapabilities.xml``, ``info``, ``point``...;
* ``/tiles/collections/{collection}/years/{year}/...``: the mosaic of a Collection's Items of
  one year (a pgSTAC search), the same endpoints. Every Item is read only inside its own 0.1°
  cell (``CellSTACReader``), so neighbouring tiles (and UTM zones) meet without a seam and
  without drawing their overlap twice; invalid pixels are transparent.

Layers (query parameters, see :func:`layer_query`):

* any three dimensions as RGB: ``assets=embeddings|bidx=1,2,3&rescale=-127,127`` (the int8
  codes lie in [-127, 127], -128 is nodata);
* the scales: ``assets=scales&rescale=0,0.1&colormap_name=magma``;
* ``algorithm=pca`` on ``assets=embeddings&assets=scales``: the dequantised vectors projected on
  the Collection's stored PCA basis (``tessera:projection``), the same colours in every tile
  and year;
* ``algorithm=similarity&algorithm_params={"lon":..,"lat":..}`` (or ``{"vector": [...]}``) on
  the same assets: cosine similarity of every dequantised vector to the one at the point
  ("find places like this"); a float band, drawn with ``rescale=0,1&colormap_name=viridis``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import attr
import morecantile
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from psycopg_pool import ConnectionPool
from pydantic import BeforeValidator
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from titiler.core.algorithm import algorithms as default_algorithms
from titiler.core.algorithm.base import BaseAlgorithm
from titiler.core.errors import DEFAULT_STATUS_CODES
from titiler.core.factory import MultiBaseTilerFactory
from titiler.core.validation import validate_json
from titiler.extensions.wmts import wmtsExtension
from titiler.mosaic.errors import MOSAIC_STATUS_CODES
from titiler.mosaic.extensions.wmts import wmtsExtension as wmtsMosaicExtension
from titiler.pgstac import dependencies as pgstac_deps
from titiler.pgstac.backend import PGSTACBackend
from titiler.pgstac.errors import PGSTAC_STATUS_CODES
from titiler.pgstac.factory import MosaicTilerFactory
from titiler.pgstac.reader import PgSTACReader, SimpleSTACReader

from tessera_stac.api import budget, tile_layers
from tessera_stac.api.caches import KeptTileGeometry, LruCache, file_version
from tessera_stac.api.packed import (
    kernel_reads,
    mask_pixels,
    mosaic_tile,
    packed_parts,
    part_parts,
    tile_parts,
)
from tessera_stac.api.readers import ReadError, local_paths, read_point
from tessera_stac.catalog.constants import EMBEDDING_DIM, PROJECTION_FIELD
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.profile import EMBEDDINGS, SCALES
from tessera_stac.catalog.projection import apply_projection
from tessera_stac.catalog.reader import dequantize, scale_validity
from tessera_stac.catalog.stac import embeddings_quantization

PREFIX = "/tiles"
TMS = "WebMercatorQuad"
CACHE_SECONDS = 60.0
#: Query of the dequantised layers: codes then the per-pixel scale (129 bands).
VECTOR_ASSETS = [("assets", EMBEDDINGS.asset_key), ("assets", SCALES.asset_key)]


# ------------------------------------------------------------------------ algorithms
def dequantised(img: ImageData) -> tuple[np.ndarray, np.ndarray]:
    """(values (h, w, dims) float32 with NaN where invalid, valid (h, w)) of a 129-band image
    (the int8 codes, then the scale), dequantised with the published recipe."""
    _check_bands(img)
    return _dequantised_band(img, packed_parts(img), slice(None))


#: rows of a tile the map algorithms (PCA, similarity) dequantise and reduce at a time: 32
#: rows of a 256 px tile's 128 float32 dimensions are 4 MiB, where the whole tile is one
#: 32 MiB array (and its 32 MiB centred copy), which the allocator maps and zeroes afresh on
#: every request whatever its thresholds (glibc serves 32 MiB and more from ``mmap``). Each
#: pixel gets the same arithmetic in the same order, so the same bits (tests compare).
ROWS_AT_ONCE = 32


def dequantised_rows(
    img: ImageData, rows: int = ROWS_AT_ONCE
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """:func:`dequantised` of ``img``, ``rows`` rows at a time: (the rows, their values
    (rows, w, dims), their valid (rows, w)) in order."""
    _check_bands(img)
    parts = packed_parts(img)
    for start in range(0, img.height, rows):
        band = slice(start, min(start + rows, img.height))
        yield band, *_dequantised_band(img, parts, band)


def _dequantised_band(
    img: ImageData, parts: tuple[Any, Any] | None, band: slice
) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid) of rows ``band`` of ``img``: from its int8 codes and scales as read
    (``parts``, api.packed) when it has them, else from rio-tiler's 129-band stack."""
    if parts is not None:
        return dequantised_parts(parts[0][:, band], parts[1][:, band])
    return _dequantised_stack(img.array[:, band])


def _check_bands(img: ImageData) -> None:
    if img.count != EMBEDDING_DIM + 1:
        raise HTTPException(
            400,
            f"this layer needs the {EMBEDDINGS.asset_key} and {SCALES.asset_key} assets "
            f"({EMBEDDING_DIM + 1} bands), got {img.count} bands",
        )


def _dequantised_stack(array: np.ma.MaskedArray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`dequantised` of rio-tiler's 129-band (float) stack."""
    data = np.ma.getdata(array)
    masked = np.ma.getmaskarray(array).any(axis=0)
    codes = np.moveaxis(data[:EMBEDDING_DIM], 0, -1)
    if codes.dtype.kind == "f":  # a float read (e.g. a resampled mosaic): NaN is nodata
        codes = np.where(np.isfinite(codes), codes, EMBEDDINGS.nodata)
    values, valid = dequantize(codes, embeddings_quantization(), data[EMBEDDING_DIM])
    valid &= ~masked
    return values, valid


def dequantised_parts(
    codes_part: np.ma.MaskedArray, scale_part: np.ma.MaskedArray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`dequantised` of a packed image (int8 codes (128, h, w), scale (1, h, w)): the
    published recipe (:func:`dequantize`: NaN where a code or the scale is invalid) on the
    codes' own band-first layout, so the values, their memory order, and every sum over them
    (cosines) are those of the float stack; then the masks (mosaic cells) on ``valid``."""
    q = embeddings_quantization()
    codes = np.ma.getdata(codes_part)
    dtype = np.dtype(q.dtype)
    scales = np.ma.getdata(scale_part)[0].astype(dtype, copy=False)
    valid = scale_validity(scales, q)
    if q.nodata is not None:
        valid &= ~(codes == q.nodata).any(axis=0)
    # in one pass: float(code) * scale, rounded once, as astype-then-multiply would
    values = np.empty(codes.shape, dtype=dtype)
    np.multiply(codes, scales, out=values)
    np.copyto(values, dtype.type(np.nan), where=~valid)
    valid &= ~(np.ma.getmaskarray(codes_part).any(axis=0) | np.ma.getmaskarray(scale_part)[0])
    return np.moveaxis(values, 0, -1), valid


def _image(img: ImageData, array: np.ndarray, valid: np.ndarray, names: list[str]) -> ImageData:
    mask = np.broadcast_to(~valid, array.shape)
    return ImageData(
        np.ma.MaskedArray(array, mask=mask),
        assets=img.assets,
        crs=img.crs,
        bounds=img.bounds,
        band_names=names,
        band_descriptions=names,
    )


class EmbeddingProjection(BaseAlgorithm):
    """RGB of the dequantised vectors on a stored projection (PCA basis, mean, stretch)."""

    title: str = "Embeddings on the Collection's PCA axes"
    description: str = "Dequantised vectors projected on 3 stored axes, stretched to 0-255."
    input_nbands: int = EMBEDDING_DIM + 1
    output_nbands: int = 3
    output_dtype: str = "uint8"
    projection: dict[str, Any]

    def __call__(self, img: ImageData) -> ImageData:
        """Project and stretch (a band of rows at a time: :func:`dequantised_rows`)."""
        rgb = np.empty((3, img.height, img.width), dtype=np.uint8)
        valid = np.empty((img.height, img.width), dtype=bool)
        for rows, values, ok in dequantised_rows(img):
            rgb[:, rows] = np.moveaxis(apply_projection(values, self.projection), -1, 0)
            valid[rows] = ok
        return _image(img, rgb, valid, ["pc1", "pc2", "pc3"])


class EmbeddingSimilarity(BaseAlgorithm):
    """Cosine similarity of every dequantised vector to a query vector."""

    title: str = "Cosine similarity to a query embedding"
    description: str = "cos(v, q) of the dequantised vectors (float, -1..1)."
    input_nbands: int = EMBEDDING_DIM + 1
    output_nbands: int = 1
    output_dtype: str = "float32"
    vector: list[float]

    def __call__(self, img: ImageData) -> ImageData:
        """Cosine similarity (a band of rows at a time: :func:`dequantised_rows`)."""
        query = np.asarray(self.vector, dtype=np.float32)
        query_norm = np.float32(np.linalg.norm(query))
        cos = np.empty((img.height, img.width), dtype=np.float32)
        valid = np.empty((img.height, img.width), dtype=bool)
        for rows, values, ok in dequantised_rows(img):
            norms = np.linalg.norm(values, axis=-1) * query_norm
            with np.errstate(invalid="ignore", divide="ignore"):
                part = (values @ query) / norms
            ok &= np.isfinite(part)
            cos[rows] = np.where(ok, part, 0)
            valid[rows] = ok
        return _image(img, cos[None], valid, ["similarity"])


ALGORITHMS = {
    "pca": EmbeddingProjection,
    "similarity": EmbeddingSimilarity,
    **tile_layers.ALGORITHMS,  # change (api.tile_layers)
}
_BUILTIN = default_algorithms.list()


# ------------------------------------------------------------------------ readers
def _local_hrefs(data_dir: Any, root_path: str) -> Callable[[str], str]:
    """Href -> GDAL path: files the API serves under ``/data`` are read from disk."""
    return local_paths(data_dir, root_path.rstrip("/") + "/data/")


def cell_mask(img: ImageData, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """True where the centre of an output pixel lies outside the 0.1° cell of ``bbox``
    (half-open like ``GridCell.containing``: west/south edges in, east/north edges out)."""
    cell = GridCell.containing((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    west, south, _, _ = cell.bounds
    assert img.bounds is not None, "a tile always has bounds"
    cells_x, cells_y = _pixel_cells(tuple(img.bounds), img.width, img.height, str(img.crs))
    inside = (cells_x == round(west * 10)) & (cells_y == round(south * 10))
    return np.asarray(~inside)


@lru_cache(maxsize=32)
def _pixel_cells(
    bounds: tuple[float, ...], width: int, height: int, crs: str
) -> tuple[np.ndarray, np.ndarray]:
    """``floor(lon * 10)``, ``floor(lat * 10)`` of each output pixel centre of a tile: the
    same for every item of a mosaic tile, so computed once per tile."""
    from pyproj import Transformer

    left, bottom, right, top = bounds
    xs = left + (np.arange(width) + 0.5) * (right - left) / width
    ys = top - (np.arange(height) + 0.5) * (top - bottom) / height
    gx, gy = np.meshgrid(xs, ys)
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(gx, gy)
    cells_x, cells_y = np.floor(lon * 10), np.floor(lat * 10)
    cells_x.flags.writeable = False
    cells_y.flags.writeable = False
    return cells_x, cells_y


def item_reader(
    gdal_path: Callable[[str], str], asset_reader: type[Reader] = Reader
) -> type[PgSTACReader]:
    """PgSTACReader reading the API's own files from disk (each asset with ``asset_reader``)."""

    @attr.s
    class ItemReader(KeptTileGeometry, PgSTACReader):
        reader: type[Reader] = attr.ib(default=asset_reader)

        def _get_asset_info(self, asset: Any) -> Any:
            info = super()._get_asset_info(asset)
            info["url"] = gdal_path(info["url"])
            return info

        def tile(self, *args: Any, **kwargs: Any) -> ImageData:
            """rio-tiler's tile, codes + scales kept packed (:mod:`.packed`)."""
            img = tile_parts(self, *args, **kwargs)
            return img if img is not None else super().tile(*args, **kwargs)

        def part(self, bbox: Any, *args: Any, **kwargs: Any) -> ImageData:
            """rio-tiler's part (``/bbox``, ``/feature``), codes + scales kept packed."""
            img = part_parts(self, bbox, *args, **kwargs)
            return img if img is not None else super().part(bbox, *args, **kwargs)

    return ItemReader


def cell_reader(
    gdal_path: Callable[[str], str], asset_reader: type[Reader] = Reader
) -> type[SimpleSTACReader]:
    """Mosaic reader: an Item's pixels only inside its own 0.1° cell (no double drawing)."""

    @attr.s
    class CellSTACReader(KeptTileGeometry, SimpleSTACReader):
        reader: type[Reader] = attr.ib(default=asset_reader)

        def _get_asset_info(self, asset: Any) -> Any:
            info = super()._get_asset_info(asset)
            info["url"] = gdal_path(info["url"])
            return info

        def tile(self, *args: Any, **kwargs: Any) -> ImageData:
            img = tile_parts(self, *args, **kwargs)  # codes + scales kept packed
            if img is None:
                img = super().tile(*args, **kwargs)
            west, south, east, north = self.input["bbox"][:4]
            mask_pixels(img, cell_mask(img, (west, south, east, north)))
            return img

        @staticmethod
        def kernel_reads(items: list[dict[str, Any]], assets: Any) -> bool:
            """The kernel reads the ``assets`` (all when None) of every one of ``items``."""
            keys = [assets] if isinstance(assets, str) else assets
            urls = [
                gdal_path(str(asset.get("href", "")))
                for item in items
                for key, asset in (item.get("assets") or {}).items()
                if not keys or key in keys
            ]
            return kernel_reads(asset_reader, urls)

    return CellSTACReader


@attr.s
class CellMosaicBackend(PGSTACBackend):
    """titiler-pgstac's backend whose tiles are mosaicked by :func:`packed.mosaic_tile`
    (rio-tiler's ``mosaic_reader``, codes + scales kept packed): rio-tiler 9's
    ``BaseBackend.tile`` otherwise."""

    def tile(  # type: ignore[override]
        self, x: int, y: int, z: int, search_options: dict[str, Any] | None = None, **kwargs: Any
    ) -> tuple[ImageData, list[str]]:
        """Mosaic tile of the items over tile ``z/x/y``."""
        from rio_tiler.errors import NoAssetFoundError
        from rio_tiler.utils import Timer, inherit_rasterio_env

        timings = []
        with Timer() as t:
            mosaic_assets = self.assets_for_tile(x, y, z, **(search_options or {}))
        timings.append(("search", round(t.elapsed * 1000, 2)))
        if not mosaic_assets:
            raise NoAssetFoundError(f"No assets found for tile {z}-{x}-{y}")

        @inherit_rasterio_env
        def _reader(asset: Any, x: int, y: int, z: int, **options: Any) -> ImageData:
            with self.reader(asset, tms=self.tms, **self.reader_options) as src_dst:
                return src_dst.tile(x, y, z, **options)

        reads_in_kernel = getattr(self.reader, "kernel_reads", None)  # cell_reader's
        if reads_in_kernel is not None and reads_in_kernel(mosaic_assets, kwargs.get("assets")):
            kwargs["threads"] = 1  # items read one after another (packed.kernel_reads)
        with Timer() as t:
            img, used = mosaic_tile(mosaic_assets, _reader, x, y, z, **kwargs)
        timings.append(("mosaicking", round(t.elapsed * 1000, 2)))
        img.metadata = {**(img.metadata or {}), "timings": timings}
        return img, [self.asset_name(asset) for asset in used]


# -------------------------------------------------------------------- dependencies
def _pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool | None = getattr(request.app.state, "dbpool", None)
    if pool is None:
        raise HTTPException(503, "the tile database pool is not open")
    return pool


_CACHE: dict[tuple[Any, ...], tuple[float, Any]] = {}
_LOCK = threading.Lock()


def _cached(function: Any, pool: ConnectionPool, *args: Any) -> Any:
    """titiler-pgstac's lookup without its process-wide cache (keyed without the database),
    cached here per pool: an app never sees another database's searches or items."""
    key = (id(pool), function.__name__, *args)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = function.__wrapped__(pool, *args)
    with _LOCK:
        if len(_CACHE) > 10_000:
            _CACHE.clear()
        _CACHE[key] = (time.monotonic(), value)
    return value


def stac_item(request: Request, collection_id: str, item_id: str) -> Any:
    """The pystac Item (cached briefly, per database)."""
    return _cached(pgstac_deps.get_stac_item, _pool(request), collection_id, item_id)


def ItemParams(  # noqa: N802 (a titiler path dependency)
    request: Request,
    collection_id: Annotated[str, Path(description="STAC Collection identifier")],
    item_id: Annotated[str, Path(description="STAC Item identifier")],
) -> Any:
    """The Item of the path, from pgSTAC."""
    return stac_item(request, collection_id, item_id)


_FIELDS: dict[tuple[int, str, str], tuple[float, tuple[bool, Any]]] = {}


def collection_field(request: Request, collection_id: str, field: str) -> tuple[bool, Any]:
    """(the Collection exists, its top-level ``field`` or None), cached briefly per pool."""
    key = (id(_pool(request)), collection_id, field)
    with _LOCK:
        hit = _FIELDS.get(key)
    if hit is None or time.monotonic() - hit[0] > CACHE_SECONDS:
        with _pool(request).connection() as conn:
            row = conn.execute(
                "SELECT content -> %s FROM pgstac.collections WHERE id = %s",
                (field, collection_id),
            ).fetchone()
        hit = (time.monotonic(), (row is not None, row[0] if row else None))
        with _LOCK:
            if len(_FIELDS) > 1_000:
                _FIELDS.clear()
            _FIELDS[key] = hit
    return hit[1]


def collection_projection(request: Request, collection_id: str) -> dict[str, Any]:
    """The Collection's stored projection (cached briefly); 404 when it has none."""
    _, projection = collection_field(request, collection_id, PROJECTION_FIELD)
    if not projection:
        raise HTTPException(
            404, f"collection {collection_id!r} has no stored projection ({PROJECTION_FIELD})"
        )
    return dict(projection)


def _year_of(request: Request) -> int:
    params = request.path_params
    if "year" in params:
        return int(params["year"])
    item = stac_item(request, params["collection_id"], params["item_id"])
    return int(item.datetime.year if item.datetime else item.common_metadata.start_datetime.year)


def query_vector(request: Request, collection_id: str, params: dict[str, Any]) -> list[float]:
    """The query of a similarity layer: ``vector``, a watershed's mean vector (``uid``), or
    the embedding at ``lon``/``lat``."""
    if "uid" in params:  # api.tile_layers
        year = tile_layers.param_year(params) or _year_of(request)
        item = str(params["item"]) if params.get("item") else None
        return tile_layers.uid_vector(_pool(request), str(params["uid"]), year, item)
    if "vector" in params:
        vector = [float(v) for v in params["vector"]]
        if len(vector) != EMBEDDING_DIM:
            raise HTTPException(400, f"vector has {len(vector)} values, not {EMBEDDING_DIM}")
        return vector
    try:
        lon, lat = float(params["lon"]), float(params["lat"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HTTPException(
            400, "similarity needs algorithm_params lon and lat, or vector"
        ) from exc
    if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lon) > 180 or abs(lat) > 90:
        raise HTTPException(400, "lon/lat must be finite, within ±180 / ±90")
    year = int(params.get("year") or _year_of(request))
    cell = GridCell.containing(lon, lat)
    try:
        item = stac_item(request, collection_id, f"{cell.name}_{year}")
    except HTTPException as exc:
        raise HTTPException(404, f"no published tile for {cell.name} in {year}") from exc
    return point_vector(request, collection_id, item, lon, lat)


def point_vector(
    request: Request, collection_id: str, item: Any, lon: float, lat: float
) -> list[float]:
    """The embedding of ``item`` at ``lon``/``lat``, kept per worker (``tile_vectors``, an LRU
    of ``tile_vector_cache_size``) for the tiles of one similarity layer. A kept vector is used
    only for the same Item object (the Item lookup's own cache hands out a new one when it
    reads pgSTAC again) and the same versions (path, size, mtime, inode) of its local codes and
    scales files, so a reload or a republished file is read anew."""
    from tessera_stac.api.embeddings import readers

    cache: LruCache | None = getattr(request.app.state, "tile_vectors", None)
    gdal_path = getattr(request.app.state, "tile_gdal_path", None)
    assets = item.assets
    versions = tuple(
        file_version(gdal_path(assets[key].href)) if gdal_path and key in assets else None
        for key in (EMBEDDINGS.asset_key, SCALES.asset_key)
    )
    key = (id(_pool(request)), collection_id, item.id, lon, lat, versions)
    hit = cache.get(key) if cache is not None else None
    if hit is not None and hit[0] is item:
        return list(hit[1])
    try:
        value = read_point(readers(request), item.to_dict(transform_hrefs=False), lon, lat)
    except ReadError as exc:
        raise HTTPException(exc.status, exc.description) from exc
    vector = [float(v) for v in value.vector]
    if cache is not None:
        cache.put(key, (item, tuple(vector)))
    return vector


def algorithm_query(
    algorithm: Annotated[
        Literal[tuple(sorted({*ALGORITHMS, "classify", *_BUILTIN}))] | None,  # type: ignore[valid-type]
        Query(description="pca, similarity, change, classify (embeddings) or a titiler algorithm"),
    ] = None,
    algorithm_params: Annotated[
        str | None,
        BeforeValidator(validate_json),
        Query(
            description='JSON: for similarity {"lon": x, "lat": y}, {"vector": [...]} or '
            '{"uid": "..."} (a watershed); for change {"year": other year}; '
            'for classify {"model": NAME}'
        ),
    ] = None,
) -> tuple[str | None, dict[str, Any]]:
    """The algorithm query parameters, checked (no database): WMTS layers validate with it."""
    params = json.loads(algorithm_params) if algorithm_params else {}
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise HTTPException(400, "algorithm_params must be a JSON object")
    if algorithm and algorithm not in ALGORITHMS and algorithm != "classify":  # api.classify
        try:
            default_algorithms.get(algorithm)(**params)
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise HTTPException(
                400, f"algorithm_params do not fit {algorithm}: {str(exc)[:300]}"
            ) from None
    return algorithm, params


def post_process(
    request: Request, query: Annotated[tuple[str | None, dict[str, Any]], Depends(algorithm_query)]
) -> BaseAlgorithm | None:
    """Our algorithms with what they need from pgSTAC, else titiler's own."""
    algorithm, params = query
    collection_id = request.path_params.get("collection_id", "")
    if algorithm == "pca":
        return EmbeddingProjection(projection=collection_projection(request, collection_id))
    if algorithm == "similarity":
        return EmbeddingSimilarity(vector=query_vector(request, collection_id, params))
    if algorithm == "change":  # api.tile_layers
        return tile_layers.change_algorithm(request, collection_id, params, _year_of(request))
    if algorithm == "classify":
        from tessera_stac.api.classify import classify_algorithm

        return classify_algorithm(request, params)
    if algorithm:
        return default_algorithms.get(algorithm)(**params)
    return None


def CollectionYearParams(  # noqa: N802 (a titiler path dependency)
    request: Request,
    collection_id: Annotated[str, Path(description="STAC Collection identifier")],
    year: Annotated[int, Path(description="Year of the embeddings", ge=1900, le=2200)],
) -> str:
    """The pgSTAC search (hash) of a Collection's Items of one year."""
    return str(
        _cached(
            pgstac_deps.get_collection_id,
            _pool(request),
            collection_id,
            None,
            None,
            f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
            None,
            None,
            None,
            "cql2-text",
        )
    )


# -------------------------------------------------------------------------- layers
def layer_query(
    layer: str, lon: float | None = None, lat: float | None = None
) -> list[tuple[str, str]]:
    """Query parameters of a named layer: ``pca``, ``rgb`` (dims 1-3), ``scales``,
    ``similarity`` (needs ``lon``/``lat``)."""
    if layer == "pca":
        return [*VECTOR_ASSETS, ("algorithm", "pca")]
    if layer == "rgb":
        return [
            ("assets", f"{EMBEDDINGS.asset_key}|bidx=1,2,3"),
            ("rescale", "-127,127"),
            ("resampling", "nearest"),
        ]
    if layer == "scales":
        return [("assets", SCALES.asset_key), ("rescale", "0,0.1"), ("colormap_name", "magma")]
    if layer == "similarity":
        return [
            *VECTOR_ASSETS,
            ("algorithm", "similarity"),
            ("algorithm_params", json.dumps({"lon": lon, "lat": lat}, separators=(",", ":"))),
            ("rescale", "0,1"),
            ("colormap_name", "viridis"),
        ]
    raise ValueError(f"unknown layer {layer!r}")


def asset_tile_query() -> dict[str, str]:
    """Query string of the default layer of each embedding asset (STAC Browser's renderer)."""
    return {
        EMBEDDINGS.asset_key: urlencode(layer_query("rgb")),
        SCALES.asset_key: urlencode(layer_query("scales")),
    }


def tile_urls(
    base: str,
    collection_id: str,
    layer: str,
    *,
    item_id: str | None = None,
    year: int | None = None,
    lon: float | None = None,
    lat: float | None = None,
) -> dict[str, str]:
    """XYZ template, TileJSON and WMTS capabilities URLs of a layer (an Item or a year)."""
    root = f"{base.rstrip('/')}{PREFIX}/collections/{collection_id}"
    root += f"/items/{item_id}" if item_id else f"/years/{year}"
    query = urlencode(layer_query(layer, lon, lat))
    return {
        "xyz": f"{root}/tiles/{TMS}/{{z}}/{{x}}/{{y}}.png?{query}",
        "tilejson": f"{root}/{TMS}/tilejson.json?{query}",
        "wmts": f"{root}/WMTSCapabilities.xml?{query}",
    }


# ---------------------------------------------------------------------- map links
LAYER_TITLES = {
    "pca": "Embeddings: PCA colours (dequantised, the collection's basis)",
    "rgb": "Embeddings: dimensions 1-3 as RGB (int8 codes)",
    "scales": "Per-pixel scales",
}
#: wmts:layer of the query-parameter layer in our capabilities documents.
MOSAIC_LAYER = "mosaic"


def wmts_layer(identifier: str) -> str:
    """The WMTS layer name titiler gives the layer described by the query parameters."""
    return f"{identifier}_{TMS}_default"


def _links(urls: list[tuple[str, dict[str, str]]], identifier: str) -> list[dict[str, Any]]:
    """web-map-links (xyz per layer, then TileJSON and WMTS of the first layer)."""
    out: list[dict[str, Any]] = [
        {"rel": "xyz", "href": u["xyz"], "type": "image/png", "title": title} for title, u in urls
    ]
    title, first = urls[0]
    out.append(
        {"rel": "tilejson", "href": first["tilejson"], "type": "application/json", "title": title}
    )
    out.append(
        {
            "rel": "wmts",
            "href": first["wmts"],
            "type": "image/png",
            "title": f"{title} (WMTS, e.g. for QGIS)",
            "wmts:layer": wmts_layer(identifier),
        }
    )
    return out


def is_embedding_item(item: dict[str, Any]) -> bool:
    """An embedding Item: the int8 codes and the per-pixel scales assets."""
    assets = item.get("assets") or {}
    return EMBEDDINGS.asset_key in assets and SCALES.asset_key in assets


def _year(item: dict[str, Any]) -> int | None:
    props = item.get("properties") or {}
    for key in ("tessera:year", "start_datetime", "datetime"):
        value = props.get(key)
        if value:
            return int(str(value)[:4])
    return None


def item_map_links(
    item: dict[str, Any], base: str, projection_of: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """web-map-links of an Item: the embedding layers of an embedding Item, the tiles of a
    visual COG asset otherwise (e.g. the join's map), or nothing."""
    cid, iid = str(item.get("collection")), str(item.get("id"))
    if is_embedding_item(item):
        layers = (["pca"] if projection_of(cid) else []) + ["rgb", "scales"]
        urls = [(LAYER_TITLES[n], tile_urls(base, cid, n, item_id=iid)) for n in layers]
        return _links(urls, iid)
    from tessera_stac.api.classify import class_item_links

    if found := class_item_links(item, base):
        return found
    for key, asset in sorted((item.get("assets") or {}).items()):
        media = str(asset.get("type", ""))
        if "visual" in (asset.get("roles") or []) and "cloud-optimized" in media:
            root = f"{base.rstrip('/')}{PREFIX}/collections/{cid}/items/{iid}"
            query = urlencode([("assets", key)])
            asset_urls = {
                "xyz": f"{root}/tiles/{TMS}/{{z}}/{{x}}/{{y}}.png?{query}",
                "tilejson": f"{root}/{TMS}/tilejson.json?{query}",
                "wmts": f"{root}/WMTSCapabilities.xml?{query}",
            }
            return _links([(str(asset.get("title") or key), asset_urls)], iid)
    return []


def collection_map_links(collection: dict[str, Any], base: str) -> list[dict[str, Any]]:
    """web-map-links of an embedding Collection: the mosaic of each year of its extent
    (newest first), in PCA colours when it has a stored projection."""
    if EMBEDDINGS.asset_key not in (collection.get("item_assets") or {}):
        from tessera_stac.api.classify import class_collection_links

        return class_collection_links(collection, base)
    interval = ((collection.get("extent") or {}).get("temporal") or {}).get("interval") or []
    if not interval or not interval[0] or not interval[0][0]:
        return []
    start, end = interval[0][0], interval[0][1] or interval[0][0]
    years = list(range(int(str(end)[:4]), int(str(start)[:4]) - 1, -1))[:10]
    layer = "pca" if collection.get(PROJECTION_FIELD) else "rgb"
    cid = str(collection["id"])
    urls = [
        (f"{LAYER_TITLES[layer]}, {year}", tile_urls(base, cid, layer, year=year)) for year in years
    ]
    return _links(urls, MOSAIC_LAYER)


async def _has_projection(request: Request, collection_id: str) -> bool:
    """Whether the Collection stores a projection (its items' maps are then in PCA colours),
    kept per app for :data:`CACHE_SECONDS` like the tiles' other Collection fields (an item
    GET then makes no query of its own for it)."""
    state = request.app.state
    kept: dict[str, tuple[float, bool]] | None = getattr(state, "projection_cache", None)
    if kept is None:
        kept = state.projection_cache = {}
    hit = kept.get(collection_id)
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    async with state.get_connection(request, "r") as conn:
        has = bool(
            await conn.fetchval(
                "SELECT content ? $2 FROM pgstac.collections WHERE id = $1",
                collection_id,
                PROJECTION_FIELD,
            )
        )
    if len(kept) > 1_000:
        kept.clear()
    kept[collection_id] = (time.monotonic(), has)
    return has


async def add_item_links(item: dict[str, Any], request: Request) -> dict[str, Any]:
    """``item`` with its web-map-links (STAC Browser's Map view, QGIS) appended."""
    from stac_fastapi.types.requests import get_base_url

    has = await _has_projection(request, str(item.get("collection")))
    links = item_map_links(item, get_base_url(request), lambda _cid: has)
    item.setdefault("links", []).extend(links)
    return item


def add_collection_links(collection: dict[str, Any], request: Request) -> dict[str, Any]:
    """``collection`` with its web-map-links appended (the yearly mosaics)."""
    from stac_fastapi.types.requests import get_base_url

    collection.setdefault("links", []).extend(
        collection_map_links(collection, get_base_url(request))
    )
    return collection


# ---------------------------------------------------------------------------- mount
def _with_query_check(factory: Any, extension: Any) -> None:
    """Register a WMTS extension whose layer check validates our algorithm parameters
    without the database (titiler calls these dependencies with query parameters only)."""
    names = [
        "reader_dependency", "tile_dependency", "layer_dependency", "dataset_dependency",
        "colormap_dependency", "render_dependency", "pixel_selection_dependency",
        "assets_accessor_dependency", "backend_dependency",
    ]  # fmt: skip
    deps = [getattr(factory, n) for n in names if hasattr(factory, n)]
    extension(
        tile_dependencies=[*deps, algorithm_query],
        layer_identifier_provider=lambda src: str(getattr(src, "id", MOSAIC_LAYER)),
    ).register(factory)


def _budgeted(factory: Any) -> None:
    """Put :func:`tile_budget` in front of every route of a titiler factory (as titiler's
    ``add_route_dependencies`` does, for all routes)."""
    from fastapi.dependencies.utils import get_parameterless_sub_dependant
    from fastapi.routing import APIRoute

    for route in factory.router.routes:
        if isinstance(route, APIRoute):
            dependency = Depends(tile_budget)
            route.dependant.dependencies.insert(
                0, get_parameterless_sub_dependant(depends=dependency, path=route.path_format)
            )
            route.dependencies.append(dependency)


def mount_tiles(app: FastAPI, data_dir: Any, root_path: str = "", settings: Any = None) -> None:
    """Register the tile routes on ``app`` (the pool is opened by :func:`open_pool`); every
    route checks its budgets first (:func:`tile_budget`) and reads through the per-read guard
    (:class:`budget.BudgetReader`)."""
    from tessera_stac.api.classify import class_colormap
    from tessera_stac.api.settings import ApiSettings

    asset_reader = budget.budget_reader(settings or ApiSettings())
    gdal_path = _local_hrefs(data_dir, root_path)
    app.state.tile_gdal_path = gdal_path  # the change layer reads the other year with it
    app.state.tile_vectors = LruCache((settings or ApiSettings()).tile_vector_cache_size)
    items = MultiBaseTilerFactory(
        reader=item_reader(gdal_path, asset_reader),
        path_dependency=ItemParams,
        process_dependency=post_process,
        colormap_dependency=class_colormap,
        router_prefix=f"{PREFIX}/collections/{{collection_id}}/items/{{item_id}}",
        add_viewer=False,
        supported_tms=budget.SUPPORTED_TMS,
    )
    _with_query_check(items, wmtsExtension)
    _budgeted(items)
    app.include_router(
        items.router,
        prefix=f"{PREFIX}/collections/{{collection_id}}/items/{{item_id}}",
        tags=["Map tiles (Item)"],
    )
    mosaic = MosaicTilerFactory(
        backend=CellMosaicBackend,
        path_dependency=CollectionYearParams,
        dataset_reader=cell_reader(gdal_path, asset_reader),
        process_dependency=post_process,
        colormap_dependency=class_colormap,
        router_prefix=f"{PREFIX}/collections/{{collection_id}}/years/{{year}}",
        add_viewer=False,
        supported_tms=budget.SUPPORTED_TMS,
        add_statistics=False,
        add_part=False,
        add_ogc_maps=False,
    )
    _with_query_check(mosaic, wmtsMosaicExtension)
    _budgeted(mosaic)
    app.include_router(
        mosaic.router,
        prefix=f"{PREFIX}/collections/{{collection_id}}/years/{{year}}",
        tags=["Map tiles (mosaic of a year)"],
    )
    codes = {**DEFAULT_STATUS_CODES, **MOSAIC_STATUS_CODES, **PGSTAC_STATUS_CODES}
    for exc_type, status in codes.items():
        if exc_type is not Exception:
            app.add_exception_handler(exc_type, _tiler_error(status))


def _tiler_error(status: int) -> Callable[[Request, Exception], Any]:
    """titiler's status for its errors, in the API's error shape (``code``, ``description``)."""
    from fastapi.responses import JSONResponse

    from tessera_stac.api.errors import error_body

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        headers = {"Cache-Control": "no-cache"} if status == 204 else None
        if status == 204:
            from starlette.responses import Response

            return Response(status_code=204, headers=headers)  # type: ignore[return-value]
        return JSONResponse(
            status_code=status, content=error_body(type(exc).__name__, str(exc)[:500])
        )

    return handler


def warm_up() -> None:
    """What the first tile request would otherwise load: pystac's extension hooks (entry points
    and their modules, discovered by the first ``Item.from_dict``) and its ``ext`` accessors,
    which rio-tiler's STAC reader asks for the item's projection."""
    import pystac

    from tessera_stac.catalog.constants import PROJECTION_SCHEMA_URI

    item = pystac.Item.from_dict(
        {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": "warm-up",
            "stac_extensions": [PROJECTION_SCHEMA_URI],
            "geometry": {"type": "Point", "coordinates": [0.0, 0.0]},
            "bbox": [0, 0, 0, 0],
            "properties": {"datetime": "2024-01-01T00:00:00Z", "proj:code": "EPSG:4326"},
            "links": [],
            "assets": {},
        }
    )
    _ = item.ext.has("proj") and item.ext.proj.code


async def open_pool(app: FastAPI, dsn: str, max_size: int = 4) -> None:
    """The psycopg pool titiler-pgstac reads pgSTAC with (opened without waiting, so the API
    starts, and answers 503, while the database is down)."""
    app.state.dbpool = ConnectionPool(
        conninfo=dsn,
        min_size=1,
        max_size=max_size,
        kwargs={"options": "-c search_path=pgstac,public -c application_name=tessera-tiles"},
        open=True,
    )


def warm_pool(app: FastAPI, timeout: float) -> bool:
    """Run pgSTAC's search once on the tile pool's connection (``db.WARM_UP_SEARCH``, which
    matches nothing), waiting at most ``timeout`` s for it: PostgreSQL plans pgSTAC's PL/pgSQL
    functions in a backend's first call (0.1 s and more), which the first item tile (it looks
    its item up with that search) would otherwise pay. False when the database did not answer
    (errors are left to the requests, which answer 503)."""
    from psycopg import Error as PsycopgError
    from psycopg_pool import PoolTimeout

    from tessera_stac.api.db import WARM_UP_SEARCH

    pool: ConnectionPool | None = getattr(app.state, "dbpool", None)
    if pool is None:
        return False
    try:
        with pool.connection(timeout=timeout) as conn:
            conn.execute("SELECT * FROM pgstac.search(%s::text::jsonb) LIMIT 1", (WARM_UP_SEARCH,))
    except (PoolTimeout, PsycopgError, OSError):
        return False
    return True


async def close_pool(app: FastAPI) -> None:
    """Close the tile pool."""
    pool: ConnectionPool | None = getattr(app.state, "dbpool", None)
    if pool is not None:
        pool.close()
        app.state.dbpool = None


# ------------------------------------------------------------------------ budgets
def collection_item_assets(request: Request, collection_id: str) -> dict[str, Any]:
    """The Collection's ``item_assets`` (cached briefly); 404 when there is no such Collection."""
    exists, item_assets = collection_field(request, collection_id, "item_assets")
    if not exists:
        raise HTTPException(404, f"no collection {collection_id[:80]!r}")
    return dict(item_assets or {})


def _lonlat_bbox(request: Request) -> tuple[float, float, float, float]:
    params = request.path_params
    try:
        box = tuple(float(params[k]) for k in ("minx", "miny", "maxx", "maxy"))
    except (KeyError, ValueError):
        raise budget.bad("bbox must be four numbers") from None
    if not all(math.isfinite(v) for v in box):
        raise budget.bad("bbox must be finite")
    crs = request.query_params.get("coord_crs")
    if crs and crs.upper() not in ("EPSG:4326", "OGC:CRS84", "WGS84"):
        from pyproj import CRS, Transformer
        from pyproj.exceptions import CRSError

        try:
            to_lonlat = Transformer.from_crs(CRS.from_user_input(crs), 4326, always_xy=True)
        except CRSError:
            raise budget.bad(f"coord_crs {crs[:40]!r} is not a CRS") from None
        box = to_lonlat.transform_bounds(box[0], box[1], box[2], box[3])
    return (min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3]))


def request_cost(
    request: Request, kind: str, item: dict[str, Any] | None, body: Any
) -> budget.Cost | None:
    """The :class:`budget.Cost` of a tile-route request (None: it reads no pixels)."""
    query, params = request.query_params, request.path_params
    if item is not None:
        assets_meta = item.get("assets") or {}
    else:
        assets_meta = collection_item_assets(request, str(params.get("collection_id")))
    bands = budget.selected_bands(query, assets_meta)
    budget.check_expression(query.get("expression"), bands, _settings(request))
    for entry in query.getlist("assets"):
        _, _, options = entry.partition("|")
        for option in filter(None, options.split("|")):
            name, _, value = option.partition("=")
            if name == "expression":
                budget.check_expression(value, bands, _settings(request))
    if kind == "point":
        budget.check_lonlat(params.get("lon"), params.get("lat"))
        return budget.Cost(1, max(bands, 1))
    width, height, max_size = budget._sizes(query, params)
    ref = item or {}
    if kind == "tile":
        tms, z, edge = budget.tile_of(params, query, _settings(request))
        items = 1
        if item is None:
            x, y = int(params["x"]), int(params["y"])
            lonlat = tms.bounds(morecantile.Tile(x, y, z))
            items = budget.cells_over((lonlat.left, lonlat.bottom, lonlat.right, lonlat.top))
            if items > _settings(request).tile_max_items:
                raise budget.too_much(
                    f"0.1° cells a z{z} mosaic tile meets (zoom in)",
                    items,
                    _settings(request).tile_max_items,
                    "max_items",
                )
        return budget.Cost(edge * edge, bands, items)
    if kind == "preview":
        native = budget.native_size(ref, None)
        pixels = budget.output_pixels(
            width, height, max_size or (None if width or height else 1024), native
        )
        return budget.Cost(pixels, bands)
    if kind == "bbox":
        native = budget.native_size(ref, _lonlat_bbox(request))
        return budget.Cost(budget.output_pixels(width, height, max_size, native), bands)
    if kind == "feature":
        bounds = budget.geometry_bounds(body)
        native = budget.native_size(ref, bounds)
        return budget.Cost(budget.output_pixels(width, height, max_size, native), bands)
    return None


_VIEWS: dict[tuple[int, str, str], tuple[float, int, dict[str, Any]]] = {}


def item_budget_view(request: Request, collection_id: str, item_id: str) -> dict[str, Any]:
    """What the budget needs of an Item (assets with their band lists, ``bbox``,
    ``proj:shape``), kept as long as the cached pystac Item it was made from (no ``to_dict``
    of a 129-band Item per tile)."""
    pystac_item = stac_item(request, collection_id, item_id)
    key = (id(_pool(request)), collection_id, item_id)
    with _LOCK:
        hit = _VIEWS.get(key)
    if hit is not None and hit[1] == id(pystac_item):
        return hit[2]
    full = pystac_item.to_dict(transform_hrefs=False)
    view = {
        "bbox": full.get("bbox"),
        "properties": {"proj:shape": (full.get("properties") or {}).get("proj:shape")},
        "assets": full.get("assets") or {},
    }
    with _LOCK:
        if len(_VIEWS) > 10_000:
            _VIEWS.clear()
        _VIEWS[key] = (time.monotonic(), id(pystac_item), view)
    return view


def _settings(request: Request) -> Any:
    return request.app.state.api_settings


def route_kind(path_format: str, method: str) -> str | None:
    """What a tile route reads: ``tile``, ``preview``, ``bbox``, ``feature``, ``point``, or
    None for routes that describe only (TileJSON, WMTS, info, assets)."""
    if path_format.endswith(("/assets", "/info", "/info.geojson")):
        return None
    if "/tiles/{tileMatrixSetId}/{z}/{x}/{y}" in path_format:
        return "tile"
    if "/bbox/" in path_format:
        return "bbox"
    if "/feature" in path_format or (method == "POST" and path_format.endswith("/statistics")):
        return "feature"
    if "/preview" in path_format or path_format.endswith("statistics") or "/map" in path_format:
        return "preview"
    if "/point/" in path_format:
        return "point"
    return None


async def tile_budget(request: Request) -> None:
    """Route dependency of every tile route: parameters checked and the request's cost counted
    against the budgets (400/404/413) before any pixel is read."""
    from starlette.concurrency import run_in_threadpool

    route = request.scope.get("route")
    kind = route_kind(getattr(route, "path_format", ""), request.method)
    budget.check_rendering(request.query_params, _settings(request))
    budget.check_zoom_params(request.query_params)
    if "z" in request.path_params:
        budget.tile_of(request.path_params, request.query_params, _settings(request))
    if any(not a.partition("|")[0] for a in request.query_params.getlist("assets")):
        raise budget.bad("assets must name assets (an empty name was given)")
    if kind is None:
        return
    body: Any = None
    if kind == "feature" and request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            raise budget.bad("the body must be a GeoJSON Feature or FeatureCollection") from None
    params = request.path_params

    def cost() -> budget.Cost | None:
        item = None
        if "item_id" in params:
            item = item_budget_view(request, params["collection_id"], params["item_id"])
        return request_cost(request, kind, item, body)

    estimate = await run_in_threadpool(cost)
    if estimate is not None:
        estimate.check(_settings(request))

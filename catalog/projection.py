"""One fixed colour projection per embedding Collection: PCA of the dequantised vectors.

The map tiles (``tessera_stac.api.tiles``) colour embeddings by projecting every dequantised
128-d vector on three principal axes and stretching each axis to ``[0, 255]``. Fitting the
axes per tile would give every tile (and year) its own colours, so the basis, the mean and the
stretch are fitted once per Collection, from a sample of pixels of its Items, and stored in
the Collection JSON under :data:`~tessera_stac.catalog.constants.PROJECTION_FIELD`::

    {"method": "pca", "dimensions": 128, "mean": [128 floats],
     "basis": [[3 floats] x 128], "stretch": [[lo, hi] x 3], "samples": n}

Pixel ``v`` gets colour ``clip((((v - mean) @ basis) - lo) / (hi - lo), 0, 1) * 255``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera_stac.catalog.constants import EMBEDDING_DIM

#: Percentiles of the projected samples mapped to 0 and 255.
STRETCH_PERCENTILES = (2.0, 98.0)
#: Decimation of the sampled reads (served from the COG overviews).
SAMPLE_DECIMATION = 8
#: Items sampled at most (evenly spread over the sorted ids).
MAX_SAMPLED_ITEMS = 16

FloatArray = npt.NDArray[np.float32]


def fit_projection(vectors: FloatArray, seed: int = 0) -> dict[str, Any]:
    """PCA basis, mean and percentile stretch of ``vectors`` (n, dims), as stored JSON.

    The sign of each axis is fixed (largest loading positive) so refits of similar data give
    similar colours.

    Raises:
        ValueError: fewer than 3 valid vectors.
    """
    x = np.asarray(vectors, dtype=np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if x.shape[0] < 3:
        raise ValueError(f"{x.shape[0]} valid vectors: too few to fit a projection")
    if x.shape[0] > 200_000:
        x = x[np.random.default_rng(seed).choice(x.shape[0], 200_000, replace=False)]
    mean = x.mean(axis=0)
    # the principal axes are the eigenvectors of the (dims, dims) scatter matrix: the same
    # axes as the SVD of the centred (n, dims) data, for ~100x less work at n = 200,000
    centred = x - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    basis = vectors[:, ::-1][:, :3]  # (dims, 3)
    signs = np.sign(basis[np.abs(basis).argmax(axis=0), range(3)])
    basis = basis * np.where(signs == 0, 1.0, signs)
    projected = centred @ basis
    lo, hi = np.percentile(projected, STRETCH_PERCENTILES, axis=0)
    hi = np.where(hi > lo, hi, lo + 1e-6)
    return {
        "method": "pca",
        "dimensions": int(x.shape[1]),
        "mean": [float(v) for v in mean],
        "basis": [[float(v) for v in row] for row in basis],
        "stretch": [[float(a), float(b)] for a, b in zip(lo, hi, strict=True)],
        "samples": int(x.shape[0]),
    }


def apply_projection(values: FloatArray, projection: dict[str, Any]) -> npt.NDArray[np.uint8]:
    """RGB bytes (..., 3) of dequantised ``values`` (..., dims) with a stored projection."""
    mean = np.asarray(projection["mean"], dtype=np.float32)
    basis = np.asarray(projection["basis"], dtype=np.float32)
    stretch = np.asarray(projection["stretch"], dtype=np.float32)
    values = np.asarray(values, dtype=np.float32)
    bands_first = np.moveaxis(values, -1, 0)
    if values.ndim > 1 and bands_first.flags.c_contiguous and not values.flags.c_contiguous:
        # values stored band by band (a map tile's codes): the same differences, computed in
        # that order (broadcasting the mean across the strided last axis is ~3x slower)
        centred = np.moveaxis(bands_first - mean.reshape((-1,) + (1,) * (values.ndim - 1)), 0, -1)
    else:
        centred = values - mean
    projected = centred @ basis
    unit = (projected - stretch[:, 0]) / (stretch[:, 1] - stretch[:, 0])
    rgb = np.rint(np.clip(np.nan_to_num(unit), 0.0, 1.0) * 255.0)
    return rgb.astype(np.uint8)


def sample_item(
    item: dict[str, Any], item_href: str, gdal_env: dict[str, str] | None = None
) -> FloatArray:
    """Valid dequantised vectors (n, dims) of one Item, read decimated from its overviews."""
    import pystac
    import rasterio

    from tessera_stac.catalog.reader import (
        dequantize,
        gdal_path,
        quantization_of,
        rasterio_env,
        resolve_href,
        select_codes_asset,
    )

    parsed = pystac.Item.from_dict(item, preserve_dict=True, migrate=False)
    key = select_codes_asset(parsed)
    q = quantization_of(parsed, key)

    def path(asset_key: str) -> str:
        return gdal_path(resolve_href(item["assets"][asset_key]["href"], item_href))

    with rasterio_env(gdal_env or {}):
        with rasterio.open(path(key)) as ds:
            shape = (max(1, ds.height // SAMPLE_DECIMATION), max(1, ds.width // SAMPLE_DECIMATION))
            codes = ds.read(
                out_shape=(ds.count, *shape), resampling=rasterio.enums.Resampling.nearest
            )
        scales = None
        if q.scale_asset:
            with rasterio.open(path(q.scale_asset)) as sds:
                scales = sds.read(
                    q.scale_band or 1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest
                )
    values, valid = dequantize(np.moveaxis(codes, 0, -1), q, scales)
    return np.asarray(values[valid], dtype=np.float32)


def fit_collection_projection(
    items: Sequence[tuple[dict[str, Any], str]], gdal_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Fit the Collection's projection from (item dict, item href) pairs (a spread sample).

    Raises:
        ValueError: no Item could be sampled.
    """
    ordered = sorted(items, key=lambda pair: str(pair[0].get("id")))
    if len(ordered) > MAX_SAMPLED_ITEMS:
        picks = np.linspace(0, len(ordered) - 1, MAX_SAMPLED_ITEMS).round().astype(int)
        ordered = [ordered[i] for i in sorted(set(picks.tolist()))]
    samples = [sample_item(item, href, gdal_env) for item, href in ordered]
    empty = np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    vectors = np.concatenate([s for s in samples if s.size] or [empty])
    return fit_projection(np.asarray(vectors, dtype=np.float32))


def item_href_in_store(store_uri: str, key: str) -> str:
    """Where the Item at ``key`` of a store rooted at ``store_uri`` is (for relative hrefs)."""
    if store_uri.startswith("file://"):
        store_uri = store_uri[len("file://") :]
    return posixpath.join(store_uri.rstrip("/"), key)

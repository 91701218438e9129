"""A georeferenced change layer: per pixel, the cosine distance between two years (DESIGN §7).

One float32 Cloud-Optimized GeoTIFF per cell, on the tile's own UTM grid (both years share it),
NaN where the pixel is invalid in either year; overviews are the mean distance of the valid
pixels they cover. Map clients (QGIS, GDAL, rio-tiler) can draw it as it is, next to the
embedding COGs; the distance is :func:`tessera_stac.catalog.change.cosine_distance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from tessera_stac.catalog.change import cosine_distance
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.profile import SCALES
from tessera_stac.publisher.embeddings.cog import verify_cog, write_cog
from tessera_stac.publisher.embeddings.georef import TileGeoref
from tessera_stac.publisher.join.change import dequantised, open_pair
from tessera_stac.publisher.join.join import EmbeddingTile

CHANGE_LAYER = replace(
    SCALES,
    asset_key="change",
    filename="change.tif",
    band_names=("cosine_distance",),
    roles=("data",),
    description="Cosine distance between two years' embeddings of each pixel; NaN = invalid",
)
ROWS = 128


def _overview(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean of the valid (non-NaN) values of each ``factor`` x ``factor`` block."""
    h, w = values.shape
    ph, pw = -h % factor, -w % factor
    padded = np.pad(values, ((0, ph), (0, pw)), constant_values=np.nan)
    blocks = padded.reshape((h + ph) // factor, factor, (w + pw) // factor, factor)
    count = np.isfinite(blocks).sum(axis=(1, 3))
    total = np.nansum(blocks, axis=(1, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def change_distance(a: EmbeddingTile, b: EmbeddingTile) -> tuple[np.ndarray, TileGeoref]:
    """Per-pixel cosine distance (float32, NaN invalid) of two years of one cell, and its grid
    (as the first year's file has it)."""
    if (a.epsg, a.shape) != (b.epsg, b.shape) or not np.allclose(a.transform, b.transform):
        raise InputError(f"{a.item_id} and {b.item_id} are on different grids")
    out = np.full(a.shape, np.nan, dtype=np.float32)
    with open_pair(a, b) as read:
        for r0 in range(0, a.shape[0], ROWS):
            window = ((r0, min(r0 + ROWS, a.shape[0])), (0, a.shape[1]))
            qa, sa, qb, sb = read(window)
            dist, _ = cosine_distance(dequantised(qa, sa), dequantised(qb, sb))
            out[r0 : window[0][1]] = dist.reshape(-1, a.shape[1])
    georef = TileGeoref(a.epsg, a.transform, *a.shape, "published tile")
    return out, georef


def write_change_layers(
    tiles_from: Sequence[EmbeddingTile], tiles_to: Sequence[EmbeddingTile], dest: Path
) -> list[Path]:
    """Write ``{dest}/{grid}_{from}_{to}_change.tif`` for every cell with both years."""
    by_cell = {t.cell.name: t for t in tiles_to}
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for a in sorted(tiles_from, key=lambda t: t.cell.name):
        b = by_cell.get(a.cell.name)
        if b is None:
            continue
        dist, georef = change_distance(a, b)
        path = dest / f"{a.cell.name}_{a.year}_{b.year}_change.tif"
        tags = {
            "TESSERA_TILE": a.cell.name,
            "TESSERA_CHANGE": f"cosine distance {a.year} -> {b.year}",
            "TESSERA_SOURCES": f"{a.item_id}, {b.item_id}",
        }
        overviews = [_overview(dist, f) for f in CHANGE_LAYER.overview_levels]
        write_cog(path, CHANGE_LAYER, dist, overviews, georef, tags)
        verify_cog(path, CHANGE_LAYER, georef)
        written.append(path)
    if not written:
        raise InputError("no cell has tiles of both years")
    return written

"""A small TESSERA Zarr v3 store with the real layout, written from ``.npy`` tiles (tests, demo).

The store follows what geotessera builds (see
:mod:`tessera_stac.publisher.embeddings.zarr_source` for the layout): root ``geoemb:``
attributes, one ``utmNN`` group per zone with ``embeddings`` int8 (time, band, y, x) and
``scales`` float32 (time, y, x) in chunks (1, 128, 32, 32) inside shards (1, 128, 4096, 4096),
and ``time``, ``band``, ``x``, ``y`` coordinates.

How it is filled, rule for rule:

* the zone grid covers the projected corners of every cell of the zone (EPSG:326NN, southern
  northings continuous), its corner floored/ceiled onto the 10 m lattice, its size rounded up
  to whole shards;
* each (tile, year) is placed as its whole UTM rectangle at its origin rounded to the lattice
  (:func:`~tessera_stac.publisher.embeddings.zarr_source.tile_offset`), tiles in order of
  (lon, lat), so a later tile overwrites the strip it shares with an earlier one;
* scales become NaN where the landmask is water or the scale is not valid
  (``isfinite & 0 < s < 1``); land no tile wrote keeps the fill value ``+inf`` (unfilled);
  codes are copied as they are (fill value 0).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.profile import EMBEDDING_DIM
from tessera_stac.publisher.embeddings.georef import PIXEL_SIZE
from tessera_stac.publisher.embeddings.tiles import TileSource, load_tile
from tessera_stac.publisher.embeddings.zarr_source import (
    ZoneGrid,
    tile_offset,
    zarr_store,
    zone_group_name,
    zone_of,
)

SHARD = 4096
INNER = 32
MAX_VALID_SCALE = 1.0


def root_attributes(model_version: str = "v1") -> dict[str, Any]:
    """The root group's ``geoemb:`` attributes (the convention's keys)."""
    return {
        "geoemb:type": "pixel",
        "geoemb:dimensions": EMBEDDING_DIM,
        "geoemb:model": f"TESSERA {model_version}",
        "geoemb:data_type": "int8",
        "geoemb:gsd": PIXEL_SIZE,
        "geoemb:spatial_layout": "utm_zones",
        "geoemb:quantization": {
            "method": "per_pixel_scale",
            "original_dtype": "float32",
            "quantized_dtype": "int8",
            "scale": {"type": "array", "array_name": "scales", "nodata": "+inf"},
        },
    }


def zone_grid(zone: int, cells: Iterable[GridCell], years: Iterable[int]) -> ZoneGrid:
    """The grid of a zone covering ``cells``: lattice-aligned corner, whole shards."""
    from pyproj import Transformer

    proj = Transformer.from_crs("EPSG:4326", f"EPSG:{32600 + zone}", always_xy=True)
    xs: list[float] = []
    ys: list[float] = []
    for cell in cells:
        west, south, east, north = cell.bounds
        cx, cy = proj.transform([west, east, west, east], [north, north, south, south])
        xs.extend(cx)
        ys.extend(cy)
    x0 = math.floor(min(xs) / PIXEL_SIZE) * PIXEL_SIZE
    y0 = math.ceil(max(ys) / PIXEL_SIZE) * PIXEL_SIZE
    width = round((math.ceil(max(xs) / PIXEL_SIZE) * PIXEL_SIZE - x0) / PIXEL_SIZE)
    height = round((y0 - math.floor(min(ys) / PIXEL_SIZE) * PIXEL_SIZE) / PIXEL_SIZE)
    return ZoneGrid(
        zone=zone,
        origin_x=x0,
        origin_y=y0,
        height=math.ceil(height / SHARD) * SHARD,
        width=math.ceil(width / SHARD) * SHARD,
        years=tuple(sorted(set(years))),
    )


def _create_zone(root: Any, grid: ZoneGrid, inner: int = INNER) -> Any:
    from zarr.codecs import BloscCodec

    group = root.create_group(zone_group_name(grid.zone))
    compressor = BloscCodec(cname="zstd", clevel=1)
    n_years = len(grid.years)
    group.create_array(
        "embeddings",
        shape=(n_years, EMBEDDING_DIM, grid.height, grid.width),
        chunks=(1, EMBEDDING_DIM, inner, inner),
        shards=(1, EMBEDDING_DIM, SHARD, SHARD),
        dtype=np.int8,
        fill_value=np.int8(0),
        compressors=compressor,
        dimension_names=["time", "band", "y", "x"],
    )
    group.create_array(
        "scales",
        shape=(n_years, grid.height, grid.width),
        chunks=(1, inner, inner),
        shards=(1, SHARD, SHARD),
        dtype=np.float32,
        fill_value=np.float32(np.inf),
        compressors=compressor,
        dimension_names=["time", "y", "x"],
    )
    coords = {
        "x": (grid.origin_x + (np.arange(grid.width) + 0.5) * PIXEL_SIZE, "x"),
        "y": (grid.origin_y - (np.arange(grid.height) + 0.5) * PIXEL_SIZE, "y"),
        "time": (np.array(grid.years, dtype=np.int32), "time"),
        "band": (np.arange(EMBEDDING_DIM, dtype=np.int32), "band"),
    }
    for name, (data, dim) in coords.items():
        arr = group.create_array(
            name, shape=data.shape, dtype=data.dtype, fill_value=0, dimension_names=[dim]
        )
        arr[:] = data
    x1 = grid.origin_x + grid.width * PIXEL_SIZE
    y1 = grid.origin_y - grid.height * PIXEL_SIZE
    group.attrs.update(
        {
            "proj:code": f"EPSG:{32600 + grid.zone}",
            "spatial:dimensions": ["y", "x"],
            "spatial:transform": [PIXEL_SIZE, 0.0, grid.origin_x, 0.0, -PIXEL_SIZE, grid.origin_y],
            "spatial:shape": [grid.height, grid.width],
            "spatial:bbox": [grid.origin_x, y1, x1, grid.origin_y],
        }
    )
    return group


@dataclass(frozen=True)
class StoreSummary:
    """What :func:`write_store` wrote: zones (grids) and the (tile, year)s placed in order."""

    path: Path
    grids: dict[int, ZoneGrid]
    placed: tuple[tuple[str, int, int, int], ...]  # (grid, year, row, col) in write order


def store_scales(scales: np.ndarray, landmask: np.ndarray | None) -> np.ndarray:
    """The scales as the store keeps them: NaN on water and on invalid scales."""
    out = np.array(scales, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(out) & (out > 0) & (out < MAX_VALID_SCALE)
    if landmask is not None:
        ok &= np.asarray(landmask) != 0
    out[~ok] = np.float32(np.nan)
    return out


def write_store(
    dest: Path, sources: Iterable[TileSource], model_version: str = "v1", inner: int = INNER
) -> StoreSummary:
    """Write a geoemb Zarr store at ``dest`` (a new local folder) from ``.npy`` tiles.

    Args:
        dest: the store's folder (must not exist yet).
        sources: the tiles (e.g. :func:`~tessera_stac.publisher.embeddings.tiles.discover`
            of a generated sample folder); every year found becomes a time step.
        model_version: recorded in the root attributes.
        inner: side of the inner chunks in pixels (a divisor of the shard side, 4096); the
            default is geotessera's 32 (tests reading through a slow endpoint use larger ones).
    """
    if inner <= 0 or SHARD % inner:
        raise ValueError(f"inner chunk side {inner} does not divide the shard side {SHARD}")
    import zarr

    if Path(dest).exists():
        raise FileExistsError(f"{dest}: already exists")
    tiles = sorted(sources, key=lambda s: (s.year, *_lonlat(s.grid)))
    by_zone: dict[int, list[TileSource]] = {}
    for src in tiles:
        by_zone.setdefault(zone_of(GridCell.parse(src.grid)), []).append(src)
    years = sorted({s.year for s in tiles})
    root = zarr.open_group(store=zarr_store(str(dest), read_only=False), mode="w-", zarr_format=3)
    root.attrs.update(root_attributes(model_version))
    grids: dict[int, ZoneGrid] = {}
    placed: list[tuple[str, int, int, int]] = []
    scratch = Path(dest).parent
    for zone, srcs in sorted(by_zone.items()):
        grid = zone_grid(zone, {GridCell.parse(s.grid) for s in srcs}, years)
        grids[zone] = grid
        group = _create_zone(root, grid, inner)
        for src in srcs:  # already in write order: year, then lon, lat
            loaded = load_tile(src, scratch)
            row, col = tile_offset(loaded.georef, grid)
            height, width = loaded.georef.shape
            t = grid.years.index(src.year)
            group["embeddings"][t, :, row : row + height, col : col + width] = np.moveaxis(
                np.asarray(loaded.embeddings), -1, 0
            )
            group["scales"][t, row : row + height, col : col + width] = store_scales(
                loaded.scales, loaded.landmask
            )
            placed.append((src.grid, src.year, row, col))
    with warnings.catch_warnings():  # "not part of the v3 spec": geotessera consolidates too
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(zarr_store(str(dest), read_only=False))
    return StoreSummary(Path(dest), grids, tuple(placed))


def _lonlat(grid: str) -> tuple[float, float]:
    cell = GridCell.parse(grid)
    return cell.lon, cell.lat

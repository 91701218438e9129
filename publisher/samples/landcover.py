"""Sample land cover: tiles drawn from classes, a labels file and a truth raster per tile.

``generate_landcover`` writes sample tiles with :attr:`SampleOptions.landcover` set (see
``tiles.py``: a prototype vector per class, smooth class regions, smooth within-class
variation, noise), then for one year:

    labels/landcover_{year}.geojson        points with property ``class`` (the class name)
    truth/{year}/grid_X_Y.tif              uint8 class values on the tile's grid, 0 = water

Labels are drawn uniformly among the land pixels of each class whose centre lies in the tile's
own 0.1° cell (so every label belongs to exactly one published tile), a fixed number per class
over all tiles, deterministic by ``seed``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import Transformer

from tessera_stac.catalog.model import GridCell
from tessera_stac.publisher.samples.tiles import (
    LANDCOVER_CLASSES,
    SampleOptions,
    SampleTile,
    _save_npy,
    _seed,
    generate_tile,
    tile_paths,
    write_landmask,
)

LABELS_DIR = "labels"
TRUTH_DIR = "truth"


@dataclass(frozen=True)
class LandcoverFiles:
    """What :func:`generate_landcover` wrote."""

    root: Path
    labels: Path
    truth: dict[str, Path]  # grid name -> truth GeoTIFF of the labels' year
    tiles: int


def class_names() -> list[str]:
    """The sample classes' names, in value order (value = index + 1)."""
    return [name for name, _ in LANDCOVER_CLASSES]


def class_colors() -> dict[str, str]:
    """The sample classes' colours by name."""
    return dict(LANDCOVER_CLASSES)


def labels_path(root: Path, year: int) -> Path:
    return Path(root) / LABELS_DIR / f"landcover_{year}.geojson"


def truth_path(root: Path, cell: GridCell, year: int) -> Path:
    return Path(root) / TRUTH_DIR / str(year) / f"{cell.name}.tif"


def write_truth(path: Path, tile: SampleTile) -> None:
    """The tile's truth classes as a uint8 GeoTIFF (nodata 0) on its grid, atomically."""
    import rasterio

    if tile.classes is None:
        raise ValueError("the tile was not generated with landcover=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "height": tile.georef.height,
        "width": tile.georef.width,
        "crs": tile.georef.crs,
        "transform": tile.georef.affine(),
        "nodata": 0,
        "compress": "DEFLATE",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(tmp, "w", **profile) as ds:
        ds.write(tile.classes, 1)
    os.replace(tmp, path)


def _owned_pixels(tile: SampleTile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, cols and lon/lat of land pixels whose centre lies in the tile's own cell."""
    assert tile.classes is not None
    rows, cols = np.nonzero(tile.classes > 0)
    a, _, c, _, e, f = tile.georef.transform
    xs, ys = c + (cols + 0.5) * a, f + (rows + 0.5) * e
    to_geo = Transformer.from_crs(f"EPSG:{tile.georef.epsg}", "EPSG:4326", always_xy=True)
    lon, lat = (np.asarray(v) for v in to_geo.transform(xs, ys))
    cell = tile.cell
    inside = (
        (lon >= cell.lon - 0.05)
        & (lon < cell.lon + 0.05)
        & (lat >= cell.lat - 0.05)
        & (lat < cell.lat + 0.05)
    )
    valid = (tile.scales > 0) & (tile.scales < 1.0)
    keep = inside & valid[rows, cols]
    return rows[keep], cols[keep], np.stack([lon[keep], lat[keep]], axis=1)


def sample_labels(
    tiles: Sequence[SampleTile], per_class: int, seed: int = 0
) -> list[tuple[float, float, str]]:
    """``per_class`` labelled points per class (fewer if a class has fewer pixels)."""
    names = class_names()
    pools: dict[int, list[np.ndarray]] = {v: [] for v in range(1, len(names) + 1)}
    for tile in tiles:
        assert tile.classes is not None
        rows, cols, lonlat = _owned_pixels(tile)
        values = tile.classes[rows, cols]
        for v in pools:
            pools[v].append(lonlat[values == v])
    rng = np.random.default_rng(_seed("labels", seed, per_class))
    out: list[tuple[float, float, str]] = []
    for v, parts in pools.items():
        pool = np.concatenate(parts) if parts else np.zeros((0, 2))
        pick = rng.choice(len(pool), size=min(per_class, len(pool)), replace=False)
        out.extend((float(lon), float(lat), names[v - 1]) for lon, lat in pool[np.sort(pick)])
    return out


def write_labels(path: Path, labels: Iterable[tuple[float, float, str]]) -> None:
    """Labels as a GeoJSON FeatureCollection of points with property ``class``."""
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]},
            "properties": {"class": name},
        }
        for lon, lat, name in labels
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    os.replace(tmp, path)


def generate_landcover(
    root: Path,
    cells: Iterable[GridCell],
    years: Iterable[int],
    label_year: int | None = None,
    per_class: int = 100,
    seed: int = 0,
    options: SampleOptions | None = None,
    layout: str = "geotessera",
) -> LandcoverFiles:
    """Write land-cover sample tiles for every (cell, year), labels and truth of ``label_year``.

    Args:
        root: folder to write into (the tiles' layout, plus ``labels/`` and ``truth/``).
        cells: the cells.
        years: the years of tiles.
        label_year: the year of the labels and truth (default: the first year).
        per_class: labels per class over all cells.
        seed: seed of the label draw (tiles are deterministic by cell and year).
        options: other sample options (``landcover`` is forced on).
    """
    from dataclasses import replace

    opts = replace(options or SampleOptions(), landcover=True)
    cell_list, year_list = list(cells), list(years)
    first = label_year if label_year is not None else year_list[0]
    truth: dict[str, Path] = {}
    labelled: list[SampleTile] = []
    count = 0
    for cell in cell_list:
        for year in year_list:
            tile = generate_tile(cell, year, opts)
            paths = tile_paths(Path(root), cell, year, layout)
            _save_npy(paths.embeddings, tile.embeddings)
            _save_npy(paths.scales, tile.scales)
            if opts.landmask and paths.landmask is not None:
                write_landmask(paths.landmask, tile.georef, tile.landmask)
            count += 1
            if year == first:
                truth[cell.name] = truth_path(Path(root), cell, year)
                write_truth(truth[cell.name], tile)
                # keep only what the label draw needs (the codes are on disk)
                labelled.append(
                    SampleTile(
                        tile.cell,
                        year,
                        tile.georef,
                        np.empty((0,), np.int8),
                        tile.scales,
                        tile.landmask,
                        tile.classes,
                    )
                )
    labels = labels_path(Path(root), first)
    write_labels(labels, sample_labels(labelled, per_class, seed))
    return LandcoverFiles(Path(root), labels, truth, count)

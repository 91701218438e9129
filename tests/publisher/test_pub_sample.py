"""The synthetic tile generator: deterministic, realistic scales, coherent, defects."""

from __future__ import annotations

import numpy as np
import pytest

from tessera_stac.catalog.model import GridCell
from tessera_stac.publisher.samples import tiles as sample

CELL = GridCell.parse("grid_78.05_12.05")
SMALL = sample.SampleOptions(crop=(160, 200))


def test_deterministic_and_year_dependent() -> None:
    a = sample.generate_tile(CELL, 2024, SMALL)
    b = sample.generate_tile(CELL, 2024, SMALL)
    c = sample.generate_tile(CELL, 2023, SMALL)
    assert np.array_equal(a.embeddings, b.embeddings) and np.array_equal(a.scales, b.scales)
    assert not np.array_equal(a.embeddings, c.embeddings)
    assert np.array_equal(a.landmask, c.landmask)  # one landmask per cell, for every year


def test_producer_quantisation_and_scale_distribution() -> None:
    tile = sample.generate_tile(CELL, 2024, sample.SampleOptions(crop=(400, 400)))
    q, s = tile.embeddings, tile.scales
    assert q.dtype == np.int8 and s.dtype == np.float32 and q.shape == (400, 400, 128)
    assert q.min() >= -127 and q.max() <= 127
    assert (np.abs(q.astype(np.int16)).max(axis=2) == 127).all()  # scale = max|x| / 127
    assert 0.05 < float(np.median(s)) < 0.08
    assert (s > 0).all() and (s < 1).all()


def test_spatially_coherent_and_water_differs() -> None:
    tile = sample.generate_tile(CELL, 2024, sample.SampleOptions(crop=(300, 300)))
    x = tile.embeddings.astype(np.float32) * tile.scales[..., None]
    near = np.abs(x[:, 1:] - x[:, :-1]).mean()
    far = np.abs(x[:, 150:] - x[:, :150]).mean()
    assert near < 0.5 * far
    water, land = tile.landmask == 0, tile.landmask == 1
    if water.any() and land.any():
        gap = np.linalg.norm(x[water].mean(0) - x[land].mean(0))
        spread = np.linalg.norm(x[land].std(0))
        assert gap > 0.5 * spread


def test_tiles_join_across_cells() -> None:
    """Fields are functions of lon/lat: the shared edge of two cells looks alike."""
    rows = sample.SampleOptions(crop=(600, 2000))  # full width, fewer rows
    left = sample.generate_tile(GridCell.parse("grid_78.05_12.05"), 2024, rows)
    right = sample.generate_tile(GridCell.parse("grid_78.15_12.05"), 2024, rows)
    a = left.embeddings[500:600, -3].astype(np.float32) * left.scales[500:600, -3, None]
    b = right.embeddings[500:600, 2].astype(np.float32) * right.scales[500:600, 2, None]
    c = right.embeddings[500:600, 600].astype(np.float32) * right.scales[500:600, 600, None]
    assert np.abs(a - b).mean() < np.abs(a - c).mean()


def test_defects() -> None:
    opts = sample.SampleOptions(crop=(200, 200), zero_fraction=0.1, sentinel_fraction=0.01)
    tile = sample.generate_tile(CELL, 2024, opts)
    zero = tile.scales == 0
    assert zero.mean() >= 0.1
    assert (tile.embeddings[zero] == 0).all()
    assert (tile.scales == np.float32(3.4028235e38)).sum() > 0
    assert (tile.scales == np.float32(-161685)).sum() > 0
    water = sample.generate_tile(CELL, 2024, sample.SampleOptions(crop=(50, 50), all_water=True))
    assert (water.landmask == 0).all()


def test_cells_in_bbox() -> None:
    names = [c.name for c in sample.cells_in_bbox((71.9, 21.8, 72.1, 21.9))]
    assert names == ["grid_71.95_21.85", "grid_72.05_21.85"]
    assert [c.name for c in sample.cells_in_bbox((0.12, 52.01, 0.13, 52.02))] == ["grid_0.15_52.05"]
    with pytest.raises(ValueError):
        sample.cells_in_bbox((1, 1, 0, 0))

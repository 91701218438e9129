"""The land-cover sample generator: deterministic, classes stable across years and tiles."""

from __future__ import annotations

import numpy as np

from tessera_stac.catalog.model import GridCell
from tessera_stac.publisher.samples.landcover import sample_labels
from tessera_stac.publisher.samples.tiles import SampleOptions, generate_tile

CELL = GridCell.parse("grid_72.05_21.85")
OPTIONS = SampleOptions(landcover=True, crop=(96, 96))


def test_landcover_tiles_are_deterministic_and_classes_are_stable() -> None:
    a = generate_tile(CELL, 2024, OPTIONS)
    b = generate_tile(CELL, 2024, OPTIONS)
    later = generate_tile(CELL, 2025, OPTIONS)
    assert a.classes is not None and b.classes is not None and later.classes is not None
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_array_equal(a.classes, later.classes)  # land cover of a place stays
    assert not np.array_equal(a.embeddings, later.embeddings)  # its vectors vary by year
    assert (a.classes[a.landmask == 0] == 0).all() and (a.classes[a.landmask > 0] > 0).all()
    assert len(np.unique(a.classes[a.classes > 0])) >= 3  # regions smaller than 1 km
    plain = generate_tile(CELL, 2024, SampleOptions(crop=(96, 96)))
    assert plain.classes is None
    np.testing.assert_array_equal(plain.landmask, a.landmask)  # water is the same


def test_label_draw_is_deterministic_by_seed() -> None:
    tile = generate_tile(CELL, 2024, OPTIONS)
    first = sample_labels([tile], 4, seed=1)
    assert first == sample_labels([tile], 4, seed=1)
    assert first != sample_labels([tile], 4, seed=2)
    for lon, lat, _ in first:  # inside the tile's own cell: each label has one tile
        assert 72.0 <= lon < 72.1 and 21.8 <= lat < 21.9

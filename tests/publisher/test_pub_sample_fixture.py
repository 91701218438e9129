"""The shared ``published_sample`` fixture: two real tiles across the 72°E UTM boundary."""

from __future__ import annotations

import json
from typing import Any

import rasterio

from tests.fixtures_publisher import SAMPLE_GRIDS, PublishedSample


def test_published_sample_shape(published_sample: PublishedSample) -> None:
    sample = published_sample
    assert [t.cell.name for t in sample.tiles] == list(SAMPLE_GRIDS)
    assert [t.epsg for t in sample.tiles] == [32642, 32643]  # straddles 72°E
    assert sample.collection == "tessera-embeddings-v1"
    for tile, item_path in zip(sample.tiles, sample.items, strict=True):
        assert item_path.is_file()
        item = json.loads(item_path.read_text())
        assert item["id"] == tile.item_id == f"{tile.cell.name}_2024"
        assert set(item["assets"]) == {"embeddings", "scales", "preview"}
        assert item["assets"]["embeddings"]["href"] == "./embeddings.tif"
        folder = item_path.parent
        with rasterio.open(folder / "embeddings.tif") as ds:
            assert ds.shape == tile.shape
            assert ds.crs.to_epsg() == tile.epsg
            assert tuple(ds.transform)[:6] == tile.transform
        assert tile.counts.valid > 0 and tile.counts.total == tile.shape[0] * tile.shape[1]


def test_published_items_validate(published_sample: PublishedSample, stac_validate: Any) -> None:
    for item_path in published_sample.items:
        stac_validate(json.loads(item_path.read_text()))

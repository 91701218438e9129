"""Reusable pytest fixtures of class maps per micro-watershed (registered in tests/conftest.py).

* ``write_class_map``: one class item in ``tessera-classes-{model}/{item}/`` on the grid
  of a published embedding item: a uint8 COG (nodata 0 where the embedding is invalid, spatially
  varying classes elsewhere), ``classification:classes`` on the ``classes`` asset, the grid's
  projection fields. Written here, independently of the map pipeline, so per-MWS hectares are
  checked against class maps whose every pixel the test knows.
* ``class_catalog`` (session): ``published_sample`` (two real-size tiles either side of 72°E)
  copied, the real Bhavnagar MWS layer published into it, and class maps of the model
  ``testhead`` for 2024 and 2025 (same grids, other classes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

TEST_MODEL = "testhead"
TEST_CLASSES = [
    {"value": 1, "name": "Cropland", "color": "#f2c14e"},
    {"value": 2, "name": "Tree cover", "color": "#1b7837"},
    {"value": 3, "name": "Built-up", "color": "#d7301f"},
]
CLASS_YEARS = (2024, 2025)


def class_pattern(shape: tuple[int, int], seed: int) -> Any:
    """Classes 1..3 in irregular patches (a few hundred metres across), changing with seed."""
    import numpy as np

    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w]
    field = (
        np.sin(rows / (37.0 + seed))
        + np.cos(cols / (53.0 - seed))
        + 0.5 * np.sin((rows + cols) / (19.0 + 2 * seed))
    )
    return (np.digitize(field, [-0.6, 0.6]) + 1).astype(np.uint8)


def write_class_map(
    root: Path, embedding_item: Path, model: str, year: int, seed: int = 0, value: bool = False
) -> Path:
    """Write a class COG and its item for the grid of ``embedding_item``; return the item path."""
    import numpy as np
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    from tessera_stac.catalog.constants import CLASSES_ASSET, CLASSIFICATION_SCHEMA_URI

    emb = json.loads(embedding_item.read_text())
    props = emb["properties"]
    grid = str(emb["id"]).rsplit("_", 1)[0]
    scales_href = (embedding_item.parent / emb["assets"]["scales"]["href"]).resolve()
    with rasterio.open(scales_href) as ds:
        scales = ds.read(1)
        profile = {"crs": ds.crs, "transform": ds.transform, "height": ds.height, "width": ds.width}
    classes = class_pattern(scales.shape, seed)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(scales) & (scales > 0) & (scales < 1)
    classes[~valid] = 0
    data: Any = classes
    if value:  # a regression map: float32 values (e.g. canopy height), NaN nodata
        rows = np.arange(scales.shape[0], dtype=np.float32)[:, None]
        data = (classes * 5.0 + rows / 100.0).astype(np.float32)
        data[~valid] = np.nan
    item_id = f"{grid}_{year}"
    folder = root / f"tessera-classes-{model}" / item_id  # the map pipeline's layout
    folder.mkdir(parents=True, exist_ok=True)
    cog = {"driver": "COG", "blocksize": 256, "compress": "ZSTD", "overview_resampling": "NEAREST"}
    name = "value.tif" if value else "classes.tif"
    dtype, nodata = ("float32", float("nan")) if value else ("uint8", 0)
    with (
        MemoryFile() as mem,
        mem.open(driver="MEM", count=1, dtype=dtype, nodata=nodata, **profile) as src,
    ):
        src.write(data[None])
        rasterio.shutil.copy(src, folder / name, **cog)
    start = datetime(year, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    end = datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [
            CLASSIFICATION_SCHEMA_URI,
            "https://stac-extensions.github.io/projection/v1.2.0/schema.json",
        ],
        "id": item_id,
        "collection": f"tessera-classes-{model}",
        "geometry": emb["geometry"],
        "bbox": emb["bbox"],
        "properties": {
            "datetime": None,
            "start_datetime": start,
            "end_datetime": end,
            "tessera:grid": grid,
            "tessera:year": year,
            "proj:code": props["proj:code"],
            "proj:transform": props["proj:transform"],
            "proj:shape": props["proj:shape"],
        },
        "assets": {
            CLASSES_ASSET: {
                "href": "./classes.tif",
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "title": f"Classes ({model})",
                "classification:classes": [
                    {
                        "value": c["value"],
                        "name": str(c["name"]).replace(" ", "-"),
                        "description": c["name"],
                        "color_hint": str(c["color"]).lstrip("#"),
                    }
                    for c in TEST_CLASSES
                ],
            }
        },
        "links": [],
    }
    if value:
        item["assets"] = {
            "value": {
                "href": "./value.tif",
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
            }
        }
    path = folder / f"{item_id}.json"
    path.write_text(json.dumps(item))
    return path


@dataclass(frozen=True)
class ClassCatalog:
    """What ``class_catalog`` made."""

    root: Path
    mws_item_id: str
    class_items: dict[int, list[Path]]  # year -> class item paths


def copy_tree(src: Path, dst: Path) -> None:
    """Hard-link copy (cp -al) when possible, else a plain copy."""
    try:
        subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(src, dst)


@pytest.fixture(scope="session")
def class_catalog(
    published_sample: Any, bhavnagar_geojson: Path, open_tmp: Callable[[str], Path]
) -> ClassCatalog:
    """published_sample + the Bhavnagar MWS layer + class maps of ``testhead`` (2024, 2025)."""
    from tessera_stac.publisher.watersheds.layer import BlockName, publish_mws_layer

    root = open_tmp("class-catalog") / "published"
    copy_tree(published_sample.dest, root)
    result = publish_mws_layer(
        bhavnagar_geojson,
        BlockName("Gujarat", "Bhavnagar", "Bhavnagar"),
        root,
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    items = {
        year: [write_class_map(root, p, TEST_MODEL, year, seed=i) for p in published_sample.items]
        for i, year in enumerate(CLASS_YEARS)
    }
    return ClassCatalog(root, result.item_id, items)

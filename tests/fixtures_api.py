"""Reusable pytest fixtures of the api area (registered in tests/conftest.py).

``hand_catalog`` writes a small static catalog of embedding-like items (built with the real
item builder, ``create_item``) in two UTM zones and two years, for loader and API tests that do
not need real COGs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HAND_COLLECTION = "tessera-embeddings-test"


def make_collection(collection_id: str = HAND_COLLECTION) -> dict[str, Any]:
    """A minimal valid STAC 1.1 collection."""
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "title": "Test embeddings",
        "description": "Hand-made collection for tests",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2017-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }


def make_item(
    lon: float, lat: float, year: int, collection_id: str = HAND_COLLECTION, dims: int = 128
) -> dict[str, Any]:
    """An item for the 0.1° cell holding (lon, lat), built by ``create_item``."""
    from tessera_stac.catalog.model import GridCell, PixelCounts
    from tessera_stac.publisher.samples.items import fake_item

    cell = GridCell.containing(lon, lat)
    counts = PixelCounts(valid=10, invalid=0)
    item = fake_item(
        lon, lat, year, collection_id=collection_id, model_name="tessera", counts=counts
    )
    item["properties"]["embedding:dimensions"] = dims
    item["properties"].setdefault("embedding:model_version", "v1")
    item["properties"].setdefault("tessera:grid", cell.name)
    return item


def write_catalog(root: Path, items: list[dict[str, Any]], collection_id: str) -> Path:
    """Write a static catalog ``root/catalog.json`` holding one collection and ``items``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / collection_id).mkdir(exist_ok=True)
    catalog = {
        "type": "Catalog",
        "stac_version": "1.1.0",
        "id": "test-root",
        "description": "test catalog",
        "links": [
            {"rel": "root", "href": "./catalog.json"},
            {"rel": "child", "href": f"./{collection_id}/collection.json"},
        ],
    }
    collection = make_collection(collection_id)
    collection["links"] = [{"rel": "root", "href": "../catalog.json"}]
    for item in items:
        folder = root / collection_id / item["id"]
        folder.mkdir(exist_ok=True)
        (folder / f"{item['id']}.json").write_text(json.dumps(item, indent=2))
        collection["links"].append({"rel": "item", "href": f"./{item['id']}/{item['id']}.json"})
    (root / collection_id / "collection.json").write_text(json.dumps(collection, indent=2))
    (root / "catalog.json").write_text(json.dumps(catalog, indent=2))
    return root / "catalog.json"


def load_hand_items(dsn: str, folder: Path) -> None:
    """Load the hand collection and two items (UTM 42N/43N, 2024) into ``dsn``."""
    from tessera_stac.catalog.pgstac.load import load

    source = folder / "seed.ndjson"
    objs = [make_collection(), make_item(71.93, 23.01, 2024), make_item(72.07, 23.01, 2024)]
    source.write_text("".join(json.dumps(o) + "\n" for o in objs))
    load(dsn, str(source))


HAND_POINTS = [
    (71.93, 23.01, 2023),
    (71.93, 23.01, 2024),
    (72.07, 23.01, 2024),
    (72.17, 23.11, 2024),
]


@pytest.fixture
def hand_catalog(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A static catalog of 4 items (2 UTM zones, 2 years): ``(catalog.json path, items)``."""
    items = [make_item(lon, lat, year) for lon, lat, year in HAND_POINTS]
    items[2]["properties"]["embedding:dimensions"] = 64
    path = write_catalog(tmp_path / "cat", items, HAND_COLLECTION)
    return path, items


@pytest.fixture
def count_items() -> Callable[[str], dict[str, int]]:
    """``count_items(dsn)`` -> {collection: number of items} in that database."""
    import psycopg

    def count(dsn: str) -> dict[str, int]:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT collection, count(*) FROM pgstac.items GROUP BY collection"
            ).fetchall()
        return {c: int(n) for c, n in rows}

    return count


# ------------------------------------------------------------------ small COG tiles
EMB_COLLECTION = "tessera-embeddings-v1"


def rebuilt_georef(cell: Any) -> tuple[tuple[float, ...], tuple[int, int]]:
    """Transform (a, b, c, d, e, f) and (height, width) of a cell's 10 m UTM raster (DESIGN §1)."""
    from pyproj import Transformer

    west, south, east, north = cell.bounds
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{cell.utm_epsg}", always_xy=True)
    (lx0, lx1), (ly0, ly1) = to_utm.transform([west, west], [south, north])
    (rx0, rx1), (ry0, ry1) = to_utm.transform([east, east], [south, north])
    x0, y0 = min(lx0, lx1), max(ly1, ry1)
    width = round((max(rx0, rx1) - x0) / 10)
    height = round((y0 - min(ly0, ry0)) / 10)
    return (10.0, 0.0, x0, 0.0, -10.0, y0), (height, width)


def write_tile(
    folder: Path, lon: float, lat: float, year: int, bands: int, seed: int
) -> tuple[dict[str, Any], Any, Any]:
    """Write embeddings.tif (int8) + scales.tif (float32) of the cell holding (lon, lat).

    Returns ``(item, codes (bands, H, W), scales (H, W))``; a block of pixels is invalid
    (NaN scale, nodata codes) at rows/cols 0-49.
    """
    import numpy as np
    import rasterio
    from affine import Affine

    from tessera_stac.catalog.model import GridCell

    cell = GridCell.containing(lon, lat)
    transform, (height, width) = rebuilt_georef(cell)
    rng = np.random.default_rng(seed)
    codes = rng.integers(-127, 128, size=(bands, height, width), dtype=np.int8)
    scales = rng.uniform(0.01, 0.2, size=(height, width)).astype(np.float32)
    scales[:50, :50] = np.nan
    codes[:, :50, :50] = -128
    folder.mkdir(parents=True, exist_ok=True)
    common = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "crs": f"EPSG:{cell.utm_epsg}",
        "transform": Affine(*transform),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    with rasterio.open(
        folder / "embeddings.tif",
        "w",
        dtype="int8",
        count=bands,
        nodata=-128,
        interleave="pixel",
        **common,
    ) as dst:
        dst.write(codes)
    with rasterio.open(
        folder / "scales.tif", "w", dtype="float32", count=1, nodata=float("nan"), **common
    ) as dst:
        dst.write(scales[None])
    item = make_item(lon, lat, year, collection_id=EMB_COLLECTION, dims=bands)
    item["properties"]["proj:code"] = f"EPSG:{cell.utm_epsg}"
    item["properties"]["proj:shape"] = [height, width]
    item["properties"]["proj:transform"] = list(transform)
    return item, codes, scales


@pytest.fixture(scope="session")
def cog_catalog(open_tmp: Callable[[str], Path]) -> dict[str, Any]:
    """Two small-band COG tiles either side of 72°E (UTM 42N / 43N), 2024, as a static catalog.

    Returns ``{"root": data dir, "catalog": catalog.json, "tiles": {item_id: (item, codes,
    scales)}}``; the layout is the published one, ``{collection}/{year}/{grid}/{item}.json``.
    """
    root = open_tmp("cogcat")
    tiles = {}
    collection = make_collection(EMB_COLLECTION)
    collection["links"] = [{"rel": "root", "href": "../catalog.json"}]
    for seed, (lon, lat) in enumerate([(71.93, 23.01), (72.07, 23.01)]):
        from tessera_stac.catalog.model import GridCell

        cell = GridCell.containing(lon, lat)
        folder = root / EMB_COLLECTION / "2024" / cell.name
        item, codes, scales = write_tile(folder, lon, lat, 2024, bands=8, seed=seed)
        (folder / f"{item['id']}.json").write_text(json.dumps(item, indent=2))
        rel = f"./2024/{cell.name}/{item['id']}.json"
        collection["links"].append({"rel": "item", "href": rel})
        tiles[item["id"]] = (item, codes, scales)
    (root / EMB_COLLECTION / "collection.json").write_text(json.dumps(collection, indent=2))
    catalog = {
        "type": "Catalog",
        "stac_version": "1.1.0",
        "id": "tessera",
        "description": "test",
        "links": [{"rel": "child", "href": f"./{EMB_COLLECTION}/collection.json"}],
    }
    (root / "catalog.json").write_text(json.dumps(catalog))
    return {"root": root, "catalog": root / "catalog.json", "tiles": tiles}


# ------------------------------------------------------- the real published sample, served
@pytest.fixture(scope="session")
def published_catalog(published_sample: Any, open_tmp: Callable[[str], Path]) -> dict[str, Any]:
    """``published_sample`` made a complete static catalog by the real ``catalog build``.

    The published tree is hard-linked (no copy of the COGs) into a folder of our own, then
    ``build_static_catalog`` writes ``catalog.json``, the embedding collection and the model
    collection with its MLM item there (atomic replace: the shared sample is never touched).
    Returns ``{"root", "catalog", "sample", "items"}`` (``items``: the published item dicts).
    """
    import shutil
    import subprocess

    from tessera_stac.catalog.static import build_static_catalog
    from tessera_stac.catalog.store import LocalStore

    root = open_tmp("api-published") / "published"
    if shutil.which("cp"):
        subprocess.run(["cp", "-al", str(published_sample.dest), str(root)], check=True)
    else:  # pragma: no cover
        shutil.copytree(published_sample.dest, root)
    report = build_static_catalog(LocalStore(root), geoparquet=False)
    assert report.ok, report.to_dict()
    items = [json.loads(p.read_text()) for p in published_sample.items]
    return {
        "root": root,
        "catalog": root / "catalog.json",
        "sample": published_sample,
        "items": items,
    }

"""Map tiles through the reader kernel against GDAL's warped reads (the same app with
``tile_kernel`` off is the reference): same pixels, same masks, for items and the year
mosaic, raw bands and the PCA / similarity layers, z12-z15.

GDAL's pixel choice is reproduced exactly in the interior (``catalog.reader.warp``); where
a pixel centre falls within a few thousandths of a source pixel of the image's edge, the two
paths can disagree on whether it is inside. The tests count every differing pixel, print the
counts, and allow at most 0.5 % of a tile. Each comparison checks that the kernel path was
taken (and the reference was not), so a silent fall-back fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import morecantile
import numpy as np
import pytest

from tessera_stac.api.app import create_app
from tessera_stac.api.kernel_tiles import TILE_READS
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.pgstac.load import load
from tests.fixtures_corestack import JOIN_TEST_YEAR, TEST_EMBEDDING_COLLECTION

LiveApi = Callable[[Any], str]
TMS = morecantile.tms.get("WebMercatorQuad")
COLL = TEST_EMBEDDING_COLLECTION
YEAR = JOIN_TEST_YEAR
ZOOMS = (12, 13, 14, 15)
VECTORS = [("assets", "embeddings"), ("assets", "scales")]
RGB = [("assets", "embeddings|bidx=1,2,3"), ("resampling", "nearest")]
#: most pixels of a tile the two paths may disagree on (edge rounding), as a fraction
MAX_DIFFERENT = 0.005
ITEM_CELL = GridCell.containing(72.05, 21.85)
CORNER = (72.0, 21.8)


@pytest.fixture
def kernel_root(join_tiles_built: Path) -> Path:
    """The 4 tiles around 72°E / 21.8°N as a built static catalog (session-wide, read-only)."""
    return join_tiles_built


@pytest.fixture
def apis(pg_dsn: str, live_api: LiveApi, kernel_root: Path) -> Iterator[tuple[str, str]]:
    """(kernel app URL, GDAL app URL) over the same database and files."""
    kernel = live_api(create_app(ApiSettings(data_dir=kernel_root, tile_cache_mb=0), pg_dsn))
    gdal = live_api(
        create_app(ApiSettings(data_dir=kernel_root, tile_cache_mb=0, tile_kernel=False), pg_dsn)
    )
    load(pg_dsn, str(kernel_root / "catalog.json"), base_url=kernel + "/data")
    yield kernel, gdal


def tiles_over(bounds: tuple[float, float, float, float], zoom: int, n: int) -> list[Any]:
    """Up to ``n`` tiles of ``zoom`` over lon/lat ``bounds``: the first, middle and last."""
    tiles = list(TMS.tiles(*bounds, zooms=[zoom]))
    picks = sorted({0, len(tiles) // 2, len(tiles) - 1, len(tiles) // 3})[:n]
    return [tiles[i] for i in picks]


def fetch(url: str, params: list[tuple[str, str]], path: str) -> tuple[np.ndarray, np.ndarray]:
    """(data, valid) of a ``.npy`` tile, and checks which path read it (by the caller)."""
    got = httpx.get(f"{url}{path}", params=params, timeout=180)
    assert got.status_code == 200, got.text[:2000]
    import io

    arr = np.load(io.BytesIO(got.content))
    return arr[:-1], arr[-1] > 0


def compare(
    apis: tuple[str, str], path: str, params: list[tuple[str, str]], label: str
) -> tuple[int, int]:
    """(differing pixels, pixels) of one tile, kernel app vs GDAL app; asserts each app took
    its own path."""
    kernel_url, gdal_url = apis
    before = TILE_READS.snapshot()
    data, valid = fetch(kernel_url, params, path)
    middle = TILE_READS.snapshot()
    ref, ref_valid = fetch(gdal_url, params, path)
    after = TILE_READS.snapshot()
    assert middle["kernel"] > before["kernel"], f"{label}: the kernel path was not taken"
    assert middle["gdal"] == before["gdal"], f"{label}: the kernel app fell back to GDAL"
    assert after["kernel"] == middle["kernel"], f"{label}: the reference used the kernel"
    assert data.shape == ref.shape and data.dtype == ref.dtype
    both = valid & ref_valid
    values = np.zeros(valid.shape, dtype=bool)
    values[both] = np.any(data[:, both] != ref[:, both], axis=0)
    different = int(((valid != ref_valid) | values).sum())
    print(f"{label}: {different} of {valid.size} pixels differ ({ref_valid.mean():.0%} valid)")
    assert ref_valid.any(), f"{label}: an empty tile proves nothing"
    return different, valid.size


def check_all(results: list[tuple[int, int]]) -> None:
    worst = max(d / n for d, n in results)
    total = sum(d for d, _ in results), sum(n for _, n in results)
    print(f"total: {total[0]} of {total[1]} pixels differ; worst tile {worst:.4%}")
    assert worst <= MAX_DIFFERENT


@pytest.mark.slow  # 27 real-size item tiles through both read paths
def test_item_tiles_equal_gdal(apis: tuple[str, str]) -> None:
    item = f"/tiles/collections/{COLL}/items/{ITEM_CELL.name}_{YEAR}/tiles/WebMercatorQuad"
    results = []
    for z in ZOOMS:
        for tile in tiles_over(ITEM_CELL.bounds, z, 3):
            path = f"{item}/{z}/{tile.x}/{tile.y}.npy"
            results.append(compare(apis, path, VECTORS, f"item z{z} 129 bands {tile}"))
            results.append(compare(apis, path, RGB, f"item z{z} rgb {tile}"))
    tile = tiles_over(ITEM_CELL.bounds, 14, 1)[0]
    path = f"{item}/14/{tile.x}/{tile.y}.npy"
    results.append(compare(apis, path, [("assets", "scales")], "item z14 scales"))
    results.append(compare(apis, path, [*RGB, ("tilesize", "512")], "item z14 512 px"))
    results.append(
        compare(apis, path, [("assets", "embeddings"), ("expression", "b1*2-b3")], "expression")
    )
    check_all(results)


@pytest.mark.slow  # 13 real-size mosaic and item tiles through both read paths
def test_mosaic_pca_and_similarity_equal_gdal(apis: tuple[str, str]) -> None:
    mosaic = f"/tiles/collections/{COLL}/years/{YEAR}/tiles/WebMercatorQuad"
    similarity = ("algorithm_params", json.dumps({"lon": 72.0321, "lat": 21.8123}))
    results = []
    for z in ZOOMS:
        tile = TMS.tile(*CORNER, z)
        path = f"{mosaic}/{z}/{tile.x}/{tile.y}.npy"
        results.append(compare(apis, path, RGB, f"mosaic z{z} rgb"))
        results.append(compare(apis, path, [*VECTORS, ("algorithm", "pca")], f"mosaic z{z} pca"))
        results.append(
            compare(
                apis,
                path,
                [*VECTORS, ("algorithm", "similarity"), similarity],
                f"mosaic z{z} similarity",
            )
        )
    item = f"/tiles/collections/{COLL}/items/{ITEM_CELL.name}_{YEAR}/tiles/WebMercatorQuad"
    tile = tiles_over(ITEM_CELL.bounds, 13, 1)[0]
    path = f"{item}/13/{tile.x}/{tile.y}.npy"
    results.append(compare(apis, path, [*VECTORS, ("algorithm", "pca")], "item z13 pca"))
    check_all(results)


def test_unusual_requests_fall_back_to_gdal(apis: tuple[str, str]) -> None:
    kernel_url, _ = apis
    item = f"/tiles/collections/{COLL}/items/{ITEM_CELL.name}_{YEAR}/tiles/WebMercatorQuad"
    tile = tiles_over(ITEM_CELL.bounds, 14, 1)[0]
    path = f"{item}/14/{tile.x}/{tile.y}.npy"
    for extra in (
        [("resampling", "bilinear")],
        [("reproject", "bilinear")],
        [("buffer", "2")],
        [("nodata", "0")],
        [("tilesize", "1024")],  # rows warped in pieces
    ):
        before = TILE_READS.snapshot()
        fetch(kernel_url, [("assets", "embeddings|bidx=1,2,3"), *extra], path)
        after = TILE_READS.snapshot()
        assert after["gdal"] > before["gdal"], f"{extra} should be read through GDAL"
        assert after["kernel"] == before["kernel"], f"{extra} went through the kernel"


def test_bbox_reads_stay_packed_with_the_stacked_reads_pixels(kernel_root: Path) -> None:
    """An item's ``/bbox`` (and ``/feature``) read of codes + scales is packed, as its tiles
    are: no 129-band float32 stack (4 bytes a value and a mask: the largest allocation of a
    wide read). The PCA and similarity layers on the packed read equal, bit for bit, the same
    algorithms on rio-tiler's own stacked read, and so does the raw 129-band stack."""
    import pystac
    from titiler.pgstac.reader import PgSTACReader

    from tessera_stac.api import budget, tiles
    from tessera_stac.api.packed import PackedImage

    collection = json.loads(next(kernel_root.glob(f"{COLL}/collection.json")).read_text())
    projection = collection["summaries"].get("tessera:projection") or collection.get(
        "tessera:projection"
    )
    assert projection, "the built collection holds its PCA projection"
    path = next(p for p in kernel_root.glob(f"{COLL}/**/*.json") if ITEM_CELL.name in p.name)
    item = pystac.Item.from_file(str(path))
    reader_type = tiles.item_reader(lambda href: href, budget.budget_reader(ApiSettings()))
    w, s, e, n = item.bbox
    bbox = (w + 0.01, s + 0.02, e - 0.03, n - 0.01)  # an area with the item's edges in it
    options = {"assets": ["embeddings", "scales"], "max_size": 300}
    with reader_type(item) as src:
        packed = src.part(bbox, **options)
        stacked = PgSTACReader.part(src, bbox, **options)
    assert isinstance(packed, PackedImage) and not isinstance(stacked, PackedImage)
    assert packed.count == stacked.count == 129
    layers = [
        tiles.EmbeddingProjection(projection=projection),
        tiles.EmbeddingSimilarity(vector=[0.1] * 64 + [-0.05] * 64),
    ]
    for layer in layers:
        a, b = layer(packed), layer(stacked)
        assert np.array_equal(np.ma.getmaskarray(a.array), np.ma.getmaskarray(b.array))
        assert np.array_equal(np.ma.getdata(a.array), np.ma.getdata(b.array)), type(layer)
        assert (~np.ma.getmaskarray(a.array)).any(), "something valid to compare"
    assert np.array_equal(packed.array.filled(0), stacked.array.filled(0))
    assert np.array_equal(np.ma.getmaskarray(packed.array), np.ma.getmaskarray(stacked.array))

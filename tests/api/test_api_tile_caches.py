"""The map-tile readers' per-worker caches (api.budget): open datasets, kernel headers and warp
plans are bounded, shared where they may be, and never outlive the file they came from (a
file rewritten in place is read anew); kernel-read assets are read without rio-tiler's threads
(api.packed.kernel_reads). Real COGs on disk, real GDAL and kernel reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import morecantile
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from tessera_stac.api import tiles
from tessera_stac.api.app import create_app
from tessera_stac.api.budget import budget_reader
from tessera_stac.api.caches import DatasetPool, LruCache, file_version
from tessera_stac.api.kernel_tiles import TILE_READS
from tessera_stac.api.packed import kernel_reads
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.pgstac.load import load
from tessera_stac.catalog.profile import SCALES
from tests.fixtures_corestack import JOIN_TEST_YEAR, TEST_EMBEDDING_COLLECTION

TMS = morecantile.tms.get("WebMercatorQuad")
#: a 512 px UTM 43N grid at 10 m near 72.05°E / 21.85°N
TRANSFORM = Affine(10.0, 0.0, 210_000.0, 0.0, -10.0, 2_420_000.0)
SIZE = 512


def write_scales(path: Path, value: float, stats: tuple[float, float]) -> Path:
    """A scales COG (published profile, overviews) holding ``value`` everywhere, with GDAL
    band statistics ``stats``."""
    opts = {k.lower(): v for k, v in SCALES.creation_options().items()}
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=SIZE,
        width=SIZE,
        count=1,
        dtype=SCALES.dtype,
        nodata=SCALES.nodata,
        crs="EPSG:32643",
        transform=TRANSFORM,
        **opts,
    ) as dst:
        dst.write(np.full((1, SIZE, SIZE), value, dtype=np.float32))
        dst.update_tags(1, STATISTICS_MINIMUM=str(stats[0]), STATISTICS_MAXIMUM=str(stats[1]))
        dst.build_overviews([2, 4], Resampling.nearest)
    return path


def centre_tile(path: Path, zoom: int = 14) -> Any:
    with rasterio.open(path) as ds:
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    return TMS.tile((west + east) / 2, (south + north) / 2, zoom)


def reader_class(**settings: Any) -> Any:
    return budget_reader(ApiSettings(**settings))


def kernel_tile_of(reader: Any, path: Path, tile: Any) -> Any:
    before = TILE_READS.snapshot()["kernel"]
    with reader(str(path)) as src:
        img = src.tile(tile.x, tile.y, tile.z)
    assert TILE_READS.snapshot()["kernel"] == before + 1, "read through the kernel"
    return img


def test_lru_cache_keeps_at_most_its_size() -> None:
    cache = LruCache(2)
    for key in "abc":
        cache.put(key, key.upper())
    assert len(cache) == 2
    assert cache.get("a") is None
    assert cache.get("b") == "B"
    cache.put("d", "D")  # "c" is now the least recently used
    assert cache.get("c") is None and cache.get("b") == "B"
    off = LruCache(0)
    off.put("a", 1)
    assert len(off) == 0 and off.get("a") is None


def test_dataset_pool_reuses_handles_one_reader_at_a_time(tmp_path: Path) -> None:
    paths = [write_scales(tmp_path / f"s{i}.tif", 0.05, (0.05, 0.05)) for i in range(3)]
    reader = reader_class(tile_dataset_cache_size=2)
    pool: DatasetPool = reader.datasets
    tile = centre_tile(paths[0])
    kernel_tile_of(reader, paths[0], tile)
    assert pool.opened == 1 and len(pool) == 1
    kernel_tile_of(reader, paths[0], tile)
    assert pool.opened == 1, "the idle handle was reused"
    with reader(str(paths[0])) as first, reader(str(paths[0])) as second:
        assert first.dataset is not second.dataset, "a handle is never shared at once"
    assert pool.opened == 2 and len(pool) == 2
    for path in paths:
        kernel_tile_of(reader, path, tile)
    assert len(pool) == 2, "bounded: the least recently used handles are closed"
    pool.close()
    assert len(pool) == 0


def test_pool_off_opens_per_reader(tmp_path: Path) -> None:
    path = write_scales(tmp_path / "s.tif", 0.05, (0.05, 0.05))
    reader = reader_class(tile_dataset_cache_size=0)
    kernel_tile_of(reader, path, centre_tile(path))
    kernel_tile_of(reader, path, centre_tile(path))
    assert reader.datasets.opened == 0 and len(reader.datasets) == 0


def test_rewritten_file_is_read_anew(tmp_path: Path) -> None:
    """A republish rewrites a COG in place: the next tile has the new pixels and statistics
    (no kept handle, header or plan of the old file is used for them)."""
    path = write_scales(tmp_path / "s.tif", 0.05, (0.01, 0.09))
    reader = reader_class()
    tile = centre_tile(path)
    old = kernel_tile_of(reader, path, tile)
    assert np.allclose(old.array.data[~old.array.mask], 0.05)
    assert old.dataset_statistics == [(0.01, 0.09)]
    version = file_version(str(path))
    write_scales(path, 0.07, (0.02, 0.08))
    assert file_version(str(path)) != version
    new = kernel_tile_of(reader, path, tile)
    assert np.allclose(new.array.data[~new.array.mask], 0.07)
    assert new.dataset_statistics == [(0.02, 0.08)]
    assert reader.datasets.opened == 2
    assert len(reader.datasets) == 1, "the old file's handle was closed, not kept"


def test_plans_are_shared_by_files_of_one_grid_and_bounded(tmp_path: Path) -> None:
    a = write_scales(tmp_path / "a.tif", 0.05, (0.05, 0.05))
    b = write_scales(tmp_path / "b.tif", 0.06, (0.06, 0.06))
    reader = reader_class(tile_plan_cache_size=2)
    tile = centre_tile(a, zoom=15)
    first = kernel_tile_of(reader, a, tile)
    assert len(reader.plans) == 1
    second = kernel_tile_of(reader, b, tile)
    assert len(reader.plans) == 1, "b's tile used a's plan (same grid, same tile)"
    assert np.array_equal(first.array.mask, second.array.mask)
    fresh = kernel_tile_of(reader_class(tile_plan_cache_size=0), b, tile)
    assert np.array_equal(fresh.array.mask, second.array.mask)
    assert np.array_equal(fresh.array.data, second.array.data)
    for dx in (1, -1):
        kernel_tile_of(reader, a, morecantile.Tile(tile.x + dx, tile.y, tile.z))
    assert len(reader.plans) == 2


def test_header_cache_is_bounded(tmp_path: Path) -> None:
    paths = [write_scales(tmp_path / f"s{i}.tif", 0.05, (0.05, 0.05)) for i in range(3)]
    reader = reader_class(tile_header_cache_size=2)
    for path in paths:
        kernel_tile_of(reader, path, centre_tile(path))
    assert len(reader.headers) == 2


def test_kernel_reads_only_local_files_with_the_kernel_on() -> None:
    on, off = reader_class(), reader_class(tile_kernel=False)
    assert kernel_reads(on, ["/data/a.tif", "/data/b.tif"])
    assert not kernel_reads(off, ["/data/a.tif"])
    assert not kernel_reads(on, ["/data/a.tif", "/vsicurl/https://example.org/b.tif"])
    assert not kernel_reads(on, ["https://example.org/a.tif"])


def test_similarity_vector_is_kept_per_layer_and_read_anew_with_the_item(
    pg_dsn: str, live_api: Callable[[Any], str], join_tiles_built: Path
) -> None:
    """The query vector of a similarity layer is read once for its tiles (bounded LRU), and
    read again once the Item lookup it came from is refreshed (as after a reload, when the
    lookup's short cache ends): it is never kept past the Item object it was read for."""
    app = create_app(
        ApiSettings(data_dir=join_tiles_built, tile_cache_mb=0, tile_vector_cache_size=1), pg_dsn
    )
    url = live_api(app)
    load(pg_dsn, str(join_tiles_built / "catalog.json"), base_url=url + "/data")
    cache = app.state.tile_vectors

    def layer(lon: float, lat: float) -> list[Any]:
        template = tiles.tile_urls(
            url, TEST_EMBEDDING_COLLECTION, "similarity", year=JOIN_TEST_YEAR, lon=lon, lat=lat
        )["xyz"]
        shown = []
        for tile in (TMS.tile(72.05, 21.85, 14), TMS.tile(72.06, 21.86, 14)):
            path = template.replace("{z}", str(tile.z)).replace("{x}", str(tile.x))
            got = httpx.get(path.replace("{y}", str(tile.y)), timeout=180)
            assert got.status_code == 200, got.text[:500]
            shown.append(cache.items())
        return shown

    first, second = layer(72.05, 21.85)
    assert len(first) == 1
    (key, kept), (key2, kept2) = first[0], second[0]
    assert key == key2 and kept2 is kept, "the second tile used the kept vector"
    item, vector = kept
    assert len(vector) == 128 and any(v != 0 for v in vector)
    tiles._CACHE.clear()  # the Item lookup's cache ends: the next tile looks the Item up again
    (key3, kept3), _ = (entries[0] for entries in layer(72.05, 21.85))
    assert key3 == key and kept3 is not kept and kept3[0] is not item
    assert kept3[1] == vector, "same Item, same files: the same vector"
    layer(72.07, 21.87)
    assert len(cache) == 1, "bounded"
    assert cache.items()[0][0] != key


def test_tile_routes_share_one_tile_matrix_set_per_identifier() -> None:
    """titiler's factories get the tile matrix sets from ``SUPPORTED_TMS``: the same kept
    instance on every request (morecantile's registry deep-copies it each time, ~1 ms a tile),
    every identifier morecantile knows, and morecantile's error for an unknown one."""
    from morecantile.errors import InvalidIdentifier

    from tessera_stac.api.budget import SUPPORTED_TMS

    assert sorted(SUPPORTED_TMS.list()) == sorted(morecantile.tms.list())
    for name in SUPPORTED_TMS.list():
        kept = SUPPORTED_TMS.get(name)
        assert kept is SUPPORTED_TMS.get(name)
        assert kept.model_dump() == morecantile.tms.get(name).model_dump()
    with pytest.raises(InvalidIdentifier):
        SUPPORTED_TMS.get("NoSuchGrid")


def test_kept_tile_exists_answers_as_rio_tiler_and_once(tmp_path: Path) -> None:
    """The kept ``tile_exists`` gives rio-tiler's answer for tiles inside, on the edges of and
    outside a file, and asks rio-tiler once per tile (the same answer for another reader of
    the same grid, a new question for a file of another grid); the kept grid gives rio-tiler's
    min/max zoom."""
    from rio_tiler.io import Reader

    from tessera_stac.api.caches import KeptTileGeometry

    class Counting(KeptTileGeometry, Reader):
        asked = 0
        _exists = LruCache(64)
        _grids = LruCache(8)

        def tile_exists(self, tile_x: int, tile_y: int, tile_z: int) -> bool:
            return super().tile_exists(tile_x, tile_y, tile_z)

    original = Reader.tile_exists

    def counted(self: Any, *tile: int) -> bool:
        Counting.asked += 1
        return bool(original(self, *tile))

    path = write_scales(tmp_path / "s.tif", 1.0, (1.0, 1.0))
    centre = centre_tile(path)
    tiles = [(centre.x + dx, centre.y + dy, centre.z) for dx in range(-5, 6) for dy in (-5, 0, 5)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Reader, "tile_exists", counted)
        with Reader(str(path)) as plain:
            want = [original(plain, *t) for t in tiles]
        assert True in want and False in want, "tiles inside and outside the file"
        for _ in range(2):
            with Counting(str(path)) as kept:
                assert [kept.tile_exists(*t) for t in tiles] == want
        assert Counting.asked == len(tiles), "rio-tiler asked once per tile"
        other = tmp_path / "o.tif"
        with rasterio.open(path) as src:
            profile = src.profile
            profile["transform"] = TRANSFORM * Affine.translation(SIZE * 3, 0)
            with rasterio.open(other, "w", **profile) as dst:
                dst.write(src.read())
        with Counting(str(other)) as moved:
            got = [moved.tile_exists(*t) for t in tiles]
        assert Counting.asked == 2 * len(tiles), "another grid is asked anew"
        with Reader(str(other)) as plain:
            assert got == [original(plain, *t) for t in tiles]
            zooms = (plain.minzoom, plain.maxzoom)
    grids = []
    for _ in range(2):
        with Counting(str(other)) as kept:
            assert (kept.minzoom, kept.maxzoom) == zooms, "rio-tiler's zoom range"
            grids.append(kept._dst_geom_in_tms_crs)
    assert grids[0] is grids[1], "the second reader's grid is the kept one"


def test_typed_nodata_compares_integer_codes_as_their_own_type() -> None:
    """An integer nodata is compared as the codes' own type (same mask as the float compare);
    a value the type cannot hold stays as it is (nothing equals it)."""
    from tessera_stac.api.kernel_tiles import _typed

    codes = np.arange(-128, 128, dtype=np.int16).astype(np.int8).reshape(2, 8, 16)
    for value in (-128.0, 0.0, 127.0, 0.5, 300.0, float("inf")):
        typed = _typed(value, codes.dtype)
        assert np.array_equal(codes == typed, codes == value), value
        assert (type(typed) is np.int8) == (value in (-128.0, 0.0, 127.0)), value


def test_warm_routes_leaves_no_route_to_build_in_the_first_request() -> None:
    """FastAPI builds an included router's routes (dependants, a pydantic adapter per
    parameter) on the first request that walks past them; start-up walks them all
    (``warm_routes``), so the first request of a fresh server builds none, whatever its path."""
    from unittest import mock

    import fastapi.routing
    from starlette.testclient import TestClient

    from tessera_stac.api.app import create_app, warm_routes
    from tessera_stac.api.settings import ApiSettings

    built = fastapi.routing._EffectiveRouteContext.from_api_route
    paths = ["/_mgmt/ping", "/tiles/collections/c/items/i/info", "/no/such/path"]
    counts = {}
    for warm in (False, True):
        app = create_app(ApiSettings(), "postgresql://nobody@127.0.0.1:9/none")  # never opened
        if warm:
            assert warm_routes(app) > 10
        with mock.patch.object(
            fastapi.routing._EffectiveRouteContext, "from_api_route", wraps=built
        ) as spy:
            client = TestClient(app)  # no lifespan: nothing connects
            for path in paths:
                client.get(path)
            counts[warm] = spy.call_count
    assert counts[False] > 50  # what a cold app builds in its first requests
    assert counts[True] == 0


def test_warm_pool_runs_the_search_when_the_database_answers(pg_dsn: str) -> None:
    import asyncio

    from fastapi import FastAPI

    from tessera_stac.api import tiles
    from tessera_stac.catalog.pgstac.cluster import free_port

    assert tiles.warm_pool(FastAPI(), 1.0) is False  # no pool opened
    for dsn, answers in ((pg_dsn, True), (f"postgresql://nobody@127.0.0.1:{free_port()}/x", False)):
        app = FastAPI()
        asyncio.run(tiles.open_pool(app, dsn))
        try:
            # True only when pgSTAC's search ran on the pool's connection
            assert tiles.warm_pool(app, 10.0 if answers else 0.5) is answers
        finally:
            asyncio.run(tiles.close_pool(app))

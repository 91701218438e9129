"""Publishing from a geoemb Zarr v3 store: same product as the .npy path, read by chunk.

One store is written from real-size synthetic .npy tiles: three cells north of the equator in
UTM zone 43 (two side by side, one below), one in zone 42 and one just south of the equator in
zone 43 (its northing made continuous on the zone grid). Both paths are published and compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate

from tessera_stac.catalog.model import GridCell
from tessera_stac.publisher.embeddings import run, tiles, zarr_source
from tessera_stac.publisher.engines.local import ProcessEngine
from tessera_stac.publisher.samples import tiles as sample
from tessera_stac.publisher.samples.zarr_store import write_store

YEAR = 2024
#: five real-size tiles published twice (from .npy and from the Zarr store they were written to)
pytestmark = pytest.mark.slow

GRIDS = (
    "grid_71.95_21.85",
    "grid_72.05_21.85",
    "grid_72.15_21.85",
    "grid_72.05_21.75",
    "grid_72.05_-0.05",
)


@dataclass(frozen=True)
class Both:
    source: Path
    store: Path
    npy: dict[str, Path]  # grid -> item json (published from .npy)
    zarr: dict[str, Path]  # grid -> item json (published from the store)
    placed: tuple[tuple[str, int, int, int], ...]
    report: Any


def _items(report: Any, dest: Path) -> dict[str, Path]:
    out = {}
    for t in report.published:
        out[t.cell.name] = dest / t.collection_id / str(t.year) / t.cell.name / f"{t.item_id}.json"
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Both:
    base = tmp_path_factory.mktemp("zarr")
    source = base / "source"
    for grid in GRIDS:
        sample.write_tile(
            source, GridCell.parse(grid), YEAR, sample.SampleOptions(zero_fraction=0.02)
        )
    srcs = tiles.discover(str(source), "geotessera")
    summary = write_store(base / "tessera.zarr", srcs)
    engine = ProcessEngine(2)
    npy = run.publish(srcs, str(base / "npy"), engine=engine, report=None)
    cells = zarr_source.discover(f"zarr://{base / 'tessera.zarr'}")
    zarr = run.publish(cells, str(base / "zarr"), engine=engine, report=None)
    assert not npy.failed and not zarr.failed, [o.reason for o in (*npy.failed, *zarr.failed)]
    return Both(
        source,
        base / "tessera.zarr",
        _items(npy, base / "npy"),
        _items(zarr, base / "zarr"),
        summary.placed,
        zarr,
    )


def _read_item(path: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    item = json.loads(path.read_text())
    with rasterio.open(path.parent / "embeddings.tif") as ds:
        codes = ds.read()
    with rasterio.open(path.parent / "scales.tif") as ds:
        scales = ds.read(1)
    return item, codes, scales


def _store_region(store: Path, item: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The store's codes (128, h, w) and scales at the item's grid, located by coordinates."""
    import zarr

    epsg = int(item["properties"]["proj:code"].split(":")[1])
    a, _, x0, _, e, y0 = item["properties"]["proj:transform"]
    h, w = item["properties"]["proj:shape"]
    group = zarr.open_group(str(store), mode="r")[f"utm{epsg % 100:02d}"]
    xs, ys = np.asarray(group["x"][:]), np.asarray(group["y"][:])
    north = y0 - (10_000_000.0 if epsg >= 32700 else 0.0)
    col = np.flatnonzero(xs == x0 + a / 2)
    row = np.flatnonzero(ys == north + e / 2)
    assert len(col) == 1 and len(row) == 1, "the item's pixels are not on the zone grid"
    r, c = int(row[0]), int(col[0])
    t = list(np.asarray(group["time"][:])).index(YEAR)
    codes = np.asarray(group["embeddings"][t, :, r : r + h, c : c + w])
    scales = np.asarray(group["scales"][t, r : r + h, c : c + w])
    return codes, scales


def test_discovery_finds_the_written_cells(both: Both) -> None:
    assert sorted(both.zarr) == sorted(GRIDS)
    assert sorted(both.npy) == sorted(GRIDS)


def test_valid_pixels_equal_the_store_bit_for_bit(both: Both) -> None:
    for grid, path in both.zarr.items():
        item, codes, scales = _read_item(path)
        s_codes, s_scales = _store_region(both.store, item)
        valid = np.isfinite(scales)
        assert valid.sum() > 0.5 * valid.size, grid
        # dequantised values at the valid pixels only (the products of the whole 128-band
        # rasters cost ~4 s a tile in float copies and are not compared elsewhere)
        got = codes[:, valid].astype(np.float32) * scales[valid]
        want = s_codes[:, valid].astype(np.float32) * s_scales[valid]
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), grid
        # no valid pixel where the store has water (NaN) or unfilled land (+inf)
        assert not (valid & ~np.isfinite(s_scales)).any(), grid
        # and every usable store pixel is published
        usable = np.isfinite(s_scales) & (s_codes.min(axis=0) != -128)
        assert np.array_equal(valid, usable), grid
        assert (codes[:, ~valid] == -128).all()


def test_cogs_pass_strict_validation_and_items_say_where_from(both: Both) -> None:
    for path in both.zarr.values():
        for name in ("embeddings.tif", "scales.tif"):
            assert cog_validate(str(path.parent / name), strict=True, quiet=True)[0]
        item = json.loads(path.read_text())
        # a local store is private: no `via` link to its path (issue 11); public ones are linked
        assert not any(ln["rel"] == "via" for ln in item["links"]), item["links"]
    # the same COG profile as the .npy path
    for grid in GRIDS:
        with (
            rasterio.open(both.zarr[grid].parent / "embeddings.tif") as a,
            rasterio.open(both.npy[grid].parent / "embeddings.tif") as b,
        ):
            assert a.profile["blockxsize"] == b.profile["blockxsize"]
            assert (a.count, a.dtypes, a.nodata, a.overviews(1)) == (
                b.count,
                b.dtypes,
                b.nodata,
                b.overviews(1),
            )
            assert a.crs == b.crs and a.shape == b.shape
            # the grid moves onto the 10 m lattice by less than half a pixel
            assert (
                abs(a.transform.c - b.transform.c) <= 5 and abs(a.transform.f - b.transform.f) <= 5
            )
            assert a.transform.c % 10 == 0 and a.transform.f % 10 == 0


def _centre_in_cell(item: dict[str, Any], cell: GridCell) -> np.ndarray:
    epsg = int(item["properties"]["proj:code"].split(":")[1])
    a, _, x0, _, e, y0 = item["properties"]["proj:transform"]
    h, w = item["properties"]["proj:shape"]
    rows, cols = np.mgrid[0:h, 0:w]
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(
        x0 + (cols + 0.5) * a, y0 + (rows + 0.5) * e
    )
    west, south, east, north = cell.bounds
    return (lon >= west) & (lon < east) & (lat >= south) & (lat < north)


def _owner(both: Both, grid: str, item: dict[str, Any]) -> np.ndarray:
    """Index (in write order) of the tile that wrote each pixel of ``grid``'s rectangle last."""
    me = next(p for p in both.placed if p[0] == grid)
    h, w = item["properties"]["proj:shape"]
    owner = np.full((h, w), -1)
    zone = GridCell.parse(grid).utm_epsg % 100
    for k, (other, _year, row, col) in enumerate(both.placed):
        if GridCell.parse(other).utm_epsg % 100 != zone:
            continue
        oh, ow = tiles.rebuild_georef(GridCell.parse(other)).shape
        r0, r1 = max(row, me[2]), min(row + oh, me[2] + h)
        c0, c1 = max(col, me[3]), min(col + ow, me[3] + w)
        if r1 > r0 and c1 > c0:
            owner[r0 - me[2] : r1 - me[2], c0 - me[3] : c1 - me[3]] = k
    return owner


def test_npy_and_zarr_agree_inside_the_cell_except_neighbour_strips(both: Both) -> None:
    """Same source index -> same value, for pixels whose centre is in the cell, unless a tile
    written later took the pixel; there the store's (the later tile's) value is published."""
    order = [p[0] for p in both.placed]
    taken_total = 0
    npy: dict[str, tuple[dict[str, Any], np.ndarray, np.ndarray]] = {}

    def read_npy(grid: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """The .npy publish of ``grid``, read once (a neighbour's is read again otherwise)."""
        if grid not in npy:
            npy[grid] = _read_item(both.npy[grid])
        return npy[grid]

    for grid in GRIDS:
        item, z_codes, z_scales = _read_item(both.zarr[grid])
        _, n_codes, n_scales = read_npy(grid)
        inside = _centre_in_cell(item, GridCell.parse(grid))
        owner = _owner(both, grid, item)
        mine = owner == order.index(grid)
        agree = inside & mine
        assert np.array_equal(np.isfinite(z_scales) & agree, np.isfinite(n_scales) & agree)
        ok = agree & np.isfinite(z_scales)
        assert np.array_equal(z_codes[:, ok], n_codes[:, ok]) and np.array_equal(
            z_scales[ok], n_scales[ok]
        )
        taken = inside & ~mine
        taken_total += int(taken.sum())
        for k in np.unique(owner[taken]):
            other = order[k]
            o_item, o_codes, o_scales = read_npy(other)
            assert order.index(other) > order.index(grid)  # only a later tile overwrites
            # the published value there is the later tile's own pixel at its own index
            d_row = round(
                (
                    o_item["properties"]["proj:transform"][5]
                    - item["properties"]["proj:transform"][5]
                )
                / 10
            )
            d_col = round(
                (
                    item["properties"]["proj:transform"][2]
                    - o_item["properties"]["proj:transform"][2]
                )
                / 10
            )
            rr, cc = np.nonzero(taken & (owner == k))
            orr, occ = rr + d_row, cc + d_col
            fin = np.isfinite(z_scales[rr, cc])
            assert np.array_equal(fin, np.isfinite(o_scales[orr, occ]))
            assert np.array_equal(z_codes[:, rr[fin], cc[fin]], o_codes[:, orr[fin], occ[fin]])
    # zone 43's three northern tiles overlap: the strips exist and are few
    assert (
        0
        < taken_total
        < 0.02 * sum(np.prod(tiles.rebuild_georef(GridCell.parse(g)).shape) for g in GRIDS)
    )
    print(f"pixels inside a cell taken by a later neighbour: {taken_total}")


def test_unfilled_is_counted_apart_and_empty_cells_are_skipped(both: Both, tmp_path: Path) -> None:
    counts = {o.grid: o.counts for o in both.report.outcomes}
    # 72.15 sits right of 72.05 and is written after it: 72.05's rectangle is full, while
    # the cell 72.25 (never written) would be all unfilled but its left strip
    assert all("unfilled" in c for c in counts.values())
    cell = zarr_source.ZarrCell(str(both.store), 43, "grid_72.25_21.85", YEAR)
    outcome = run.publish([cell], str(tmp_path / "out"), report=None).outcomes[0]
    assert outcome.status == "skipped" and "nothing filled" in outcome.reason
    assert not zarr_source.discover(
        str(both.store), tiles.TileFilter(grids=None, bbox=(72.2, 21.8, 72.3, 21.9))
    )


def test_reads_chunks_never_a_whole_shard(
    both: Both, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zarr.storage

    calls: list[tuple[str, Any]] = []
    original = zarr.storage.LocalStore.get

    async def spy(self: Any, key: str, prototype: Any, byte_range: Any = None) -> Any:
        calls.append((key, byte_range))
        return await original(self, key, prototype, byte_range)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", spy)
    cell = zarr_source.ZarrCell(str(both.store), 43, "grid_72.05_21.85", YEAR)
    loaded = cell.load(tmp_path)
    shard_reads = [(k, r) for k, r in calls if "/embeddings/c/" in k or "/scales/c/" in k]
    assert shard_reads and all(r is not None for _, r in shard_reads), shard_reads[:5]
    assert loaded.counts["unfilled"] == 0 and loaded.georef.source == zarr_source.GEOREF_SOURCE


def test_publish_from_s3(both: Both, s3: tuple[Any, str], tmp_path: Path) -> None:
    server, bucket = s3
    client = server.client()
    grid = "grid_72.05_-0.05"  # alone on its part of the zone grid: no neighbour writes over it
    # a store of that one tile (the module's five-tile store is 5x the bytes through moto, and
    # its other tiles add nothing here); published from S3, it must equal the local publish of
    # the same tile from the five-tile store. Its inner chunks are 256 px, not geotessera's 32:
    # the same reads through obstore, in 64x fewer ranged GETs through moto (~26 s -> ~7 s a
    # publish); reading 32 px chunks by range is test_reads_chunks_never_a_whole_shard's
    store = tmp_path / "one.zarr"
    write_store(
        store,
        [s for s in tiles.discover(str(both.source), "geotessera") if s.grid == grid],
        inner=256,
    )
    import zarr

    assert zarr.open_group(str(store), mode="r")["utm43"]["scales"].chunks == (1, 256, 256)
    with pytest.raises(ValueError, match="does not divide"):
        write_store(tmp_path / "bad.zarr", [], inner=100)
    for path in sorted(store.rglob("*")):
        if path.is_file():
            client.upload_file(
                str(path), bucket, f"stores/tessera.zarr/{path.relative_to(store).as_posix()}"
            )
    settings = server.storage_settings()
    cells = zarr_source.discover(
        f"s3://{bucket}/stores/tessera.zarr", tiles.TileFilter(grids=frozenset({grid})), settings
    )
    assert [c.grid for c in cells] == [grid]
    report = run.publish(
        cells, str(tmp_path / "pub"), settings=None, source_settings=settings, report=None
    )
    assert report.totals["ok"] == 1, [o.reason for o in report.outcomes]
    _, codes, scales = _read_item(_items(report, tmp_path / "pub")[grid])
    _, l_codes, l_scales = _read_item(both.zarr[grid])
    assert np.array_equal(codes, l_codes) and np.array_equal(scales, l_scales, equal_nan=True)

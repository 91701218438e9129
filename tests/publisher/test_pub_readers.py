"""Readers: geotessera cache, public mirror (+ manifest.parquet), explicit lists, filters."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import GridCell
from tessera_stac.publisher.embeddings import run, tiles
from tessera_stac.publisher.samples import tiles as sample

CELLS = [GridCell.parse(g) for g in ("grid_0.15_52.05", "grid_0.25_52.05", "grid_5.05_45.05")]
SMALL = sample.SampleOptions(crop=(40, 32))


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    for cell in CELLS:
        for year in (2023, 2024):
            sample.write_tile(root, cell, year, SMALL, layout="mirror")
    return root


def test_mirror_listing_and_filters(mirror: Path) -> None:
    found = tiles.discover(str(mirror))
    assert len(found) == 6
    assert all(s.landmask and "/landmasks/v1/" in s.landmask for s in found)
    flt = tiles.TileFilter(years=frozenset({2024}), bbox=(0.1, 52.0, 0.3, 52.1))
    names = [(s.grid, s.year) for s in tiles.discover(str(mirror), tile_filter=flt)]
    assert names == [("grid_0.15_52.05", 2024), ("grid_0.25_52.05", 2024)]


def test_mirror_manifest_is_the_index(mirror: Path, tmp_path: Path) -> None:
    rows = [
        {
            "version": "v1",
            "variant": "base",
            "lon": 0.15,
            "lat": 52.05,
            "year": 2024,
            "grid_path": "2024/grid_0.15_52.05/grid_0.15_52.05.npy",
            "scales_path": "2024/grid_0.15_52.05/grid_0.15_52.05_scales.npy",
        }
    ]
    manifest = mirror / "npy" / "v1" / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    try:
        found = tiles.discover(str(mirror), layout="mirror")
        assert [(s.grid, s.year) for s in found] == [("grid_0.15_52.05", 2024)]
        assert found[0].scales.endswith("npy/v1/2024/grid_0.15_52.05/grid_0.15_52.05_scales.npy")
        report = run.publish(found, str(tmp_path / "out"), report=None)
        assert report.totals["ok"] == 1
        # a manifest mixing model versions is refused (never mix versions in one collection)
        pq.write_table(pa.Table.from_pylist([*rows, {**rows[0], "version": "v2"}]), manifest)
        with pytest.raises(InputError, match="mixes model versions"):
            tiles.discover(str(mirror), layout="mirror")
        assert len(tiles.discover(str(mirror), use_manifest=False)) == 6
    finally:
        manifest.unlink()


def test_several_datasets_need_a_choice(mirror: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "two"
    shutil.copytree(mirror, root)
    shutil.copytree(root / "npy" / "v1", root / "npy" / "v2")
    with pytest.raises(InputError, match="--dataset"):
        tiles.discover(str(root))
    assert len(tiles.discover(str(root), dataset="v2")) == 6


def test_explicit_list_and_geotessera_cache(tmp_path: Path) -> None:
    files = [sample.write_tile(tmp_path / "cache", c, 2024, SMALL) for c in CELLS]
    listing = tmp_path / "files.txt"
    listing.write_text("# tiles\n" + "\n".join(str(f.embeddings) for f in files) + "\n")
    found = tiles.discover(
        str(listing), layout="list", landmasks=str(tmp_path / "cache" / tiles.LANDMASK_DIR)
    )
    assert [s.grid for s in found] == sorted(c.name for c in CELLS)
    assert all(s.year == 2024 and s.landmask for s in found)
    cache = tiles.discover(
        str(tmp_path / "cache"), tile_filter=tiles.TileFilter(grids=frozenset({"grid_5.05_45.05"}))
    )
    assert [s.grid for s in cache] == ["grid_5.05_45.05"]
    with pytest.raises(InputError, match="no TESSERA tiles"):
        tiles.discover(str(tmp_path / "empty-does-not-exist"))

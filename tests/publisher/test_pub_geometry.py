"""Georeferencing: UTM zone rule, corner projection, rebuilt grid == landmask grid."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyproj import Transformer

from tessera_stac.catalog.model import GridCell
from tessera_stac.publisher.embeddings.georef import read_landmask, rebuild_georef
from tessera_stac.publisher.samples import tiles as sample

# (grid, EPSG, (height, width)): the sizes DESIGN §1 quotes for the equator and 52°N
CASES = [
    ("grid_78.05_12.05", 32644, None),
    ("grid_0.15_52.05", 32631, (1139, 729)),
    ("grid_-0.15_-0.05", 32730, (1107, 1114)),
    ("grid_25.05_70.05", 32635, None),
]


@pytest.mark.parametrize(("grid", "epsg", "shape"), CASES)
def test_rebuilt_grid_follows_the_rules(grid: str, epsg: int, shape: tuple[int, int]) -> None:
    cell = GridCell.parse(grid)
    geo = rebuild_georef(cell)
    assert geo.epsg == epsg
    if shape is not None:
        assert geo.shape == shape
    a, b, c, d, e, f = geo.transform
    assert (a, b, d, e) == (10.0, 0.0, 0.0, -10.0)
    # the rectangle circumscribes the cell: every corner lies inside (within half a pixel)
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    west, south, east, north = cell.bounds
    for lon, lat in [(west, south), (west, north), (east, south), (east, north)]:
        x, y = to_utm.transform(lon, lat)
        assert c - 1e-6 <= x <= c + geo.width * 10 + 5
        assert f - geo.height * 10 - 5 <= y <= f + 1e-6
    # origin is not snapped to a 10 m lattice (except where a corner happens to be)
    left_x = min(to_utm.transform(west, south)[0], to_utm.transform(west, north)[0])
    assert c == pytest.approx(left_x, abs=1e-6)


def test_neighbours_overlap_and_zone_changes_at_72e() -> None:
    left, right = GridCell.parse("grid_71.95_21.85"), GridCell.parse("grid_72.05_21.85")
    assert (rebuild_georef(left).epsg, rebuild_georef(right).epsg) == (32642, 32643)
    a, b = (
        rebuild_georef(GridCell.parse("grid_78.05_12.05")),
        rebuild_georef(GridCell.parse("grid_78.15_12.05")),
    )
    assert a.epsg == b.epsg
    assert b.transform[2] < a.transform[2] + a.width * 10  # slight overlap


@pytest.mark.parametrize(("grid", "epsg", "shape"), CASES)
def test_generated_landmask_grid_equals_rebuilt(
    tmp_path: Path, grid: str, epsg: int, shape: tuple[int, int] | None
) -> None:
    cell = GridCell.parse(grid)
    tile = sample.generate_tile(cell, 2024, sample.SampleOptions(crop=(16, 16)))
    path = tmp_path / f"{grid}.tiff"
    full = rebuild_georef(cell)
    import numpy as np

    sample.write_landmask(path, full, np.ones(full.shape, np.uint8))
    geo, mask = read_landmask(path)
    assert geo.source == "landmask"
    assert geo.same_grid(full, tol=0.0)
    assert mask.shape == full.shape
    assert tile.georef.epsg == epsg

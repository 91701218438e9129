"""watersheds join: per-MWS means against an independent computation, on real-geometry tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer

from tessera_stac.catalog.errors import InputError
from tessera_stac.publisher.join import (
    FLAG_NO_VALID,
    FLAG_OK,
    FLAG_PARTIAL,
    MEAN_COLUMNS,
    EmbeddingTile,
    cells_covering,
    find_tiles_local,
    join_embeddings,
    overlap_groups,
)
from tessera_stac.publisher.watersheds import read_mws_layer

YEAR = 2024


def reference(frame: Any, tiles: list[EmbeddingTile]) -> dict[str, np.ndarray]:
    """Straightforward per-polygon computation: every pixel centre of every tile, in lon/lat,
    kept when its 0.1° cell is the tile's, tested polygon by polygon with shapely."""
    n = len(frame)
    sums = np.zeros((n, 128))
    count = np.zeros(n, dtype=np.int64)
    pixels = np.zeros(n, dtype=np.int64)
    every_tile = np.zeros(n, dtype=np.int64)  # valid pixels if each tile counted all of its own
    polys = list(frame.geometry)
    for tile in tiles:
        with rasterio.open(tile.embeddings_href) as ds:
            q = ds.read()
            transform = ds.transform
            epsg = ds.crs.to_epsg()
        with rasterio.open(tile.scales_href) as ds:
            s = ds.read(1)
        h, w = s.shape
        rows, cols = np.mgrid[0:h, 0:w]
        x, y = rasterio.transform.xy(transform, rows.ravel(), cols.ravel(), offset="center")
        lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
        lon, lat = np.asarray(lon), np.asarray(lat)
        mine = (np.floor(lon * 10) == round((tile.cell.lon - 0.05) * 10)) & (
            np.floor(lat * 10) == round((tile.cell.lat - 0.05) * 10)
        )
        valid = np.isfinite(s.ravel()) & (q[0].ravel() != -128)
        for i, poly in enumerate(polys):
            x0, y0, x1, y1 = poly.bounds
            cand = np.flatnonzero((lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1))
            inside = cand[shapely.contains_xy(poly, lon[cand], lat[cand])]
            every_tile[i] += int(valid[inside].sum())
            inside = inside[mine[inside]]
            pixels[i] += len(inside)
            good = inside[valid[inside]]
            count[i] += len(good)
            r, c = good // w, good % w
            values = q[:, r, c].astype(np.float32) * s[r, c]
            sums[i] += values.astype(np.float64).sum(axis=1)
    with np.errstate(invalid="ignore"):
        means = sums / count[:, None]
    return {"means": means, "count": count, "pixels": pixels, "every_tile": every_tile}


@pytest.fixture(scope="module")
def layer(bhavnagar_geojson: Path) -> Any:
    return read_mws_layer(bhavnagar_geojson)


@pytest.fixture(scope="module")
def tiles(join_tiles: Path, layer: Any) -> list[EmbeddingTile]:
    found = find_tiles_local(join_tiles, YEAR, cells_covering(layer.bbox))
    assert len(found) == 4 and {t.epsg for t in found} == {32642, 32643}
    return found


@pytest.fixture(scope="module")
def joined(layer: Any, tiles: list[EmbeddingTile]) -> Any:
    return join_embeddings(layer.frame, tiles, YEAR)


@pytest.fixture(scope="module")
def expected(joined: Any, layer: Any, tiles: list[EmbeddingTile]) -> dict[str, Any]:
    covered = joined.table["pixels"].to_numpy() > 0
    return {"covered": covered, **reference(layer.frame[covered].reset_index(drop=True), tiles)}


def test_means_equal_independent_computation(joined: Any, expected: dict[str, Any]) -> None:
    table = joined.table
    covered = expected["covered"]
    got = table[covered].reset_index(drop=True)
    np.testing.assert_array_equal(got["pixels"].to_numpy(), expected["pixels"])
    np.testing.assert_array_equal(got["count"].to_numpy(), expected["count"])
    means = got[list(MEAN_COLUMNS)].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(means, expected["means"], rtol=0, atol=1e-5)
    assert table[list(MEAN_COLUMNS)].dtypes.unique().tolist() == [np.dtype("float32")]
    # the comparison has teeth: 33 MWS touch the 4 tiles, 18 lie fully inside them
    assert covered.sum() == 33 and (expected["count"] > 10_000).sum() >= 18


def test_no_double_counting_in_tile_overlaps(joined: Any, expected: dict[str, Any]) -> None:
    """Total = distinct valid pixels under the polygons; each tile alone would count more."""
    counted = int(joined.table["count"].sum())
    assert counted == int(expected["count"].sum())
    spanning = expected["every_tile"] > expected["count"]
    assert spanning.sum() >= 5  # MWS across a tile edge see the overlap strip twice naively
    assert int(expected["every_tile"].sum()) > counted


def test_flags_and_nan_means(joined: Any) -> None:
    table = joined.table
    none = table[table["count"] == 0]
    assert (none["flag"] == FLAG_NO_VALID).all() and len(none) == 116 - 33
    assert none[list(MEAN_COLUMNS)].isna().all().all()
    partial = table[table["flag"] == FLAG_PARTIAL]
    assert len(partial) == 15 and (partial["missing_cells"] != "").all()
    ok = table[table["flag"] == FLAG_OK]
    assert len(ok) == 18 and (ok["missing_cells"] == "").all()
    assert ((ok["valid_fraction"] > 0.8) & (ok["valid_fraction"] < 1)).all()
    assert sorted(joined.missing_cells)[0].startswith("grid_")
    assert len(joined.tiles) == 4


def test_overlapping_polygons_count_for_both() -> None:
    a = shapely.box(0, 0, 2, 2)
    b = shapely.box(1, 1, 3, 3)
    c = shapely.box(2, 0, 4, 1)  # touches a only along an edge
    groups = overlap_groups([a, b, c])
    assert len(groups) == 2
    assert sorted(map(sorted, (g.tolist() for g in groups))) == [[0, 2], [1]]


def test_year_without_tiles(layer: Any, tiles: list[Any]) -> None:
    with pytest.raises(InputError, match="no embedding tile of 2019"):
        join_embeddings(layer.frame, tiles, 2019)

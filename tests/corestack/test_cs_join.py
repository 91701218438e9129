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
from tessera_stac.publisher.join.join import (
    FLAG_NO_VALID,
    FLAG_OK,
    FLAG_PARTIAL,
    MEAN_COLUMNS,
    EmbeddingTile,
    join_embeddings,
    overlap_groups,
)

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
        flat_s = s.ravel()
        valid = np.isfinite(flat_s) & (flat_s > 0) & (flat_s < 1) & (q[0].ravel() != -128)
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
def layer(bhavnagar_join: Any) -> Any:
    return bhavnagar_join[0]


@pytest.fixture(scope="module")
def tiles(bhavnagar_join: Any) -> list[EmbeddingTile]:
    found = bhavnagar_join[1]
    assert len(found) == 2 and {t.epsg for t in found} == {32642, 32643}
    return list(found)


@pytest.fixture(scope="module")
def joined(bhavnagar_join: Any) -> Any:
    return bhavnagar_join[2]


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
    # the comparison has teeth: MWS across both tiles and the UTM boundary, many pixels each
    assert covered.sum() >= 20 and (expected["count"] > 10_000).sum() >= 5


def test_no_double_counting_in_tile_overlaps(joined: Any, expected: dict[str, Any]) -> None:
    """Total = distinct valid pixels under the polygons; each tile alone would count more."""
    counted = int(joined.table["count"].sum())
    assert counted == int(expected["count"].sum())
    spanning = expected["every_tile"] > expected["count"]
    assert spanning.sum() >= 5  # MWS across a tile edge see the overlap strip twice naively
    assert int(expected["every_tile"].sum()) > counted


def expected_flags(layer: Any, tiles: list[EmbeddingTile], count: np.ndarray) -> np.ndarray:
    """ok inside the covered cells, partial across their edge, none elsewhere or no pixel."""
    covered = shapely.union_all([shapely.box(*t.cell.bounds) for t in tiles])
    geoms = layer.frame.geometry.values
    inside = shapely.within(geoms, covered)
    touching = shapely.intersects(geoms, covered)
    return np.where(
        count == 0, FLAG_NO_VALID, np.where(inside, FLAG_OK, np.where(touching, FLAG_PARTIAL, "?"))
    )


def test_flags_and_nan_means(joined: Any, layer: Any, tiles: list[Any]) -> None:
    table = joined.table
    flags = expected_flags(layer, tiles, table["count"].to_numpy())
    assert list(table["flag"]) == list(flags)
    assert (table["flag"] == FLAG_OK).sum() >= 5 and (table["flag"] == FLAG_PARTIAL).sum() >= 5
    none = table[table["count"] == 0]
    assert len(none) > 0 and none[list(MEAN_COLUMNS)].isna().all().all()
    partial = table[table["flag"] == FLAG_PARTIAL]
    assert (partial["missing_cells"] != "").all()
    ok = table[table["flag"] == FLAG_OK]
    assert (ok["missing_cells"] == "").all()
    assert ((ok["valid_fraction"] > 0.3) & (ok["valid_fraction"] <= 1)).all()
    assert sorted(joined.missing_cells)[0].startswith("grid_")
    assert len(joined.tiles) == 2


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


@pytest.mark.slow  # the join and its map through the CLI, end to end
def test_join_cli_writes_item_table_and_map(
    published_sample: Any, tmp_path: Path, stac_validate: Any, layer: Any, joined: Any
) -> None:
    """The CLI on a layer FILE (a few MWS across both tiles, to keep it quick)."""
    import json
    import subprocess
    import sys

    import geopandas as gpd
    import pandas as pd

    table = joined.table
    few = table[table["flag"] != FLAG_NO_VALID]["uid"].iloc[:4].tolist()
    few += table[table["flag"] == FLAG_NO_VALID]["uid"].iloc[:1].tolist()
    src = tmp_path / "Few MWS.geojson"
    layer.frame[layer.frame["uid"].isin(few)].to_file(src, driver="GeoJSON")
    out = tmp_path / "cat"
    cli = [sys.executable, "-m", "tessera_stac.cli.main", "watersheds", "join"]
    tiles = ["--tiles", str(published_sample.dest)]
    run = subprocess.run(
        [*cli, str(src), "--year", str(YEAR), "-o", str(out), *tiles, "--csv", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["item_id"] == "few_mws_embeddings_2024" and data["mws"] == 5
    item_path = Path(data["item"])
    item = json.loads(item_path.read_text())
    stac_validate(item)
    assert item["properties"]["start_datetime"].startswith("2024-01-01")
    derived = [
        (item_path.parent / link["href"]).resolve()
        for link in item["links"]
        if link["rel"] == "derived_from"
    ]
    # the layer file and the tiles lie outside the catalog written to: named, never linked
    # by their local paths
    assert derived == []
    assert item["properties"]["corestack:mws_source"] == "few_mws"
    assert sorted(item["properties"]["tessera:source_items"]) == sorted(
        json.loads(p.read_text())["id"] for p in published_sample.items
    )
    assert str(tmp_path) not in item_path.read_text()
    got = gpd.read_parquet(data["parquet"]).set_index("uid")
    assert got.crs.to_epsg() == 4326 and sorted(got.index) == sorted(few)
    got = got.loc[few]
    want = table.set_index("uid").loc[few]
    np.testing.assert_array_equal(got["count"], want["count"])
    np.testing.assert_array_equal(got[list(MEAN_COLUMNS)], want[list(MEAN_COLUMNS)])
    names = [c["name"] for c in item["properties"]["table:columns"]]
    assert names[:6] == ["uid", "count", "pixels", "valid_fraction", "flag", "missing_cells"]
    assert names[6:134] == list(MEAN_COLUMNS)
    csv = pd.read_csv(data["csv"], dtype={"uid": str})
    assert sorted(csv["uid"]) == sorted(few) and "geometry" not in csv.columns
    assert Path(data["map"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stac_validate(json.loads((out / "corestack-mws-embeddings" / "collection.json").read_text()))
    root = json.loads((out / "catalog.json").read_text())
    assert "./corestack-mws-embeddings/collection.json" in {ln["href"] for ln in root["links"]}

    # a year without tiles: one clear line, exit 3, nothing written
    bad = subprocess.run(
        [*cli, str(src), "--year", "2019", "-o", str(out), *tiles],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 3 and "no embedding tile of 2019" in bad.stderr
    assert not list((out / "corestack-mws-embeddings").glob("*2019*"))
    both = subprocess.run(
        [*cli, str(src), "--mws", "x", "--year", "2024", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert both.returncode == 3 and "exactly one" in both.stderr

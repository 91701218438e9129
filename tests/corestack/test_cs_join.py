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


def test_join_cli_writes_item_table_and_map(
    join_tiles: Path, bhavnagar_geojson: Path, tmp_path: Path, stac_validate: Any, expected: Any
) -> None:
    import json
    import subprocess
    import sys

    import geopandas as gpd

    from tessera_stac.publisher.watersheds import BlockName, publish_mws_layer

    out = tmp_path / "cat"
    publish_mws_layer(bhavnagar_geojson, BlockName("Gujarat", "Bhavnagar", "Bhavnagar"), out)
    cli = [sys.executable, "-m", "tessera_stac.publisher.cli", "watersheds", "join"]
    args = ["--year", str(YEAR), "-o", str(out), "--tiles", str(join_tiles), "--csv", "--json"]
    run = subprocess.run(
        [*cli, "--mws", "gujarat_bhavnagar_bhavnagar_mws", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["tiles_read"] == 4 and data["flags"] == {
        FLAG_NO_VALID: 83,
        FLAG_OK: 18,
        FLAG_PARTIAL: 15,
    }
    item_path = Path(data["item"])
    item = json.loads(item_path.read_text())
    stac_validate(item)
    assert item["id"] == "gujarat_bhavnagar_bhavnagar_mws_embeddings_2024"
    assert item["properties"]["start_datetime"].startswith("2024-01-01")
    derived = [
        (item_path.parent / link["href"]).resolve()
        for link in item["links"]
        if link["rel"] == "derived_from"
    ]
    assert len(derived) == 5 and all(p.exists() for p in derived)
    assert derived[0].name == "gujarat_bhavnagar_bhavnagar_mws.json"
    assert {p.stem for p in derived[1:]} == {
        f"grid_{x:.2f}_{y:.2f}_{YEAR}"
        for x, y in [(71.95, 21.75), (72.05, 21.75), (71.95, 21.85), (72.05, 21.85)]
    }
    table = gpd.read_parquet(data["parquet"])
    assert table.crs.to_epsg() == 4326 and table["uid"].is_unique and len(table) == 116
    covered = table[expected["covered"]]
    np.testing.assert_array_equal(covered["count"].to_numpy(), expected["count"])
    names = [c["name"] for c in item["properties"]["table:columns"]]
    assert names[:6] == ["uid", "count", "pixels", "valid_fraction", "flag", "missing_cells"]
    assert names[6:134] == list(MEAN_COLUMNS)
    import pandas as pd

    csv = pd.read_csv(data["csv"], dtype={"uid": str})
    assert list(csv["uid"]) == list(table["uid"]) and "geometry" not in csv.columns
    assert Path(data["map"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    coll = json.loads((out / "corestack-mws-embeddings" / "collection.json").read_text())
    stac_validate(coll)
    root = json.loads((out / "catalog.json").read_text())
    assert {"./corestack-mws/collection.json", "./corestack-mws-embeddings/collection.json"} <= {
        link["href"] for link in root["links"]
    }

    # a year without tiles: one clear line, exit 3, nothing written
    bad = subprocess.run(
        [
            *cli,
            "--mws",
            "gujarat_bhavnagar_bhavnagar_mws",
            *args[:0],
            "--year",
            "2019",
            "-o",
            str(out),
            "--tiles",
            str(join_tiles),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 3 and "no embedding tile of 2019" in bad.stderr
    assert not list((out / "corestack-mws-embeddings").glob("*2019*"))
    both = subprocess.run(
        [*cli, str(bhavnagar_geojson), "--mws", "x", "--year", "2024", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert both.returncode == 3 and "exactly one" in both.stderr

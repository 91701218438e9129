"""watersheds classes: per-MWS hectares of each class against an independent aggregation of the
class maps, on the real Bhavnagar layer across two UTM zones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from pyproj import Transformer

from tessera_stac.catalog.errors import InputError
from tessera_stac.publisher.classify.watersheds import (
    ClassTile,
    aggregate_classes,
    annual_rows,
    check_model_name,
    classes_per_watershed,
    find_class_tiles_local,
    parse_classes,
)
from tessera_stac.publisher.join.join import FLAG_NO_VALID, mws_source
from tests.fixtures_classes import CLASS_YEARS, TEST_CLASSES, TEST_MODEL

COLUMNS = ["cropland", "tree_cover", "built_up"]


def reference(frame: Any, tiles: list[ClassTile]) -> tuple[np.ndarray, np.ndarray]:
    """Straightforward aggregation: every pixel centre of every class map to lon/lat, kept when
    its 0.1° cell is the tile's, tested polygon by polygon with shapely; (hectares (n, 4) of
    classes 0..3, pixel area)."""
    n = len(frame)
    hectares = np.zeros((n, 4))
    polys = list(frame.geometry)
    for tile in tiles:
        with rasterio.open(tile.classes_href) as ds:
            classes = ds.read(1).ravel()
            transform, epsg = ds.transform, ds.crs.to_epsg()
        area = abs(transform.a * transform.e) / 10_000
        h, w = tile.shape
        rows, cols = np.mgrid[0:h, 0:w]
        x, y = rasterio.transform.xy(transform, rows.ravel(), cols.ravel(), offset="center")
        lon, lat = (
            np.asarray(v) for v in Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
        )
        mine = (np.floor(lon * 10) == round((tile.cell.lon - 0.05) * 10)) & (
            np.floor(lat * 10) == round((tile.cell.lat - 0.05) * 10)
        )
        for i, poly in enumerate(polys):
            x0, y0, x1, y1 = poly.bounds
            cand = np.flatnonzero((lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1) & mine)
            inside = cand[shapely.contains_xy(poly, lon[cand], lat[cand])]
            hectares[i] += np.bincount(classes[inside], minlength=4)[:4] * area
    return hectares, np.array(area)


@pytest.fixture(scope="module")
def source(class_catalog: Any) -> tuple[dict[str, Any], str, Any]:
    return mws_source(class_catalog.root, class_catalog.mws_item_id, None)


@pytest.fixture(scope="module")
def results(class_catalog: Any, source: Any) -> list[Any]:
    item, _, layer = source
    return classes_per_watershed(
        class_catalog.root, TEST_MODEL, list(CLASS_YEARS), item, layer.frame
    )


def test_hectares_equal_independent_aggregation(results: list[Any], source: Any) -> None:
    layer = source[2]
    for result in results:
        table = result.table
        assert len(result.tiles) == 2 and {t.epsg for t in result.tiles} == {32642, 32643}
        covered = table["pixels"].to_numpy() > 0
        expected, area = reference(layer.frame[covered].reset_index(drop=True), list(result.tiles))
        got = table[covered].reset_index(drop=True)
        diff = got[[f"{c}_in_ha" for c in COLUMNS]].to_numpy() - expected[:, 1:]
        assert np.abs(diff).max() < 1e-6  # exact (the issue asks for one pixel, 0.01 ha)
        for k, col in enumerate(COLUMNS, start=1):
            np.testing.assert_allclose(got[f"{col}_in_ha"], expected[:, k], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got["nodata_in_ha"], expected[:, 0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            got["pixels"] * area, expected.sum(axis=1), rtol=0, atol=area * 1.0001
        )
        # teeth: MWS across both tiles and the UTM boundary, every class present, large areas
        assert covered.sum() >= 20
        assert (expected[:, 1:].sum(axis=0) > 500).all()
        assert (got["classified_in_ha"] > 500).sum() >= 5


def test_percents_sum_to_100(results: list[Any]) -> None:
    table = results[0].table
    classified = table["classified_in_ha"] > 0
    total = table.loc[classified, [f"{c}_percent" for c in COLUMNS]].sum(axis=1)
    np.testing.assert_allclose(total, 100.0, atol=1e-9)
    assert table.loc[~classified, "cropland_percent"].isna().all()
    assert (table.loc[~classified, "flag"] == FLAG_NO_VALID).all() and (~classified).sum() > 0
    assert list(table.columns[:7]) == [
        "uid", "cropland_in_ha", "cropland_percent", "tree_cover_in_ha", "tree_cover_percent",
        "built_up_in_ha", "built_up_percent",
    ]  # fmt: skip


def test_annual_rows_in_corestack_shape(results: list[Any]) -> None:
    rows = annual_rows(results)
    a, b = (r.table.set_index("uid") for r in results)
    row = next(r for r in rows if (r["annual"]["classified_in_ha"][0] or 0) > 500)
    uid = row["uid"]
    assert row["annual"]["time"] == list(CLASS_YEARS)
    assert row["annual_units"]["cropland_in_ha"] == "ha"
    assert row["annual_units"]["cropland_percent"] == "%"
    assert row["annual"]["cropland_in_ha"] == pytest.approx(
        [a.loc[uid, "cropland_in_ha"], b.loc[uid, "cropland_in_ha"]]
    )
    change = b.loc[uid, "tree_cover_in_ha"] - a.loc[uid, "tree_cover_in_ha"]
    assert row["tree_cover_change_in_ha"] == pytest.approx(change, abs=1e-6)
    assert any(abs(r["tree_cover_change_in_ha"] or 0) > 1 for r in rows)  # the years differ


def test_cli_writes_tables_items_and_change(
    class_catalog: Any, stac_validate: Any, results: list[Any]
) -> None:
    root = class_catalog.root
    cli = [sys.executable, "-m", "tessera_stac.cli.main", "watersheds", "classes"]
    args = ["--mws", class_catalog.mws_item_id, "--model", TEST_MODEL, "-o", str(root), "--json"]
    run = subprocess.run(
        [*cli, *args, "--from", "2024", "--to", "2025"], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    mws = class_catalog.mws_item_id
    assert data["items"] == [
        f"{mws}_classes_{TEST_MODEL}_2024",
        f"{mws}_classes_{TEST_MODEL}_2025",
        f"{mws}_classes_{TEST_MODEL}_2024_2025",
    ]
    folder = root / "corestack-mws-classes"
    for item_id in data["items"]:
        item = json.loads((folder / item_id / f"{item_id}.json").read_text())
        stac_validate(item)
        derived = [ln["href"] for ln in item["links"] if ln["rel"] == "derived_from"]
        assert all(not h.startswith("/") for h in derived) and derived
    year_item = json.loads((folder / data["items"][0] / f"{data['items'][0]}.json").read_text())
    hrefs = {
        (folder / data["items"][0] / ln["href"]).resolve()
        for ln in year_item["links"]
        if ln["rel"] == "derived_from"
    }
    assert {p.resolve() for p in class_catalog.class_items[2024]} <= hrefs
    assert year_item["properties"]["tessera:classes"][1]["name"] == "Tree-cover"
    csv = pd.read_csv(folder / data["items"][0] / f"{data['items'][0]}.csv")
    parquet = pd.read_parquet(folder / data["items"][0] / f"{data['items'][0]}.parquet")
    np.testing.assert_allclose(csv["cropland_in_ha"], results[0].table["cropland_in_ha"], atol=1e-6)
    assert list(csv["uid"]) == list(parquet["uid"])
    change = json.loads(Path(data["annual"]).read_text())
    assert len(change) == len(csv) and change[0]["annual"]["time"] == [2024, 2025]
    collection = json.loads((folder / "collection.json").read_text())
    stac_validate(collection)
    assert "./corestack-mws-classes/collection.json" in (root / "catalog.json").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--year", "2024", "--from", "2024", "--to", "2025"], "not both"),
        (["--from", "2025", "--to", "2024"], "need from < to"),
        (["--year", "2019"], "no class map"),
        ([], "give --year"),
    ],
)
def test_cli_bad_years(class_catalog: Any, args: list[str], message: str) -> None:
    cli = [sys.executable, "-m", "tessera_stac.cli.main", "watersheds", "classes"]
    base = [
        "--mws",
        class_catalog.mws_item_id,
        "--model",
        TEST_MODEL,
        "-o",
        str(class_catalog.root),
    ]
    run = subprocess.run([*cli, *base, *args], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and message in run.stderr, run.stderr


@pytest.mark.parametrize("name", ["../etc", "Bad<b>", "", "a" * 80, "x/y"])
def test_bad_model_names(name: str) -> None:
    with pytest.raises(InputError, match="model name"):
        check_model_name(name)


def test_unknown_model_and_classes(class_catalog: Any) -> None:
    with pytest.raises(InputError, match="no class maps of model 'other'"):
        find_class_tiles_local(class_catalog.root, "other", [2024])
    with pytest.raises(InputError, match="declare no class"):
        parse_classes([{"value": 0, "name": "nodata"}])
    with pytest.raises(InputError, match=r"outside 1\.\.254"):
        parse_classes([{"value": 300, "name": "x"}])
    stems = [c.column for c in parse_classes([*TEST_CLASSES, {"value": 9, "name": "Cropland!"}])]
    assert stems == ["cropland", "tree_cover", "built_up", "cropland_9"]


def test_year_without_maps(class_catalog: Any, source: Any) -> None:
    layer = source[2]
    tiles, classes = find_class_tiles_local(class_catalog.root, TEST_MODEL, [2024])
    with pytest.raises(InputError, match="no class map of testhead for 2030"):
        aggregate_classes(layer.frame, tiles[2024], classes, TEST_MODEL, 2030)


def test_regression_maps_give_per_mws_means(
    source: Any, tmp_path: Path, published_sample: Any
) -> None:
    """A regression head's value maps: the mean value per MWS (pixel-centre and cell rules),
    against the same independent per-pixel computation."""
    from tests.fixtures_classes import write_class_map

    root = tmp_path / "cat"
    for p in published_sample.items:
        write_class_map(root, p, "height", 2024, value=True)
    item, _, layer = source
    (result,) = classes_per_watershed(root, "height", [2024], item, layer.frame)
    table = result.table
    assert list(table.columns[:3]) == ["uid", "value_mean", "valued_in_ha"]
    n = len(layer.frame)
    sums, counts = np.zeros(n), np.zeros(n)
    polys = list(layer.frame.geometry)
    for tile in result.tiles:
        with rasterio.open(tile.classes_href) as ds:
            values = ds.read(1).ravel()
            transform, epsg = ds.transform, ds.crs.to_epsg()
        h, w = tile.shape
        rows, cols = np.mgrid[0:h, 0:w]
        x, y = rasterio.transform.xy(transform, rows.ravel(), cols.ravel(), offset="center")
        lonlat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
        lon, lat = (np.asarray(v) for v in lonlat)
        mine = (np.floor(lon * 10) == round((tile.cell.lon - 0.05) * 10)) & (
            np.floor(lat * 10) == round((tile.cell.lat - 0.05) * 10)
        )
        mine &= np.isfinite(values)
        for i, poly in enumerate(polys):
            x0, y0, x1, y1 = poly.bounds
            cand = np.flatnonzero((lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1) & mine)
            inside = cand[shapely.contains_xy(poly, lon[cand], lat[cand])]
            sums[i] += values[inside].astype(np.float64).sum()
            counts[i] += len(inside)
    has = counts > 0
    assert has.sum() >= 20
    np.testing.assert_allclose(table["value_mean"][has], sums[has] / counts[has], rtol=1e-9)
    np.testing.assert_allclose(table["valued_in_ha"], counts * 0.01, atol=1e-6)
    assert table["value_mean"][~has].isna().all()
